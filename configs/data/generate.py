"""Regenerate the tiny example data the file-dataset configs read (run from the repo root:
``python configs/data/generate.py``). The files are committed; this says how they were made.

- ``shapes/{crosses,squares}/*.png``: 32x32 PNGs of a thin cross or a filled square;
- ``reviews/{neg,pos}/*.txt``: twelve-word "reviews" of positive or negative words;
- ``table.csv``, ``table-{0,1}.tfrecord`` and ``table-{0,1}.array_record``: the same 300 rows
  of 6 float features and an integer class label (Example keys ``x`` and ``y``).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from tests.filedata import (  # noqa: E402
    classification_arrays,
    image_folder,
    text_folder,
    write_array_records,
    write_tfrecords,
)


def main() -> None:
    image_folder(HERE / "shapes", per_class=24, seed=1)
    text_folder(HERE / "reviews", per_class=20, seed=1)
    x, y = classification_arrays(300, seed=1)
    write_tfrecords([HERE / "table-0.tfrecord", HERE / "table-1.tfrecord"], x, y)
    write_array_records([HERE / "table-0.array_record", HERE / "table-1.array_record"], x, y)
    with open(HERE / "table.csv", "w") as f:
        f.write(",".join(f"f{i}" for i in range(x.shape[1])) + ",label\n")
        for row, label in zip(x, y, strict=True):
            f.write(",".join(f"{v:.6g}" for v in row) + f",{label}\n")


if __name__ == "__main__":
    main()
