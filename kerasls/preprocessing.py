"""`TabularPreprocessor`: raw columns (a dict of rank-1 tensors) -> the model's named inputs.

It is a Keras layer so it runs the same way in three places: once over the training table (the result is kept
in memory, so training steps never redo string lookups), inside the exported serving function (raw values in,
probabilities out), and in tests. Rank-1 inputs sidestep the `TextVectorization` shape bug with (None, 1)
inputs (keras#22522, #18604).

- numeric: missing values (NaN) are replaced by the training median, then standardised with the training mean
  and standard deviation (statistics computed in numpy, stored as constants);
- categorical: one-hot over the training vocabulary, plus one out-of-vocabulary slot for unseen values;
- text: TF-IDF over word n-grams and character n-grams within word boundaries, sublinear tf, L2-normalised
  (`kerasls.text_features.TextTfidf`, configured per column by `data.text`), unknown n-grams ignored; or, for a
  column with `data.text.encoder`, a pretrained encoder's token ids (`kerasls.text_encoder.TextEncoder`).

What the model receives (`ModelInputs`, built by `model_inputs()`), by name: "numeric" [N, numeric columns],
"categorical" [N, one-hot width], and per text column "text_<column>": its TF-IDF vector [N, width], or, for an
encoder column, its packed tokens ({token_ids, padding_mask, ...} [N, sequence_length]) which the model turns
into the encoder's features. The numeric, categorical and TF-IDF blocks are computed as one dense matrix
(`dense`) and sliced into their blocks (`named`): one scatter writes the whole matrix.

A table in memory is held sparse (`encode`: the nonzero entries of each row, CSR-like, `SparseRows`), since a
TF-IDF row is tens of thousands of floats of which a few hundred are nonzero (Banking77: 152 of 20,000): 8 bytes an
entry (and 8 a row) instead of 4 bytes a column. Each batch is made dense inside tf.data (`densify`), so the model
sees the same named inputs in training and serving.
"""

from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

from kerasls.arrays import aligned_zeros, shared_tensor
from kerasls.text_encoder import EncoderBackbone, TextEncoder
from kerasls.text_features import TextTfidf, TextVocabularyCounter


def input_name(column: str) -> str:
    """The model input of text column `column`."""
    return f"text_{column}"


@dataclass
class SparseRows:
    """Rows of the dense matrix by their nonzero entries: row i's columns are `columns[offsets[i]:offsets[i+1]]`
    (int32) with weights `weights[...]` (float32); `offsets` is int64 [N + 1]. `tensors()` gives them to tf.data
    as two RaggedTensors over the same memory (`kerasls.arrays.shared_tensor`)."""

    offsets: np.ndarray
    columns: np.ndarray
    weights: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def nbytes(self) -> int:
        return self.offsets.nbytes + self.columns.nbytes + self.weights.nbytes

    def tensors(self) -> dict:
        splits = shared_tensor(self.offsets)
        return {name: tf.RaggedTensor.from_row_splits(shared_tensor(values), splits, validate=False)
                for name, values in (("columns", self.columns), ("weights", self.weights))}


@dataclass
class ModelInputs:
    """What model.py builds on: `inputs`, the `keras.Input`s a model takes by name (nested for an encoder
    column's tokens); `features`, the tensor each becomes before the head (an encoder column: its backbone's
    features [N, hidden]; every other input: itself); `encoders`, the backbones by text column."""

    inputs: dict
    features: dict
    encoders: dict = field(default_factory=dict)

    def freeze_encoders(self) -> None:
        for encoder in self.encoders.values():
            encoder.freeze()

    def unfreeze_encoders(self) -> None:
        for encoder in self.encoders.values():
            encoder.unfreeze()


class TabularPreprocessor(keras.layers.Layer):
    def __init__(self, numeric=(), categorical=(), text=(), text_settings=None, **kwargs):
        """`text_settings`: a `config.TextConfig` (its `settings(column)` configures each text column: its TF-IDF,
        or its pretrained encoder), or None for `TextTfidf`'s defaults."""
        # float32 whatever the global policy: under mixed_bfloat16 Keras would cast the raw numeric inputs to
        # bfloat16 before the layer sees them (1000.7 -> 1000, 3 significant digits), in training and serving.
        kwargs.setdefault("dtype", "float32")
        super().__init__(trainable=False, **kwargs)
        self.numeric = list(numeric)
        self.categorical = list(categorical)
        self.text = list(text)
        self.lookups = {}
        self.category_sizes = {}  # categorical column -> its one-hot width (vocabulary + OOV slot), a Python int
        encoders = text_settings.encoders(self.text) if text_settings else {}
        self.encoders = {name: TextEncoder(settings, name, name=f"encoder_{name}")
                         for name, settings in encoders.items()}
        self.vectorizers = {
            name: TextTfidf(**(text_settings.settings(name).model_dump(exclude={"encoder"}) if text_settings else {}),
                            name=f"tfidf_{name}")
            for name in self.text if name not in encoders
        }
        self.truncated = {}  # encoder column -> texts truncated to its sequence_length by `encode`
        self._adapted = False
        self._encode_function = None  # `entries` traced for `encode`, made on first use

    @property
    def columns(self):
        return [*self.numeric, *self.categorical, *self.text]

    def adapt(self, columns: dict):
        """Learn statistics and vocabularies from training columns (numpy arrays, as from `column_arrays`).

        Tables too large for memory are adapted chunk by chunk instead (`kerasls.data.streaming`), through the
        same setters below.
        """
        if self.numeric:
            matrix = np.stack([np.asarray(columns[name], dtype=np.float64) for name in self.numeric], axis=1)
            median = np.nan_to_num(np.nanmedian(matrix, axis=0))
            filled = np.where(np.isnan(matrix), median, matrix)
            self.set_numeric_statistics(median, filled.mean(axis=0), filled.std(axis=0))
        for name in self.categorical:
            values, counts = np.unique(np.asarray(columns[name], dtype=str), return_counts=True)
            self.set_vocabulary(name, values[np.argsort(-counts, kind="stable")])
        for name, counter in self.text_counters().items():
            counter.update(columns[name])
            counter.finish()
        self._adapted = self.built = True  # built: the layer is used without Keras building it
        return self

    def set_numeric_statistics(self, median, mean, std):
        """NaN fill value, then mean and standard deviation of the filled columns (float arrays, one per column)."""
        std = np.asarray(std, dtype=np.float64)
        self.numeric_median = np.asarray(median, dtype=np.float32)
        self.numeric_mean = np.asarray(mean, dtype=np.float32)
        self.numeric_std = np.where(std > 1e-12, std, 1.0).astype(np.float32)

    def set_vocabulary(self, name, vocabulary):
        """Index lookup of categorical column `name` over `vocabulary` (most frequent first), 0 for a value outside
        it: `entries` writes the one of the column's one-hot block (OOV slot first)."""
        vocabulary = [str(v) for v in vocabulary]
        self.lookups[name] = keras.layers.StringLookup(
            vocabulary=vocabulary, num_oov_indices=1, output_mode="int", name=f"lookup_{name}"
        )  # index 0: out of vocabulary; `entries` places the one
        self.category_sizes[name] = len(vocabulary) + 1

    def text_counters(self) -> dict:
        """{text column: `TextVocabularyCounter`}: feed them the column's text, then `finish()` each."""
        return {name: TextVocabularyCounter(vectorizer) for name, vectorizer in self.vectorizers.items()}

    def mark_adapted(self):
        self._adapted = self.built = True  # built: the layer is used without Keras building it
        return self

    @property
    def dense_width(self) -> int:
        """Columns of the dense matrix: the numeric, categorical and TF-IDF blocks side by side."""
        return sum(self.block_widths().values())

    def block_widths(self) -> dict:
        """{model input: width} of the dense matrix's blocks, in the order of its columns."""
        widths = {"numeric": len(self.numeric)} if self.numeric else {}
        if self.categorical:
            widths["categorical"] = sum(self.category_sizes.values())
        widths.update({input_name(name): vectorizer.output_dim for name, vectorizer in self.vectorizers.items()})
        return widths

    @property
    def numeric_and_categorical_width(self) -> int:
        return len(self.numeric) + sum(self.category_sizes.values())

    def call(self, inputs):
        """Raw columns -> the model's named inputs (`named` of the dense matrix and the encoders' tokens): those of
        `call_with_flags` (in a traced function the flags' ops, unused, are pruned)."""
        return self.call_with_flags(inputs)[0]

    def call_with_flags(self, inputs):
        """(`call`'s named inputs, `unreadable` bool [N]): a row is unreadable when none of its text columns holds a
        known word or n-gram (no TF-IDF entry; an encoder's tokens all special or unknown). All False without text
        columns. The flags come from the same entries and tokens as the named inputs: no second pass."""
        rows = tf.size(inputs[self.columns[0]], out_type=tf.int64)
        known = tf.zeros([rows], tf.bool) if self.text else tf.ones([rows], tf.bool)
        encoded = {}
        if self.dense_width:
            position, weight, text_rows = self.entries(inputs, with_text_rows=True)
            encoded["dense"] = self._scatter(position, weight, rows)
            if self.vectorizers:
                hits = tf.math.unsorted_segment_sum(tf.ones_like(text_rows, tf.float32), text_rows, rows)
                known |= hits > 0
        for name, encoder in self.encoders.items():
            encoded[input_name(name)] = encoder(inputs[name])
            known |= encoder.known_words(encoded[input_name(name)])
        return self.named(encoded), tf.logical_not(known)

    def named(self, encoded: dict) -> dict:
        """{"dense": [N, dense_width] (or "entries": `SparseRows.tensors()` of a batch), "text_<encoder column>":
        tokens} -> the model's inputs by name: the dense matrix (made from the entries) sliced into its blocks, the
        tokens as they are. Tables in memory are held as `encode` gives them and made dense per batch."""
        if "entries" in encoded:
            encoded = {**encoded, "dense": self.densify(encoded["entries"])}
        named, start = {}, 0
        for name, width in self.block_widths().items():
            named[name] = encoded["dense"][..., start:start + width]
            start += width
        named.update({name: value for name, value in encoded.items() if name not in ("dense", "entries")})
        return named

    def densify(self, entries: dict):
        """`SparseRows.tensors()` of a batch (RaggedTensors [B, None]) -> the dense matrix [B, dense_width]."""
        columns, weights = entries["columns"], entries["weights"]
        rows, width = columns.nrows(), self.dense_width
        position = columns.value_rowids() * width + tf.cast(columns.flat_values, tf.int64)
        return self._scatter(position, weights.flat_values, rows)

    def _scatter(self, position, weight, rows):
        """[rows, dense_width] zeros with `weight` at the distinct flat `position`s (row * dense_width + column)."""
        width = self.dense_width
        # the positions are distinct, in no particular order, which SparseToDense takes unvalidated
        flat = tf.raw_ops.SparseToDense(sparse_indices=position, output_shape=tf.reshape(rows * width, [1]),
                                        sparse_values=weight, default_value=tf.constant(0.0), validate_indices=False)
        return tf.reshape(flat, tf.stack([rows, width]))

    def dense(self, inputs):
        """[N, dense_width]: the numeric block, one one-hot block per categorical column, one TF-IDF block per
        TF-IDF text column, written by one SparseToDense of `entries`: concatenating the blocks (and making each
        one-hot block first) cost about 5% of a 1,024-row export call (benchmarks/serving.py)."""
        position, weight = self.entries(inputs)
        return self._scatter(position, weight, tf.size(inputs[self.columns[0]], out_type=tf.int64))

    def entries(self, inputs, with_text_rows=False):
        """(position, weight), both [E]: every entry of `dense`'s output that may be nonzero, each once, at
        position row * dense_width + column. `encode_dense` writes them into its matrix itself. `with_text_rows`:
        also the row of every TF-IDF entry (for `call_with_flags`)."""
        if not self._adapted:
            raise RuntimeError("TabularPreprocessor.adapt() must run before the layer is called")
        rows = tf.size(inputs[self.columns[0]], out_type=tf.int64)
        if len(self.columns) > 1:  # a shorter column would leave rows empty (or, of length 1, fill every row)
            tf.debugging.assert_equal(
                tf.stack([tf.size(inputs[name], out_type=tf.int64) for name in self.columns]), rows,
                message=f"the columns {self.columns} must hold one value per row each")
        width = self.dense_width
        row_start = tf.range(rows) * width
        parts = []
        if self.numeric:
            matrix = tf.stack([tf.cast(inputs[name], tf.float32) for name in self.numeric], axis=1)
            matrix = tf.where(tf.math.is_nan(matrix), self.numeric_median, matrix)
            position = row_start[:, tf.newaxis] + tf.range(len(self.numeric), dtype=tf.int64)
            parts.append((tf.reshape(position, [-1]),
                          tf.reshape((matrix - self.numeric_mean) / self.numeric_std, [-1])))
        offset = len(self.numeric)
        ones = tf.ones([rows], tf.float32)
        for name in self.categorical:
            index = tf.cast(self.lookups[name](inputs[name]), tf.int64)  # 0: out of vocabulary
            parts.append((row_start + (index + offset), ones))
            offset += self.category_sizes[name]
        text_rows = [tf.zeros([0], tf.int64)]
        for name in self.vectorizers:
            row, column, weight = self.vectorizers[name].entries(inputs[name])
            parts.append((row * width + (column + offset), weight))
            text_rows.append(row)
            offset += self.vectorizers[name].output_dim
        position, weight = (tf.concat(values, axis=0) for values in zip(*parts))
        return (position, weight, tf.concat(text_rows, axis=0)) if with_text_rows else (position, weight)

    def encode(self, columns: dict) -> dict:
        """Numpy columns -> the table as held in memory: "entries", the dense matrix's nonzero entries
        (`encode_sparse`), and each encoder column's tokens ("text_<column>", numpy arrays). Records the texts each
        encoder truncated (`truncated`)."""
        encoded = {"entries": self.encode_sparse(columns)}
        for name, encoder in self.encoders.items():
            encoded[input_name(name)], self.truncated[name] = encoder.tokenize(columns[name])
        return encoded

    def _entries_in_chunks(self, columns: dict, batch_size=8192):
        """(first row, position, weight) of each chunk of `batch_size` rows, from `entries` traced once (eager
        n-gram ops cost ~2x)."""
        specs = self.input_signature()
        if self._encode_function is None:
            self._encode_function = tf.function(self.entries, input_signature=[specs])
        for start in range(0, len(columns[self.columns[0]]), batch_size):
            batch = {name: tf.constant(np.asarray(columns[name][start:start + batch_size]), dtype=specs[name].dtype)
                     for name in self.columns}
            position, weight = self._encode_function(batch)
            yield start, position.numpy(), weight.numpy()

    def encode_sparse(self, columns: dict, batch_size=8192) -> SparseRows:
        """The nonzero entries of `dense` over numpy columns, row by row (`SparseRows`), computed in chunks."""
        num_rows, width = len(columns[self.columns[0]]), max(self.dense_width, 1)
        counts, column_parts, weight_parts = np.zeros(num_rows, np.int64), [], []
        if self.dense_width:
            for start, position, weight in self._entries_in_chunks(columns, batch_size):
                order = np.argsort(position, kind="stable")  # row-major: by row, then column
                position, weight = position[order], weight[order]
                keep = weight != 0.0  # a numeric value at its mean, say: nothing to hold
                position, weight = position[keep], weight[keep]
                rows = position // width
                counts[start:start + batch_size] += np.bincount(rows, minlength=min(batch_size, num_rows - start))
                column_parts.append((position % width).astype(np.int32))
                weight_parts.append(weight.astype(np.float32))
        offsets = aligned_zeros((num_rows + 1,), np.int64)
        np.cumsum(counts, out=offsets[1:])
        total = int(offsets[-1])
        indices, weights = aligned_zeros((total,), np.int32), aligned_zeros((total,), np.float32)
        if column_parts:
            np.concatenate(column_parts, out=indices)
            np.concatenate(weight_parts, out=weights)
        return SparseRows(offsets, indices, weights)

    def encode_dense(self, columns: dict, batch_size=8192) -> np.ndarray:
        """`dense` over numpy columns in chunks: the float32 matrix [N, dense_width].

        It writes the layer's `entries` into one zero matrix itself: with n-grams a row is tens of thousands of
        floats, nearly all zero, and dense chunks cost three passes over them (the scatter, the copy out of
        TensorFlow, the copy into the matrix)."""
        num_rows = len(columns[self.columns[0]])
        encoded = aligned_zeros((num_rows, self.dense_width))  # TensorFlow can read it without a copy
        if not self.dense_width:
            return encoded
        flat = encoded.reshape(-1)  # a view: the matrix is contiguous
        for start, position, weight in self._entries_in_chunks(columns, batch_size):
            flat[start * self.dense_width + position] = weight
        return encoded

    def model_inputs(self) -> ModelInputs:
        """The `keras.Input`s of the named inputs and their features; an encoder column's backbone is loaded from
        its preset here, so call this inside the strategy's scope."""
        inputs = {name: keras.Input(shape=(width,), name=name) for name, width in self.block_widths().items()}
        features = dict(inputs)
        encoders = {}
        for name, encoder in self.encoders.items():
            inputs[input_name(name)] = encoder.keras_inputs(input_name(name))
            encoders[name] = EncoderBackbone(encoder.settings, name)
            features[input_name(name)] = encoders[name].features(inputs[input_name(name)])
        return ModelInputs(inputs, features, encoders)

    def input_signature(self) -> dict:
        """One rank-1 `tf.TensorSpec` per raw column: float32 for numeric, string otherwise."""
        specs = {name: tf.TensorSpec([None], tf.float32, name=name) for name in self.numeric}
        specs.update({name: tf.TensorSpec([None], tf.string, name=name) for name in self.categorical + self.text})
        return specs
