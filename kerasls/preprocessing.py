"""`TabularPreprocessor`: raw columns (a dict of rank-1 tensors) -> one float32 feature matrix.

It is a Keras layer so it runs the same way in three places: once over the training table (the result is kept
in memory, so training steps never redo string lookups), inside the exported serving function (raw values in,
probabilities out), and in tests. Rank-1 inputs sidestep the `TextVectorization` shape bug with (None, 1)
inputs (keras#22522, #18604).

- numeric: missing values (NaN) are replaced by the training median, then standardised with the training mean
  and standard deviation (statistics computed in numpy, stored as constants);
- categorical: one-hot over the training vocabulary, plus one out-of-vocabulary slot for unseen values;
- text: TF-IDF over a vocabulary of at most `text_max_tokens` words (unigrams), unknown words ignored.
"""

import keras
import numpy as np
import tensorflow as tf


class TabularPreprocessor(keras.layers.Layer):
    def __init__(self, numeric=(), categorical=(), text=(), text_max_tokens=2000, **kwargs):
        super().__init__(trainable=False, **kwargs)
        self.numeric = list(numeric)
        self.categorical = list(categorical)
        self.text = list(text)
        self.text_max_tokens = text_max_tokens
        self.lookups = {}
        self.vectorizers = {}
        self._adapted = False

    @property
    def columns(self):
        return [*self.numeric, *self.categorical, *self.text]

    def adapt(self, columns: dict):
        """Learn statistics and vocabularies from training columns (numpy arrays, as from `column_arrays`)."""
        if self.numeric:
            matrix = np.stack([np.asarray(columns[name], dtype=np.float64) for name in self.numeric], axis=1)
            median = np.nan_to_num(np.nanmedian(matrix, axis=0))
            filled = np.where(np.isnan(matrix), median, matrix)
            std = filled.std(axis=0)
            self.numeric_median = median.astype(np.float32)
            self.numeric_mean = filled.mean(axis=0).astype(np.float32)
            self.numeric_std = np.where(std > 1e-12, std, 1.0).astype(np.float32)
        for name in self.categorical:
            values, counts = np.unique(np.asarray(columns[name], dtype=str), return_counts=True)
            vocabulary = [str(v) for v in values[np.argsort(-counts, kind="stable")]]
            self.lookups[name] = keras.layers.StringLookup(
                vocabulary=vocabulary, num_oov_indices=1, output_mode="one_hot", name=f"lookup_{name}"
            )
        for name in self.text:
            vectorizer = keras.layers.TextVectorization(
                max_tokens=self.text_max_tokens, output_mode="tf_idf", name=f"tfidf_{name}"
            )
            vectorizer.adapt(tf.constant(np.asarray(columns[name], dtype=str)), batch_size=4096)
            self.vectorizers[name] = vectorizer
        self._adapted = True
        return self

    @property
    def output_dim(self) -> int:
        width = len(self.numeric)
        width += sum(lookup.vocabulary_size() for lookup in self.lookups.values())
        width += sum(vectorizer.vocabulary_size() for vectorizer in self.vectorizers.values())
        return width

    def call(self, inputs):
        if not self._adapted:
            raise RuntimeError("TabularPreprocessor.adapt() must run before the layer is called")
        parts = []
        if self.numeric:
            matrix = tf.stack([tf.cast(inputs[name], tf.float32) for name in self.numeric], axis=1)
            matrix = tf.where(tf.math.is_nan(matrix), self.numeric_median, matrix)
            parts.append((matrix - self.numeric_mean) / self.numeric_std)
        for name in self.categorical:
            parts.append(tf.cast(self.lookups[name](inputs[name]), tf.float32))
        for name in self.text:
            parts.append(tf.cast(self.vectorizers[name](inputs[name]), tf.float32))
        return tf.concat(parts, axis=1)

    def encode(self, columns: dict, batch_size=8192) -> np.ndarray:
        """Run the layer over numpy columns in chunks; returns the float32 feature matrix."""
        num_rows = len(next(iter(columns.values())))
        chunks = []
        for start in range(0, num_rows, batch_size):
            batch = {name: columns[name][start:start + batch_size] for name in self.columns}
            chunks.append(self(batch).numpy())
        if not chunks:
            return np.zeros((0, self.output_dim), dtype=np.float32)
        return np.concatenate(chunks, axis=0)

    def input_signature(self) -> dict:
        """One rank-1 `tf.TensorSpec` per raw column: float32 for numeric, string otherwise."""
        specs = {name: tf.TensorSpec([None], tf.float32, name=name) for name in self.numeric}
        specs.update({name: tf.TensorSpec([None], tf.string, name=name) for name in self.categorical + self.text})
        return specs
