"""The configs in examples/ train end to end on slices of the real data sets in shared/data.

Each test renders the tabular-intent template (image-classifier for MNIST) into a temporary folder, writes a
slice of the real data there, and runs the generated `train.py` with the example config for a few epochs (the
data paths overridden with the slices). It checks metrics.json against the slice: split, number of evaluated
rows, classes, accuracy above the majority-class (or chance) rate, sane NLL and ECE, and the export folder. Each
test takes well under a minute on 2 CPU cores.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import SHARED_DATA, require

from kerasls.templates_index import render_template

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
SHOPPERS_CSV = SHARED_DATA / "online_shoppers" / "online_shoppers_intention.csv"
BANKING_DIR = SHARED_DATA / "banking77"
MNIST_DIR = SHARED_DATA / "mnist_png"


def example_config(name: str) -> dict:
    return yaml.safe_load((EXAMPLES / name).read_text(encoding="utf-8"))


def stratified_val_rows(labels: pd.Series, val_fraction: float) -> int:
    """Rows of the stratified validation split: per class round(n·fraction), at least 1 and at most n-1 (n ≥ 2)."""
    total = 0
    for count in labels.value_counts():
        rows = int(round(count * val_fraction))
        total += min(max(rows, 1), count - 1) if count >= 2 else 0
    return total


def class_names(labels: pd.Series) -> list[str]:
    return sorted({str(value) for value in labels})


def train_example(tmp_path: Path, config_name: str, overrides: list[str], template="tabular-intent",
                  epochs=3, timeout=300) -> dict:
    """Render `template`, train it with examples/<config_name> for `epochs`, return metrics.json (+ run folder)."""
    project = render_template(
        template, output_dir=tmp_path, extra_context={"project_slug": "ex"}, no_input=True
    )
    command = [
        sys.executable, "train.py", "--config", str(EXAMPLES / config_name), *overrides,
        f"training.epochs={epochs}", "training.verbose=2", "--run-name", "t",
    ]
    completed = subprocess.run(command, cwd=project, capture_output=True, text=True, timeout=timeout)
    assert completed.returncode == 0, (
        f"{' '.join(command)} failed with status {completed.returncode}\n"
        f"stdout (end):\n{completed.stdout[-3000:]}\nstderr (end):\n{completed.stderr[-3000:]}"
    )
    last_line = completed.stdout.strip().splitlines()[-1]
    assert last_line.startswith("run: "), last_line
    run_folder = Path(project) / last_line[len("run: "):].strip()  # absolute stays absolute
    assert run_folder.resolve() == (Path(project) / "runs" / "t").resolve()
    metrics = json.loads((run_folder / "metrics.json").read_text(encoding="utf-8"))
    metrics["_run_folder"] = run_folder
    return metrics


def prior_nll(labels: pd.Series) -> float:
    """NLL of always predicting the class frequencies of `labels` (their entropy, in nats)."""
    shares = labels.value_counts(normalize=True).to_numpy()
    return float(-(shares * np.log(shares)).sum())


def check_common(metrics: dict, *, split: str, labels: pd.Series, n: int, classes: list[str], margin: float,
                 label_smoothing: float) -> None:
    """`labels`: the evaluated rows' labels (for the majority rate and the class-prior NLL)."""
    majority_rate = float(labels.value_counts(normalize=True).max())
    assert metrics["split"] == split
    assert metrics["n"] == n
    assert metrics["classes"] == classes
    assert metrics["accuracy"] >= majority_rate + margin, (metrics["accuracy"], majority_rate)
    assert 0.0 < metrics["nll"] < prior_nll(labels), (metrics["nll"], prior_nll(labels))
    assert 0.0 <= metrics["ece"] <= 1.0 and 0.0 <= metrics["ece_calibrated"] <= 1.0
    assert 0.0 <= metrics["brier"] <= 2.0
    assert metrics["temperature"] > 0.0
    if split == "val":  # T minimises NLL on these very rows (1.0 when it would not lower it)
        assert metrics["nll_calibrated"] <= metrics["nll"] + 1e-9
    assert metrics["label_smoothing"] == pytest.approx(label_smoothing)
    export = Path(metrics["export_path"])
    if not export.is_absolute():
        export = metrics["_run_folder"].parents[1] / export
    assert export.is_dir(), export
    assert (export / "saved_model.pb").is_file()


def test_online_shoppers_example_trains_on_a_slice(tmp_path):
    """3,000 random sessions (fixed seed), 83% of them "False": 3 epochs must do clearly better than that."""
    table = pd.read_csv(require(SHOPPERS_CSV))
    config = example_config("online_shoppers.yaml")
    assert config["data"]["label"] == "Revenue" and config["data"]["test"] is None
    assert set(config["data"]["features"]["categorical"]) >= {"OperatingSystems", "Browser", "Region", "TrafficType"}

    # The file is sorted by month, so its first rows are not representative: sample instead.
    sample = table.sample(n=3000, random_state=0)
    sample_path = tmp_path / "shoppers_slice.csv"
    sample.to_csv(sample_path, index=False)  # booleans are written True/False, read back as booleans

    metrics = train_example(tmp_path, "online_shoppers.yaml", [f"data.train={sample_path.resolve()}"])

    # The validation rows are a stratified split: their class shares are those of the whole sample.
    check_common(
        metrics,
        split="val",
        labels=sample["Revenue"],
        n=stratified_val_rows(sample["Revenue"], config["data"]["val_fraction"]),
        classes=["False", "True"],
        margin=0.03,  # majority rate 0.83 in this sample; 3 epochs reach about 0.88
        label_smoothing=config["targets"]["label_smoothing"],
    )


def test_banking77_example_trains_on_20_classes(tmp_path):
    """The rows of 20 of the 77 intents from train.csv and test.csv; metrics are on the test rows."""
    train = pd.read_csv(require(BANKING_DIR / "train.csv"))
    test = pd.read_csv(require(BANKING_DIR / "test.csv"))
    config = example_config("banking77.yaml")
    assert config["data"]["label"] == "category" and config["data"]["features"]["text"] == ["text"]

    chosen = sorted(train["category"].unique())[::4][:20]
    assert len(chosen) == 20
    train_slice = train[train["category"].isin(chosen)]
    test_slice = test[test["category"].isin(chosen)]
    train_path, test_path = tmp_path / "banking_train.csv", tmp_path / "banking_test.csv"
    train_slice.to_csv(train_path, index=False)
    test_slice.to_csv(test_path, index=False)

    metrics = train_example(
        tmp_path, "banking77.yaml", [f"data.train={train_path.resolve()}", f"data.test={test_path.resolve()}"]
    )

    check_common(
        metrics,
        split="test",
        labels=test_slice["category"],
        n=len(test_slice),
        classes=class_names(train_slice["category"]),
        margin=0.5,  # 20 classes of 40 test rows each: majority rate 0.05; 3 epochs reach about 0.93
        label_smoothing=config["targets"]["label_smoothing"],
    )


def test_mnist_example_trains_on_a_slice(tmp_path):
    """The first 40 PNGs (sorted by name) of each digit, 400 images; 4 epochs must beat chance (0.1) clearly.

    Batch 16 instead of the config's 64: 320 training images give 20 steps an epoch instead of 5. With 5, the
    batch-norm moving statistics are still near their initial values after 4 epochs and validation accuracy
    stays at chance (0.1, measured).
    """
    config = example_config("mnist.yaml")
    assert config["data"]["image_size"] == [28, 28] and config["data"]["channels"] == 1
    assert config["data"]["test"] is None and config["data"]["val"] is None
    assert config["targets"]["label_smoothing"] == pytest.approx(0.1)

    digits = [str(digit) for digit in range(10)]
    slice_root = tmp_path / "mnist"
    for digit in digits:
        source = require(MNIST_DIR / digit)
        files = sorted(path for path in source.iterdir() if path.suffix == ".png")[:40]
        assert len(files) == 40, (source, len(files))
        (slice_root / digit).mkdir(parents=True)
        for path in files:
            shutil.copyfile(path, slice_root / digit / path.name)

    metrics = train_example(tmp_path, "mnist.yaml", [f"data.train={slice_root.resolve()}", "training.batch_size=16"],
                            template="image-classifier", epochs=4, timeout=600)

    # The stratified 20% of 40 images a class is 8 a class: 80 validation images, 10 of each digit.
    labels = pd.Series(np.repeat(digits, 8))
    assert stratified_val_rows(pd.Series(np.repeat(digits, 40)), config["data"]["val_fraction"]) == 80
    check_common(
        metrics,
        split="val",
        labels=labels,
        n=80,
        classes=digits,
        margin=0.2,  # chance is 0.1, so accuracy >= 0.3; 4 epochs reach about 0.6
        label_smoothing=config["targets"]["label_smoothing"],
    )
