"""What a finished run leaves behind: `metrics.json`, `predictions.csv` and `report.html`.

All metrics are computed on hard, unsmoothed labels of the evaluation split (test when given, else val), before
and after temperature scaling. Files are written atomically, `metrics.json` last among the tables, so a reader
that finds it finds the rest complete.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from kerasls import calibration, report
from kerasls.fileio import atomic_write_text


def fit_temperature(val_logits, val_labels, enabled=True) -> float:
    """T on validation NLL (Guo et al. 2017); 1.0 when turned off or when it would not lower NLL."""
    return calibration.fit_temperature(val_logits, val_labels) if enabled else 1.0


def prediction_table(classes, labels, logits, temperature, row_ids=None) -> pd.DataFrame:
    """`row_ids` (e.g. image paths) become a first column `path`, so each row can be traced to its input."""
    before = calibration.softmax(logits)
    after = calibration.softmax(logits, temperature)
    columns = {"path": list(row_ids)} if row_ids is not None else {}
    columns["label"] = [classes[i] for i in labels]
    columns.update({f"prob_{name}": before[:, k] for k, name in enumerate(classes)})
    columns.update({f"calibrated_prob_{name}": after[:, k] for k, name in enumerate(classes)})
    return pd.DataFrame(columns)


def write_results(run, *, classes, labels, logits, temperature, split, label_smoothing, bins=15,
                  target_accuracy=0.95, export_path=None, validation=None, temperature_scaling=True,
                  row_ids=None, soft_targets=None, extra_metrics=None, title="kerasls run") -> dict:
    """Metrics on (`labels`, `logits`); `validation=(val_logits, val_labels)` adds `val_nll`, `val_nll_calibrated`
    (what `kerasls sweep` ranks ε by) and `val_accuracy`."""
    labels = np.asarray(labels)
    metrics = {"classes": list(classes), "split": split}
    metrics.update(calibration.evaluate(logits, labels, temperature=temperature, bins=bins,
                                        target_accuracy=target_accuracy))
    metrics["label_smoothing"] = None if label_smoothing is None else float(label_smoothing)
    metrics["temperature_scaling"] = bool(temperature_scaling)
    if validation is not None:
        val_logits, val_labels = validation
        val_labels = np.asarray(val_labels)
        metrics["val_accuracy"] = float((np.argmax(val_logits, axis=1) == val_labels).mean())
        metrics["val_nll"] = calibration.negative_log_likelihood(calibration.softmax(val_logits), val_labels)
        metrics["val_nll_calibrated"] = calibration.negative_log_likelihood(
            calibration.softmax(val_logits, temperature), val_labels)
    metrics["export_path"] = str(export_path) if export_path is not None else None
    if soft_targets is not None:  # the evaluated rows carry label distributions: compare to them too
        probabilities = calibration.softmax(logits)
        metrics["soft_cross_entropy"] = calibration.soft_cross_entropy(probabilities, soft_targets)
        metrics["soft_kl"] = calibration.soft_kl(probabilities, soft_targets)
    metrics.update(extra_metrics or {})

    atomic_write_text(run.predictions, prediction_table(classes, labels, logits, temperature, row_ids).to_csv(index=False))
    history = pd.read_csv(run.history) if Path(run.history).is_file() else None
    report.write_report(
        run.path, metrics, history, calibration.softmax(logits), calibration.softmax(logits, temperature), labels,
        list(classes), title=title,
    )
    atomic_write_text(run.metrics, json.dumps(metrics, indent=2))
    return metrics


def headline(metrics: dict) -> str:
    """One line for the console: accuracy and calibration before and after temperature."""
    return (
        f"{metrics['split']} n={metrics['n']}  accuracy={metrics['accuracy']:.4f}  "
        f"nll={metrics['nll']:.4f}  ece={metrics['ece']:.4f}  brier={metrics['brier']:.4f}  "
        f"T={metrics['temperature']:.3f} -> nll={metrics['nll_calibrated']:.4f} ece={metrics['ece_calibrated']:.4f}"
    )
