"""Model tests run many tiny convolutions; on a shared 2-core machine one intra-op
thread avoids OpenMP spin-wait contention that makes them 10-50x slower."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class TinyWorld:
    """A small in-memory set of videos in the ``VideoFeatureDataset`` item format.

    Every class has a random unit prototype (its "text embedding"); an action of class c
    is a span whose snippet features are ``3 * prototype_c`` plus noise, background is noise.
    Segments are in grid units (centre-aligned snippets), durations in seconds.
    """

    fps, stride, nf = 30.0, 4, 16

    def __init__(self, num_videos: int, classes: list[int], dim: int = 16, num_classes: int = 8, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.prototypes = torch.nn.functional.normalize(torch.randn(num_classes, dim, generator=g), dim=1)
        self.items = []
        for i in range(num_videos):
            T = int(torch.randint(48, 97, (1,), generator=g))
            feats = 0.5 * torch.randn(dim, T, generator=g)
            segs, labels = [], []
            n_act = int(torch.randint(1, 3, (1,), generator=g))
            cursor = 2
            for _ in range(n_act):
                length = int(torch.randint(6, 21, (1,), generator=g))
                start = cursor + int(torch.randint(0, 10, (1,), generator=g))
                if start + length > T - 2:
                    break
                c = classes[int(torch.randint(0, len(classes), (1,), generator=g))]
                feats[:, start:start + length] += 3.0 * self.prototypes[c][:, None]
                segs.append([start - 0.5, start + length - 0.5])
                labels.append(c)
                cursor = start + length + 4
            self.items.append({
                "video_id": f"v{seed}_{i:03d}",
                "feats": feats,
                "segments": torch.tensor(segs, dtype=torch.float32).reshape(-1, 2),
                "labels": torch.tensor(labels, dtype=torch.long),
                "fps": self.fps,
                "duration": (T * self.stride) / self.fps,
                "feat_stride": self.stride,
                "feat_num_frames": self.nf,
                "offset_snippets": 0,
            })

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]

    def seconds(self, seg: torch.Tensor) -> list[float]:
        return ((seg.double() * self.stride + 0.5 * self.nf) / self.fps).tolist()

    def ground_truth(self, names: list[str]) -> dict:
        return {"database": {
            it["video_id"]: {"subset": "test", "duration": it["duration"], "fps": self.fps, "annotations": [
                {"segment": self.seconds(s), "label": names[int(c)]} for s, c in zip(it["segments"], it["labels"], strict=True)
            ]} for it in self.items
        }}


@pytest.fixture(scope="module")
def tiny_world():
    return TinyWorld
