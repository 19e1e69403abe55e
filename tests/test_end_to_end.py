"""new -> train -> export -> serve without Keras, `kerasls predict`, `saved_model_cli`, and clean errors."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import KERAS_IMPORT_BLOCKER, run_train

from kerasls import results

SERVE_WITHOUT_KERAS = KERAS_IMPORT_BLOCKER + r"""
import numpy as np, pandas as pd, tensorflow as tf
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
_, specs = serve.structured_input_signature
rows = pd.read_csv(sys.argv[2])
inputs = {name: tf.constant(["" if pd.isna(v) else str(v) for v in rows[name]]) if spec.dtype == tf.string
          else tf.constant(rows[name].to_numpy("float32")) for name, spec in specs.items()}
out = serve(**inputs)
assert not any(m.split(".")[0] in ("keras", "kerasls") for m in sys.modules), "keras was imported"
print(json.dumps({k: (v.numpy().astype(str) if v.dtype == tf.string else v.numpy()).tolist() for k, v in out.items()}))
"""


def test_run_folder_matches_the_contract(trained_project):
    run, metrics = trained_project.run, trained_project.metrics
    for name in ("config.yaml", "history.csv", "metrics.json", "predictions.csv", "report.html"):
        assert (run / name).is_file(), name
    assert (run / "checkpoints" / "best.weights.h5").is_file()
    assert any((run / "tensorboard").rglob("events.out.tfevents.*"))
    assert {p.name for p in (run / "plots").glob("*.png")} >= {"reliability.png", "history.png"}
    history = pd.read_csv(run / "history.csv")
    assert list(history["epoch"]) == [0, 1]
    assert {"loss", "nll", "accuracy", "val_loss", "val_nll", "val_accuracy"} <= set(history.columns)
    for key in ("classes", "split", "n", "accuracy", "nll", "ece", "mce", "brier", "temperature", "nll_calibrated",
                "ece_calibrated", "label_smoothing", "export_path", "thresholds"):
        assert key in metrics, key
    assert metrics["classes"] == ["browse", "purchase", "support"]
    assert metrics["split"] == "test" and metrics["n"] == 63 and metrics["label_smoothing"] == 0.1
    assert Path(metrics["export_path"]) == run / "export" / "1"
    report = (run / "report.html").read_text()
    assert "data:image/png;base64," in report and "https://" not in report
    # prediction sets on by default (calibration.conformal: lac, alpha 0.1), fitted on the 400 validation rows
    sets = metrics["conformal"]
    assert sets["score"] == "lac" and sets["alpha"] == 0.1 and sets["calibration_rows"] == 400
    assert sets["n"] == 63 and not sets["in_sample"] and set(sets["classes"]) == set(metrics["classes"])
    assert [row["alpha"] for row in sets["table"]] == [0.01, 0.05, 0.1, 0.2]
    assert all(row["threshold"] is not None and 0 <= row["set_coverage"] <= 1 for row in sets["table"])
    assert 1 <= sets["mean_set_size"] <= 3 and "<h2>Prediction sets</h2>" in report
    # train.log: the console as printed, from the setup line to the run folder
    log = (run / "train.log").read_text()
    assert log.splitlines()[-1] == f"run: {run}" and results.headline(metrics).splitlines()[0] in log
    assert "classes: ['browse', 'purchase', 'support']" in log and "Epoch 2/2" in log


def test_predictions_csv_agrees_with_metrics(trained_project):
    metrics = trained_project.metrics
    predictions = pd.read_csv(trained_project.run / "predictions.csv")
    classes = metrics["classes"]
    # a table with a text column: `unreadable` flags rows none of whose text the preprocessing knows
    assert list(predictions.columns) == ["label", *[f"prob_{c}" for c in classes],
                                         *[f"calibrated_prob_{c}" for c in classes], "unreadable"]
    queries = pd.read_csv(trained_project.eval_rows, keep_default_na=False)["search_query"].str.strip()
    known = queries != "xyzzy plugh frobnicate"  # made-up words: readable or not, by their character n-grams
    assert (predictions["unreadable"] == (queries == ""))[known].all() and (queries == "").sum() >= 2
    probabilities = predictions[[f"prob_{c}" for c in classes]].to_numpy()
    labels = predictions["label"].map(classes.index).to_numpy()
    accuracy = float((probabilities.argmax(1) == labels).mean())
    nll = float(-np.log(probabilities[np.arange(len(labels)), labels]).mean())
    assert accuracy == pytest.approx(metrics["accuracy"], abs=1e-9)
    assert nll == pytest.approx(metrics["nll"], rel=1e-4)
    expected_rows = pd.read_csv(trained_project.eval_rows)["intent"].tolist()
    assert predictions["label"].tolist() == expected_rows


def test_export_serves_raw_rows_without_keras_and_matches_training_process(trained_project):
    export = trained_project.metrics["export_path"]
    result = subprocess.run([sys.executable, "-c", SERVE_WITHOUT_KERAS, export, str(trained_project.eval_rows)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    served = json.loads(result.stdout.strip().splitlines()[-1])
    predictions = pd.read_csv(trained_project.run / "predictions.csv")
    classes = trained_project.metrics["classes"]
    expected = predictions[[f"calibrated_prob_{c}" for c in classes]].to_numpy()
    probabilities = np.array(served["probabilities"])
    assert np.abs(probabilities - expected).max() < 1e-5  # includes the unseen category and unknown words
    np.testing.assert_allclose(probabilities.sum(1), 1.0, atol=1e-5)
    assert served["class_name"] == [classes[i] for i in probabilities.argmax(1)]
    np.testing.assert_allclose(served["confidence"], probabilities.max(1), atol=1e-7)
    uncalibrated = predictions[[f"prob_{c}" for c in classes]].to_numpy()
    logits = np.array(served["logits"])
    softmax = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(softmax / softmax.sum(1, keepdims=True), uncalibrated, atol=1e-5)
    labels = (trained_project.run / "export" / "1" / "assets" / "labels.txt").read_text().splitlines()
    assert labels == classes
    # the served prediction sets are the run's (a score within float32 rounding of the threshold may differ)
    sets, threshold = np.array(served["prediction_set"]), trained_project.metrics["conformal"]["threshold"]
    assert sets.dtype == bool and served["set_size"] == sets.sum(1).tolist()
    clear = np.abs(1.0 - expected - threshold).min(axis=1) > 1e-5
    np.testing.assert_array_equal(sets[clear], (1.0 - expected <= threshold)[clear])


def test_kerasls_predict_writes_rows_with_class_and_probabilities(trained_project, tmp_path):
    out = tmp_path / "out.csv"
    result = subprocess.run([sys.executable, "-m", "kerasls.cli", "predict", str(trained_project.run / "export"),
                             str(trained_project.eval_rows), "-o", str(out)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    written = pd.read_csv(out, keep_default_na=False)
    rows = pd.read_csv(trained_project.eval_rows, keep_default_na=False)
    classes = trained_project.metrics["classes"]
    assert list(written.columns) == [*rows.columns, "predicted_class", "confidence", "unreadable",
                                     *[f"prob_{c}" for c in classes], "prediction_set", "set_size"]
    predictions = pd.read_csv(trained_project.run / "predictions.csv")
    assert written["unreadable"].tolist() == predictions["unreadable"].tolist()
    assert written["search_query"].tolist() == rows["search_query"].tolist()
    named = [set(text.split("|")) - {""} for text in written["prediction_set"]]
    assert [len(names) for names in named] == written["set_size"].tolist() and set().union(*named) <= set(classes)
    predictions = pd.read_csv(trained_project.run / "predictions.csv")
    expected = predictions[[f"calibrated_prob_{c}" for c in classes]].to_numpy()
    assert np.abs(written[[f"prob_{c}" for c in classes]].to_numpy() - expected).max() < 1e-5


def test_kerasls_predict_names_a_missing_column(trained_project, tmp_path):
    rows = pd.read_csv(trained_project.eval_rows).drop(columns=["device"])
    rows.to_csv(tmp_path / "rows.csv", index=False)
    result = subprocess.run([sys.executable, "-m", "kerasls.cli", "predict", str(trained_project.run / "export"),
                             str(tmp_path / "rows.csv")], capture_output=True, text=True)
    assert result.returncode == 2
    assert "column(s) ['device'] needed by the export are missing" in result.stderr
    assert "Traceback" not in result.stderr


def test_saved_model_cli_runs_the_export(trained_project):
    cli = Path(sys.executable).parent / "saved_model_cli"
    inputs = ("pages_viewed=[3.0];product_pages=[1.0];session_minutes=[2.5];cart_adds=[0.0];discount_pct=[0.0];"
              "bounce_rate=[0.02];device=['mobile'];traffic_source=['direct'];visitor_type=['new'];month=['May'];"
              "search_query=['track my order']")
    result = subprocess.run([str(cli), "run", "--dir", trained_project.metrics["export_path"], "--tag_set", "serve",
                             "--signature_def", "serving_default", "--input_exprs", inputs],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "probabilities" in result.stdout and "class_name" in result.stdout
    assert "prediction_set" in result.stdout and "set_size" in result.stdout


def test_a_second_export_gets_the_next_version(trained_project):
    from kerasls.export import next_version

    assert next_version(trained_project.run / "export") == 2


@pytest.mark.parametrize(
    "args, expected",
    [
        (["training.epoch=2"], "unknown config key 'training.epoch'; did you mean 'training.epochs'?"),
        (["targets.label_smoothing=1.2"], "'targets.label_smoothing'"),
        (["data.label=missing"], "label column 'missing' not found"),
        (["data.train=nowhere.csv"], "train file not found"),
        (["--config", "nope.yaml"], "nope.yaml: config file not found"),
        (["calibration.conformal.alpha=0.001"], "alpha=0.001 needs at least 999 validation rows (n >= 1/alpha - 1), "
                                                "but there are 400"),
    ],
)
def test_train_bad_input_is_one_line_without_traceback(trained_project, args, expected):
    before = sorted(p.name for p in (trained_project.project / "runs").iterdir())
    result = run_train(trained_project.project, *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and expected in lines[-1], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in (trained_project.project / "runs").iterdir()) == before  # no run folder made


def test_predict_and_evaluate_take_a_run_folder(trained_project, tmp_path):
    """`kerasls predict runs/<name>` and `kerasls evaluate runs/<name>` use the run's newest export version."""
    from kerasls.export import resolve_export

    run = trained_project.run
    assert resolve_export(run) == resolve_export(run / "export") == max((run / "export").iterdir(),
                                                                        key=lambda p: int(p.name))
    result = subprocess.run([sys.executable, "-m", "kerasls.cli", "predict", str(run), str(trained_project.eval_rows),
                             "-o", str(tmp_path / "out.csv")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(pd.read_csv(tmp_path / "out.csv")) == len(pd.read_csv(trained_project.eval_rows))
    assert f"curves: tensorboard --logdir {run / 'tensorboard'}" in trained_project.stdout
