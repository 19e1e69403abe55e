"""`data.streaming: true`: CSV or Parquet tables read in chunks, never whole, so a file larger than memory trains.

`TableStream` makes one pass over the training file: it checks every chunk's columns (errors name the file and
line, as for in-memory tables), finds the classes, and learns the same preprocessing as
`TabularPreprocessor.adapt` -- numeric mean/std exactly (running sums), category vocabularies exactly (counts),
TF-IDF vocabularies through `TextVocabularyCounter` (exact counts up to a million distinct n-grams of a kind, then
bounded, with the error bound its docstring states), and the numeric NaN fill (median) from a uniform sample of
`MEDIAN_SAMPLE` values a column (exact for smaller tables). Memory grows with vocabulary sizes up to those bounds,
never with rows. Each epoch then reads the file again:

    file chunks (pandas / pyarrow) -> rows of this split -> shuffled within the chunk
        -> rebatch(ENCODE_ROWS) -> preprocessor (parallel map) -> rebatch(batch_size) -> prefetch

What differs from in-memory tables, and why:
- without `data.val`, each row goes to validation by a seeded hash of its row number (a `val_fraction` share, not
  stratified): a stratified split needs every label before the first batch;
- rows are shuffled within each chunk of `data.chunk_rows` rows (order depends only on seed, epoch and chunk, so
  resume stays exact), not across the file: shuffle a file that is sorted by label once before training;
- `targets.soft_labels.teacher` is not supported (teacher logits are cached per row in memory).
"""

from __future__ import annotations

from collections import Counter
from typing import Iterator

import numpy as np
import pandas as pd

from kerasls.config import DataConfig, FeatureColumns
from kerasls.data import tabular
from kerasls.data.epochs import parallel_calls
from kerasls.data.labels import check_out_of_scope_rows, label_strings
from kerasls.data.soft_labels import soft_column_classes
from kerasls.errors import KeraslsError
from kerasls.preprocessing import TabularPreprocessor

ENCODE_ROWS = 4096  # rows per preprocessor call: large enough to amortise the call, small enough for TF-IDF width
MEDIAN_SAMPLE = 100_000  # values per numeric column kept to estimate its median


def read_chunks(path, chunk_rows: int, role="data", columns=None, text_columns=()) -> Iterator[pd.DataFrame]:
    """The table at `path` in frames of at most `chunk_rows` rows; each frame's index is its row numbers in the
    file (0 = the first data row) and `attrs["path"]` the file, so error messages name the right line. Columns
    are typed as in memory (`tabular.typed_columns`): `text_columns` stay the file's strings."""
    path = tabular.check_table_path(path, role)
    seen = 0
    try:
        if tabular.is_parquet(path):
            import pyarrow.parquet as pq

            parquet = pq.ParquetFile(path)
            batches = parquet.iter_batches(batch_size=chunk_rows, columns=columns)
            frames = (batch.to_pandas() for batch in batches)
        else:
            tabular.check_csv_header(path)
            frames = tabular.read_csv_text(path, chunksize=chunk_rows, usecols=columns)
        for frame in frames:
            frame.index = pd.RangeIndex(seen, seen + len(frame))
            frame.attrs["path"] = str(path)
            frame = tabular.typed_columns(frame, text_columns)
            seen += len(frame)
            yield frame
    except KeraslsError:
        raise
    except tabular.READ_ERRORS as error:
        raise tabular.table_read_error(path, error) from None
    if seen == 0:
        raise KeraslsError(f"{path}: has a header but no data rows")


def val_rows(first_row: int, count: int, seed: int, fraction: float) -> np.ndarray:
    """Boolean mask: is row `first_row + i` a validation row? A splitmix64 hash of (seed, row number) compared
    with `fraction`, so the split of a row never depends on the chunking."""
    with np.errstate(over="ignore"):
        z = np.arange(first_row, first_row + count, dtype=np.uint64) + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(2 ** 53) < fraction


class StreamingAdapter:
    """Accumulates, chunk by chunk, what `TabularPreprocessor.adapt` computes from a whole table."""

    def __init__(self, preprocessor, seed: int):
        self.preprocessor = preprocessor
        width = len(preprocessor.numeric)
        self.count = 0
        self.nan_count = np.zeros(width)
        self.total = np.zeros(width)
        self.total_squares = np.zeros(width)
        self.sample_keys = np.zeros(0)
        self.sample = np.zeros((0, width))
        self.rng = np.random.default_rng(seed)
        self.categories = {name: Counter() for name in preprocessor.categorical}
        self.text_counters = preprocessor.text_counters()

    def update(self, columns: dict) -> None:
        """Add one chunk of raw columns (as from `tabular.column_arrays`)."""
        preprocessor = self.preprocessor
        if preprocessor.numeric:
            matrix = np.stack([np.asarray(columns[name], dtype=np.float64) for name in preprocessor.numeric], axis=1)
            missing = np.isnan(matrix)
            present = np.where(missing, 0.0, matrix)
            self.count += len(matrix)
            self.nan_count += missing.sum(axis=0)
            self.total += present.sum(axis=0)
            self.total_squares += (present ** 2).sum(axis=0)
            # bottom-k sample: the rows with the smallest random keys are a uniform sample of all rows so far
            keys = np.concatenate([self.sample_keys, self.rng.random(len(matrix))])
            rows = np.concatenate([self.sample, matrix])
            keep = np.argsort(keys, kind="stable")[:MEDIAN_SAMPLE]
            self.sample_keys, self.sample = keys[keep], rows[keep]
        for name in preprocessor.categorical:
            values, counts = np.unique(np.asarray(columns[name], dtype=str), return_counts=True)
            self.categories[name].update(dict(zip(values.tolist(), counts.tolist())))
        for name, counter in self.text_counters.items():
            counter.update(columns[name], chunk_rows=ENCODE_ROWS)  # bounded temporaries in the n-gram counting

    def finish(self):
        """Set the preprocessor's statistics and vocabularies; returns the adapted preprocessor."""
        preprocessor = self.preprocessor
        if preprocessor.numeric:
            median = np.nan_to_num(np.nanmedian(self.sample, axis=0)) if len(self.sample) else np.zeros(
                len(preprocessor.numeric))
            count = max(self.count, 1)
            # the NaNs are filled with the median, as in-memory: add them to the sums before mean and variance
            mean = (self.total + self.nan_count * median) / count
            mean_squares = (self.total_squares + self.nan_count * median ** 2) / count
            preprocessor.set_numeric_statistics(median, mean, np.sqrt(np.maximum(mean_squares - mean ** 2, 0.0)))
        for name, counts in self.categories.items():
            # most frequent first, ties in sorted order: the order `np.unique` + stable argsort gives in memory
            preprocessor.set_vocabulary(name, sorted(counts, key=lambda value: (-counts[value], value)))
        for counter in self.text_counters.values():
            counter.finish()
        return preprocessor.mark_adapted()


class TableStream:
    """The train/val/test tables of `data` read in chunks: one pass to check and adapt, then `dataset(split)`.

    The split names are "train", "val" and "test" ("test" only with `data.test`).
    """

    def __init__(self, data: DataConfig, seed: int, soft=None):
        if soft is not None and soft.source == "teacher":
            raise KeraslsError("targets.soft_labels.teacher is not supported with data.streaming: true; set "
                               "data.streaming: false (teacher logits are cached per row in memory)")
        self.data, self.seed, self.soft = data, seed, soft
        self.label = data.label
        first = next(read_chunks(data.train, data.chunk_rows, "train"))
        soft_columns = soft.columns() if soft else []
        self.has_label = data.label in first.columns or not soft
        self.features: FeatureColumns = data.features or tabular.infer_features(first, data.label, exclude=soft_columns)
        if not self.features.all_columns():
            raise KeraslsError(f"{data.train}: no feature columns besides the label {data.label!r}")
        self.preprocessor = TabularPreprocessor(self.features.numeric, self.features.categorical,
                                                self.features.text, text_settings=data.text)
        self.classes = self._soft_classes() if soft else None
        self.rows = {"train": 0, "val": 0, "test": 0}
        self.class_counts = None  # training rows per class
        self.out_of_scope_rows = {"train": 0, "val": 0, "test": 0}  # rows labelled data.out_of_scope_label
        self._scan_train()
        for split in ("val", "test"):
            if getattr(data, split):
                for frame, (_, labels, _) in self._checked_frames(split):
                    self.rows[split] += len(frame)
                    self.out_of_scope_rows[split] += int((labels < 0).sum())
        check_out_of_scope_rows(data.out_of_scope_label, sum(self.out_of_scope_rows.values()), self.classes,
                                data.train)

    # -- reading ----------------------------------------------------------------------------------------------
    @property
    def eval_split(self) -> str:
        return "test" if self.data.test else "val"

    def path(self, split: str):
        return {"train": self.data.train, "val": self.data.val or self.data.train, "test": self.data.test}[split]

    def _columns(self):
        """The columns read from each file: features, the label and any soft-label columns."""
        wanted = self.features.all_columns() + [self.label] + (self.soft.columns() if self.soft else [])
        return list(dict.fromkeys(wanted))

    def _read(self, split: str, columns):
        """The chunks of the file of `split`, categorical, text and label columns read as text."""
        role = split if split != "val" or self.data.val else "train"
        return read_chunks(self.path(split), self.data.chunk_rows, role, columns=columns,
                           text_columns=self.features.categorical + self.features.text + [self.label])

    def _split_frames(self, split: str, columns=None):
        """Frames of the rows of `split`: a whole val/test file, or the hash-selected rows of the training file."""
        for frame in self._read(split, columns):
            if split in ("train", "val") and not self.data.val:
                in_val = val_rows(frame.index[0], len(frame), self.seed, self.data.val_fraction)
                frame = frame[in_val if split == "val" else ~in_val]
            if len(frame):
                yield frame

    def _usable_columns(self, split: str):
        """The wanted columns this split's file has (val/test files may lack soft-label columns)."""
        header = next(read_chunks(self.path(split), 1, split))
        return [name for name in self._columns() if name in header.columns]

    def _checked_frames(self, split: str):
        """(frame, (targets, labels, soft)) of each chunk of `split`, columns and labels checked."""
        from_train_file = split == "train" or (split == "val" and not self.data.val)
        if from_train_file:
            label = self.label if self.has_label else None
        else:
            label = None if self.soft else self.label
        for frame in self._split_frames(split, self._usable_columns(split)):
            tabular.check_columns(frame, self.features, label)
            yield frame, tabular.frame_targets(frame, self.classes, self.label, self.soft,
                                               self.data.out_of_scope_label)

    # -- the pass that checks and adapts ----------------------------------------------------------------------
    def _soft_classes(self):
        kind = "probability" if self.soft.probabilities else "vote"
        return sorted(soft_column_classes(self.soft.probabilities or self.soft.votes, kind, self.data.train))

    def _scan_train(self) -> None:
        """The one pass over the training file: check every chunk, collect the classes, adapt the preprocessor."""
        adapter = StreamingAdapter(self.preprocessor, self.seed)
        names: Counter = Counter()  # class name -> rows in the whole file (classes come from all its rows)
        train_labels = []  # class indices or names of the training rows, counted once the classes are known
        for frame in self._read("train", self._usable_columns("train")):
            tabular.check_columns(frame, self.features, self.label if self.has_label else None)
            in_val = (np.zeros(len(frame), dtype=bool) if self.data.val
                      else val_rows(frame.index[0], len(frame), self.seed, self.data.val_fraction))
            if self.soft:
                _, labels, _ = tabular.frame_targets(frame, self.classes, self.label, self.soft)
            else:
                labels = label_strings(frame[self.label])
                names.update(labels.tolist())
            train_labels.append(Counter(labels[~in_val].tolist()))
            if self.data.out_of_scope_label is not None and not self.soft:
                outside = labels == self.data.out_of_scope_label
                self.out_of_scope_rows["train"] += int((outside & ~in_val).sum())
                self.out_of_scope_rows["val"] += int((outside & in_val).sum())
            adapter.update(tabular.column_arrays(frame[~in_val], self.features))
            self.rows["train"] += int((~in_val).sum())
            self.rows["val"] += int(in_val.sum())
        if self.classes is None:
            self.classes = sorted(set(names) - {self.data.out_of_scope_label})
        if len(self.classes) < 2:
            raise KeraslsError(f"{self.data.train}: label column {self.label!r} has one class only "
                               f"({self.classes}); a classifier needs two or more")
        if self.rows["train"] == 0:
            raise KeraslsError(f"{self.data.train}: no training rows left after the validation split; lower "
                               "data.val_fraction")
        counts = sum(train_labels, Counter())
        keys = range(len(self.classes)) if self.soft else self.classes
        self.class_counts = np.array([counts.get(key, 0) for key in keys], dtype=np.int64)
        adapter.finish()

    # -- what train.py uses -----------------------------------------------------------------------------------
    def class_prior(self) -> np.ndarray:
        """Training class frequencies π (for `targets.prior: class_prior`)."""
        return (self.class_counts / max(self.class_counts.sum(), 1)).astype(np.float32)

    def observed_class(self, split: str) -> str:
        """"label" when the file of `split` has the label column (observed classes come from it), else "argmax"."""
        return "label" if self.label in self._usable_columns(split) else "argmax"

    def targets(self, split: str):
        """(targets float32 [N, K], labels int64 [N], soft) of a whole split, for metrics and calibration."""
        parts = [result for _, result in self._checked_frames(split)]
        if not parts:
            raise KeraslsError(f"{self.path(split)}: the {split} split has no rows; set data.{split} or raise "
                               "data.val_fraction")
        return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                any(p[2] for p in parts))

    def dataset(self, split: str, batch_size: int, shuffle=False, drop_remainder=False, epoch=None,
                encode=True, in_scope_only=False):
        """Batches of (encoded features, targets) of `split`, read from the file every epoch.

        `shuffle` permutes each chunk's rows by (seed, `epoch` variable, chunk number). `encode=False` keeps the
        raw columns, as the export takes them (to evaluate through the served graph). `in_scope_only` leaves out
        the rows labelled `data.out_of_scope_label` (validation during training).
        """
        import tensorflow as tf

        features, classes = self.features, self.classes

        def chunks():
            for frame, (targets, labels, _) in self._checked_frames(split):
                if in_scope_only and (labels < 0).any():
                    frame, targets = frame[labels >= 0], targets[labels >= 0]
                columns = tabular.column_arrays(frame, features)
                yield {name: columns[name] for name in features.all_columns()}, targets

        signature = (self.preprocessor.input_signature(), tf.TensorSpec([None, len(classes)], tf.float32))
        dataset = tf.data.Dataset.from_generator(chunks, output_signature=signature)
        if shuffle:
            seed = tf.constant([self.seed, 0], tf.int64)

            def permute(chunk_number, element):
                columns, targets = element
                key = tf.random.experimental.stateless_fold_in(
                    tf.random.experimental.stateless_fold_in(seed, tf.cast(epoch, tf.int64)), chunk_number)
                order = tf.random.experimental.stateless_shuffle(tf.range(tf.shape(targets)[0]), seed=key)
                return {name: tf.gather(column, order) for name, column in columns.items()}, tf.gather(targets, order)

            dataset = dataset.enumerate().map(permute)
        preprocessor = self.preprocessor
        if encode:
            calls = parallel_calls()
            # at most ENCODE_ROWS rows and ~64 MB of float32 output a call (wide TF-IDF rows get fewer)
            rows_per_call = max(256, min(ENCODE_ROWS, (16 << 20) // max(preprocessor.dense_width, 1)))
            dataset = dataset.rebatch(rows_per_call).map(
                lambda columns, targets: (preprocessor(columns), targets), num_parallel_calls=calls,
                deterministic=True if calls is not None else None)
        rows = self.rows[split] - (self.out_of_scope_rows[split] if in_scope_only else 0)
        drop_remainder = drop_remainder and rows >= batch_size
        batches = rows // batch_size if drop_remainder else -(-rows // batch_size)
        dataset = dataset.rebatch(batch_size, drop_remainder=drop_remainder)
        # the batch count is known from the first pass: Keras shows progress and expects no more (or fewer) batches
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(batches))
        return dataset.prefetch(tf.data.AUTOTUNE)
