"""Soft labels from table columns: per-row probabilities or annotator vote counts, bound to classes by name.

Shared by tabular tables and image manifests. A column is bound to its class by its name, never by its position:
`prob_<class>` / `votes_<class>` in a list, or an explicit mapping {class: column} for other names (CIFAR-10H's
`count_cat`, say). Every bad value is one error naming the file, line and column.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from kerasls import targets as soft_targets
from kerasls.data.labels import label_indices
from kerasls.errors import KeraslsError

_PREFIXES = {"probability": "prob_", "vote": "votes_"}
_KEYS = {"probability": "targets.soft_labels.probabilities", "vote": "targets.soft_labels.votes"}


def soft_column_classes(columns, kind, source) -> dict:
    """{class: column} from a list of `prob_<class>`/`votes_<class>` names or an explicit mapping."""
    if isinstance(columns, dict):
        return {str(name): str(column) for name, column in columns.items()}
    """`prob_<class>` / `votes_<class>` column names -> class names, in the order given."""
    prefix, key = _PREFIXES[kind], _KEYS[kind]
    names = []
    for column in columns:
        if not str(column).startswith(prefix) or len(str(column)) == len(prefix):
            raise KeraslsError(f"{source}: column {column!r} in {key} must be named {prefix}<class>; rename it "
                               "or give a mapping {class: column}")
        names.append(str(column)[len(prefix):])
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise KeraslsError(f"{source}: {key} lists class(es) {duplicated} more than once; list each column once")
    return dict(zip(names, columns))


def table_targets(frame, classes, label_column, probability_columns=None, vote_columns=None,
                     vote_smoothing=0.0, source="manifest", out_of_scope=None):
    """Targets of a manifest's rows over `classes` -> (targets float32 [N, K], labels int64 [N], soft).

    Hard labels become one-hot rows. Probability or vote columns are bound to classes by name (`prob_cat` is the
    probability of class "cat", whatever the column order); votes c become (c + α) / (Σc + Kα) with
    α = `vote_smoothing`. Line numbers in messages come from the frame's index (the header is line 1).

    `labels` is each row's observed class, which accuracy, ECE, NLL and Brier are measured against: the label
    column when the table has it (the class that actually happened, even for rows with distributions), else
    the argmax of the row's distribution (ties go to the lowest class index; `calibration.argmax_ties` counts
    them). `observed_from(frame, label_column)` says which. With hard labels, a row labelled `out_of_scope` gets
    class -1 and the uniform distribution (`targets.hard_targets`).
    """
    if probability_columns and vote_columns:
        raise KeraslsError(f"{source}: set only one of {_KEYS['probability']} and {_KEYS['vote']}")
    lines = [int(index) + 2 for index in frame.index]
    columns = probability_columns or vote_columns
    if not (probability_columns or vote_columns):
        labels = label_indices(frame, label_column, classes, source, out_of_scope)
        return soft_targets.hard_targets(labels, len(classes)), labels, False
    kind = "probability" if probability_columns else "vote"
    values, ordered = _soft_values(frame, classes, kind, columns, lines, source)
    totals = values.sum(axis=1)
    if np.any(totals == 0):
        row = int(np.flatnonzero(totals == 0)[0])
        raise KeraslsError(f"{source}: line {lines[row]}: columns {ordered} are all 0; every row needs some "
                           f"{kind} mass (fix or drop the row)")
    if kind == "probability":
        bad = soft_targets.invalid_distribution_rows(values, atol=1e-3)
        if bad.size:
            row = int(bad[0])
            raise KeraslsError(f"{source}: line {lines[row]}: columns {ordered} sum to {totals[row]:.6g}, not 1; "
                               "probabilities must sum to 1 (within 0.001)")
        targets = (values / totals[:, None]).astype(np.float32)
    else:
        if vote_smoothing < 0:
            raise KeraslsError(f"targets.soft_labels.vote_smoothing must be >= 0; got {vote_smoothing}")
        targets = soft_targets.from_votes(values, vote_smoothing)
    if observed_from(frame, label_column) == "label":
        return targets, label_indices(frame, label_column, classes, source), True
    return targets, np.argmax(targets, axis=1).astype(np.int64), True


def observed_from(frame, label_column) -> str:
    """"label" when the rows' observed classes come from the label column, "argmax" when from distributions."""
    return "label" if label_column is not None and label_column in frame.columns else "argmax"


def _soft_values(frame, classes, kind, columns, lines, source):
    """The `prob_<class>`/`votes_<class>` columns in class order -> (float64 [N, K] checked values, column names)."""
    prefix, by_class = _PREFIXES[kind], soft_column_classes(columns, kind, source)
    for name in sorted(set(by_class) - set(classes)):
        raise KeraslsError(f"{source}: column {by_class[name]!r} names class {name!r}, which is not a "
                           f"training class {list(classes)}; fix {_KEYS[kind]}")
    for name in classes:
        if name not in by_class:
            raise KeraslsError(f"{source}: no column {prefix + name!r} for class {name!r}; add it to the manifest "
                               f"and to {_KEYS[kind]}")
        if by_class[name] not in frame.columns:
            raise KeraslsError(f"{source}: column {by_class[name]!r} not found; columns are {list(frame.columns)}")
    ordered = [by_class[name] for name in classes]
    values = np.empty((len(frame), len(classes)), dtype=np.float64)
    for k, column in enumerate(ordered):
        raw = frame[column]
        numbers = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
        with np.errstate(invalid="ignore"):
            bad = np.isnan(numbers) | (numbers < 0) | ((numbers != np.round(numbers)) & (kind == "vote"))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            value, number = raw.iloc[row], numbers[row]
            value = value.item() if isinstance(value, np.generic) else value
            if np.isnan(number):
                problem = "is empty" if pd.isna(value) else f"holds {value!r}, not a number"
            elif number < 0:
                problem = f"is negative ({value!r})"
            else:
                problem = f"holds {value!r}; vote counts must be whole numbers"
            raise KeraslsError(f"{source}: line {lines[row]}: column {column!r} {problem}; fix the value")
        values[:, k] = numbers
    return values, ordered
