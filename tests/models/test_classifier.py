import math

import pytest
import torch

import stovtal  # noqa: F401
from stovtal.models import (
    ClassifierConfig,
    NMSConfig,
    OpenVocabClassifier,
    Vocabulary,
    fuse_scores,
    to_results,
)
from stovtal.models.postprocess import grid_to_seconds, seconds_to_grid

META = {"fps": [30.0], "feat_stride": [4], "feat_num_frames": [16]}


def test_grid_seconds_round_trip_and_convention():
    # snippet i covers frames [4i, 4i + 16): its centre is (4i + 8) / 30 s
    assert grid_to_seconds(torch.tensor([3.0]), 30.0, 4, 16).item() == pytest.approx(20 / 30)
    x = torch.rand(10, 2) * 100
    assert torch.allclose(seconds_to_grid(grid_to_seconds(x, 25.0, 8, 16), 25.0, 8, 16), x, atol=1e-5)


def _inside_seconds(first_last: torch.Tensor, fps=30.0, stride=4, nf=16) -> torch.Tensor:
    """Segment (s) whose fully-inside snippets are ``[first, last]``: starts at the first
    snippet's first frame, ends at the last snippet's last frame."""
    return torch.stack([first_last[:, 0] * stride / fps, (first_last[:, 1] * stride + nf) / fps], 1)


def test_pooling_is_the_mean_over_the_snippets_inside_the_segment():
    # feature value = snippet index, so the mean over snippets [a, b] is (a + b) / 2
    T = 50
    feats = torch.arange(T, dtype=torch.float32).expand(1, 1, T).repeat(1, 2, 1)
    masks = torch.ones(1, T, dtype=torch.bool)
    grid = torch.tensor([[10.0, 20.0], [3.0, 4.0], [0.0, 49.0], [7.25, 30.5]])
    secs = _inside_seconds(grid.double()).float()
    for roi_size in (1, 4):
        clf = OpenVocabClassifier(ClassifierConfig(roi_size=roi_size))
        pooled = clf.pool_segments(feats, masks, [secs], META)[0]
        assert torch.allclose(pooled[:, 0], grid.mean(dim=1), atol=1e-4)
    # a segment from centre 10 to centre 20 holds snippets 11.5 .. 18.5 fully (16-frame
    # windows, stride 4: 1.5 snippets less at each end)
    pooled = OpenVocabClassifier().pool_segments(
        feats, masks, [grid_to_seconds(torch.tensor([[10.0, 20.0]]), 30.0, 4, 16)], META)[0]
    assert pooled[0, 0].item() == pytest.approx(15.0, abs=1e-4)
    # context widening: 50% of the length on both sides of [10, 20] -> [5, 25], same centre
    clf = OpenVocabClassifier(ClassifierConfig(context=0.5))
    wide = clf.pool_segments(feats, masks, [secs[:1]], META)[0]
    assert wide[0, 0].item() == pytest.approx(15.0, abs=1e-4)


def test_pooling_matches_stovtals_roi_align_coordinates():
    """Against torchvision's 2-D RoI-Align on boxes built as STOV-TAL's ``roi_CLIP_cls`` does
    (start = t * fps / stride, end = (t * fps + stride - window) / stride, aligned)."""
    from torchvision.ops import roi_align

    g = torch.Generator().manual_seed(0)
    T, C = 120, 5
    feats = torch.randn(1, C, T, generator=g, dtype=torch.float64)
    masks = torch.ones(1, T, dtype=torch.bool)
    for fps, stride, nf in ((30.0, 4, 16), (25.0, 16, 16), (30.0, 8, 32)):
        meta = {"fps": [fps], "feat_stride": [stride], "feat_num_frames": [nf]}
        start = torch.rand(20, generator=g, dtype=torch.float64) * (T * stride * 0.6) / fps
        length = (nf + stride + torch.rand(20, generator=g, dtype=torch.float64) * 30 * stride) / fps
        secs = torch.stack([start, start + length], 1)
        for roi_size in (1, 3):
            ours = OpenVocabClassifier(ClassifierConfig(roi_size=roi_size)).pool_segments(
                feats, masks, [secs], meta)[0]
            s = secs[:, 0] * fps / stride
            e = (secs[:, 1] * fps + stride - nf) / stride
            boxes = torch.stack([s, torch.zeros_like(s), e, torch.ones_like(s)], 1)
            ref = roi_align(feats[:, :, None], [boxes], (1, roi_size), aligned=True).mean(dim=(2, 3))
            torch.testing.assert_close(ours, ref, rtol=0, atol=1e-9)


def test_pooling_stays_inside_the_valid_snippets():
    feats = torch.ones(2, 3, 40)
    feats[0, :, 20:] = 100.0  # padding garbage of a 20-snippet video
    masks = torch.zeros(2, 40, dtype=torch.bool)
    masks[0, :20] = True
    masks[1] = True
    meta = {k: v * 2 for k, v in META.items()}
    seg = grid_to_seconds(torch.tensor([[15.0, 35.0]]), 30.0, 4, 16)
    pooled = OpenVocabClassifier().pool_segments(feats, masks, [seg, seg], meta)
    assert torch.allclose(pooled[0], torch.ones(1, 3))


def test_class_probabilities_follow_cosine_similarity():
    text = torch.eye(4)
    vocab = Vocabulary(["a", "b", "c", "d"], text * 3.0, logit_scale=100.0)
    assert torch.allclose(vocab.embeddings.norm(dim=1), torch.ones(4))
    clf = OpenVocabClassifier()
    emb = torch.nn.functional.normalize(torch.tensor([[1.0, 0.2, 0.0, 0.0], [0.0, 0.0, 0.1, 1.0]]), dim=1)
    probs = clf.class_probs(emb, vocab)
    ref = torch.softmax(100.0 * emb @ text.T, dim=1)
    assert torch.allclose(probs, ref) and probs.argmax(1).tolist() == [0, 3]
    with pytest.raises(ValueError, match="dims"):
        clf.class_probs(torch.ones(1, 5), vocab)


def test_vocabulary_validation_and_subset():
    with pytest.raises(ValueError, match="duplicate"):
        Vocabulary(["a", "a"], torch.eye(2))
    with pytest.raises(ValueError, match="embeddings must be"):
        Vocabulary(["a", "b"], torch.eye(3))
    with pytest.raises(ValueError, match="zeros"):
        Vocabulary(["a", "b"], torch.zeros(2, 2))
    with pytest.raises(ValueError, match="finite"):
        Vocabulary(["a"], torch.tensor([[float("nan"), 1.0]]))
    with pytest.raises(ValueError, match="at least one"):
        Vocabulary([], torch.zeros(0, 2))
    v = Vocabulary(["a", "b", "c"], torch.eye(3))
    sub = v.subset(["c", "a"])
    assert sub.names == ["c", "a"] and torch.equal(sub.embeddings, torch.eye(3)[[2, 0]])
    with pytest.raises(KeyError, match="zzz"):
        v.subset(["zzz"])


def test_fusion_rules():
    a, c = torch.tensor([0.25, 0.81]), torch.tensor([1.0, 0.01])
    assert torch.allclose(fuse_scores(a, c, "geometric"), torch.tensor([0.5, 0.09]))
    assert torch.allclose(fuse_scores(a, c, "arithmetic"), torch.tensor([0.625, 0.41]))
    assert torch.equal(fuse_scores(a, c, "actionness"), a)
    assert torch.equal(fuse_scores(a, c, "class"), c)
    with pytest.raises(ValueError):
        ClassifierConfig(fusion="max")


def test_classify_topk_fusion_and_output_format():
    vocab = Vocabulary(["run", "jump", "swim"], torch.eye(3), logit_scale=10.0)
    clf = OpenVocabClassifier(ClassifierConfig(topk=2, nms=NMSConfig(voting_threshold=0.0)))
    segs = torch.tensor([[1.0, 3.0], [10.0, 12.0]])
    act = torch.tensor([0.9, 0.4])
    emb = torch.nn.functional.normalize(torch.tensor([[1.0, 0.5, 0.0], [0.0, 0.0, 1.0]]), dim=1)
    out = clf.classify(segs, act, emb, vocab)
    probs = clf.class_probs(emb, vocab)
    assert out["segments"].shape[0] == 4  # 2 segments x top-2 classes, different labels never suppress
    expect = sorted(
        (math.sqrt(act[i].item() * probs[i, k].item()), i, k) for i in range(2) for k in probs[i].topk(2).indices.tolist()
    )[::-1]
    assert out["scores"].tolist() == pytest.approx([e[0] for e in expect], rel=1e-5)
    assert out["labels"].tolist() == [e[2] for e in expect]
    res = to_results({"vid": out}, vocab)
    first = res["results"]["vid"][0]
    assert first["label"] == "run" and first["segment"] == pytest.approx([1.0, 3.0])
    assert set(first) == {"segment", "label", "score"}
    empty = clf.classify(torch.zeros(0, 2), torch.zeros(0), torch.zeros(0, 3), vocab)
    assert empty["segments"].shape == (0, 2)


def test_bad_segments_are_rejected():
    clf = OpenVocabClassifier()
    feats, masks = torch.ones(1, 3, 10), torch.ones(1, 10, dtype=torch.bool)
    with pytest.raises(ValueError, match="NaN"):
        clf.pool_segments(feats, masks, [torch.tensor([[0.0, float("nan")]])], META)
    with pytest.raises(ValueError, match="segment lists"):
        clf.pool_segments(feats, masks, [], META)
    with pytest.raises(ValueError, match=r"\[K, 2\]"):
        clf.pool_segments(feats, masks, [torch.zeros(3)], META)


def test_adapter_is_off_by_default_and_starts_as_identity():
    assert OpenVocabClassifier().adapter is None
    assert sum(p.numel() for p in OpenVocabClassifier().parameters()) == 0
    clf = OpenVocabClassifier(ClassifierConfig(adapter=True), embed_dim=3)
    feats = torch.randn(1, 3, 20)
    masks = torch.ones(1, 20, dtype=torch.bool)
    seg = [grid_to_seconds(torch.tensor([[2.0, 9.0]]), 30.0, 4, 16)]
    a = clf.embed_segments(feats, masks, seg, META)[0]
    b = torch.nn.functional.normalize(clf.pool_segments(feats, masks, seg, META)[0], dim=1)
    assert torch.allclose(a, b, atol=1e-6)
