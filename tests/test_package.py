"""The package face: version, library loading, build facts, torch mismatch."""

import subprocess
import sys

import pytest
import torch

import stovtal
from stovtal import _loader


def test_version_and_info():
    assert stovtal.__version__
    info = stovtal.ops.info()
    assert "CPU" in info["backends"]
    assert "stovtal::segment_iou" in info["ops"]
    assert info["build"]["torch_version"] == torch.__version__
    assert info["build"]["with_cuda"] == ("CUDA" in info["backends"])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="OpenMP is required on Linux builds")
def test_cpu_kernels_built_with_openmp():
    # without OpenMP every at::parallel_for of the CPU kernels runs on one thread
    assert stovtal.ops.info()["build"]["with_openmp"] is True


def test_load_library_is_idempotent():
    before = stovtal.ops.registered_ops()
    _loader.load_library()
    assert stovtal.ops.registered_ops() == before


def test_torch_mismatch_gives_clear_import_error(monkeypatch):
    monkeypatch.setattr(_loader._build_info(), "TORCH_VERSION", "1.0.0+other")
    with pytest.raises(ImportError, match=r"(?s)built against torch 1\.0\.0\+other.*pip install --no-build-isolation"):
        _loader.check_torch_version()


def test_import_in_fresh_process_prints_iou():
    code = (
        "import stovtal, torch;"
        "print(stovtal.ops.segment_iou(torch.tensor([[0., 2.]]), torch.tensor([[1., 3.]])).item())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert abs(float(out.stdout.strip()) - 1 / 3) < 1e-6
