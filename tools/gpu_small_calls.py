"""A small call of every stovtal kernel, for compute-sanitizer (tools/gpu_check.py).

``python tools/gpu_small_calls.py --device cuda`` runs each op's forward (and backward where
it is differentiable) once on small inputs sized to cross the kernels' block and word
boundaries (more than one 64-bit mask word, more than one thread block), compares each
result with the CPU kernel's, and prints ``small calls: ok`` at the end. Under
``compute-sanitizer --tool memcheck|racecheck`` the CUDA kernels are checked for
out-of-bounds accesses and shared-memory races. ``--device cpu`` runs the same calls on the
CPU only (the dry run).
"""

from __future__ import annotations

import argparse

import torch

from stovtal.ops import (
    jaccard_distance,
    jaccard_distance_topk,
    roi_align_1d,
    segment_iou,
    soft_nms,
    temporal_nms,
)


def _segments(n: int, g: torch.Generator, dtype=torch.float32) -> torch.Tensor:
    start = torch.rand(n, generator=g, dtype=torch.float64) * 100
    length = torch.rand(n, generator=g, dtype=torch.float64) * 20
    return torch.stack([start, start + length], 1).to(dtype)


def _same(name: str, got: torch.Tensor, want: torch.Tensor, exact: bool = False) -> None:
    got = got.cpu()
    if exact:
        if not torch.equal(got, want):
            raise AssertionError(f"{name}: differs from the CPU kernel")
    else:
        torch.testing.assert_close(got, want, msg=lambda m: f"{name}: {m}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    dev = torch.device(ap.parse_args(argv).device)
    g = torch.Generator().manual_seed(0)

    # segment_iou: pairwise and aligned, forward and backward
    a = _segments(300, g, torch.float64).requires_grad_()
    b = _segments(70, g, torch.float64).requires_grad_()
    ad = a.detach().clone().to(dev).requires_grad_()
    bd = b.detach().clone().to(dev).requires_grad_()
    w = torch.randn(300, 70, generator=g, dtype=torch.float64)
    (segment_iou(ad, bd) * w.to(dev)).sum().backward()
    (segment_iou(a, b) * w).sum().backward()
    _same("segment_iou grad a", ad.grad, a.grad)
    _same("segment_iou grad b", bd.grad, b.grad)
    b2 = _segments(300, g, torch.float64)
    _same("segment_iou aligned", segment_iou(ad.detach(), b2.to(dev), aligned=True),
          segment_iou(a.detach(), b2, aligned=True))
    x = a.detach().clone().to(dev).requires_grad_()
    segment_iou(x, b2.to(dev), aligned=True).sum().backward()
    x_cpu = a.detach().clone().requires_grad_()
    segment_iou(x_cpu, b2, aligned=True).sum().backward()
    _same("segment_iou aligned grad", x.grad, x_cpu.grad)

    # temporal_nms / soft_nms: > 64 candidates (several mask words), labels, max_keep, voting
    seg = _segments(300, g)
    sc = torch.rand(300, generator=g)
    lab = torch.randint(0, 4, (300,), generator=g)
    sd, scd, labd = seg.to(dev), sc.to(dev), lab.to(dev)
    _same("temporal_nms", temporal_nms(sd, scd, 0.4), temporal_nms(seg, sc, 0.4), exact=True)
    _same("temporal_nms labels max_keep", temporal_nms(sd, scd, 0.4, labd, 50),
          temporal_nms(seg, sc, 0.4, lab, 50), exact=True)
    for method in ("linear", "gaussian"):
        got = soft_nms(sd, scd, 0.3, 0.5, 0.01, method, labd, 120, 0.6)
        want = soft_nms(seg, sc, 0.3, 0.5, 0.01, method, lab, 120, 0.6)
        _same(f"soft_nms {method} indices", got[2], want[2], exact=True)
        _same(f"soft_nms {method} segments", got[0], want[0])

    # roi_align_1d: forward and backward, float32 and float16
    for dtype in (torch.float32, torch.float16):
        feats = torch.randn(2, 5, 90, generator=g).to(dtype)
        start = torch.rand(40, generator=g) * 80
        rois = torch.stack([torch.randint(0, 2, (40,), generator=g).float(), start - 3,
                            start + torch.rand(40, generator=g) * 30], 1).to(dtype)
        f_dev = feats.clone().to(dev).requires_grad_()
        out = roi_align_1d(f_dev, rois.to(dev), 7)
        gw = torch.randn(out.shape, generator=g).to(dtype)
        (out * gw.to(dev)).sum().backward()
        f_cpu = feats.clone().requires_grad_()
        want = roi_align_1d(f_cpu, rois, 7)
        (want * gw).sum().backward()
        _same(f"roi_align_1d {dtype}", out.detach(), want.detach())
        _same(f"roi_align_1d grad {dtype}", f_dev.grad, f_cpu.grad)

    # jaccard: dense, batched, top-m
    feats = torch.nn.functional.normalize(torch.randn(3, 150, 16, generator=g), dim=-1)
    fd = feats.to(dev)
    _same("jaccard_distance", jaccard_distance(fd[0], 12, 4), jaccard_distance(feats[0], 12, 4))
    _same("jaccard_distance batched", jaccard_distance(fd, 10, 3), jaccard_distance(feats, 10, 3))
    got_d, got_i = jaccard_distance_topk(fd[1], 12, 4, 20)
    want_d, want_i = jaccard_distance_topk(feats[1], 12, 4, 20)
    _same("jaccard_distance_topk", got_d, want_d)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    print(f"small calls: ok ({dev.type})")


if __name__ == "__main__":
    main()
