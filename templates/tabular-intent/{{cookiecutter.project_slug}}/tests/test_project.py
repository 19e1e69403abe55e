"""A tiny end-to-end run of this project: train two epochs, export, serve the export without Keras."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from kerasls import KERAS_IMPORT_BLOCKER, metrics_from_predictions

PROJECT = Path(__file__).resolve().parents[1]

# the export is served in a process where importing keras or kerasls fails: TensorFlow alone serves it
SERVE_WITHOUT_KERAS = KERAS_IMPORT_BLOCKER + r"""
import pandas as pd
import tensorflow as tf
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
_, specs = serve.structured_input_signature
rows = pd.read_csv(sys.argv[2])
inputs = {}
for name, spec in specs.items():
    if spec.dtype == tf.string:
        inputs[name] = tf.constant(["" if pd.isna(v) else str(v) for v in rows[name]])
    else:
        inputs[name] = tf.constant(rows[name].to_numpy("float32"))
outputs = serve(**inputs)
print(json.dumps({"probabilities": outputs["probabilities"].numpy().tolist(),
                  "class_name": [c.decode() for c in outputs["class_name"].numpy()]}))
"""


def test_train_export_and_serve(tmp_path):
    result = subprocess.run(
        [sys.executable, "train.py", "training.epochs=2", "training.verbose=0", "--runs-dir", str(tmp_path / "runs")],
        cwd=PROJECT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_folder = Path(result.stdout.strip().splitlines()[-1].removeprefix("run: "))
    if not run_folder.is_absolute():
        run_folder = PROJECT / run_folder
    metrics = json.loads((run_folder / "metrics.json").read_text())
    recomputed = metrics_from_predictions(run_folder)  # metrics.json agrees with the rows it was computed from
    assert metrics["n"] == recomputed["n"] and abs(metrics["accuracy"] - recomputed["accuracy"]) < 1e-9
    assert abs(metrics["nll"] - recomputed["nll"]) < 1e-4
    for name in ("config.yaml", "history.csv", "predictions.csv", "report.html"):
        assert (run_folder / name).is_file(), name

    predictions = pd.read_csv(run_folder / "predictions.csv")
    evaluated = pd.read_csv(metrics_source(run_folder))
    rows_path = tmp_path / "rows.csv"
    evaluated.head(20).to_csv(rows_path, index=False)
    served = subprocess.run(
        [sys.executable, "-c", SERVE_WITHOUT_KERAS, metrics["export_path"], str(rows_path)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert served.returncode == 0, served.stderr[-3000:]
    output = json.loads(served.stdout.strip().splitlines()[-1])
    expected = predictions[[f"calibrated_prob_{c}" for c in metrics["classes"]]].head(20).to_numpy()
    assert abs(expected - pd.DataFrame(output["probabilities"]).to_numpy()).max() < 1e-5


def metrics_source(run_folder):
    """The table the metrics were computed on (test file when configured)."""
    import yaml

    config = yaml.safe_load((run_folder / "config.yaml").read_text())
    assert config["data"]["test"], "this check serves the rows of data.test: set it to a labelled file"
    return config["data"]["test"]
