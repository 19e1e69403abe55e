"""Text columns: TF-IDF over word n-grams and character n-grams within word boundaries (`TextTfidf`).

The golden reference is scikit-learn's `TfidfVectorizer` (the baseline a user compares against), run on the
same text: the two matrices must agree entry by entry, on rows with unseen words, punctuation, case, non-ASCII
text and empty text.
"""

import numpy as np
import pytest
import tensorflow as tf
from sklearn.feature_extraction.text import TfidfVectorizer

from kerasls.config import KeraslsError, TextConfig, build_config
from kerasls.text_features import NgramIndex, TextTfidf, TextVocabularyCounter, lowercase

TRAIN = [
    "I am still waiting on my card?", "What can I do if my card   still hasn't arrived after 2 weeks?", "",
    "Café: ÉCOLE été, naïve; 日本語 テキスト", "Refund!!! refund, REFUND please", "a b c", "top-up failed x2 ... why?",
    "tab\there\nnewline", "card card card card arrived", "vertical\vtab form\ffeed carriage\rreturn  -- end",
]
HELD_OUT = ["never seen words zzz", "card refund!", "", "École étÉ", "I'm OK", "¿dónde está mi tarjeta?",
            "form\ffeed\v--tab\t\r\nend"]


def fitted(texts, chunk=4, **settings):
    layer = TextTfidf(name="t", **settings)
    counter = TextVocabularyCounter(layer)
    for start in range(0, len(texts), chunk):
        counter.update(texts[start:start + chunk])
    return counter.finish()


def columns_of(layer, kind, vectorizer):
    """Where each of `layer`'s `kind` n-grams sits in scikit-learn's matrix (its vocabulary is sorted)."""
    return [vectorizer.vocabulary_[token] for token in layer.vocabulary(kind)]


@pytest.mark.parametrize("ngrams,char_ngrams,sublinear", [(2, (2, 5), True), (1, (3, 3), False), (3, None, True),
                                                            (0, (1, 4), True)])
def test_equals_scikit_learn_tfidf_word_and_char_wb(ngrams, char_ngrams, sublinear):
    layer = fitted(TRAIN, ngrams=ngrams, char_ngrams=char_ngrams, sublinear_tf=sublinear, max_tokens=100_000)
    ours = layer(np.array(TRAIN + HELD_OUT, dtype=object)).numpy()
    assert ours.shape == (len(TRAIN) + len(HELD_OUT), layer.output_dim)
    offset = 0
    references = []
    if ngrams:
        references.append(("words", TfidfVectorizer(ngram_range=(1, ngrams), sublinear_tf=sublinear)))
    if char_ngrams:
        references.append(("chars", TfidfVectorizer(analyzer="char_wb", ngram_range=char_ngrams,
                                                     sublinear_tf=sublinear)))
    for kind, vectorizer in references:
        expected = vectorizer.fit(TRAIN).transform(TRAIN + HELD_OUT).toarray()
        assert sorted(layer.vocabulary(kind)) == sorted(vectorizer.vocabulary_)
        width = len(vectorizer.vocabulary_)
        np.testing.assert_allclose(ours[:, offset:offset + width], expected[:, columns_of(layer, kind, vectorizer)],
                                   atol=1e-6)
        offset += width
    assert offset == layer.output_dim
    assert np.all(ours[TRAIN.index("")] == 0) and np.all(ours[len(TRAIN) + HELD_OUT.index("")] == 0)


def test_vocabulary_keeps_the_most_frequent_n_grams_like_max_features():
    layer = fitted(TRAIN, ngrams=1, char_ngrams=None, max_tokens=3)
    # counts: card 6, refund 3, then arrived, my, still 2 each: the tie goes in sorted order
    assert layer.vocabulary("words") == ["card", "refund", "arrived"]
    reference = TfidfVectorizer(sublinear_tf=True, max_features=3).fit(TRAIN)  # breaks the tie its own way
    assert {"card", "refund"} < set(reference.vocabulary_)


def test_counting_in_chunks_equals_counting_at_once():
    texts = [f"refund {i % 7} card number{i % 13} " * (1 + i % 3) for i in range(500)]
    whole, chunked = fitted(texts, chunk=500), fitted(texts, chunk=37)
    for kind in ("words", "chars"):
        assert whole.vocabulary(kind) == chunked.vocabulary(kind)
    np.testing.assert_array_equal(whole(np.array(texts[:50])).numpy(), chunked(np.array(texts[:50])).numpy())


def test_per_column_settings_override_the_defaults():
    text = TextConfig(ngrams=2, char_ngrams=[2, 5], max_tokens=500, columns={"subject": {"char_ngrams": None}})
    assert text.settings("subject").model_dump() == {"ngrams": 2, "char_ngrams": None, "max_tokens": 500,
                                                     "sublinear_tf": True, "encoder": None}
    assert text.settings("body").char_ngrams == (2, 5)


@pytest.mark.parametrize("text,message", [
    ({"ngrams": 0, "char_ngrams": None}, "without features"),
    ({"char_ngrams": [5, 2]}, "1 <= min <= max"),
    ({"columns": {"subject": {"ngrams": 0, "char_ngrams": None}}}, "columns.subject"),
    ({"columns": {"subject": {"ngram": 1}}}, "ngram"),
])
def test_bad_text_settings_name_the_key(text, message):
    with pytest.raises(KeraslsError, match=message) as error:
        build_config({"data": {"text": text}})
    assert "data.text" in str(error.value)


def test_the_old_key_says_where_it_moved():
    with pytest.raises(KeraslsError, match="data.text.max_tokens"):
        build_config({"data": {"text_max_tokens": 3000}})


def test_traced_output_has_a_static_width_for_the_layers_after_it():
    layer = fitted(TRAIN)
    traced = tf.function(layer.call).get_concrete_function(tf.TensorSpec([None], tf.string))
    assert traced.structured_outputs.shape.as_list() == [None, layer.output_dim]


def test_the_layer_used_directly_checks_its_settings_as_the_config_does():
    with pytest.raises(ValueError, match="without features"):
        TextTfidf(ngrams=0, char_ngrams=None)
    with pytest.raises(ValueError, match="1 <= min <= max <= 10"):
        TextTfidf(char_ngrams=(5, 2))


def test_string_lookup_fallback_equals_integer_keys(monkeypatch):
    """Vocabularies with too many distinct units for exact int64 n-gram keys look the n-gram strings up instead;
    both ways give the same matrix."""
    keyed = fitted(TRAIN, ngrams=2, char_ngrams=(2, 5), max_tokens=100_000)
    assert all(isinstance(index, NgramIndex) for index, _ in keyed.parts.values())
    monkeypatch.setattr(NgramIndex, "KEY_LIMIT", 10)
    looked_up = fitted(TRAIN, ngrams=2, char_ngrams=(2, 5), max_tokens=100_000)
    assert not any(isinstance(index, NgramIndex) for index, _ in looked_up.parts.values())
    rows = np.array(TRAIN + HELD_OUT, dtype=object)
    np.testing.assert_allclose(looked_up(rows).numpy(), keyed(rows).numpy(), atol=1e-7)


@pytest.mark.parametrize("batch", [
    ["Refund PLEASE", "Top-Up", ""],  # ASCII: the bytewise op
    ["Refund PLEASE", "ÉCOLE Été", "ΣΊΣΥΦΟΣ"],  # not ASCII: the Unicode op for the whole batch
    [b"CARD \xff\xfe", b"ASCII ONLY", b"\xc3"],  # invalid UTF-8 is not ASCII: it still becomes U+FFFD
    [b"AB\x00CD", b"ASCII ONLY"],  # the Unicode op ends a string at NUL
])
def test_lowercase_equals_the_unicode_op(batch):
    strings = tf.constant(batch)
    expected = tf.strings.lower(strings, encoding="utf-8").numpy()
    assert list(lowercase(strings).numpy()) == list(expected)
    assert list(tf.function(lowercase)(strings).numpy()) == list(expected)


@pytest.mark.parametrize("texts", [TRAIN + HELD_OUT, ["Top-up FAILED twice", "card arrived?", "I'm OK", ""]])
def test_a_batch_equals_its_rows_one_by_one(texts):
    """Rows are weighed independently of their batch, also when the batch takes the other lowercasing op (an
    all-ASCII batch against rows with accents); `entries` holds each (row, column) once."""
    layer = fitted(TRAIN, max_tokens=100_000)
    rows = np.array(texts * 4, dtype=object)
    alone = np.concatenate([layer(rows[i:i + 1]).numpy() for i in range(len(rows))])
    np.testing.assert_allclose(layer(rows).numpy(), alone, atol=1e-7)
    row, column, weight = (value.numpy() for value in layer.entries(tf.constant(rows)))
    rebuilt = np.zeros_like(alone)
    rebuilt[row, column] = weight
    np.testing.assert_allclose(rebuilt, alone, atol=1e-7)
    assert len(set(zip(row, column))) == len(row)


@pytest.mark.parametrize("shortest, longest", [(1, 1), (2, 5), (1, 3)])
def test_ngram_index_returns_every_ngram_grouped_by_sequence(shortest, longest):
    """`character_ngrams` builds a ragged tensor from `NgramIndex`'s sequence ids unvalidated: they must come in
    order. The index of each n-gram is the vocabulary position of its string, -1 when unseen; beyond unigrams, an
    n-gram with a unit no vocabulary entry has is left out (it cannot be in the vocabulary)."""
    words = ["card", "cart", "a", "", "arrived", "card"]
    grams = sorted({w[i:i + n] for w in words[:3] for n in range(shortest, longest + 1) for i in range(len(w) - n + 1)})
    index = NgramIndex.build([list(gram) for gram in grams], longest)
    units = tf.strings.unicode_split(tf.constant(words), "UTF-8")
    sequence, position = (value.numpy() for value in index(units, shortest))

    assert np.all(np.diff(sequence) >= 0)
    known_units = set("".join(grams))
    expected = sorted((s, grams.index(w[i:i + n]) if w[i:i + n] in grams else -1) for s, w in enumerate(words)
                      for n in range(shortest, longest + 1) for i in range(len(w) - n + 1)
                      if longest == 1 or set(w[i:i + n]) <= known_units)
    assert sorted(zip(sequence.tolist(), position.tolist())) == expected


def exact_counts(layer, texts):
    """{kind: {n-gram: occurrences}} by the layer's own tokens, counted in Python."""
    from collections import Counter

    grams = layer.tokens(tf.constant(np.asarray(texts, dtype=object).astype(str)))
    return {kind: Counter(value.decode("utf-8") for value in ragged.flat_values.numpy())
            for kind, ragged in grams.items()}


def test_the_bounded_counter_stays_within_its_capacity_and_its_error_bound():
    """Heavy n-grams among thousands seen once: with a capacity far below the distinct n-grams, the table never
    holds more than capacity plus a chunk's new n-grams, every kept count is at most `lost` (<= 2N / capacity) below
    the true count, and the vocabulary is the exact one where the gap to the rest exceeds that bound."""
    rng = np.random.default_rng(3)
    heavy = [f"intent{k}" for k in range(30)]
    texts = [" ".join([heavy[k % 30] if k % 3 else f"x{rng.integers(1e9)}", f"y{rng.integers(1e9)}"])
             for k in range(3000)]
    layer = TextTfidf(name="t", ngrams=1, char_ngrams=None, max_tokens=10)
    counter = TextVocabularyCounter(layer, capacity=400)  # kept: 200 of the about 5,000 distinct words
    largest = 0
    for start in range(0, len(texts), 50):
        counter.update(texts[start:start + 50])
        largest = max(largest, int(counter.tables["words"][0].size()))
    assert counter.capacity == 400 and 0 < counter.lost["words"]
    assert largest <= 400 + 100  # a chunk of 50 texts brings at most 100 new words
    truth = exact_counts(layer, texts)["words"]
    total = sum(truth.values())
    assert counter.lost["words"] <= 2 * total / 400
    keys, counts = (value.numpy() for value in counter.tables["words"][0].export())
    for key, count in zip(keys, counts):
        assert truth[key.decode()] - counter.lost["words"] <= count <= truth[key.decode()]
    counter.finish()
    exact = sorted(truth, key=lambda word: (-truth[word], word))[:10]
    assert truth[exact[-1]] - max(truth[word] for word in truth if word not in heavy) > counter.lost["words"]
    assert layer.vocabulary("words") == exact


def test_banking77s_vocabulary_is_the_exact_one_with_the_default_capacity():
    import pandas as pd
    from conftest import SHARED_DATA, require

    texts = pd.read_csv(require(SHARED_DATA / "banking77" / "train.csv"))["text"].to_numpy(dtype=object)
    bounded = TextTfidf(name="bounded")
    counter = TextVocabularyCounter(bounded)
    counter.update(texts, chunk_rows=1024)
    counter.finish()
    assert counter.lost == {"words": 0, "chars": 0}  # 23,608 and 20,357 distinct: below the capacity
    unbounded = TextTfidf(name="unbounded")
    exact_counter = TextVocabularyCounter(unbounded, capacity=10**9)
    exact_counter.update(texts)
    exact_counter.finish()
    for kind in ("words", "chars"):
        assert bounded.vocabulary(kind) == unbounded.vocabulary(kind) and len(bounded.vocabulary(kind)) == 10000
