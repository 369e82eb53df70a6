"""The one configuration module: composition, keys of earlier versions, validation naming keys,
and fingerprints that keep earlier work directories usable."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from stovtal.config import (
    Config,
    ConfigError,
    DataConfig,
    FeelConfig,
    SelfTrainConfig,
    TrainConfig,
    load,
    validate,
)


def test_apps_share_the_component_types():
    st, feel, train = SelfTrainConfig(), FeelConfig(), Config()
    assert type(st.data) is type(feel.data) is type(train.data) is DataConfig
    assert type(st.train) is type(feel.train) is type(train.train) is TrainConfig
    assert type(st.eval) is type(feel.eval) is type(train.eval)
    assert type(st.model) is type(train.model)


def test_config_module_is_a_leaf():
    # only the models' config dataclasses (and what the models package imports) come in
    code = ("import sys, stovtal.config; bad = [m for m in sys.modules if m.startswith(('stovtal.engine', "
            "'stovtal.selftrain', 'stovtal.feel', 'stovtal.train', 'stovtal.infer'))]; print(bad); assert not bad")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(("schema", "old", "new", "attr"), [
    (Config, "data.annotation_file=/a.json", "data.annotations", ("data", "annotations")),
    (Config, "data.tiou_thresholds=[0.5]", "eval.tiou_thresholds", ("eval", "tiou_thresholds")),
    (Config, "data.batch_size_eval=3", "eval.batch_size", ("eval", "batch_size")),
    (SelfTrainConfig, "eval.classifier.topk=2", "classifier.topk", ("classifier", "topk")),
    (SelfTrainConfig, "train.grad_clip=2.0", "train.clip_grad", ("train", "clip_grad")),
    (FeelConfig, "data.synthetic.num_web=40", "data.world.num_web", ("data", "world")),
    (FeelConfig, "data.eval_subset=val", "data.test_subset", ("data", "test_subset")),
    (FeelConfig, "train.max_seq_len=64", "data.max_seq_len", ("data", "max_seq_len")),
    (FeelConfig, "tiou_thresholds=[0.5]", "eval.tiou_thresholds", ("eval", "tiou_thresholds")),
])
def test_old_override_keys_are_mapped_with_a_warning(schema, old, new, attr):
    with pytest.warns(FutureWarning, match=new.replace(".", r"\.")):
        cfg = load(schema, None, [old])
    value = getattr(getattr(cfg, attr[0]), attr[1])
    assert value != getattr(getattr(schema(), attr[0]), attr[1])


def test_old_feel_yaml_loads_as_the_new_one(tmp_path):
    old = tmp_path / "old.yaml"
    old.write_text(textwrap.dedent("""\
        data:
          annotations: /x/a.json
          eval_subset: test
          classes: thumos14
          synthetic: {num_web: 50}
        train: {epochs: 3, grad_clip: 0.5, max_seq_len: 100}
        tiou_thresholds: [0.2, 0.4]
    """))
    new = tmp_path / "new.yaml"
    new.write_text(textwrap.dedent("""\
        data:
          annotations: /x/a.json
          test_subset: test
          vocabulary: thumos14
          max_seq_len: 100
          world: {num_web: 50}
        train: {epochs: 3, clip_grad: 0.5}
        eval: {tiou_thresholds: [0.2, 0.4]}
    """))
    with pytest.warns(FutureWarning, match="old.yaml: the key 'data.eval_subset' is deprecated"):
        a = load(FeelConfig, str(old))
    b = load(FeelConfig, str(new))
    assert a.data.world["num_web"] == 50 and a.data.world["num_test"] == 100  # merged into the defaults
    assert a == b


@pytest.mark.parametrize(("schema", "override", "key"), [
    (SelfTrainConfig, "retrain.train={epochs: 0}", "retrain.train.epochs"),
    (SelfTrainConfig, "train.seed=3", "train.seed"),
    (SelfTrainConfig, "pseudo.threshold=1.5", "pseudo.threshold"),
    (SelfTrainConfig, "eval.tiou_thresholds=[0.5,1.5]", "eval.tiou_thresholds"),
    (SelfTrainConfig, "data.fps=0", "data.fps"),
    (FeelConfig, "iis.p0=0", "iis.p0"),
    (FeelConfig, "cluster.lam=1.5", "cluster.lam"),
    (FeelConfig, "iterations=0", "iterations"),
    (Config, "data.max_seq_len=0", "data.max_seq_len"),
    (Config, "eval.batch_size=0", "eval.batch_size"),
    (Config, "data.crop_ratio=[0.9]", "data.crop_ratio"),
    (Config, "data.crop_ratio=[1.0,0.9]", "data.crop_ratio"),
    (SelfTrainConfig, "data.crop_ratio=[0,0.5]", "data.crop_ratio"),
    (SelfTrainConfig, "data.trunc_thresh=0", "data.trunc_thresh"),
    (Config, "data.trunc_thresh=1.2", "data.trunc_thresh"),
    (FeelConfig, "data.crop_ratio=[0.9,1.0]", "data.crop_ratio"),
])
def test_validate_names_the_dotted_key(schema, override, key):
    with pytest.raises(ConfigError, match=rf"^{key.replace('.', r'[.]')}: "):
        validate(load(schema, None, [override]), check_paths=False)


def test_component_checks_run_when_built():
    with pytest.raises(ConfigError, match=r"^train\.lr: must be > 0"):
        TrainConfig(lr=0.0)
    with pytest.raises(ConfigError, match=r"^train\.epochs"):
        load(FeelConfig, None, ["train.epochs=0"])


def test_unknown_keys_and_bad_types_are_errors(tmp_path):
    with pytest.raises(ConfigError, match="nope"):
        load(SelfTrainConfig, None, ["pseudo.nope=1"])
    with pytest.raises(ConfigError, match="retrain.train"):
        validate(load(SelfTrainConfig, None, ["retrain.train={nope: 1}"]))
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="bad.yaml: a config must be a mapping"):
        load(FeelConfig, str(bad))
