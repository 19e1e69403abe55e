"""`kerasls predict`: batch predictions from an export on a table of raw rows.

The export's own signature says which columns it needs and of which type; the table is checked against it, so
a missing column is reported by name before TensorFlow sees anything.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import tensorflow as tf

from kerasls.data.tabular import read_table
from kerasls.errors import KeraslsError
from kerasls.export import load_serving_function


def serving_inputs(frame: pd.DataFrame, input_specs: dict, source="input") -> dict:
    """Table columns -> the rank-1 tensors the signature takes (float32 numbers, strings with '' for missing)."""
    missing = [name for name in input_specs if name not in frame.columns]
    if missing:
        raise KeraslsError(f"{source}: column(s) {missing} needed by the export are missing; columns are {list(frame.columns)}")
    tensors = {}
    for name, spec in input_specs.items():
        column = frame[name]
        if spec.dtype == tf.string:
            tensors[name] = tf.constant(["" if pd.isna(v) else str(v) for v in column], tf.string)
        else:
            numbers = pd.to_numeric(column, errors="coerce")
            bad = column[numbers.isna() & column.notna()]
            if len(bad):
                raise KeraslsError(f"{source}: line {int(bad.index[0]) + 2}: column {name!r} must be a number, got {bad.iloc[0]!r}")
            tensors[name] = tf.constant(numbers.to_numpy(dtype=np.float32))
    return tensors


def predict_frame(function, input_specs, classes, frame: pd.DataFrame, batch_size=1024, source="input") -> pd.DataFrame:
    outputs = []
    for start in range(0, len(frame), batch_size):
        chunk = frame.iloc[start:start + batch_size]
        result = function(**serving_inputs(chunk, input_specs, source))
        outputs.append({key: value.numpy() for key, value in result.items()})
    probabilities = np.concatenate([o["probabilities"] for o in outputs])
    names = np.concatenate([o["class_name"] for o in outputs])
    confidence = np.concatenate([o["confidence"] for o in outputs])
    classes = classes or [str(i) for i in range(probabilities.shape[1])]
    result = frame.reset_index(drop=True).copy()
    result["predicted_class"] = [n.decode("utf-8") for n in names]
    result["confidence"] = confidence
    for index, name in enumerate(classes):
        result[f"prob_{name}"] = probabilities[:, index]
    return result


def predict_file(export, inputs, batch_size=1024) -> pd.DataFrame:
    function, input_specs, classes, _ = load_serving_function(export)
    if "image_bytes" in input_specs:
        raise KeraslsError(f"{export}: image exports are not supported by `kerasls predict` yet")
    frames = []
    for path in inputs:
        frame = read_table(path, "input")
        frames.append(predict_frame(function, input_specs, classes, frame, batch_size, source=str(path)))
    return pd.concat(frames, ignore_index=True)
