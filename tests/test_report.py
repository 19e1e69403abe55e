"""Tests for kerasls.report: a self-contained report.html with embedded plots, written from small random data."""

import base64
import html
import io
import re

import numpy as np
import pandas as pd
import pytest

from kerasls import calibration, class_report, report


def decoded_png(data: bytes, min_side=200):
    """The PNG decoded (not just its first bytes): a real picture of some size, not blank."""
    from PIL import Image

    image = Image.open(io.BytesIO(data))
    image.load()
    assert image.format == "PNG" and min(image.size) >= min_side, (image.format, image.size)
    assert np.asarray(image.convert("L"), dtype=float).std() > 5.0  # something is drawn
    return image


def make_run(num_classes=4, n=300, seed=0, temperature=None):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, size=n)
    logits = rng.normal(size=(n, num_classes)) * 3.0
    logits[np.arange(n), labels] += 2.0
    if temperature is None:
        temperature = calibration.fit_temperature(logits, labels)
    metrics = calibration.evaluate(logits, labels, temperature=temperature, bins=10)
    metrics.update(split="val", label_smoothing=0.1, export_path=None)
    return metrics, calibration.softmax(logits), calibration.softmax(logits, temperature), labels


def make_history(epochs=5):
    return pd.DataFrame({"epoch": range(epochs), "loss": np.linspace(1.2, 0.6, epochs),
                         "val_loss": np.linspace(1.3, 0.8, epochs), "nll": np.linspace(1.0, 0.4, epochs),
                         "val_nll": np.linspace(1.1, 0.6, epochs), "accuracy": np.linspace(0.5, 0.8, epochs),
                         "val_accuracy": np.linspace(0.45, 0.75, epochs)})


def embedded_pngs(text):
    return [base64.b64decode(data) for data in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)]


def test_write_report_is_self_contained(tmp_path):
    classes = ["refund", "<b>bold</b>", "a & b", "cost $5 or $6"]
    metrics, before, after, labels = make_run()
    metrics["classes"] = classes
    path = report.write_report(tmp_path, metrics, make_history(), before, after, labels, classes, title="demo <run>")

    assert path == tmp_path / "report.html" and path.exists()
    for name in ("reliability.png", "history.png", "confusion.png"):
        decoded_png((tmp_path / "plots" / name).read_bytes())
    text = path.read_text(encoding="utf-8")
    assert "data:image/png;base64," in text
    embedded = embedded_pngs(text)
    assert len(embedded) == 3
    for png, name in zip(embedded, ("history.png", "reliability.png", "confusion.png")):
        decoded_png(png)
        assert png == (tmp_path / "plots" / name).read_bytes()  # the report embeds the written plots
    for forbidden in ("http://", "https://", "<script", "<link"):
        assert forbidden not in text
    # Escaping: class names and title.
    assert "&lt;b&gt;bold&lt;/b&gt;" in text and "<b>bold</b>" not in text
    assert "a &amp; b" in text and "demo &lt;run&gt;" in text
    # Metric values, before and after temperature.
    for key in ("accuracy", "nll", "ece", "mce", "brier", "nll_calibrated", "ece_calibrated", "mce_calibrated",
                "brier_calibrated", "temperature"):
        assert f"{metrics[key]:.4f}" in text, key
    assert ">val<" in text and ">0.1000<" in text and ">300<" in text
    # Threshold table: one row per threshold.
    for row in metrics["thresholds"]["rows"]:
        assert f"<td>{row['threshold']:.2f}</td><td>{100 * row['coverage']:.1f}%</td>" in text
    thresholds = metrics["thresholds"]
    if thresholds["smallest_threshold_for_target"] is None:
        assert "No confidence threshold reaches 95.0% accuracy" in text
    else:
        assert (f"The smallest confidence threshold reaching 95.0% accuracy is "
                f"{thresholds['smallest_threshold_for_target']:.4f}") in text


def test_threshold_sentence_and_temperature_note(tmp_path):
    metrics, before, after, labels = make_run(temperature=1.0)
    classes = ["a", "b", "c", "d"]
    metrics["thresholds"] = {"rows": [{"threshold": 0.9, "coverage": 0.25, "accuracy": 0.97, "n": 75}],
                             "target_accuracy": 0.95, "smallest_threshold_for_target": 0.8731,
                             "coverage_at_target": 0.4, "accuracy_at_target": 0.95, "rows_at_target": 120}
    text = report.write_report(tmp_path, metrics, None, before, after, labels, classes).read_text(encoding="utf-8")
    assert "did not lower the NLL of the validation rows' observed classes, so T=1 was kept" in text
    # Wilson 95% intervals: 114 of 120 -> 89.5% to 97.7%; 73 of 75 -> 90.8% to 99.3% (closed form, by hand)
    assert ("The smallest confidence threshold reaching 95.0% accuracy is 0.8731, automating 40.0% of rows (120 "
            "rows; accuracy 95.0%, 95% interval 89.5% – 97.7%)." in text)
    assert "<td>0.90</td><td>25.0%</td><td>97.0%</td><td>90.8% – 99.3%</td><td>75</td>" in text
    metrics["thresholds"].update(rows_at_target=2, accuracy_at_target=1.0)
    text = report.write_report(tmp_path, metrics, None, before, after, labels, classes).read_text(encoding="utf-8")
    assert "(2 rows; accuracy 100.0%, 95% interval 34.2% – 100.0%: too few rows to rely on)" in text
    metrics["thresholds"].update(smallest_threshold_for_target=None, coverage_at_target=None)
    text = report.write_report(tmp_path, metrics, None, before, after, labels, classes).read_text(encoding="utf-8")
    assert "No confidence threshold reaches 95.0% accuracy" in text
    metrics["temperature_scaling"] = False
    text = report.write_report(tmp_path, metrics, None, before, after, labels, classes).read_text(encoding="utf-8")
    assert "Temperature scaling was turned off" in text and "did not lower validation NLL" not in text


def test_history_none_or_empty_skips_curves(tmp_path):
    metrics, before, after, labels = make_run(seed=1)
    classes = ["w", "x", "y", "z"]
    for history in (None, pd.DataFrame()):
        path = report.write_report(tmp_path / str(type(history).__name__), metrics, history, before, after, labels,
                                   classes)
        text = path.read_text(encoding="utf-8")
        assert not (path.parent / "plots" / "history.png").exists()
        assert len(embedded_pngs(text)) == 2
        assert "No training history" in text


def test_many_classes(tmp_path):
    classes = [f"class_{i:02d}" for i in range(45)]
    metrics, before, after, labels = make_run(num_classes=45, n=400, seed=2)
    path = report.write_report(tmp_path, metrics, make_history(3), before, after, labels, classes)
    decoded_png((tmp_path / "plots" / "confusion.png").read_bytes())
    assert "class_44" in path.read_text(encoding="utf-8")


def test_plot_history_with_missing_columns(tmp_path):
    history = pd.DataFrame({"epoch": [0, 1, 2], "loss": [1.0, 0.8, 0.7]})
    path = report.plot_history(history, tmp_path / "history.png")
    decoded_png(path.read_bytes())


def test_plot_reliability_single_panel(tmp_path):
    _, before, _, labels = make_run(seed=3)
    path = report.plot_reliability(before, None, labels, 15, tmp_path / "reliability.png")
    decoded_png(path.read_bytes())


def test_confusion_matrix_counts_and_errors():
    counts = class_report.confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 2, 0], 3)
    np.testing.assert_array_equal(counts, [[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    with pytest.raises(ValueError, match=r"\[0, 3\]"):
        class_report.confusion_matrix([0, 3], [0, 1], 3)


def test_metrics_from_predictions_recomputes_accuracy_and_nll(tmp_path):
    """The check a generated project's own test runs: metrics.json against predictions.csv."""
    import json

    from kerasls import results
    from kerasls.run import RunFolder

    metrics_in, before, after, labels = make_run(seed=4)
    logits = np.log(before)
    classes = ["TRUE", "FALSE", "007", "NA"]  # class names pandas would retype: read back as written
    written = results.write_results(RunFolder(tmp_path), classes=classes, labels=labels, logits=logits,
                                    temperature=1.3, split="test", label_smoothing=0.1)
    recomputed = results.metrics_from_predictions(tmp_path)
    assert recomputed["n"] == written["n"] == len(labels)
    assert recomputed["accuracy"] == pytest.approx(written["accuracy"], abs=1e-12)
    assert recomputed["nll"] == pytest.approx(written["nll"], abs=1e-6)
    assert json.loads((tmp_path / "metrics.json").read_text())["classes"] == classes


def test_prediction_sets_in_metrics_json_report_headline_and_predictions(tmp_path):
    """Sets fitted on validation rows, measured on other rows: metrics.json's `conformal`, the report section next to
    the automation table, the console line, and the same numbers recomputed from predictions.csv."""
    import json

    from kerasls import conformal, results
    from kerasls.run import RunFolder

    _, val_before, _, val_labels = make_run(num_classes=5, n=400, seed=5)
    _, before, _, labels = make_run(num_classes=5, n=300, seed=6)
    temperature = 1.3
    predictor = conformal.fit(calibration.softmax(np.log(val_before), temperature), val_labels, "lac", 0.1)
    classes = ["a", "b", "c", "d", "<e>"]
    metrics = results.write_results(RunFolder(tmp_path), classes=classes, labels=labels, logits=np.log(before),
                                    temperature=temperature, split="test", label_smoothing=0.1,
                                    set_predictor=predictor)
    sets = json.loads((tmp_path / "metrics.json").read_text())["conformal"]
    assert sets == metrics["conformal"] and sets["score"] == "lac" and sets["alpha"] == 0.1 and sets["n"] == 300
    assert [row["alpha"] for row in sets["table"]] == [0.01, 0.05, 0.1, 0.2]
    assert sets["calibration_rows"] == 400 and not sets["in_sample"] and set(sets["other_scores"]) == {"aps", "raps"}
    expected = predictor.sets(calibration.softmax(np.log(before), temperature))
    assert sets["set_coverage"] == pytest.approx(expected[np.arange(300), labels].mean(), abs=1e-12)
    assert sets["mean_set_size"] == pytest.approx(expected.sum(axis=1).mean(), abs=1e-12)
    assert set(sets["classes"]) == set(classes)
    assert sets["classes_below"] == [name for name in classes if sets["classes"][name]["set_coverage"] < 0.9]

    text = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert text.index("<h2>Automation rate</h2>") < text.index("<h2>Prediction sets</h2>")
    for row in sets["table"]:
        assert f"<td>{100 * row['set_coverage']:.1f}%</td><td>{row['mean_set_size']:.2f}</td>" in text
    assert "<strong>0.1 (served)</strong>" in text and "n = 400 validation rows" in text
    for name in sets["classes_below"]:
        assert f"<code>{html.escape(name)}</code> {100 * sets['classes'][name]['set_coverage']:.1f}% of" in text
    line = results.headline(metrics).splitlines()[1]
    assert line.startswith(f"prediction sets lac alpha=0.1: coverage={sets['set_coverage']:.4f}  mean size=")

    recomputed = results.metrics_from_predictions(tmp_path)
    for key in conformal.SUMMARY_KEYS:
        assert recomputed[key] == pytest.approx(sets[key], abs=1e-12), key


def test_too_few_validation_rows_for_alpha_is_one_error_naming_the_key_the_rows_and_the_fix():
    from kerasls import results
    from kerasls.config import CalibrationConfig
    from kerasls.errors import KeraslsError

    settings = CalibrationConfig(conformal={"alpha": 0.01})
    results.check_validation_rows(settings, 99)
    with pytest.raises(KeraslsError) as error:
        results.check_validation_rows(settings, 60)
    assert str(error.value) == (
        "calibration.conformal.alpha=0.01 needs at least 99 validation rows (n >= 1/alpha - 1), but there are 60: "
        "give more validation rows (data.val, or a larger data.val_fraction), raise calibration.conformal.alpha to "
        "0.0164 or more, or turn prediction sets off with calibration.conformal=null")
    results.check_validation_rows(CalibrationConfig(conformal=None), 3)
    with pytest.raises(KeraslsError, match="calibration.conformal.alpha=0.1 needs at least 9"):
        results.fit_prediction_sets(CalibrationConfig(), np.zeros((5, 3)), np.zeros(5, np.int64), 1.0)


def test_most_confused_pairs_are_counted_and_named_by_an_example_row():
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    predicted = np.array([1, 1, 0, 0, 1, 1, 0, 0, 2])
    pairs = class_report.confused_pairs(labels, predicted, ["a", "b", "c"], row_ids=[f"r{i}" for i in range(9)])
    # off the diagonal: (a->b) 2, (c->a) 2, (b->a) 1, (c->b) 1; ties in class order
    assert [(p["true"], p["predicted"], p["rows"]) for p in pairs] == [("a", "b", 2), ("c", "a", 2), ("b", "a", 1),
                                                                      ("c", "b", 1)]
    assert pairs[0]["example"] == "r0" and pairs[1]["example"] == "r6" and pairs[1]["share"] == 0.5
    assert class_report.confused_pairs(labels, predicted, ["a", "b", "c"])[0]["example"] == "predictions.csv line 2"


def test_many_classes_fold_the_class_table_and_leave_the_matrix_out(tmp_path):
    rng = np.random.default_rng(0)
    classes = [f"intent_{k:02d}" for k in range(40)]
    labels = rng.integers(0, 40, 800)
    logits = np.eye(40)[labels] * 3 + rng.normal(size=(800, 40))
    probs = calibration.softmax(logits)
    metrics = calibration.evaluate(logits, labels)
    metrics.update(classes=classes, split="test")
    text = report.write_report(tmp_path, metrics, None, probs, probs, labels, classes).read_text(encoding="utf-8")
    assert "<details><summary>40 classes (rows and recall of each)</summary>" in text
    assert "the matrix is too dense to read here" in text and (tmp_path / "plots" / "confusion.png").is_file()
    assert "Most confused pairs" in text and text.count('alt="confusion matrix"') == 0
    few = report.write_report(tmp_path, metrics | {"classes": classes[:3]}, None, probs[:, :3] / probs[:, :3].sum(1,
                              keepdims=True), probs[:, :3], labels % 3, classes[:3]).read_text(encoding="utf-8")
    assert 'alt="confusion matrix"' in few and "<details>" not in few
