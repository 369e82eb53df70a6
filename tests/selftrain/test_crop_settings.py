"""selftrain's training sets (base and retraining) take the data section's crop settings,
which enter the stages' fingerprints only when they differ from the defaults."""

from __future__ import annotations

from stovtal.selftrain.config import load_config
from stovtal.selftrain.stages import make_context

from .conftest import TINY


def test_crop_settings_reach_the_training_sets_and_the_fingerprints(tmp_path):
    def ctx(*extra):
        return make_context(load_config(None, [*TINY, *extra]), str(tmp_path), log=lambda s: None)

    default, explicit = ctx(), ctx("data.trunc_thresh=0.5")
    crop = ctx("data.crop_ratio=[0.6,0.8]", "data.trunc_thresh=0.4")
    # work directories made before the option existed keep their fingerprints
    assert default.fp_base() == explicit.fp_base()
    assert crop.fp_base() != default.fp_base() and crop.fp_retrain(16) != default.fp_retrain(16)
    assert ctx("data.trunc_thresh=0.4").fp_base() not in (default.fp_base(), crop.fp_base())

    labelled = crop.labelled_dataset()
    rule = labelled.crop_rule
    assert (rule.crop_ratio, rule.trunc_thresh, rule.offset) == ((0.6, 0.8), 0.4, crop.data.grid.offset)
    lengths = [labelled[i]["feats"].shape[1] for i in range(len(labelled))]
    full = [default.labelled_dataset()[i]["feats"].shape[1] for i in range(len(labelled))]
    assert all(round(0.6 * t) <= n <= round(0.8 * t) for n, t in zip(lengths, full, strict=True))
