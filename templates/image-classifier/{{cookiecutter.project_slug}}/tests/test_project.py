"""A tiny end-to-end run of this project: train two epochs, export, serve image bytes without Keras."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from kerasls import KERAS_IMPORT_BLOCKER, metrics_from_predictions

PROJECT = Path(__file__).resolve().parents[1]

# the export is served in a process where importing keras or kerasls fails: TensorFlow alone serves it
SERVE_WITHOUT_KERAS = KERAS_IMPORT_BLOCKER + r"""
import tensorflow as tf
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
paths = sys.argv[2:]
outputs = serve(image_bytes=tf.constant([open(p, "rb").read() for p in paths]))
print(json.dumps({"probabilities": outputs["probabilities"].numpy().tolist()}))
"""


def test_train_export_and_serve(tmp_path):
    result = subprocess.run(
        [sys.executable, "train.py", "training.epochs=2", "training.verbose=0", "--runs-dir", str(tmp_path / "runs")],
        cwd=PROJECT, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_folder = Path(result.stdout.strip().splitlines()[-1].removeprefix("run: "))
    metrics = json.loads((run_folder / "metrics.json").read_text())
    recomputed = metrics_from_predictions(run_folder)  # metrics.json agrees with the rows it was computed from
    assert metrics["n"] == recomputed["n"] and abs(metrics["accuracy"] - recomputed["accuracy"]) < 1e-9
    assert abs(metrics["nll"] - recomputed["nll"]) < 1e-4
    for name in ("config.yaml", "history.csv", "predictions.csv", "report.html"):
        assert (run_folder / name).is_file(), name

    predictions = pd.read_csv(run_folder / "predictions.csv").head(16)
    served = subprocess.run(
        [sys.executable, "-c", SERVE_WITHOUT_KERAS, metrics["export_path"], *predictions["path"]],
        capture_output=True, text=True, timeout=300,
    )
    assert served.returncode == 0, served.stderr[-3000:]
    probabilities = np.array(json.loads(served.stdout.strip().splitlines()[-1])["probabilities"])
    expected = predictions[[f"calibrated_prob_{c}" for c in metrics["classes"]]].to_numpy()
    assert np.abs(probabilities - expected).max() < 1e-4
