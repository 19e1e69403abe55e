"""Tables in, checked columns out: CSV/Parquet reading, feature inference, stratified split, tf.data.

Every check raises `KeraslsError` with the file and column it is about, so a user sees one line that says what
to fix instead of a traceback from deep inside TensorFlow.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from kerasls import targets as soft_targets
from kerasls.config import DataConfig, FeatureColumns
from kerasls.data.labels import as_text, check_out_of_scope_rows, label_indices, label_strings
from kerasls.data.soft_labels import soft_column_classes, table_targets
from kerasls.errors import KeraslsError, first_line

# Names a SavedModel signature accepts as input keys (TF's own rule for signature arguments).
_SIGNATURE_NAME = re.compile(r"^[A-Za-z0-9.][A-Za-z0-9_.\-/]*$")


def _first_invalid_utf8(path: Path):
    """(line, byte) of the first byte that is not UTF-8, for the error message."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        return data.count(b"\n", 0, error.start) + 1, data[error.start:error.start + 1]
    return None, b""


def check_table_path(path, role="data") -> Path:
    """The path of an existing table file, or one error naming the config key to fix."""
    path = Path(path)
    if not path.is_file():
        where = (f"set data.{role} to an existing CSV or Parquet file" if role in ("train", "val", "test")
                 else "pass an existing CSV or Parquet file")
        raise KeraslsError(f"{path}: {role} file not found; {where}")
    return path


def check_csv_header(path: Path) -> None:
    with path.open("rb") as handle:
        header = handle.readline().decode("utf-8").rstrip("\r\n").split(",")
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if duplicated:
        raise KeraslsError(f"{path}: duplicate column name(s) {duplicated}; give every column a unique name")


def table_read_error(path: Path, error: Exception) -> KeraslsError:
    """The one-line message for an exception pandas or pyarrow raised while reading `path`."""
    if isinstance(error, UnicodeDecodeError):
        line, byte = _first_invalid_utf8(path)
        return KeraslsError(f"{path}: line {line}: byte {byte!r} is not UTF-8 text; re-save the file as UTF-8")
    if isinstance(error, pd.errors.EmptyDataError):
        return KeraslsError(f"{path}: the file is empty; it needs a header row and data rows")
    return KeraslsError(f"{path}: cannot be read as a table ({first_line(error)})")


READ_ERRORS = (UnicodeDecodeError, pd.errors.EmptyDataError, pd.errors.ParserError, ValueError, OSError)


def is_parquet(path: Path) -> bool:
    return path.suffix.lower() in (".parquet", ".pq")


# pandas' default spellings of a missing value: missing in a numeric column (a string column keeps them as text)
MISSING_SPELLINGS = ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
                     "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"]


def typed_columns(frame: pd.DataFrame, literal=()) -> pd.DataFrame:
    """A table read as text -> numeric columns typed, every other column the file's own strings.

    A column not in `literal` whose present values all read as numbers becomes numeric (pandas' missing-value
    spellings, e.g. "NA", are missing there). Every other column keeps the strings the file holds, with only the
    empty cell missing (NaN): "TRUE" stays "TRUE" (pandas would make it True), "007" in a `literal` column stays
    "007" (pandas: 7), "NA" stays "NA". Training then learns the vocabulary a client of the export sends, since
    a client sends the values of its source as strings (the serving signature takes strings).
    """
    typed = {}
    for name in frame.columns:
        column = frame[name]
        if pd.api.types.is_object_dtype(column) or pd.api.types.is_string_dtype(column):
            present = column.notna() & (column != "")
            if name not in literal:
                values = column.where(~column.isin(MISSING_SPELLINGS))
                numbers = pd.to_numeric(values, errors="coerce")
                if present.any() and numbers.notna().sum() == values.notna().sum():
                    typed[name] = numbers
                    continue
            typed[name] = column.where(present)
        elif name in literal:  # Parquet's typed values
            typed[name] = column.map(as_text, na_action="ignore").astype(object)
        else:
            typed[name] = column
    result = pd.DataFrame(typed, index=frame.index)
    result.attrs = dict(frame.attrs)
    return result


def read_csv_text(path, **kwargs) -> pd.DataFrame:
    """A CSV file with every cell as its text ("" for an empty cell): what `typed_columns` takes."""
    return pd.read_csv(path, encoding="utf-8", dtype=str, keep_default_na=False, na_filter=False, **kwargs)


def read_table(path, role="data", literal=()) -> pd.DataFrame:
    """Read a CSV or Parquet file (columns typed by `typed_columns`: `literal` columns stay the file's strings);
    `role` ("train", "test", ...) only improves the error messages."""
    path = check_table_path(path, role)
    try:
        if is_parquet(path):
            frame = pd.read_parquet(path)
        else:
            check_csv_header(path)
            frame = read_csv_text(path)
    except KeraslsError:
        raise
    except READ_ERRORS as error:
        raise table_read_error(path, error) from None
    if frame.empty:
        raise KeraslsError(f"{path}: has a header but no data rows")
    frame.attrs["path"] = str(path)
    return typed_columns(frame, literal)


def check_files_and_columns(config: DataConfig, soft=None) -> None:
    """The cheap checks of the data section, from the files' header rows only (CSV) or their schema (Parquet):
    every named file exists, and the label and the listed feature columns are in the training file. Run before
    TensorFlow loads, so these mistakes cost well under a second; `load_splits` checks the rest."""
    paths = {role: check_table_path(getattr(config, role), role) for role in ("train", "val", "test")
             if getattr(config, role)}
    if is_parquet(paths["train"]):
        import pyarrow.parquet as pq

        header = pq.read_schema(paths["train"]).names
    else:
        check_csv_header(paths["train"])
        try:
            header = list(pd.read_csv(paths["train"], nrows=0, encoding="utf-8").columns)
        except READ_ERRORS as error:
            raise table_read_error(paths["train"], error) from None
    soft_columns = soft.columns() if soft is not None and soft.source != "teacher" else []
    if not soft_columns and config.label not in header:
        raise missing_column_error(paths["train"], config.label, "label", header)
    for name in config.features.all_columns() if config.features else []:
        if name not in header:
            raise missing_column_error(paths["train"], name, "feature", header)


def missing_column_error(path, name, role, columns) -> KeraslsError:
    """"<path>: <role> column <name> not found; columns are [...] (the two fixes)"; role is "label" or "feature"."""
    fix = "data.label" if role == "label" else "data.features"
    return KeraslsError(f"{path}: {role} column {name!r} not found; columns are {list(columns)} (add the column "
                        f"to the file, or fix {fix})")


def _looks_like_text(values: pd.Series) -> bool:
    """Free text: on average more than two words a value, or mostly distinct values."""
    strings = values.dropna().astype(str)
    if strings.empty:
        return False
    mean_words = strings.str.split().str.len().mean()
    distinct_share = strings.nunique() / len(strings)
    return mean_words > 2.0 or (distinct_share > 0.5 and len(strings) > 20 and mean_words > 1.0)


def stray_in_numbers(column: pd.Series, share=0.9):
    """(line, value) of the first non-number in a column whose present values are at least `share` numbers: a typo
    that would otherwise make the column categorical without a word; None for any other column."""
    values = column[column.notna() & ~column.isin(MISSING_SPELLINGS)]
    if values.empty:
        return None
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.notna().mean() < share:
        return None
    bad = values[numbers.isna()]
    return int(bad.index[0]) + 2, bad.iloc[0]  # +1 for the header, +1 for 1-based line numbers


def infer_features(frame: pd.DataFrame, label: str, exclude=()) -> FeatureColumns:
    """Numeric columns -> numeric; booleans and short strings -> categorical; longer strings -> text.

    The label and the `exclude` columns (soft-label probabilities or votes) are never features.
    """
    numeric, categorical, text = [], [], []
    for name in frame.columns:
        if name == label or name in exclude:
            continue
        column = frame[name]
        if pd.api.types.is_bool_dtype(column):
            categorical.append(name)
        elif pd.api.types.is_numeric_dtype(column):
            numeric.append(name)
        elif stray := stray_in_numbers(column):
            row, value = stray
            raise KeraslsError(
                f"{frame.attrs.get('path', 'table')}: line {row}, column {name!r} holds {value!r} among numbers; fix "
                "the value (an empty cell is a missing number), or list the column under data.features (numeric or "
                "categorical) so its type is not inferred")
        elif _looks_like_text(column):
            text.append(name)
        else:
            categorical.append(name)
    return FeatureColumns(numeric=numeric, categorical=categorical, text=text)


def check_columns(frame: pd.DataFrame, features: FeatureColumns, label: Optional[str]) -> None:
    path = frame.attrs.get("path", "table")
    wanted = features.all_columns() + ([label] if label else [])
    for name in wanted:
        if name not in frame.columns:
            raise missing_column_error(path, name, "label" if name == label else "feature", frame.columns)
        if frame[name].isna().all():
            if name == label:
                raise KeraslsError(f"{path}: label column {name!r} is empty (all values missing); fill in the class "
                                   "names or set data.label to the column that holds them")
            raise KeraslsError(f"{path}: column {name!r} is empty (all values missing); fill it or drop it from "
                               "the features")
    for name in features.all_columns():
        if not _SIGNATURE_NAME.match(str(name)):
            raise KeraslsError(
                f"{path}: column name {name!r} cannot name a serving input (use letters, digits, '_', '.', '-'); "
                "rename it"
            )
    for name in features.numeric:
        if not pd.api.types.is_numeric_dtype(frame[name]):
            converted = pd.to_numeric(frame[name], errors="coerce")
            bad = frame[name][converted.isna() & frame[name].notna()]
            row = int(bad.index[0]) + 2  # +1 for the header, +1 for 1-based line numbers
            raise KeraslsError(
                f"{path}: line {row}, numeric column {name!r} holds {bad.iloc[0]!r}; fix the value or list the "
                "column under data.features.categorical"
            )
    if label and frame[label].isna().any():
        row = int(frame.index[frame[label].isna()][0]) + 2
        raise KeraslsError(f"{path}: line {row}: label column {label!r} is missing a value; fill it or drop the row")


def column_arrays(frame: pd.DataFrame, features: FeatureColumns) -> dict:
    """Raw columns as the serving signature takes them: float32 for numeric, str for the rest ('' if missing)."""
    arrays = {name: frame[name].astype("float64").to_numpy(dtype=np.float32) for name in features.numeric}
    for name in features.categorical + features.text:
        column = frame[name]
        strings = column.astype(str).to_numpy(dtype=object)
        strings[column.isna().to_numpy()] = ""
        arrays[name] = strings
    return arrays


def stratified_split(frame: pd.DataFrame, label, val_fraction: float, seed: int, names=None):
    """Split so every class keeps its share: per class, round(n·fraction) rows (at least 1 when n ≥ 2) go to val.

    Classes are the values of column `label`, or `names` (one per row) when given.
    """
    rng = np.random.default_rng(seed)
    names = label_strings(frame[label]) if names is None else np.asarray(names, dtype=object)
    val_rows = []
    for name in sorted(set(names)):
        rows = np.flatnonzero(names == name)
        rng.shuffle(rows)
        count = int(round(len(rows) * val_fraction))
        if len(rows) >= 2:
            count = min(max(count, 1), len(rows) - 1)
        else:
            count = 0
        val_rows.extend(rows[:count])
    is_val = np.zeros(len(frame), dtype=bool)
    is_val[val_rows] = True
    train, val = frame[~is_val], frame[is_val]
    train.attrs, val.attrs = dict(frame.attrs), dict(frame.attrs)
    return train, val


@dataclass
class TabularSplits:
    train: pd.DataFrame
    val: pd.DataFrame
    test: Optional[pd.DataFrame]
    classes: list[str]
    features: FeatureColumns
    label: str
    soft: Optional[object] = None  # the SoftLabelsConfig when targets come from probability or vote columns
    out_of_scope: Optional[str] = None  # data.out_of_scope_label: rows with it get class -1 and uniform targets

    @property
    def eval_split(self) -> str:
        return "test" if self.test is not None else "val"

    def targets(self, frame: pd.DataFrame):
        """(targets float32 [N, K], observed class indices [N], soft: bool) of one split (see `frame_targets`)."""
        return frame_targets(frame, self.classes, self.label, self.soft, self.out_of_scope)

    def observed_class(self, frame: pd.DataFrame) -> str:
        """Where the observed classes of `frame` come from: "label" (its label column) or "argmax" (of its
        distributions, when the table has no label column)."""
        return "label" if self.label in frame.columns else "argmax"


def frame_targets(frame: pd.DataFrame, classes, label, soft=None, out_of_scope=None):
    """(targets float32 [N, K], observed class indices [N], soft: bool) of a table's rows.

    One-hot rows for hard labels; with probability/vote columns (`soft`, a SoftLabelsConfig), the row
    distributions (a val/test table without those columns but with the label column is read with hard labels).
    The observed class is the label column's, or the argmax of the distribution without one (`table_targets`).
    A row labelled `out_of_scope` (hard labels only) gets class -1 and the uniform distribution.
    """
    source = frame.attrs.get("path", "table")
    columns = soft.columns() if soft else []
    if columns and (set(columns) & set(frame.columns) or label not in frame.columns):
        return table_targets(frame, classes, label, probability_columns=soft.probabilities,
                             vote_columns=soft.votes, vote_smoothing=soft.vote_smoothing, source=source)
    indices = label_indices(frame, label, classes, source, out_of_scope)
    return soft_targets.hard_targets(indices, len(classes)), indices, False


def load_splits(config: DataConfig, seed: int, soft=None) -> TabularSplits:
    """Read train (and val/test when given), check columns, infer features, split train when no val file.

    `soft` (a SoftLabelsConfig with probabilities or votes) takes the classes and targets from those columns;
    the label column is then optional.
    """
    soft = soft if soft is not None and soft.source != "teacher" else None
    soft_columns = soft.columns() if soft else []
    # the label and the categorical/text columns are read as the file's strings (see `typed_columns`)
    literal = [config.label] + (config.features.categorical + config.features.text if config.features else [])
    train = read_table(config.train, "train", literal)
    has_label = config.label in train.columns or not soft
    features = config.features or infer_features(train, config.label, exclude=soft_columns)
    if not features.all_columns():
        raise KeraslsError(f"{config.train}: no feature columns besides the label {config.label!r}")
    check_columns(train, features, config.label if has_label else None)
    if soft:
        kind = "probability" if soft.probabilities else "vote"
        classes = sorted(soft_column_classes(soft.probabilities or soft.votes, kind, config.train))
        train_targets, _, _ = table_targets(train, classes, config.label, soft.probabilities, soft.votes,
                                            soft.vote_smoothing, source=str(config.train))
        # rows with distributions are split by their most likely class, so a run on votes and a run on the
        # majority label of the same rows get the same validation rows
        names = [classes[i] for i in train_targets.argmax(axis=1)]
    else:
        classes = sorted(set(label_strings(train[config.label])) - {config.out_of_scope_label})
        names = None  # out-of-scope rows are split as a class of their own
    if len(classes) < 2:
        raise KeraslsError(
            f"{config.train}: label column {config.label!r} has one class only ({classes}); a classifier needs two "
            "or more"
        )
    literal = [config.label] + features.categorical + features.text
    if config.val:
        val = read_table(config.val, "val", literal)
        check_columns(val, features, None if soft else config.label)
    else:
        train, val = stratified_split(train, config.label, config.val_fraction, seed, names=names)
    test = None
    if config.test:
        test = read_table(config.test, "test", literal)
        check_columns(test, features, None if soft else config.label)
    splits = TabularSplits(train=train, val=val, test=test, classes=classes, features=features,
                           label=config.label, soft=soft, out_of_scope=config.out_of_scope_label)
    for frame in (val, test):
        if frame is not None:
            splits.targets(frame)  # raises on a class unseen in training or a bad soft-label row
    if config.out_of_scope_label is not None:
        outside = sum(int((label_strings(frame[config.label]) == config.out_of_scope_label).sum())
                      for frame in (train, val, test) if frame is not None and config.label in frame)
        check_out_of_scope_rows(config.out_of_scope_label, outside, classes, config.train)
    return splits
