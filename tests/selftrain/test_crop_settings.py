"""selftrain's training sets (base and retraining) take the data section's crop settings,
which enter the stages' fingerprints unless no crop is configured (as before the option)."""

from __future__ import annotations

from stovtal.selftrain.config import load_config
from stovtal.selftrain.stages import make_context

from .conftest import TINY


def test_crop_settings_reach_the_training_sets_and_the_fingerprints(tmp_path):
    def ctx(*extra):
        return make_context(load_config(None, [*TINY, *extra]), str(tmp_path), log=lambda s: None)

    default, explicit = ctx(), ctx("data.crop_ratio=[0.9,1.0]", "data.trunc_thresh=0.5")
    none, none_explicit = ctx("data.crop_ratio=null"), ctx("data.crop_ratio=null", "data.trunc_thresh=0.5")
    crop = ctx("data.crop_ratio=[0.6,0.8]", "data.trunc_thresh=0.4")
    assert default.cfg.data.crop_ratio == [0.9, 1.0]  # selftrain's default: the authors' crops
    assert default.fp_base() == explicit.fp_base()
    assert none.fp_base() == none_explicit.fp_base() != default.fp_base()
    assert crop.fp_base() not in (default.fp_base(), none.fp_base())
    assert crop.fp_retrain(16) != default.fp_retrain(16)

    labelled = crop.labelled_dataset()
    rule = labelled.crop_rule
    assert (rule.crop_ratio, rule.trunc_thresh, rule.offset) == ((0.6, 0.8), 0.4, crop.data.spec.grid.offset)
    lengths = [labelled[i]["feats"].shape[1] for i in range(len(labelled))]
    full = [none.labelled_dataset()[i]["feats"].shape[1] for i in range(len(labelled))]
    assert all(round(0.6 * t) <= n <= round(0.8 * t) for n, t in zip(lengths, full, strict=True))
