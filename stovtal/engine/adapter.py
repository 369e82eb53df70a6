"""Training the optional classifier adapter on base classes (the paper's comparison).

The open-vocabulary classifier is zero-shot by default. With ``classifier.adapter=true`` a
residual MLP on the pooled video features (:class:`stovtal.models.classifier.OpenVocabClassifier`)
is fitted on the **labelled base-class videos only**: every ground-truth segment is pooled with
``roi_align_1d`` exactly as detected segments are at inference, and the adapter minimises the
cross-entropy of ``logit_scale * cos(adapted embedding, text embedding)`` over the **base
vocabulary**. The localizer is not involved (its weights and its training are untouched), and
the text encoder stays frozen.

Because the video-language features are frozen, each segment is pooled once and the adapter is
trained on the pooled ``[N, C]`` matrix (exactly what
:meth:`~stovtal.models.classifier.OpenVocabClassifier.pooled_adapter_loss` takes).

The adapter is stored in the run's checkpoints under ``"classifier"`` (see :func:`adapter_state`)
and restored by :func:`classifier_from_checkpoint`, which ``python -m stovtal.infer`` and the test
evaluation of ``python -m stovtal.train`` use. With ``classifier.adapter=false`` (the default) the
classifier has no parameters and any stored adapter is ignored: zero-shot.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import torch
from torch import Tensor, nn

from stovtal.config import AdapterTrainConfig, TrainConfig
from stovtal.data.resolve import DataSpec
from stovtal.models.classifier import OpenVocabClassifier, Vocabulary

from .batches import TensorBatches
from .builders import build_classifier, build_dataset, build_loader, build_vocabulary
from .trainer import SampleMeanLoss, Trainer, move_to_device, resolve_device

__all__ = [
    "AdapterTrainConfig",
    "adapter_state",
    "adapter_train_config",
    "classifier_from_checkpoint",
    "fit_adapter",
    "pool_ground_truth",
    "segment_accuracy",
    "train_adapter",
]

CHECKPOINT_KEY = "classifier"


@torch.no_grad()
def pool_ground_truth(classifier: OpenVocabClassifier, dataset: Any, batch_size: int = 16,
                      device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """Pool the ground-truth segments of every video of ``dataset`` (a ``VideoFeatureDataset``).

    Returns:
        ``pooled`` float32 ``[N, C]`` (:meth:`OpenVocabClassifier.pool_segments`, before the adapter
        and the normalisation) and ``labels`` int64 ``[N]`` (indices into ``dataset.classes``), on
        the CPU, in dataset order.
    """
    device = torch.device(device)
    pooled, labels = [], []
    for batch in build_loader(dataset, batch_size):
        batch = move_to_device(batch, device)
        # dataset segments are grid units relative to the first returned snippet
        seconds = [
            dataset.grid.grid_to_seconds(seg.double() + float(off), float(fps))
            for seg, off, fps in zip(batch["segments"], batch["offset_snippets"], batch["fps"], strict=True)
        ]
        for p in classifier.pool_segments(batch["feats"], batch["masks"], seconds, batch):
            pooled.append(p.float().cpu())
        labels.extend(lab.long().cpu() for lab in batch["labels"])
    if not pooled:
        raise ValueError("the dataset holds no videos")
    return torch.cat(pooled), torch.cat(labels)


def adapter_train_config(cfg: AdapterTrainConfig, device: torch.device | str = "cpu") -> TrainConfig:
    """The :class:`~stovtal.engine.trainer.Trainer` settings of the adapter: AdamW decaying every
    parameter, cosine from ``lr`` to 0 over all steps (no warm-up), no clipping, no EMA, float32."""
    return TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay,
                       warmup_epochs=0.0, min_lr_ratio=0.0, clip_grad=0.0, seed=cfg.seed, amp=False,
                       device=str(device), progress=False)


def train_adapter(classifier: OpenVocabClassifier, pooled: Tensor, labels: Tensor, vocab: Vocabulary,
                  cfg: AdapterTrainConfig, device: torch.device | str = "cpu",
                  log: Callable[[str], None] | None = None) -> list[float]:
    """Fit ``classifier.adapter`` (only it) on pooled segment features with the
    :class:`~stovtal.engine.trainer.Trainer`: shuffled mini-batches of ``cfg.batch_size`` rows
    (:class:`~stovtal.engine.batches.TensorBatches`, one generator seeded with ``cfg.seed``),
    loss :meth:`OpenVocabClassifier.pooled_adapter_loss`, settings :func:`adapter_train_config`.

    Args:
        pooled: ``[N, C]`` from :func:`pool_ground_truth`; labels ``[N]`` index ``vocab`` (base classes).

    Returns:
        the mean training loss (over segments) of every epoch, preceded by the loss before
        training (index 0: the zero-shot classifier's, since the adapter starts as the identity).
    """
    if classifier.adapter is None:
        raise ValueError("train_adapter needs a classifier built with ClassifierConfig(adapter=True)")
    if pooled.shape[0] == 0:
        raise ValueError("no ground-truth segments to train the adapter on")
    if not torch.isfinite(pooled).all():
        raise ValueError("pooled segment features contain NaN or inf")
    device = torch.device(device)
    classifier.to(device).train()
    pooled, labels = pooled.to(device), labels.to(device)
    with torch.no_grad():
        before = float(classifier.pooled_adapter_loss(pooled, labels, vocab))

    def loss_fn(model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"loss": model.pooled_adapter_loss(batch["pooled"], batch["labels"], vocab)}

    def log_epoch(epoch: int, loss: float) -> None:
        if log is not None and (epoch == cfg.epochs or epoch % 10 == 0):
            log(f"adapter epoch {epoch}/{cfg.epochs}: loss {loss:.4f}")

    history = SampleMeanLoss("labels", log_epoch)
    trainer = Trainer(classifier, TensorBatches({"pooled": pooled, "labels": labels}, cfg.batch_size, cfg.seed),
                      adapter_train_config(cfg, device), None, loss_fn=loss_fn, ema=False, decay_1d=True,
                      hooks=[history], log=lambda _: None)
    trainer.fit()
    classifier.eval()
    return [before, *history.history]


@torch.no_grad()
def segment_accuracy(classifier: OpenVocabClassifier, pooled: Tensor, labels: Tensor, vocab: Vocabulary) -> float:
    """Top-1 accuracy of classifying ``[N, C]`` pooled segments (labels index ``vocab``); NaN if N = 0."""
    if pooled.shape[0] == 0:
        return float("nan")
    device = next(iter(classifier.parameters()), pooled).device
    emb = classifier.embed_pooled(pooled.to(device))
    pred = classifier.class_probs(emb, vocab).argmax(dim=1).cpu()
    return float((pred == labels.cpu()).float().mean())


def fit_adapter(cfg: Any, spec: DataSpec, log: Callable[[str], None] | None = None
                ) -> tuple[OpenVocabClassifier, dict[str, Any]]:
    """Build the classifier of ``cfg`` (a :class:`stovtal.config.Config` with
    ``classifier.adapter=true``) and fit its adapter on the ground-truth segments of the labelled
    base-class training videos, over the base vocabulary.

    Runs under a forked RNG seeded with ``cfg.adapter.seed``: the caller's random state is
    unchanged. Returns the classifier (eval mode) and statistics (loss history, training
    accuracy before/after, number of segments, time).
    """
    from .run import base_training_annotations

    if not cfg.classifier.adapter:
        raise ValueError("fit_adapter needs classifier.adapter=true")
    t0 = time.time()
    acfg: AdapterTrainConfig = cfg.adapter
    device = resolve_device(cfg.train.device)
    dataset = build_dataset(spec, spec.train_subset, classes=spec.base, annotations=base_training_annotations(spec))
    vocab = build_vocabulary(cfg, spec, spec.base)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(acfg.seed)
        classifier = build_classifier(cfg, spec).to(device)
        pooled, labels = pool_ground_truth(classifier, dataset, cfg.eval.batch_size, device)
        acc_before = segment_accuracy(classifier, pooled, labels, vocab)
        history = train_adapter(classifier, pooled, labels, vocab, acfg, device, log)
        acc_after = segment_accuracy(classifier, pooled, labels, vocab)
    stats = {
        "num_videos": len(dataset),
        "num_segments": int(pooled.shape[0]),
        "num_classes": len(spec.base),
        "loss_history": history,
        "train_accuracy_zero_shot": acc_before,
        "train_accuracy_adapter": acc_after,
        "time_s": time.time() - t0,
    }
    if log is not None:
        log(f"adapter: {stats['num_segments']} base-class segments of {stats['num_videos']} videos, "
            f"loss {history[0]:.4f} -> {history[-1]:.4f}, training accuracy "
            f"{100 * acc_before:.1f}% -> {100 * acc_after:.1f}% ({stats['time_s']:.1f} s)")
    return classifier, stats


def adapter_state(classifier: OpenVocabClassifier, cfg: Any, spec: DataSpec,
                  stats: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a checkpoint stores under ``"classifier"``: the adapter weights, the base classes it
    was trained on, its training settings and statistics."""
    if classifier.adapter is None:
        raise ValueError("the classifier has no adapter to store")
    return {
        "state_dict": {k: v.detach().cpu() for k, v in classifier.state_dict().items()},
        "base_classes": list(spec.base),
        "adapter_hidden": int(cfg.classifier.adapter_hidden),
        "train_config": asdict(cfg.adapter),
        "stats": {k: v for k, v in (stats or {}).items()},
    }


def classifier_from_checkpoint(cfg: Any, spec: DataSpec, state: dict[str, Any], path: str = "checkpoint"
                               ) -> OpenVocabClassifier:
    """The classifier of ``cfg`` with the adapter of checkpoint ``state`` (from ``load_checkpoint``).

    ``classifier.adapter=false``: the zero-shot classifier (a stored adapter is ignored).
    ``classifier.adapter=true``: the stored adapter; an error naming ``path`` if there is none or
    it does not fit the configured classifier.
    """
    classifier = build_classifier(cfg, spec)
    if classifier.adapter is None:
        return classifier.eval()
    stored = state.get(CHECKPOINT_KEY)
    if not stored or "state_dict" not in stored:
        raise ValueError(
            f"{path}: classifier.adapter=true but the checkpoint holds no trained adapter "
            "(train with classifier.adapter=true, or set classifier.adapter=false for zero-shot)"
        )
    try:
        classifier.load_state_dict(stored["state_dict"])
    except RuntimeError as exc:
        raise ValueError(f"{path}: the stored adapter does not fit the configured classifier ({exc})") from None
    return classifier.eval()
