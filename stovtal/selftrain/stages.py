"""The stages of ``python -m stovtal.selftrain`` and the pipeline that chains them.

The work directory's paths are :class:`stovtal.engine.layout.SelfTrainLayout`'s (every file
written atomically). Each stage is skipped when its output exists; ``stage.json`` next to it
(a pin, :mod:`stovtal.utils.resume`) holds a fingerprint of the inputs, and reusing a directory made with a different configuration
is an error (instead of silently mixing results). A killed ``base`` or ``retrain`` resumes from
its ``last.pt``; a killed ``pseudolabel`` from its shard manifest.

With ``retrain.rounds=R`` the ``retrain`` stage runs the rounds in order, each over every
number of unlabelled videos: round 1 retrains with the base model's pseudo-labels; round r > 1
first pseudo-labels the same videos with round r-1's teacher (``pseudo/n<N>-r<r>``, sharded and
resumable like the ``pseudolabel`` stage) and then retrains (``retrain/n<N>-r<r>``). Each round
has its own fingerprints, chained to the previous round's.

Under ``torchrun`` every rank runs the pipeline (one process: the same code, collectives are
no-ops; :mod:`stovtal.utils.distributed`):

* ``base`` / ``retrain``: every rank trains (DDP, see :class:`stovtal.engine.Trainer`); rank 0
  exports the weights.
* ``pseudolabel`` (and the rounds' re-labelling): the shards of the video list are divided among
  the ranks (and among independent jobs, ``--shard i/n``); rank 0 merges them
  (:func:`stovtal.selftrain.pseudolabel.pseudo_label_distributed`).
* ``eval``: each rank predicts its share of the test videos; rank 0 gathers and scores them.
* ``report``, ``config.yaml``, ``stage.json``: rank 0; the others wait at a barrier.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from stovtal.data.crop import crop_settings
from stovtal.data.resolve import DataSpec, resolve_data
from stovtal.engine.layout import SelfTrainLayout
from stovtal.utils import distributed as D
from stovtal.utils.fileio import atomic_write_json, read_json
from stovtal.utils.resume import pin
from stovtal.utils.threads import apply_threads
from stovtal.utils.workdir_lock import critical_section

from .config import (
    ConfigError,
    DataConfig,
    SelfTrainConfig,
    TrainConfig,
    fingerprint,
    retrain_train_overrides,
    to_dict,
)
from .filtering import nested_subset

__all__ = ["STAGES", "Context", "make_context", "run_pipeline", "run_stage", "student_eval_name",
           "teacher_eval_name"]

STAGES = ("base", "pseudolabel", "retrain", "eval", "report")
STAGE_FILE = "stage.json"
_FP_MODEL = {"embed_dim": 64, "head_dim": 64, "num_heads": 4, "window": 9, "pad_to_max_seq_len": False}
_FP_TRAIN = {"epochs": 12, "batch_size": 4, "warmup_epochs": 2.0, "lr": 5e-4, "ema_warmup": True}


def _changes(cfg: Any, default: Any, ints: bool = False) -> dict[str, Any]:
    """The entries of config ``cfg`` that differ from ``default`` (nested sections: their own
    changes), as plain JSON values; ``ints``: whole-number floats as ints."""
    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if ints and isinstance(v, float) and v.is_integer():
            return int(v)
        return v

    def diff(a: Any, b: Any) -> dict[str, Any]:
        out = {}
        for k, v in a.items():
            if isinstance(v, dict) and isinstance(b.get(k), dict):
                sub = diff(v, b[k])
                if sub:
                    out[k] = sub
            elif plain(v) != plain(b.get(k)):
                out[k] = plain(v)
        return out

    return diff(to_dict(cfg), to_dict(default))


# --------------------------------------------------------------------------- data


@dataclass
class Data:
    """The run's data: its spec (:func:`stovtal.data.resolve.resolve_data`) and the files
    selftrain reads, parsed."""

    spec: DataSpec
    annotations: dict[str, Any]  # database of the labelled and test videos
    unlabelled: dict[str, Any]  # database of the unlabelled videos
    unlabelled_gt: dict[str, Any] | None  # for analysis only
    vocab_names: list[str]
    vocab_embeddings: Any  # float32 [K, E]
    logit_scale: float
    source: dict[str, Any] = field(default_factory=dict)  # what the data is (for fingerprints)


def load_data(cfg: SelfTrainConfig, workdir: str, log: Callable[[str], None]) -> Data:
    """Generate/reuse the synthetic world (``DIR/world``, ``DIR/world-webN`` when the web set
    was enlarged for ``--scale``) or check the user's files, and read them."""
    from stovtal.data.formats import load_annotations
    from stovtal.data.synthetic import SyntheticConfig
    from stovtal.data.vocab import load_embeddings

    d = cfg.data
    spec = resolve_data(
        d, world_dir=lambda w: SelfTrainLayout(workdir).world(w.num_web, SyntheticConfig().num_web),
        min_web=max([*cfg.scale, cfg.pseudo.num_videos or 0]), progress=cfg.progress)
    names, emb = load_embeddings(spec.vocab_npz)
    if spec.world is not None:
        log(f"synthetic world in {spec.world_dir}")
        ann = load_annotations(spec.annotation_file)["database"]
        world_id = {k: v for k, v in spec.world.to_dict().items() if k not in ("num_web", "web_shard_size")}
        if world_id["web_profile"] == "target":  # the fingerprint of a world without the web_profile key
            world_id.pop("web_profile")
        source: dict[str, Any] = {"synthetic": world_id}
    else:
        missing = sorted(set(spec.classes) - set(names))
        if missing:
            raise ConfigError(f"data.base_classes/novel_classes: not in the vocabulary {spec.vocab_npz}: "
                              f"{missing[:10]}")
        # every label of the labelled set must be a class of the run (else a typo'd label would
        # silently become an action of no class); the error names the video and the file
        ann = load_annotations(spec.annotation_file, classes=spec.classes)["database"]
        source = {"annotations": os.path.abspath(spec.annotation_file),
                  "unlabelled": os.path.abspath(spec.unlabelled_file),
                  "feature_dir": os.path.abspath(spec.feature_dir)}
    gt = spec.unlabelled_gt_file
    return Data(
        spec=spec, annotations=ann,
        unlabelled=load_annotations(spec.unlabelled_file, subset=spec.unlabelled_subset)["database"],
        unlabelled_gt=load_annotations(gt)["database"] if gt else None,
        vocab_names=list(names), vocab_embeddings=emb, logit_scale=d.logit_scale, source=source,
    )


# --------------------------------------------------------------------------- context


@dataclass
class Context:
    cfg: SelfTrainConfig
    workdir: str
    data: Data
    device: torch.device
    log: Callable[[str], None] = print
    job: int = 0  # independent job i of num_jobs (--shard i/n): pseudo-labelling shards
    num_jobs: int = 1
    base_checkpoint: dict[str, Any] = field(default_factory=dict)  # base.checkpoint's record (basemodel.py)

    @property
    def layout(self) -> SelfTrainLayout:
        """Every path of the work directory."""
        return SelfTrainLayout(self.workdir)

    def path(self, *parts: str) -> str:
        return self.layout.path(*parts)

    # -- the sizes of the runs --------------------------------------------------------------
    def scales(self) -> list[int]:
        """Numbers of unlabelled videos of the self-training runs (the default one last)."""
        pool = len(self.data.unlabelled)
        if self.cfg.scale:
            bad = [n for n in self.cfg.scale if n > pool]
            if bad:
                raise ConfigError(f"scale: {bad} > the {pool} unlabelled videos available")
            return sorted(self.cfg.scale)
        n = self.cfg.pseudo.num_videos
        if n is not None and n > pool:
            raise ConfigError(f"pseudo.num_videos: {n} > the {pool} unlabelled videos available")
        return [pool if n is None else n]

    def default_scale(self) -> int:
        return self.scales()[-1]

    def rounds(self) -> list[int]:
        """The self-training rounds, 1 .. ``retrain.rounds``."""
        return list(range(1, self.cfg.retrain.rounds + 1))

    def unlabelled_ids(self, n: int) -> list[str]:
        return nested_subset(self.data.unlabelled, n, self.cfg.pseudo.subset_seed)

    # -- fingerprints ---------------------------------------------------------------------
    # The model, train and classifier sections enter as their changes from the selftrain
    # defaults, over the fixed dicts below: the shape these sections had when the fingerprints
    # were defined, so that work directories written since keep being reused. Those directories
    # hashed the values as written in the config; ``ints=True`` gives the fingerprint of
    # whole-number values written as integers (``model.regression_ranges=[[0,4],...]``), which
    # the stages accept as well (``fingerprints``).
    def fp_base(self, ints: bool = False) -> str:
        c, d = self.cfg, SelfTrainConfig()
        fp = {"data": self.data.source, "model": {**_FP_MODEL, **_changes(c.model, d.model, ints)},
              "train": {**_FP_TRAIN, **_changes(c.train, d.train, ints)}, "seed": c.seed,
              "max_seq_len": c.data.max_seq_len, "labelled": "base-class videos only"}
        crop = crop_settings(c.data)
        if crop != crop_settings(DataConfig()):  # absent without crops: directories made before the option
            fp["crop"] = crop
        if self.base_checkpoint:  # a given base model: its file's contents (absent otherwise)
            fp["base_checkpoint"] = self.base_checkpoint["sha256"]
        return fingerprint(fp)

    def pseudo_config(self, n: int):
        """The ``pseudo`` section of the runs on ``n`` unlabelled videos (threshold for ``n``)."""
        return self.cfg.pseudo.for_n(n)

    def fp_pseudo(self, n: int, round: int = 1, ints: bool = False) -> str:
        # the threshold enters as the one used for n (pseudo.threshold_by_n resolved), so a
        # directory made before that option existed keeps its fingerprint
        p = dataclasses.asdict(self.pseudo_config(n))
        for k in ("num_workers", "num_videos", "shard_size", "threshold_by_n"):
            p.pop(k)
        if round == 1:
            return fingerprint({"base": self.fp_base(ints), "pseudo": p, "n": n, "unl": self.data.source})
        return fingerprint({"teacher": self.fp_retrain(n, round - 1, ints), "pseudo": p, "n": n,
                            "round": round, "unl": self.data.source})

    def fp_retrain(self, n: int, round: int = 1, ints: bool = False) -> str:
        r = dataclasses.asdict(self.cfg.retrain)
        r.pop("rounds")  # a round does not depend on how many follow it
        if r["labelled_fraction"] == 0:  # the plain union has the fingerprint of a run without the option
            r.pop("labelled_fraction")
        if r["epoch_length"] == 0:  # epochs of the union's length: the fingerprint of a run without the option
            r.pop("epoch_length")
        return fingerprint({"pseudo": self.fp_pseudo(n, round, ints), "retrain": r})

    def fp_eval(self, ints: bool = False) -> str:
        e = self.cfg.eval
        return fingerprint({"eval": {"tiou_thresholds": list(e.tiou_thresholds), "batch_size": e.batch_size,
                                     "classifier": _changes(self.cfg.classifier, SelfTrainConfig().classifier, ints)},
                            "data": self.data.source})

    def fingerprints(self, fp: Callable[..., str], *args: Any) -> list[str]:
        """``fp(*args)`` and its ``ints=True`` variant (the first is the one recorded)."""
        out = [fp(*args)]
        alt = fp(*args, ints=True)
        return out if alt == out[0] else [*out, alt]

    # -- builders -------------------------------------------------------------------------
    def localizer_config(self):
        """The ``model`` section with ``input_dim`` set to the features' dimension."""
        return dataclasses.replace(self.cfg.model, input_dim=self.data.spec.feat_dim)

    def train_config(self, retrain: bool = False) -> TrainConfig:
        """The ``train`` section with the run's seed, device and progress; for ``retrain``,
        with the retraining's overrides (:func:`stovtal.config.retrain_train_overrides`)."""
        c = self.cfg
        over = retrain_train_overrides(c) if retrain else {}
        return TrainConfig(**{**dataclasses.asdict(c.train), "seed": c.seed, "device": c.device,
                              "progress": c.progress, **over})

    def new_model(self):
        from stovtal.models import ActionLocalizer

        return ActionLocalizer(self.localizer_config())

    def load_model(self, path: str, weights: str = "ema"):
        """An exported localizer (``base/model.pt``, ``retrain/n<N>/teacher.pt``) or a training
        state's ``weights`` (``ema`` or ``model``: the raw weights), on the device."""
        from stovtal.engine.checkpoint import load_model, load_weights

        model = self.new_model()
        load_weights(model, load_model(path, weights=weights).state_dict, path)
        return model.to(self.device).eval()

    def export_model(self, path: str, state_dict: Mapping[str, torch.Tensor], seconds: float,
                     meta: Mapping[str, Any] | None = None) -> None:
        """Write a localizer in the model format (:func:`stovtal.engine.checkpoint.save_model`)
        with the run config that ``python -m stovtal.infer`` needs to run it (and ``meta``)."""
        from stovtal.engine.checkpoint import save_model

        save_model(path, self.localizer_config(), dict(state_dict),
                   meta={"run_config": self.run_config(), "seconds": seconds, **(meta or {})})

    def run_config(self) -> dict[str, Any]:
        """The data, text, classifier and model settings of this run as a
        :class:`stovtal.config.Config` dict (paths absolute): what ``python -m stovtal.infer``
        reads from an exported model to run it on the same data and vocabulary."""
        d, c = self.data.spec, self.cfg
        return {
            "data": {
                "synthetic": False, "annotations": os.path.abspath(d.annotation_file), "feature_dir": d.feature_dir,
                "fps": float(d.grid.fps), "feature_stride": int(d.grid.feature_stride),
                "num_frames": int(d.grid.num_frames), "feat_dim": int(d.feat_dim), "max_seq_len": int(d.max_seq_len),
                "train_subset": d.train_subset, "val_subset": "", "test_subset": d.test_subset,
                "base_classes": list(d.base), "novel_classes": list(d.novel),
            },
            "eval": to_dict(c.eval),
            "text": {"kind": "npz", "npz": os.path.abspath(d.vocab_npz), "logit_scale": float(self.data.logit_scale)},
            "classifier": to_dict(c.classifier),
            "model": to_dict(self.localizer_config()),
            "train": {"device": c.device},
            "num_threads": c.num_threads,
        }

    def labelled_dataset(self):
        from stovtal.data import VideoFeatureDataset
        from stovtal.data.splits import partition_videos

        from .teacher import AGNOSTIC, class_agnostic

        # the videos whose actions are all of base classes (as stovtal.train), so that no novel
        # action is seen as an action, nor as background
        d = self.data.spec
        train = {vid: info for vid, info in self.data.annotations.items() if info.get("subset") == d.train_subset}
        kept = {vid: train[vid] for vid in partition_videos(train, d.base, d.novel)["base"]}
        if len(kept) < len(train):
            self.log(f"labelled set: {len(kept)} of the {len(train)} videos of subset {d.train_subset!r}; "
                     f"{len(train) - len(kept)} with a novel-class action or none are left out")
        db = class_agnostic(kept)
        if not db["database"]:
            raise ConfigError(f"no labelled video of subset {d.train_subset!r} has only base-class actions")
        return VideoFeatureDataset(db, d.feature_dir, [AGNOSTIC], d.grid, feat_dim=d.feat_dim,
                                   max_seq_len=d.max_seq_len, crop_ratio=d.crop_ratio,
                                   trunc_thresh=d.trunc_thresh, training=True, require_annotations=True)

    def unlabelled_set(self):
        from .pseudolabel import UnlabelledSet

        return UnlabelledSet(self.data.unlabelled, self.data.spec.unlabelled_feature_dir, self.data.spec.grid,
                             self.data.spec.feat_dim)


def make_context(cfg: SelfTrainConfig, workdir: str, log: Callable[[str], None] = print) -> Context:
    from stovtal.engine import resolve_device

    log = D.rank_zero_log(log)
    apply_threads(cfg.num_threads, log=log)  # first: before this run's own work adds to the load
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    if not D.is_main_process():
        cfg.progress = False
    with D.main_process_first():  # rank 0 generates the synthetic world, the others reuse it
        data = load_data(cfg, workdir, log)
    if not cfg.data.is_synthetic:
        cfg.data.feat_dim = data.spec.feat_dim
    base_checkpoint: dict[str, Any] = {}
    if cfg.base.checkpoint:
        from .basemodel import given_base_model

        cfg.model, base_checkpoint = given_base_model(cfg, data.spec.feat_dim)
        log(f"base model: {base_checkpoint['path']} (sha256 {base_checkpoint['sha256'][:16]}); "
            "the base stage copies it instead of training")
    return Context(cfg, workdir, data, D.local_device(resolve_device(cfg.device)), log,
                   base_checkpoint=base_checkpoint)


# --------------------------------------------------------------------------- stage bookkeeping


def _done(ctx: Context, out: str, stage_dir: str, fp: str | list[str], what: str) -> bool:
    """True if ``out`` exists and was made with fingerprint ``fp`` (or one of a list: the first
    is recorded for a new stage; error if another). Decided by rank 0 for all ranks."""
    if not D.is_main_process():
        return D.broadcast_object(None)
    return D.broadcast_object(_done_here(ctx, out, stage_dir, fp, what))


def _done_here(ctx: Context, out: str, stage_dir: str, fp: str | list[str], what: str) -> bool:
    with critical_section(ctx.workdir):  # --shard jobs arriving together: one writes, the others check
        return _check_stage(ctx, out, stage_dir, fp, what)


def _check_stage(ctx: Context, out: str, stage_dir: str, fp: str | list[str], what: str) -> bool:
    accepted = [fp] if isinstance(fp, str) else list(fp)
    pin(os.path.join(stage_dir, STAGE_FILE), {"fingerprint": accepted[0], "stage": what}, accepted,
        mismatch=lambda old: (f"{what} was made with a different configuration (fingerprint "
                              f"{old.get('fingerprint') if isinstance(old, dict) else None} != "
                              f"{accepted[0]}); use another --workdir or delete {stage_dir} to redo it"),
        error=ConfigError)
    if os.path.exists(out):
        ctx.log(f"[{what}] output exists, skipped: {out}")
        return True
    return False


# --------------------------------------------------------------------------- stages


def stage_base(ctx: Context) -> str:
    """Train the class-agnostic localizer on the labelled (base-class) videos; export EMA weights.
    With ``base.checkpoint``: write that file's weights as the base model instead."""
    from stovtal.data import collate_videos
    from stovtal.engine import Trainer
    from stovtal.engine.head_check import RegressionHeadCheck

    out_dir, out = ctx.layout.base_dir, ctx.layout.base_model
    if _done(ctx, out, out_dir, ctx.fingerprints(ctx.fp_base), "base"):
        return out
    if ctx.base_checkpoint:
        if D.is_main_process():
            _copy_base_model(ctx, out, out_dir)
        D.barrier()
        return out
    tcfg = ctx.train_config()
    from stovtal.engine import seed_everything

    seed_everything(tcfg.seed)
    model = ctx.new_model()
    labelled = ctx.labelled_dataset()
    check = RegressionHeadCheck(labelled, collate_videos, log=ctx.log)
    trainer = Trainer(model, labelled, tcfg, out_dir, collate_fn=collate_videos, log=ctx.log, hooks=[check])
    trainer.fit(resume=True)
    if D.is_main_process():
        ctx.export_model(out, trainer.ema.module.state_dict(), _training_seconds(trainer))
    D.barrier()
    return out


def _copy_base_model(ctx: Context, out: str, out_dir: str) -> None:
    """The given base model (checked by :func:`stovtal.selftrain.basemodel.given_base_model`)
    as the work directory's base model; its stage record says where it came from."""
    from stovtal.engine.checkpoint import load_model

    src = ctx.base_checkpoint
    ctx.export_model(out, load_model(src["path"]).state_dict, 0.0, meta={"base_checkpoint": src})
    rec_path = os.path.join(out_dir, STAGE_FILE)
    atomic_write_json(rec_path, {**read_json(rec_path), "from_checkpoint": src})
    ctx.log(f"[base] not trained: base model copied from {src['path']}")


def _run_name(n: int, round: int) -> str:
    return f"n={n}" if round == 1 else f"n={n} round {round}"


def stage_pseudolabel(ctx: Context, n: int, round: int = 1) -> str:
    """Pseudo-label ``n`` unlabelled videos: round 1 with the base model's EMA weights, round
    r > 1 with round r-1's self-trained teacher."""
    from .pseudolabel import pseudo_label_distributed
    lay, name = ctx.layout, _run_name(n, round)
    out_dir, out = lay.pseudo_dir(n, round), lay.pseudo_labels(n, round)
    if _done(ctx, out, out_dir, ctx.fingerprints(ctx.fp_pseudo, n, round), f"pseudolabel {name}"):
        return out
    if round == 1:
        model = ctx.load_model(_require(lay.base_model, "base"))
    else:
        model = ctx.load_model(_require(lay.teacher(n, round - 1), f"retrain {_run_name(n, round - 1)}"))
    db = pseudo_label_distributed(model, ctx.unlabelled_set(), ctx.unlabelled_ids(n), out_dir, ctx.pseudo_config(n),
                                  device=ctx.device, progress=ctx.cfg.progress, job=ctx.job,
                                  num_jobs=ctx.num_jobs, desc=f"pseudo-label {name}")
    if db is None:
        if ctx.num_jobs > 1:
            ctx.log(f"[pseudolabel {name}] job {ctx.job}/{ctx.num_jobs} finished its shards; shards of other "
                    "jobs are pending (the last job to finish writes pseudo_labels.json)")
            return out
        raise RuntimeError(f"{out_dir}: shards of other workers are still pending")
    ctx.log(f"[pseudolabel {name}] {db['info']['num_pseudo_labels']} pseudo-labels on "
            f"{db['info']['num_videos']} videos")
    return out


def stage_retrain(ctx: Context, n: int, round: int = 1) -> str:
    """Mean Teacher retraining on labelled + pseudo-labelled videos (the pseudo-labels of round
    ``round``); export the teacher. Every round starts from the same initialisation."""
    from stovtal.data import VideoFeatureDataset
    from stovtal.engine import seed_everything
    from stovtal.engine.checkpoint import check_state_dict, load_model

    from .pseudolabel import pseudo_label_distributed
    from .teacher import AGNOSTIC, PseudoLabelledSet, make_trainer

    name = _run_name(n, round)
    out_dir, out = ctx.layout.retrain_dir(n, round), ctx.layout.teacher(n, round)
    if _done(ctx, out, out_dir, ctx.fingerprints(ctx.fp_retrain, n, round), f"retrain {name}"):
        return out
    r = ctx.cfg.retrain
    lay = ctx.layout
    # "raw": the base run's final raw weights (its training state); else its exported EMA weights;
    # a given base model (base.checkpoint) has one set of weights, used either way
    raw = r.teacher_init == "raw" and not ctx.base_checkpoint
    if r.teacher_init == "raw" and ctx.base_checkpoint:
        ctx.log(f"[retrain {name}] teacher_init=raw: the given base model has one set of weights; the teacher "
                "starts from them")
    base_path = _require(lay.base_state if raw else lay.base_model, "base")
    base_state = load_model(base_path, weights="model" if raw else "ema").state_dict
    pl = read_json(_require(lay.pseudo_labels(n, round), f"pseudolabel {name}"))
    tcfg = ctx.train_config(retrain=True)
    seed_everything(tcfg.seed)
    student = ctx.new_model()
    check_state_dict(student, base_state, base_path)
    if r.student_init == "base":
        student.load_state_dict(base_state)
    d = ctx.data

    def make(db: Mapping[str, Any]):
        return VideoFeatureDataset({"database": dict(db)}, d.spec.unlabelled_feature_dir, [AGNOSTIC], d.spec.grid,
                                   feat_dim=d.spec.feat_dim, max_seq_len=d.spec.max_seq_len,
                                   crop_ratio=d.spec.crop_ratio, trunc_thresh=d.spec.trunc_thresh, training=True)

    def refresh(teacher: torch.nn.Module, epoch: int) -> Mapping[str, Any]:
        return pseudo_label_distributed(teacher, ctx.unlabelled_set(), ctx.unlabelled_ids(n),
                                        ctx.layout.refresh_dir(n, epoch, round), ctx.pseudo_config(n),
                                        device=ctx.device, progress=ctx.cfg.progress, desc=f"refresh e{epoch}")

    pseudo = PseudoLabelledSet(make, pl["database"])
    trainer = make_trainer(student, base_state, ctx.labelled_dataset(), pseudo, tcfg, out_dir,
                           teacher_decay=r.teacher_decay, consistency_weight=r.consistency_weight,
                           refresh_every=r.refresh_every, refresh=refresh,
                           labelled_fraction=r.labelled_fraction, epoch_length=r.epoch_length, log=ctx.log)
    trainer.fit(resume=True)
    if D.is_main_process():
        ctx.export_model(out, trainer.ema.module.state_dict(), _training_seconds(trainer))
    D.barrier()
    return out


def _training_seconds(trainer) -> float:
    """Seconds spent in training epochs, summed over every run that worked on this trainer's
    directory (a resumed run continues the sum; its epoch history travels in ``last.pt``)."""
    return float(sum(h.get("time_s", 0.0) for h in trainer.history))


def _require(path: str, stage: str) -> str:
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: run the {stage!r} stage first "
                                f"(python -m stovtal.selftrain --stage {stage.split()[0]})")
    return path


def teacher_eval_name(n: int, round: int = 1) -> str:
    """The ``eval/<name>.json`` of the self-trained teacher of round ``round`` on ``n`` videos."""
    return f"selftrained-{SelfTrainLayout.run_name(n, round)}"


def student_eval_name(n: int, round: int = 1) -> str:
    """The ``eval/<name>.json`` of the raw student of that retraining."""
    return f"student-{SelfTrainLayout.run_name(n, round)}"


def stage_eval(ctx: Context) -> dict[str, str]:
    """CB / CN / GZSL mAP of the base model and, for every size and round, of the self-trained
    teacher (the EMA weights, the exported model) and of the raw student (``last.pt``'s weights)."""
    from .evaluation import evaluate_model

    lay = ctx.layout
    # name: (file, weights, stage that makes it, fingerprint of the model (ints), tag)
    models = {"base": (lay.base_model, "ema", "base", lambda ints: ctx.fp_base(ints), None)}
    for r in ctx.rounds():
        for n in ctx.scales():
            def fp(ints: bool, n: int = n, r: int = r) -> str:
                return ctx.fp_retrain(n, r, ints)
            models[teacher_eval_name(n, r)] = (lay.teacher(n, r), "ema", f"retrain {_run_name(n, r)}", fp, None)
            models[student_eval_name(n, r)] = (lay.retrain_state(n, r), "model", f"retrain {_run_name(n, r)}",
                                               fp, "raw student")
    outs = {}
    for name, (ckpt, weights, stage, model_fp, tag) in models.items():
        out = lay.eval_result(name)
        outs[name] = out
        fps = list(dict.fromkeys(fingerprint([ctx.fp_eval(ints), model_fp(ints)] + ([tag] if tag else []))
                                 for ints in (False, True)))
        if _done(ctx, out, lay.eval_stage_dir(name), fps, f"eval {name}"):
            continue
        model = ctx.load_model(_require(ckpt, stage), weights=weights)
        res = evaluate_model(model, ctx, desc=f"eval {name}")  # None on ranks > 0
        if res is None:
            continue
        atomic_write_json(out, res, indent=1)
        ctx.log(f"[eval {name}] " + ", ".join(f"{k} {100 * res[k]['average_mAP']:.2f}" for k in ("CB", "CN", "GZSL")))
    return outs


def stage_report(ctx: Context) -> str:
    from .report import write_report

    out = ctx.layout.report
    if not D.is_main_process():
        return out
    if os.path.exists(out) and os.path.exists(ctx.layout.results):
        prev = read_json(ctx.layout.results)
        # a run with more sizes or rounds in the same directory gets a new report
        if ([r["num_unlabelled"] for r in prev.get("scale", [])] == ctx.scales()
                and prev.get("rounds", 1) == len(ctx.rounds())):
            ctx.log(f"[report] output exists, skipped: {out}")
            return out
    return write_report(ctx)


def run_stage(ctx: Context, stage: str) -> None:
    if stage == "base":
        stage_base(ctx)
    elif stage == "pseudolabel":
        for n in ctx.scales():
            stage_pseudolabel(ctx, n)
    elif stage == "retrain":
        for r in ctx.rounds():
            for n in ctx.scales():
                if r > 1:
                    stage_pseudolabel(ctx, n, r)
                stage_retrain(ctx, n, r)
    elif stage == "eval":
        stage_eval(ctx)
    elif stage == "report":
        stage_report(ctx)
    else:
        raise ValueError(f"unknown stage {stage!r}; choose from {STAGES}")


def run_pipeline(ctx: Context, stages: tuple[str, ...] = STAGES) -> None:
    for stage in stages:
        t0 = time.time()
        run_stage(ctx, stage)
        D.barrier()  # a stage's outputs (written by rank 0) are complete before the next starts
        ctx.log(f"[{stage}] done in {time.time() - t0:.1f} s")
