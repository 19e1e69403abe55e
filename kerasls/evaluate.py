"""`kerasls evaluate EXPORT DATA`: the run report, for an export on any labelled table.

The export's `logits` output and the temperature stored with it (`assets/kerasls.json`) give the same metrics,
predictions and report as at the end of training, so a model can be checked on new data (a later month, another
region) without its project; with the prediction-set thresholds stored there too, the coverage and size of the
sets on the new rows, and with the decision rule stored there, its abstentions (rows labelled with the training's
`data.out_of_scope_label`, or the rule's label, count as out of scope).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tensorflow as tf

from kerasls import conformal, decisions, results
from kerasls.data import images
from kerasls.data.labels import class_indices, label_strings
from kerasls.data.tabular import read_table
from kerasls.errors import KeraslsError
from kerasls.export import METADATA_FILE, load_serving_function, resolve_export
from kerasls.predict import serving_inputs
from kerasls.run import RunFolder


def export_metadata(export_dir: Path) -> dict:
    path = export_dir / "assets" / METADATA_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def out_of_scope_label(metadata: dict):
    """The label of rows that belong to no class, in a table evaluated by an export: the training's
    `data.out_of_scope_label`, else the decision rule's label; None for an export without either."""
    return metadata.get("out_of_scope_label") or (metadata.get("decision") or {}).get("label")


def image_rows(function, classes, data, label=None, batch_size=64, out_of_scope=None):
    """(observed class indices (-1: the label `out_of_scope`), logits, image paths) of a class-folder tree or a
    CSV manifest (`label` column, default "label"), evaluated by an image export."""
    data = Path(data)
    if data.is_dir():
        paths, observed = images.class_folder_labels(data, classes, "class of the export",
                                                     "evaluate another export", out_of_scope)
    elif data.is_file() and data.suffix.lower() == ".csv":
        label = label or "label"
        frame = images.read_manifest(data, label_column=label, role="data")
        paths = list(frame["path"])
        observed = class_indices(label_strings(frame[label]), classes, np.arange(len(frame)) + 2, str(data),
                                 f"is not a class of the export {classes}", out_of_scope)
    else:
        raise KeraslsError(f"{data}: an image export is evaluated on a folder of class folders or a .csv manifest "
                           "(path and label columns)")
    logits = np.concatenate([
        function(image_bytes=tf.constant([Path(path).read_bytes() for path in paths[start:start + batch_size]]))[
            "logits"].numpy() for start in range(0, len(paths), batch_size)])
    return observed, logits, paths


def evaluate_export(export, data, out=None, label=None, bins=15, target_accuracy=0.95, batch_size=1024):
    """Returns (metrics, output folder). `data` is a labelled table for a tabular export, a class-folder tree or
    a manifest for an image export."""
    export_dir = resolve_export(export)
    metadata = export_metadata(export_dir)
    function, input_specs, classes, _ = load_serving_function(export_dir)
    out_of_scope = out_of_scope_label(metadata)
    if "image_bytes" in input_specs:
        labels, logits, row_ids = image_rows(function, classes, data, label, out_of_scope=out_of_scope)
        return _write(export_dir, metadata, data, out, classes, labels, (logits, None), bins, target_accuracy,
                      row_ids)
    label = label or metadata.get("label")
    if not label:
        raise KeraslsError(f"{export_dir}: the export does not name its label column; pass --label COLUMN")
    text_inputs = [name for name, spec in input_specs.items() if spec.dtype == tf.string]
    frame = read_table(data, "data", literal=[label, *text_inputs])  # the file's own strings, as in training
    if label not in frame.columns:
        raise KeraslsError(f"{data}: label column {label!r} not found; columns are {list(frame.columns)} "
                           "(pass --label)")
    labels = class_indices(label_strings(frame[label]), classes, np.arange(len(frame)) + 2, str(data),
                           f"is not a class of the export {classes}", out_of_scope)
    outputs = [function(**serving_inputs(frame.iloc[start:start + batch_size], input_specs, str(data)))
               for start in range(0, len(frame), batch_size)]
    logits = np.concatenate([o["logits"].numpy() for o in outputs])
    unreadable = np.concatenate([o["unreadable"].numpy() for o in outputs]) if "unreadable" in outputs[0] else None
    return _write(export_dir, metadata, data, out, classes, labels, (logits, unreadable), bins, target_accuracy)


def _write(export_dir, metadata, data, out, classes, labels, outputs, bins, target_accuracy, row_ids=None):
    """`outputs`: (logits, unreadable flags or None) of the rows."""
    logits, unreadable = outputs
    default_name = f"{Path(data).stem}-{export_dir.parent.parent.name}-v{export_dir.name}"
    out = Path(out) if out else Path("evaluations") / default_name
    if (out / "metrics.json").exists():
        raise KeraslsError(f"{out} already holds an evaluation; pass another -o folder")
    out.mkdir(parents=True, exist_ok=True)
    metrics = results.write_results(
        RunFolder(out.resolve()), classes=classes, labels=labels, logits=logits,
        temperature=float(metadata.get("temperature", 1.0)), split=Path(data).name,
        label_smoothing=metadata.get("label_smoothing"), bins=bins,
        target_accuracy=target_accuracy, export_path=export_dir, row_ids=row_ids,
        title=f"Evaluation of {export_dir} on {Path(data).name}",
        set_predictor=conformal.SetPredictor.from_json(metadata["conformal"]) if metadata.get("conformal") else None,
        decision_rule=decisions.DecisionRule.from_json(metadata["decision"]) if metadata.get("decision") else None,
        unreadable=unreadable, out_of_scope_label=out_of_scope_label(metadata),
    )
    return metrics, out
