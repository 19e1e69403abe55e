"""`TextTfidf`: one text column -> TF-IDF over word n-grams and character n-grams within word boundaries.

What a scikit-learn user writes as the baseline for short-text intents, computed inside the TensorFlow graph so
the export takes the raw text::

    make_union(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
               TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True))

- words: lowercased, tokens are runs of at least two letters, digits or underscores (scikit-learn's
  `(?u)\\b\\w\\w+\\b`), joined into n-grams of 1..`ngrams` tokens;
- character n-grams of `char_ngrams[0]..char_ngrams[1]` characters inside each whitespace-separated word padded
  with one space each side (scikit-learn's `char_wb`: punctuation stays, "I'm" gives " i'", "i'm", ...);
- each of the two vocabularies keeps its `max_tokens` most frequent entries (ties: sorted order); unseen ones are
  ignored;
- weight (1 + ln tf if `sublinear_tf`, else tf) x idf, idf = ln((1 + n) / (1 + df)) + 1, each part L2-normalised
  (scikit-learn's defaults; `tests/test_text_features.py` compares the matrices).

Two known differences from Python's `str.lower`/`str.split`, both rare in support text: TensorFlow lowercases
without Greek final-sigma rules, and splits words on ASCII whitespace only.

Vocabularies are counted chunk by chunk (`TextVocabularyCounter`), in traced ops into hash tables, so a table
in memory and a table streamed from disk learn the same vocabulary and weights.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from kerasls.config import check_text_settings

WORD_CHARACTERS = r"[^\pL\pN_]+"  # what is not a letter, digit or underscore separates word tokens


class TextTfidf(keras.layers.Layer):
    def __init__(self, ngrams=2, char_ngrams=(2, 5), max_tokens=5000, sublinear_tf=True, **kwargs):
        """Defaults: those of `config.TextSettings` (`data.text`)."""
        kwargs.setdefault("dtype", "float32")
        super().__init__(trainable=False, **kwargs)
        check_text_settings(ngrams, char_ngrams)
        self.ngrams = int(ngrams)
        self.char_ngrams = tuple(int(n) for n in char_ngrams) if char_ngrams else None
        self.max_tokens = int(max_tokens)
        self.sublinear_tf = bool(sublinear_tf)
        self.parts = {}  # kind ("words", "chars") -> (StringLookup, idf float32 [V])

    @property
    def kinds(self) -> list[str]:
        return (["words"] if self.ngrams else []) + (["chars"] if self.char_ngrams else [])

    def tokens(self, strings) -> dict:
        """`strings` [N] -> {kind: ragged [N, None] string n-grams}: what the vocabulary counts and `call` weighs."""
        lower = tf.strings.lower(strings, encoding="utf-8")
        found = {}
        if self.ngrams:
            words = tf.strings.split(tf.strings.regex_replace(lower, WORD_CHARACTERS, " "))
            if self.ngrams == 1:  # one-letter words are left out of the vocabulary instead (`finish`): faster
                found["words"] = words
            else:  # n-grams skip one-letter words, as scikit-learn's token pattern does
                words = tf.ragged.boolean_mask(words, tf.strings.length(words, unit="UTF8_CHAR") >= 2)
                found["words"] = tf.strings.ngrams(words, tuple(range(1, self.ngrams + 1)), separator=" ")
        if self.char_ngrams:
            words = tf.strings.split(lower)
            padded = tf.strings.join([" ", words.flat_values, " "])
            grams = tf.strings.ngrams(tf.strings.unicode_split(padded, "UTF-8"),
                                      tuple(range(self.char_ngrams[0], self.char_ngrams[1] + 1)), separator="")
            found["chars"] = tf.RaggedTensor.from_row_splits(grams, words.row_splits).merge_dims(1, 2)
        return found

    def set_vocabulary(self, kind: str, vocabulary, idf) -> None:
        """`vocabulary` (strings) and its idf weights for `kind`, as `TextVocabularyCounter.finish` computes."""
        if not len(vocabulary):
            raise ValueError(f"no {kind} in the training text of column {self.name!r}")
        lookup = keras.layers.StringLookup(vocabulary=[str(token) for token in vocabulary], num_oov_indices=1,
                                           output_mode="int", name=f"{self.name}_{kind}")
        self.parts[kind] = (lookup, np.asarray(idf, dtype=np.float32))

    def vocabulary(self, kind: str) -> list[str]:
        return [str(token) for token in self.parts[kind][0].get_vocabulary()[1:]]

    @property
    def output_dim(self) -> int:
        return sum(len(idf) for _, idf in self.parts.values())

    def call(self, strings):
        parts = []
        for kind, grams in self.tokens(strings).items():
            lookup, idf = self.parts[kind]
            index = grams.with_flat_values(lookup(grams.flat_values) - 1)  # -1: not in the vocabulary
            counts = tf.math.bincount(tf.ragged.boolean_mask(index, index >= 0), minlength=len(idf),
                                      maxlength=len(idf), axis=-1, dtype=tf.float32)  # [N, V] term counts
            counts = tf.ensure_shape(counts, [None, len(idf)])  # bincount leaves the shape unknown when traced
            if self.sublinear_tf:
                counts = tf.where(counts > 0, 1.0 + tf.math.log(tf.maximum(counts, 1.0)), 0.0)
            weights = counts * idf
            parts.append(weights / tf.maximum(tf.norm(weights, axis=1, keepdims=True), 1e-12))
        return tf.concat(parts, axis=1)


class TextVocabularyCounter:
    """Term and document frequencies of a `TextTfidf`'s n-grams, counted chunk by chunk in traced ops."""

    def __init__(self, layer: TextTfidf):
        self.layer = layer
        self.documents = 0
        self.tables = {kind: (tf.lookup.experimental.MutableHashTable(tf.string, tf.int64, 0),
                              tf.lookup.experimental.MutableHashTable(tf.string, tf.int64, 0))
                       for kind in layer.kinds}
        self._update = tf.function(self._count, input_signature=[tf.TensorSpec([None], tf.string)])

    def _count(self, strings):
        for kind, grams in self.layer.tokens(strings).items():
            terms, documents = self.tables[kind]
            distinct, index = tf.unique(grams.flat_values, out_idx=tf.int64)
            size = tf.size(distinct, out_type=tf.int64)
            counts = tf.math.bincount(index, minlength=size, dtype=tf.int64)
            pairs, _ = tf.unique(grams.value_rowids() * size + index)  # (document, n-gram), once each
            in_documents = tf.math.bincount(pairs % tf.maximum(size, 1), minlength=size, dtype=tf.int64)
            terms.insert(distinct, counts + terms.lookup(distinct))
            documents.insert(distinct, in_documents + documents.lookup(distinct))

    def update(self, strings, chunk_rows=8192) -> None:
        """Count one chunk of text (a sequence of str)."""
        strings = np.asarray(strings, dtype=object).astype(str)
        for start in range(0, len(strings), chunk_rows):
            self._update(tf.constant(strings[start:start + chunk_rows]))
        self.documents += len(strings)

    def finish(self) -> TextTfidf:
        """Keep each kind's `max_tokens` most frequent n-grams (ties in sorted order) with their smooth idf."""
        for kind, (terms, documents) in self.tables.items():
            keys, counts = (value.numpy() for value in terms.export())
            if kind == "words" and self.layer.ngrams == 1:  # words of one letter are not tokens (see `tokens`)
                longer = np.array([len(key.decode("utf-8")) >= 2 for key in keys], dtype=bool)
                keys, counts = keys[longer], counts[longer]
            order = np.lexsort((keys.astype(bytes), -counts))[:self.layer.max_tokens]
            vocabulary = keys[order]
            df = documents.lookup(tf.constant(vocabulary)).numpy()
            idf = np.log((1.0 + self.documents) / (1.0 + df)) + 1.0
            self.layer.set_vocabulary(kind, [token.decode("utf-8") for token in vocabulary], idf)
        return self.layer
