"""The shipped ActivityNet / FineAction / THUMOS14 configs carry the authors' localizer settings
(HYUNJS/STOV-TAL configs/anet13_split/anet13_vifi_prop_K400.yaml,
configs/fineaction/fineaction_ViFiCLIP_prop_K400.yaml, configs/thumos14/thumos_ViFiCLIP_prop_K400.yaml;
ActionFormer configs/thumos_i3d.yaml)."""

from __future__ import annotations

import pytest

from stovtal.config import load_config


def _cfg(name):
    import os

    return load_config(os.path.join(os.path.dirname(__file__), "..", "..", "stovtal", "configs", f"{name}.yaml"))


def test_activitynet_is_the_authors():
    c = _cfg("activitynet")
    m = c.model
    assert (m.embed_dim, m.head_dim, m.num_heads) == (256, 256, 4)
    assert list(m.window) == [7, 7, 7, 7, 7, -1] and m.use_abs_pe and not m.use_rel_pe
    assert (m.max_seq_len, m.max_buffer_len_factor, c.data.max_seq_len) == (192, 1.0, 192)
    assert (m.label_smoothing, m.reg_loss_weight, m.loss_normalizer_init) == (0.1, 2.0, 200.0)
    assert (m.nms.max_keep, m.nms.sigma, m.nms.voting_threshold, m.nms.min_score) == (100, 0.75, 0.9, 0.001)
    assert (m.pre_nms_topk, m.min_duration) == (2000, 0.001)
    t = c.train
    assert (t.lr, t.epochs, t.warmup_epochs, t.batch_size, t.weight_decay, t.clip_grad) == (1e-4, 15, 5, 16, 0.05, 1.0)
    assert (c.data.crop_ratio, c.data.trunc_thresh) == ([0.9, 1.0], 0.5)


def test_fineaction_is_the_authors():
    c = _cfg("fineaction")
    m = c.model
    assert (c.data.feature_stride, c.data.num_frames, c.data.fps, c.data.max_seq_len) == (4, 16, 30.0, 2304)
    assert m.window == 19 and m.max_seq_len == 2304 and m.max_buffer_len_factor == 28.0 and not m.use_abs_pe
    assert (m.embed_dim, m.loss_normalizer_init, m.nms.voting_threshold, m.nms.max_keep) == (512, 100.0, 0.7, 200)
    assert (c.train.lr, c.train.batch_size, c.train.min_lr_ratio) == (1e-4, 2, pytest.approx(0.1))
    assert (c.data.crop_ratio, c.data.trunc_thresh) == ([0.9, 1.0], 0.5)


def test_thumos14_is_the_authors():
    c = _cfg("thumos14")
    assert (c.data.crop_ratio, c.data.trunc_thresh, c.data.max_seq_len) == ([0.9, 1.0], 0.5, 2304)
    m = c.model
    assert m.window == 19 and m.max_seq_len == 2304 and m.embed_dim == 512 and m.loss_normalizer_init == 100.0
    assert (m.nms.voting_threshold, m.nms.max_keep, m.pre_nms_topk, m.proj_drop, m.path_drop) == (0.7, 200, 2000, 0.1, 0.1)
