"""The open-vocabulary evaluator shared by train, infer and selftrain."""

import pytest
import torch
from torch import nn

from stovtal.config import DataConfig
from stovtal.data import VideoFeatureDataset, load_annotations, load_embeddings
from stovtal.data.resolve import resolve_data
from stovtal.engine import evaluation as E
from stovtal.models.classifier import ClassifierConfig, OpenVocabClassifier, Vocabulary

TIOUS = [0.3, 0.5, 0.7]
WORLD = {"seed": 5, "feat_dim": 32, "num_train": 2, "num_web": 1, "num_test": 12, "snippets_range": [30, 50]}


class GroundTruthLocalizer(nn.Module):
    """Proposes exactly the ground-truth segments of each video (score 1), then a decoy."""

    def __init__(self, database):
        super().__init__()
        self.database = database
        self.dummy = nn.Parameter(torch.zeros(1))

    def predict(self, batch):
        out = []
        for vid, dur in zip(batch["video_id"], batch["duration"], strict=True):
            segs = [a["segment"] for a in self.database[vid]["annotations"]]
            segs.append([0.0, float(dur) * 0.01])
            scores = [1.0] * (len(segs) - 1) + [0.01]
            out.append({"segments": torch.tensor(segs, dtype=torch.float32),
                        "scores": torch.tensor(scores, dtype=torch.float32)})
        return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    spec = resolve_data(DataConfig(synthetic=True, world=WORLD), world_dir=str(tmp_path_factory.mktemp("w")))
    test = {v: i for v, i in load_annotations(spec.annotation_file)["database"].items() if i["subset"] == "test"}
    ds = VideoFeatureDataset({"database": test}, spec.feature_dir, spec.classes, spec.grid)
    names, emb = load_embeddings(spec.vocab_npz)
    return spec, test, ds, Vocabulary(list(names), emb, 100.0)


def _evaluate(setup, **kw):
    spec, test, ds, vocab = setup
    return E.evaluate_localizer(GroundTruthLocalizer(test), ds, test, OpenVocabClassifier(ClassifierConfig()), vocab,
                                spec.base, spec.novel, TIOUS, batch_size=5, **kw)


def test_perfect_proposals_score_one_as_a_class_agnostic_detector(setup):
    res = _evaluate(setup, class_agnostic=True, localization=True)
    assert res["class_agnostic"]["average_mAP"] == pytest.approx(1.0)
    assert res["summary"]["class_agnostic"] == res["class_agnostic"]["average_mAP"]
    parts = res["partition"]
    assert sum(parts.values()) == len(setup[1])
    for part in ("base", "novel"):
        if parts[part]:
            assert res["localization"][part]["recall@1xGT"] == pytest.approx(1.0)
            assert set(res["localization"][part]) == set(E.LOCALIZATION_KEYS)
    for key in ("CB", "CN", "GZSL"):
        if res[key] is not None:
            assert 0.0 <= res[key]["average_mAP"] <= 1.0
            assert res["summary"][key] == res[key]["average_mAP"]
    # without the options, neither part is computed
    plain = _evaluate(setup)
    assert "class_agnostic" not in plain and "localization" not in plain
    assert plain["GZSL"] == res["GZSL"]


def test_two_ranks_give_the_one_process_result(setup, monkeypatch):
    """Each rank predicts its strided share; rank 0 gathers and scores; the others get None."""
    one = _evaluate(setup, localization=True)
    n = len(setup[2])
    parts = {}

    def gather_from_rank1(part, dst=0):
        parts[1] = dict(part)
        return None

    def gather_on_rank0(part, dst=0):
        assert not parts[1].keys() & part.keys()
        return {**parts[1], **part}  # rank 1's videos first: the evaluator restores the order

    monkeypatch.setattr(E.D, "rank_indices", lambda k: list(range(1, k, 2)))
    monkeypatch.setattr(E.D, "gather_dicts", gather_from_rank1)
    assert _evaluate(setup, localization=True) is None
    assert len(parts[1]) == n // 2
    monkeypatch.setattr(E.D, "rank_indices", lambda k: list(range(0, k, 2)))
    monkeypatch.setattr(E.D, "gather_dicts", gather_on_rank0)
    assert _evaluate(setup, localization=True) == one
