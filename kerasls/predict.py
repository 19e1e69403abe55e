"""`kerasls predict`: batch predictions from an export on a table of raw rows.

The export's own signature says which columns it needs and of which type; the table is checked against it, so
a missing column is reported by name before TensorFlow sees anything.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from kerasls.data.images import IMAGE_SUFFIXES
from kerasls.data.tabular import read_table
from kerasls.errors import KeraslsError
from kerasls.export import load_serving_function


def serving_inputs(frame: pd.DataFrame, input_specs: dict, source="input") -> dict:
    """Table columns -> the rank-1 tensors the signature takes (float32 numbers, strings with '' for missing)."""
    missing = [name for name in input_specs if name not in frame.columns]
    if missing:
        raise KeraslsError(f"{source}: column(s) {missing} needed by the export are missing; columns are "
                           f"{list(frame.columns)} (add them to the file: the export takes the columns it was "
                           "trained on, by name)")
    tensors = {}
    for name, spec in input_specs.items():
        column = frame[name]
        if spec.dtype == tf.string:
            tensors[name] = tf.constant(["" if pd.isna(v) else str(v) for v in column], tf.string)
        else:
            numbers = pd.to_numeric(column, errors="coerce")
            bad = column[numbers.isna() & column.notna()]
            if len(bad):
                raise KeraslsError(f"{source}: line {int(bad.index[0]) + 2}: column {name!r} must be a number, "
                                   f"got {bad.iloc[0]!r}")
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
    return add_set_columns(result, outputs, classes)


def add_set_columns(result: pd.DataFrame, outputs: list, classes) -> pd.DataFrame:
    """`prediction_set` (the set's class names joined by `|`, in class order; empty for an empty set) and `set_size`
    when the export serves prediction sets; `unreadable`, `decision` and `abstained` when it serves them."""
    place = result.columns.get_loc("confidence") + 1  # after predicted_class and confidence
    for name in ("decision", "abstained", "unreadable"):
        if outputs and name in outputs[0]:
            values = np.concatenate([o[name] for o in outputs])
            result.insert(place, name, [v.decode("utf-8") for v in values] if values.dtype == object else values)
            place += 1
    if not outputs or "prediction_set" not in outputs[0]:
        return result
    sets = np.concatenate([o["prediction_set"] for o in outputs])
    result["prediction_set"] = ["|".join(str(classes[k]) for k in np.flatnonzero(row)) for row in sets]
    result["set_size"] = np.concatenate([o["set_size"] for o in outputs])
    return result


def image_files(inputs) -> list[Path]:
    """Image files given directly, and every image below the folders given (sorted)."""
    files = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not found:
                raise KeraslsError(f"{item}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
            files.extend(found)
        elif item.is_file():
            files.append(item)
        else:
            raise KeraslsError(f"{item}: no such file or folder")
    return files


def predict_images(function, classes, inputs, batch_size=64) -> pd.DataFrame:
    files = image_files(inputs)
    outputs = []
    for start in range(0, len(files), batch_size):
        chunk = files[start:start + batch_size]
        encoded = [path.read_bytes() for path in chunk]
        try:
            result = function(image_bytes=tf.constant(encoded))
        except tf.errors.InvalidArgumentError:
            bad = next((path for path, data in zip(chunk, encoded) if not _decodes(data)), chunk[0])
            raise KeraslsError(f"{bad}: not a readable JPEG/PNG/BMP/GIF image; remove it or re-save it") from None
        outputs.append({key: value.numpy() for key, value in result.items()})
    probabilities = np.concatenate([o["probabilities"] for o in outputs])
    result = pd.DataFrame({
        "path": [str(path) for path in files],
        "predicted_class": [n.decode("utf-8") for o in outputs for n in o["class_name"]],
        "confidence": np.concatenate([o["confidence"] for o in outputs]),
    })
    classes = classes or [str(i) for i in range(probabilities.shape[1])]
    for index, name in enumerate(classes):
        result[f"prob_{name}"] = probabilities[:, index]
    return add_set_columns(result, outputs, classes)


def _decodes(data: bytes) -> bool:
    try:
        tf.io.decode_image(data, expand_animations=False)
        return True
    except (tf.errors.InvalidArgumentError, ValueError):
        return False


def predict_file(export, inputs, batch_size=1024) -> pd.DataFrame:
    """Predictions for CSV/Parquet tables (tabular exports) or image files and folders (image exports)."""
    function, input_specs, classes, _ = load_serving_function(export)
    if "image_bytes" in input_specs:
        tables = [str(path) for path in inputs if Path(path).suffix.lower() in (".csv", ".parquet", ".pq")]
        if tables:
            raise KeraslsError(f"{tables[0]}: this export is an image classifier; it takes image files or folders "
                               f"of images ({', '.join(IMAGE_SUFFIXES)}), not a table")
        return predict_images(function, classes, inputs, batch_size=min(batch_size, 256))
    images = [str(path) for path in inputs if Path(path).suffix.lower() in IMAGE_SUFFIXES or Path(path).is_dir()]
    if images:
        raise KeraslsError(f"{images[0]}: this export is a table classifier; it takes a CSV or Parquet file with the "
                           f"columns {list(input_specs)}, not images")
    frames = []
    text_inputs = [name for name, spec in input_specs.items() if spec.dtype == tf.string]
    for path in inputs:
        frame = read_table(path, "input", literal=text_inputs)  # the file's own strings, as training read them
        frames.append(predict_frame(function, input_specs, classes, frame, batch_size, source=str(path)))
    return pd.concat(frames, ignore_index=True)
