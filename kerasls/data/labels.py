"""Class names and class indices of table rows: the label column's text, and its index into the classes.

Shared by every table reader (training tables, streaming chunks, image manifests, `kerasls evaluate`), so a
label is spelled and looked up one way, and an unknown one is one error naming the file, line and column.
"""

from __future__ import annotations

import difflib

import numpy as np
import pandas as pd

from kerasls.errors import KeraslsError
from kerasls.targets import OUT_OF_SCOPE


def as_text(value) -> str:
    """A typed value (Parquet) as the text a client would send: 1.0 and 1 are "1"; True is "True"."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def label_strings(column: pd.Series) -> np.ndarray:
    """Class names as strings: the file's text; typed values (Parquet) as `as_text` spells them."""
    if pd.api.types.is_string_dtype(column) and column.notna().all():  # text already (fast path, large tables)
        return column.astype(str).to_numpy(dtype=object)
    return np.array([as_text(value) for value in column], dtype=object)


def class_indices(names, classes, lines, source: str, not_a_class: str, out_of_scope=None) -> np.ndarray:
    """Class names -> int64 indices into `classes`, vectorised, and `OUT_OF_SCOPE` for the name `out_of_scope`;
    the first other name that is not a class raises "<source>: line <its line>: label <name> <not_a_class>".
    `lines[i]` is the file line of `names[i]`."""
    names = np.asarray(names, dtype=object)
    codes = pd.Categorical(names, categories=list(classes)).codes.astype(np.int64)  # -1: not a class
    outside = names == out_of_scope if out_of_scope is not None else np.zeros(len(names), dtype=bool)
    unknown = np.flatnonzero((codes < 0) & ~outside)
    if unknown.size:
        first = unknown[0]
        raise KeraslsError(f"{source}: line {lines[first]}: label {names[first]!r} {not_a_class}")
    codes[outside] = OUT_OF_SCOPE
    return codes


def label_indices(frame: pd.DataFrame, label: str, classes, source=None, out_of_scope=None) -> np.ndarray:
    """The class index of every row's `label` column (`OUT_OF_SCOPE` for the label `out_of_scope`). The frame's
    index is the row number in its file (chunks, splits): +1 for the header, +1 for 1-based lines, so errors name
    the file line."""
    source = source or frame.attrs.get("path", "table")
    lines = np.asarray(frame.index) + 2
    if label not in frame.columns:
        raise KeraslsError(f"{source}: label column {label!r} not found; columns are {list(frame.columns)}")
    missing = np.flatnonzero(frame[label].isna().to_numpy())
    if missing.size:
        raise KeraslsError(f"{source}: line {lines[missing[0]]}: label column {label!r} is empty; fill it or drop "
                           "the row")
    return class_indices(label_strings(frame[label]), classes, lines, source,
                         f"in column {label!r} is not a training class {list(classes)}; remove the row or add "
                         "examples of that class to the training data", out_of_scope)


def out_of_scope_line(label, rows: dict, abstains=True) -> str:
    """The summary line of the rows labelled `data.out_of_scope_label`, by split."""
    counts = " ".join(f"{split}={count}" for split, count in rows.items())
    use = ("validation rows choose calibration.abstain's threshold" if abstains
           else "set calibration.abstain for the export to abstain on such rows")
    return (f"out of scope ({label!r}): {counts}; training rows target the uniform distribution (outlier exposure), "
            f"{use}; every metric but the decisions leaves them out")


def check_out_of_scope_rows(label, rows: int, labels_seen, source) -> None:
    """A `data.out_of_scope_label` that no row carries is a misspelling more often than not (the rows it meant then
    train as a class of their own): one error naming the label, the labels there are, and the closest."""
    if label is None or rows:
        return
    seen = sorted({str(name) for name in labels_seen})
    close = difflib.get_close_matches(str(label), seen, n=1, cutoff=0.6) or [
        name for name in seen if name.lower() == str(label).lower()]
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise KeraslsError(f"{source}: data.out_of_scope_label {label!r} labels no row{hint}; the labels are {seen[:20]}"
                       f"{' ...' if len(seen) > 20 else ''}: fix data.out_of_scope_label, or set it to null")


def check_decision_label(calibration, classes) -> None:
    """`calibration.abstain.label` must not be a class: a `decision` equal to it would mean both."""
    abstain = calibration.abstain
    if abstain is not None and abstain.label in [str(name) for name in classes]:
        raise KeraslsError(f"calibration.abstain.label {abstain.label!r} is also a class, so a decision of "
                           f"{abstain.label!r} would mean either: choose another label, or set "
                           "data.out_of_scope_label to it if its rows belong to no class")

