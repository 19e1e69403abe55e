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

from kerasls.config import TextSettings, check_text_settings

# What is not a letter, digit or underscore separates word tokens: runs of it become one space, except ASCII
# whitespace, which `tf.strings.split` splits on anyway (rewriting every space cost twice the split).
NOT_WORD_CHARACTERS = r"[^\pL\pN_\s]+"


# ASCII without NUL: TensorFlow's Unicode op ends a string at its first NUL byte, the bytewise op does not
ASCII_TEXT = r"[\x01-\x7f]*"


def lowercase(strings):
    """`tf.strings.lower(strings, encoding="utf-8")`, by the bytewise ASCII op where the text is ASCII: Unicode
    case mapping costs about three times as much (280 against 90 us on 1,024 Banking77 rows). One check of the
    whole batch (14 us) takes the fast op for all of it; a batch with some other text (Banking77: 3 to 5 rows in
    1,024, for £ and €) maps only those rows. Invalid UTF-8 and NUL bytes count as not ASCII, so they still become
    U+FFFD and the end of the string."""
    def by_row():
        other = tf.where(~tf.strings.regex_full_match(strings, ASCII_TEXT))
        return tf.tensor_scatter_nd_update(tf.strings.lower(strings), other,
                                           tf.strings.lower(tf.gather_nd(strings, other), encoding="utf-8"))

    ascii_only = tf.strings.regex_full_match(tf.strings.reduce_join(strings), ASCII_TEXT)
    return tf.cond(ascii_only, lambda: tf.strings.lower(strings), by_row)


def character_units(words):
    """`words` [S] -> ragged [S, None]: the characters of each word padded with one space each side (char_wb)."""
    return tf.strings.unicode_split(tf.strings.join([" ", words, " "]), "UTF-8")


_DEFAULTS = TextSettings()  # `data.text`'s defaults: one place for the layer and the config


class TextTfidf(keras.layers.Layer):
    def __init__(self, ngrams=_DEFAULTS.ngrams, char_ngrams=_DEFAULTS.char_ngrams, max_tokens=_DEFAULTS.max_tokens,
                 sublinear_tf=_DEFAULTS.sublinear_tf, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(trainable=False, **kwargs)
        check_text_settings(ngrams, char_ngrams)
        self.ngrams = int(ngrams)
        self.char_ngrams = tuple(int(n) for n in char_ngrams) if char_ngrams else None
        self.max_tokens = int(max_tokens)
        self.sublinear_tf = bool(sublinear_tf)
        self.parts = {}  # kind ("words", "chars") -> (NgramIndex or StringLookup, idf float32 [V])

    @property
    def kinds(self) -> list[str]:
        return (["words"] if self.ngrams else []) + (["chars"] if self.char_ngrams else [])

    def n_range(self, kind: str) -> tuple[int, int]:
        return (1, self.ngrams) if kind == "words" else self.char_ngrams

    def units(self, lower, kind: str):
        """(ragged [S, None] units, the row of each sequence [S]) of `kind` in the lowercased rows `lower` [N]: the
        words of each row (`word_units`; the row is None, sequence i is row i), or the characters of each word
        padded with one space."""
        if kind == "words":
            return self.word_units(lower), None
        words = tf.strings.split(lower)
        return character_units(words.flat_values), words.value_rowids()

    def word_units(self, lower):
        """The words of each lowercased row, ragged [N, None]. N-grams skip one-letter words, as scikit-learn's
        token pattern does; with unigrams only they are left out of the vocabulary instead, in `finish`: faster."""
        words = tf.strings.split(tf.strings.regex_replace(lower, NOT_WORD_CHARACTERS, " "))
        if self.ngrams > 1:
            words = tf.ragged.boolean_mask(words, tf.strings.length(words, unit="UTF8_CHAR") >= 2)
        return words

    def character_ngrams(self, lower, index):
        """(row, vocabulary index or -1) of every character n-gram in the words of `lower` [N], by `index`.

        Each distinct word of the batch is cut into n-grams once and its n-grams are repeated wherever it occurs: a
        batch of support messages repeats most of its words, and cutting them (splitting into characters, n-gram
        keys, lookups) was most of the character n-grams' time. Default export, 1,024 generated rows: +16% rows/s;
        one row costs ~50 us more (the ragged repeat); encoding Banking77's training text, 30% less time."""
        words = tf.strings.split(lower)
        distinct, word = tf.unique(words.flat_values, out_idx=tf.int64)
        sequence, position = index(character_units(distinct), self.char_ngrams[0])
        # `index` returns its n-grams grouped by sequence, in order, as from_value_rowids needs
        per_word = tf.RaggedTensor.from_value_rowids(position, sequence, nrows=tf.size(distinct, out_type=tf.int64),
                                                     validate=False)
        occurrences = tf.gather(per_word, word)
        return tf.gather(words.value_rowids(), occurrences.value_rowids()), occurrences.flat_values

    def grams(self, lower, kind: str):
        """The n-gram strings of `kind` in the lowercased rows `lower` [N], ragged [N, None]."""
        units, row = self.units(lower, kind)
        grams = tf.strings.ngrams(units, tuple(range(self.n_range(kind)[0], self.n_range(kind)[1] + 1)),
                                  separator=" " if kind == "words" else "")
        if row is None:
            return grams
        rows = tf.shape(lower, out_type=tf.int64)[0]
        return tf.RaggedTensor.from_value_rowids(grams, row, nrows=rows).merge_dims(1, 2)

    def tokens(self, strings) -> dict:
        """`strings` [N] -> {kind: ragged [N, None] string n-grams}: what the vocabulary counts."""
        lower = lowercase(strings)
        return {kind: self.grams(lower, kind) for kind in self.kinds}

    def set_vocabulary(self, kind: str, vocabulary, idf) -> None:
        """`vocabulary` (strings) and its idf weights for `kind`, as `TextVocabularyCounter.finish` computes."""
        if not len(vocabulary):
            raise ValueError(f"no {kind} in the training text of column {self.name!r}")
        vocabulary = [str(token) for token in vocabulary]
        grams = [token.split(" ") if kind == "words" else list(token) for token in vocabulary]
        index = NgramIndex.build(grams, self.n_range(kind)[1])
        if index is None:  # too many distinct units for exact integer keys: look the n-gram strings up instead
            index = keras.layers.StringLookup(vocabulary=vocabulary, num_oov_indices=1, output_mode="int",
                                              name=f"{self.name}_{kind}")
        self.parts[kind] = (index, np.asarray(idf, dtype=np.float32))
        self._vocabularies = {**getattr(self, "_vocabularies", {}), kind: vocabulary}

    def vocabulary(self, kind: str) -> list[str]:
        return list(self._vocabularies[kind])

    @property
    def output_dim(self) -> int:
        return sum(len(idf) for _, idf in self.parts.values())

    def call(self, strings):
        row, column, weight = self.entries(strings)
        shape = tf.stack([tf.shape(strings, out_type=tf.int64)[0], self.output_dim])
        # the entries are distinct (row, column) pairs in no particular order, which SparseToDense takes
        # unvalidated: faster than ScatterNd, which checks and adds up each index
        return tf.sparse.to_dense(tf.SparseTensor(tf.stack([row, column], axis=1), weight, shape),
                                  validate_indices=False)

    def entries(self, strings):
        """The nonzero entries of `call`'s L2-normalised tf-idf rows [N, output_dim]: (row, column, weight), each
        [E], each (row, column) once. `TabularPreprocessor.encode` writes them into its matrix itself: the dense
        rows are nearly all zeros."""
        rows = tf.shape(strings, out_type=tf.int64)[0]
        lower = lowercase(strings)
        found, offset = [], 0
        for kind, (index, idf) in self.parts.items():
            if isinstance(index, NgramIndex) and kind == "words":
                found_rows, position = index(self.word_units(lower), 1)
            elif isinstance(index, NgramIndex):
                found_rows, position = self.character_ngrams(lower, index)
            else:
                grams = self.grams(lower, kind)
                found_rows, position = grams.value_rowids(), index(grams.flat_values) - 1
            row, term, weight = self.weigh(found_rows, position, rows, idf)
            found.append((row, term + offset, weight))
            offset += len(idf)
        return tuple(tf.concat(values, axis=0) for values in zip(*found))

    def weigh(self, row_ids, index, rows, idf):
        """Row ids and vocabulary indices (-1: unseen) of every n-gram -> (row, term, weight) of each distinct
        (row, n-gram) pair, weights L2-normalised per row.

        Weighs the distinct pairs only: the [N, V] matrix is mostly zeros, and each op over it whole (log,
        product, norm) would cost a pass over N x V floats.
        """
        size = len(idf)
        keys = tf.boolean_mask(row_ids * size + index, index >= 0)
        pairs, position = tf.unique(keys, out_idx=tf.int64)
        counts = tf.math.bincount(position, minlength=tf.size(pairs, out_type=tf.int64), dtype=tf.float32)
        if self.sublinear_tf:
            counts = 1.0 + tf.math.log(counts)
        row, term = pairs // size, pairs % size
        weights = counts * tf.gather(tf.constant(idf), term)
        norms = tf.sqrt(tf.math.unsorted_segment_sum(tf.square(weights), row, rows))
        return row, term, weights / tf.maximum(tf.gather(norms, row), 1e-12)


class NgramIndex(tf.Module):
    """The vocabulary index of every n-gram in sequences of units (the words of a row, the characters of a word),
    found with integer keys instead of n-gram strings.

    Each unit the vocabulary uses gets an id 1..U (0: any other unit, so no n-gram containing it is in the
    vocabulary); an n-gram's key is sum_j id_j * (U + 1)^j: exact, and distinct across lengths, as long as
    (U + 1)^n_max fits in int64 (`build` returns None otherwise). Joining a batch's character n-grams into strings
    and hashing them was most of the export's time on text (benchmarks/serving.py, rows (g) and (h)).
    """

    KEY_LIMIT = 2**63 - 1

    @classmethod
    def build(cls, grams: list[list[str]], longest: int):
        # unigrams only: unit ids in vocabulary order, so the id is the index and one lookup does
        units = [gram[0] for gram in grams] if longest == 1 else sorted({unit for gram in grams for unit in gram})
        if (len(units) + 1) ** longest > cls.KEY_LIMIT:
            return None
        return cls(units, grams, longest)

    def __init__(self, units, grams, longest):
        super().__init__()
        self.base, self.longest = len(units) + 1, longest
        ids = {unit: number for number, unit in enumerate(units, start=1)}
        keys = [sum(ids[unit] * self.base ** place for place, unit in enumerate(gram)) for gram in grams]
        self.units = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
            tf.constant(units, tf.string), tf.range(1, self.base, dtype=tf.int64)), 0)
        self.grams = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
            tf.constant(keys, tf.int64), tf.range(len(keys), dtype=tf.int64)), -1)

    def __call__(self, units, shortest):
        """`units` ragged [S, None] strings -> (the sequence of each n-gram of `shortest`..`longest` units,
        its vocabulary index or -1), both int64 [G], ordered by sequence (then start, then length)."""
        ids = self.units.lookup(units.flat_values)
        if self.longest == 1:
            return units.value_rowids(), ids - 1
        total = tf.size(ids, out_type=tf.int64)
        sequence = units.value_rowids()
        remaining = tf.gather(units.row_limits(), sequence) - tf.range(total)  # units from here to the sequence end
        key, known = tf.zeros_like(ids), tf.ones_like(ids, dtype=tf.bool)
        keys, valid = [], []
        for place in range(self.longest):
            # the unit `place` after each start (0 past the end: `remaining` masks those n-grams anyway)
            unit = tf.pad(ids[place:], [[0, tf.minimum(tf.constant(place, tf.int64), total)]])
            key += unit * self.base ** place
            known &= unit > 0
            if place + 1 >= shortest:
                keys.append(key)
                valid.append(known & (remaining > place))
        # [start, length] masked row by row: the n-grams come out grouped by start, so by sequence
        valid = tf.stack(valid, axis=1)
        sequences = tf.boolean_mask(tf.broadcast_to(sequence[:, tf.newaxis], tf.shape(valid, out_type=tf.int64)),
                                    valid)
        return sequences, self.grams.lookup(tf.boolean_mask(tf.stack(keys, axis=1), valid))


# Distinct n-grams a counter holds per kind before it prunes (about 100 MB of keys and counts a kind)
COUNTER_CAPACITY = 1 << 20


class TextVocabularyCounter:
    """Term and document frequencies of a `TextTfidf`'s n-grams, counted chunk by chunk in traced ops.

    Bounded: when a kind's table holds more than `capacity` distinct n-grams, it keeps the `capacity // 2` most
    frequent and lowers every count by the largest count it dropped (Misra and Gries 1982, in batches), so memory
    stays flat however many rows are counted. Each count is then at most `lost[kind]` below its true value, and
    `lost[kind]` <= 2N / capacity for N n-gram occurrences counted (each decrement d drops at least capacity/2
    n-grams, so the decrements add up to at most N / (capacity/2)). An n-gram whose true count exceeds the kept
    vocabulary's smallest count by more than that bound is in the vocabulary as with exact counts. Document
    frequencies of the kept n-grams are at most `lost` low too (they were counted only while held). Tables of fewer
    distinct n-grams than `capacity` (Banking77: about 150k character n-grams) are exact.
    """

    def __init__(self, layer: TextTfidf, capacity: int = COUNTER_CAPACITY):
        self.layer = layer
        self.documents = 0
        self.capacity = max(capacity, 4 * layer.max_tokens)  # what is kept after a prune holds the vocabulary twice
        self.lost = {kind: 0 for kind in layer.kinds}  # the error bound of each kind's counts (see above)
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
            for kind in self.tables:
                if int(self.tables[kind][0].size()) > self.capacity:
                    self._prune(kind)
        self.documents += len(strings)

    def _prune(self, kind: str) -> None:
        """Keep the capacity // 2 most frequent n-grams of `kind`, every count lowered by the largest dropped one."""
        terms, documents = self.tables[kind]
        keys, counts = (value.numpy() for value in terms.export())
        keep = self.capacity // 2
        decrement = int(np.partition(counts, len(counts) - keep - 1)[len(counts) - keep - 1])
        dropped = counts <= decrement
        terms.remove(tf.constant(keys[dropped]))
        documents.remove(tf.constant(keys[dropped]))
        terms.insert(tf.constant(keys[~dropped]), tf.constant(counts[~dropped] - decrement))
        self.lost[kind] += decrement

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
