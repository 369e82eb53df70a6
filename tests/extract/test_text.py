"""Text encoders and `python -m stovtal.text encode`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from stovtal.models import NpzTextEncoder, OpenClipTextEncoder
from stovtal.models.text_encoders import format_class_name, resolve_templates, save_text_embeddings
from stovtal.text.__main__ import main as text_main

NAMES = ["BaseballPitch", "high jump", "Playing guitarra", "braid hair"]


@pytest.fixture(scope="module")
def encoder(tiny_clip):
    return OpenClipTextEncoder(tiny_clip[0], tiny_clip[1], device="cpu")


def test_default_template_is_the_name(encoder, tiny_clip):
    import open_clip

    emb = encoder.encode(NAMES)
    assert emb.dtype == torch.float32 and emb.shape == (4, 16)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(4))
    # independent path: open_clip's own model + tokenizer
    model, _, _ = open_clip.create_model_and_transforms("tiny-clip-test", pretrained=tiny_clip[1])
    with torch.no_grad():
        ref = model.encode_text(open_clip.get_tokenizer("tiny-clip-test")(NAMES), normalize=True)
    torch.testing.assert_close(emb, ref, atol=1e-5, rtol=1e-5)
    assert encoder.logit_scale == pytest.approx(float(model.logit_scale.detach().exp()))
    assert encoder.embed_dim == 16
    # order follows the request; names are encoded independently of their batch
    torch.testing.assert_close(encoder.encode(NAMES[::-1]), emb.flip(0), atol=1e-6, rtol=0)


def test_templates_are_averaged_then_renormalised(tiny_clip):
    ts = ["a video of a person {}.", "{} in a clip"]
    multi = OpenClipTextEncoder(tiny_clip[0], tiny_clip[1], templates=ts, batch_size=3)
    single = [OpenClipTextEncoder(tiny_clip[0], tiny_clip[1], templates=[t]) for t in ts]
    parts = torch.stack([s.encode(NAMES) for s in single])
    ref = parts.mean(0)
    ref = ref / ref.norm(dim=1, keepdim=True)
    torch.testing.assert_close(multi.encode(NAMES), ref, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(parts[0], parts[1], atol=1e-3)  # the templates do matter


def test_template_and_name_validation(encoder):
    assert resolve_templates(None) == ("{}",)
    assert len(resolve_templates("video")) > 1
    for bad in ("no placeholder", ["{} and {}"], []):
        with pytest.raises(ValueError, match="template"):
            resolve_templates(bad)
    assert format_class_name("BaseballPitch", "natural") == "baseball pitch"
    assert format_class_name("CleanAndJerk", "natural") == "clean and jerk"
    assert format_class_name("Playing_guitarra", "natural") == "playing guitarra"
    with pytest.raises(ValueError, match="at least one"):
        encoder.encode([])
    with pytest.raises(ValueError, match="non-empty"):
        encoder.encode(["ok", "  "])
    with pytest.raises(TypeError, match="list"):
        encoder.encode("BaseballPitch")


def test_no_hub_and_bad_checkpoints(tmp_path, tiny_clip):
    with pytest.raises(ValueError, match="hub"):
        OpenClipTextEncoder("hf-hub:laion/whatever", tiny_clip[1])
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        OpenClipTextEncoder(tiny_clip[0], tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="unknown open_clip model"):
        OpenClipTextEncoder("ViT-Nope-99", tiny_clip[1])
    # weights of another architecture: strict loading fails, naming the file
    other = json.loads(open(tiny_clip[0]).read())
    other["embed_dim"] = 8
    cfg = tmp_path / "tiny-other.json"
    cfg.write_text(json.dumps(other))
    with pytest.raises(
        RuntimeError, match="tiny.pt: cannot load as weights of open_clip model 'tiny-other'"
    ):
        OpenClipTextEncoder(str(cfg), tiny_clip[1])


def test_cli_roundtrip_through_npz(tmp_path, tiny_clip, encoder):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(NAMES) + "\n")
    out = tmp_path / "emb.npz"
    rc = text_main(
        [
            "encode",
            "--vocab",
            str(vocab),
            "--model",
            tiny_clip[0],
            "--checkpoint",
            tiny_clip[1],
            "--out",
            str(out),
            "--template",
            "a video of a person {}.",
            "--template",
            "{}",
        ]
    )
    assert rc == 0
    npz = NpzTextEncoder(out)
    direct = OpenClipTextEncoder(
        tiny_clip[0], tiny_clip[1], templates=["a video of a person {}.", "{}"]
    )
    torch.testing.assert_close(
        npz.encode(NAMES[::-1]), direct.encode(NAMES[::-1]), atol=1e-6, rtol=0
    )
    assert npz.logit_scale == pytest.approx(direct.logit_scale)
    assert npz.names == NAMES and npz.embed_dim == 16
    with np.load(out) as z:
        assert str(z["templates"]) == "a video of a person {}.\n{}"


def test_cli_errors(tmp_path, tiny_clip, capsys):
    base = [
        "encode",
        "--model",
        tiny_clip[0],
        "--checkpoint",
        tiny_clip[1],
        "--out",
        str(tmp_path / "o.npz"),
    ]
    assert text_main([*base, "--vocab", str(tmp_path / "nope.txt")]) == 2
    assert "nope.txt: vocabulary file not found" in capsys.readouterr().err
    dup = tmp_path / "dup.txt"
    dup.write_text("a\nb\na\n")
    assert text_main([*base, "--vocab", str(dup)]) == 2
    assert "duplicate class names ['a']" in capsys.readouterr().err


def test_cli_shipped_vocabulary(tmp_path, tiny_clip):
    vocab = pytest.importorskip("stovtal.data.vocab")
    out = tmp_path / "thumos.npz"
    assert (
        text_main(
            [
                "encode",
                "--vocab",
                "thumos14",
                "--model",
                tiny_clip[0],
                "--checkpoint",
                tiny_clip[1],
                "--out",
                str(out),
                "--name-style",
                "natural",
            ]
        )
        == 0
    )
    names = vocab.load_vocabulary("thumos14")
    assert NpzTextEncoder(out).encode(names).shape == (len(names), 16)


def test_npz_encoder_validation(tmp_path):
    emb = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
    p = tmp_path / "e.npz"
    save_text_embeddings(p, ["a", "b", "c"], emb)
    enc = NpzTextEncoder(p)
    assert enc.logit_scale == 100.0
    got = enc.encode(["c", "a"])
    torch.testing.assert_close(
        got, torch.from_numpy(emb[[2, 0]] / np.linalg.norm(emb[[2, 0]], axis=1, keepdims=True))
    )
    with pytest.raises(ValueError, match=r"no embedding for class name\(s\) \['zebra', 'yak'\]"):
        enc.encode(["a", "zebra", "yak"])
    assert NpzTextEncoder(p, logit_scale=50).logit_scale == 50

    def bad(name, **arrays):
        q = tmp_path / name
        np.savez(q, **arrays)
        return q

    cases = {
        bad("nokey.npz", names=np.array(["a"])): "missing array",
        bad("shape.npz", names=np.array(["a", "b"]), embeddings=emb): "2 names but 3",
        bad(
            "nan.npz", names=np.array(["a", "b", "c"]), embeddings=np.where(emb > 1, np.nan, emb)
        ): "NaN",
        bad(
            "zero.npz", names=np.array(["a", "b", "c"]), embeddings=emb * [[0], [1], [1]]
        ): "zero norm",
        bad("dup.npz", names=np.array(["a", "b", "a"]), embeddings=emb): "duplicate",
        bad("int.npz", names=np.array(["a", "b", "c"]), embeddings=emb.astype(int)): "float",
    }
    for path, msg in cases.items():
        with pytest.raises(ValueError, match=msg):
            NpzTextEncoder(path)
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(ValueError, match="junk.npz"):
        NpzTextEncoder(tmp_path / "junk.npz")
    with pytest.raises(FileNotFoundError, match="absent.npz"):
        NpzTextEncoder(tmp_path / "absent.npz")
