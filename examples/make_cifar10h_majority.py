"""Derive a hard-label CIFAR-10H manifest: the 512 images and labels.csv plus a `majority` column.

The `majority` column is the class with the most human votes (argmax of the `count_<class>` columns, classes in
sorted order, ties to the first, exactly as kerasls takes the hard label of a vote manifest). It differs from
`true_class` on 6 of the 512 images. shared/data is read-only, so everything is copied to a new folder:

    python examples/make_cifar10h_majority.py /tmp/cifar10h_majority
    # -> /tmp/cifar10h_majority/{labels.csv, images/, LICENSE.txt}; train with
    #    data.train=/tmp/cifar10h_majority/labels.csv and examples/cifar10h_majority.yaml

The source defaults to ../../shared/data/cifar10h_subset512 relative to this file (shared/ beside the checkout).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd

DEFAULT_SOURCE = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10h_subset512"
COUNT_PREFIX = "count_"


def majority_labels(table: pd.DataFrame) -> pd.Series:
    """The most-voted class of each row (argmax over the `count_<class>` columns in sorted class order)."""
    classes = sorted(column[len(COUNT_PREFIX):] for column in table.columns if column.startswith(COUNT_PREFIX))
    if not classes:
        raise ValueError(f"no {COUNT_PREFIX}<class> columns; columns are {list(table.columns)}")
    counts = table[[COUNT_PREFIX + name for name in classes]].to_numpy(dtype=np.float64)
    return pd.Series(np.asarray(classes, dtype=object)[np.argmax(counts, axis=1)], index=table.index)


def make_majority_manifest(output_dir, source_dir=DEFAULT_SOURCE) -> Path:
    """Copy `source_dir`'s labels.csv (with a new `majority` column) and its images/ into `output_dir`.

    Returns the path of the new labels.csv. Refuses to write into the source folder, which is never modified.
    """
    source, output = Path(source_dir).resolve(), Path(output_dir).resolve()
    labels_csv = source / "labels.csv"
    if not labels_csv.is_file() or not (source / "images").is_dir():
        raise FileNotFoundError(f"{source}: expected labels.csv and images/ (the CIFAR-10H subset in shared/data)")
    if output == source or output.is_relative_to(source):
        raise ValueError(f"{output}: choose an output folder outside {source}; the shared data is never rewritten")
    table = pd.read_csv(labels_csv)
    if "majority" in table.columns:
        raise ValueError(f"{labels_csv} already has a 'majority' column")
    table["majority"] = majority_labels(table)
    output.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source / "images", output / "images", dirs_exist_ok=True)
    if (source / "LICENSE.txt").is_file():  # CC BY-NC-SA 4.0: keep the licence with the copy
        shutil.copyfile(source / "LICENSE.txt", output / "LICENSE.txt")
    manifest = output / "labels.csv"
    table.to_csv(manifest, index=False)
    return manifest


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output_dir", help="new folder for labels.csv (with `majority`) and images/")
    parser.add_argument("--source", default=str(DEFAULT_SOURCE),
                        help=f"CIFAR-10H subset folder (default {DEFAULT_SOURCE})")
    args = parser.parse_args(argv)
    try:
        manifest = make_majority_manifest(args.output_dir, args.source)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    table = pd.read_csv(manifest)
    disagree = int((table["majority"] != table["true_class"]).sum()) if "true_class" in table.columns else 0
    print(f"wrote {manifest} ({len(table)} rows; majority differs from true_class on {disagree})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
