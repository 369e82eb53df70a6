"""Compute the shipped class splits once (the output JSONs are committed).

    python tools/make_splits.py

For every shipped vocabulary except kinetics400: the Kinetics-based base/novel split
(lemmatiser: lemminflect, which ships its data and runs offline) and the seeded random 75/25 and
50/50 splits (seeds 0..9). Rules: ``stovtal/data/splits.py``. Output:
``stovtal/data/split_tables/<dataset>.json``.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    from stovtal.data.splits import SPLIT_DATASETS, build_split_table
    from stovtal.utils.fileio import atomic_write_json

    for dataset in SPLIT_DATASETS:
        table = build_split_table(dataset)
        atomic_write_json(ROOT / "stovtal" / "data" / "split_tables" / f"{dataset}.json", table, indent=1)
        k = table["kinetics"]
        print(f"{dataset}: {len(k['base'])} base, {len(k['novel'])} novel")


if __name__ == "__main__":
    main()
