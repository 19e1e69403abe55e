"""TabularPreprocessor: the encoding is the closed form we expect, and unseen values are handled."""

import numpy as np
import pytest

from kerasls.config import TextConfig
from kerasls.preprocessing import TabularPreprocessor


@pytest.fixture(scope="module")
def preprocessor():
    columns = {
        "n": np.array([1.0, 2.0, np.nan, 5.0], dtype=np.float32),
        "c": np.array(["x", "y", "x", "x"], dtype=object),
        "t": np.array(["buy shoes", "return shoes", "buy", ""], dtype=object),
    }
    return TabularPreprocessor(["n"], ["c"], ["t"], text_settings=TextConfig(max_tokens=50)).adapt(columns)


def test_numeric_missing_values_take_the_median_then_standardise(preprocessor):
    filled = np.array([1.0, 2.0, 2.0, 5.0])  # NaN -> median of [1, 2, 5] = 2
    encoded = preprocessor.encode_dense({"n": np.array([np.nan, 5.0], np.float32), "c": np.array(["x", "x"], object),
                                   "t": np.array(["", ""], object)})
    expected = (np.array([2.0, 5.0]) - filled.mean()) / filled.std()
    np.testing.assert_allclose(encoded[:, 0], expected, rtol=1e-6)


def test_unseen_category_goes_to_the_out_of_vocabulary_slot(preprocessor):
    encoded = preprocessor.encode_dense({"n": np.array([1.0, 1.0], np.float32), "c": np.array(["x", "never"], object),
                                   "t": np.array(["", ""], object)})
    categorical = encoded[:, 1:4]  # [OOV, "x", "y"]
    np.testing.assert_array_equal(categorical, [[0, 1, 0], [1, 0, 0]])


def test_unknown_words_are_ignored_and_width_is_stable(preprocessor):
    encoded = preprocessor.encode_dense({"n": np.array([1.0], np.float32), "c": np.array(["x"], object),
                                   "t": np.array(["zzzz qqqq"], object)})
    assert encoded.shape == (1, preprocessor.dense_width)
    text_part = encoded[0, 4:]
    assert text_part.sum() == 0  # no known word or character n-gram: unseen n-grams have no slot
    known = preprocessor.encode_dense({"n": np.array([1.0], np.float32), "c": np.array(["x"], object),
                                 "t": np.array(["buy"], object)})
    assert known[0, 4:].sum() > 0


def test_input_signature_types(preprocessor):
    import tensorflow as tf

    signature = preprocessor.input_signature()
    assert signature["n"].dtype == tf.float32 and signature["c"].dtype == tf.string
    assert all(spec.shape.as_list() == [None] for spec in signature.values())


@pytest.mark.parametrize("numeric, categorical", [(["n"], ["c"]), ([], [])])
def test_encode_writes_what_the_layer_computes(numeric, categorical):
    """`encode` writes the text columns' nonzero entries into a zero matrix itself; the served graph scatters them
    into dense rows (`call`). Both must agree, column for column, also with no numeric or categorical block."""
    import tensorflow as tf

    train = {"n": np.array([1.0, 2.0, np.nan], np.float32), "c": np.array(["x", "y", "x"], object),
             "t": np.array(["buy new shoes", "return my shoes!", "Ünïcode café"], object),
             "u": np.array(["card lost", "card", "lost lost"], object)}
    rows = {"n": np.array([3.0, np.nan, 1.0, 0.0], np.float32), "c": np.array(["y", "x", "never", "x"], object),
            "t": np.array(["Buy SHOES, buy!", "", "unseen words", "café shoes"], object),
            "u": np.array(["lost card", "card card", "", "zz"], object)}
    preprocessor = TabularPreprocessor(numeric, categorical, ["t", "u"],
                                       text_settings=TextConfig(max_tokens=40)).adapt(train)
    columns = {name: rows[name] for name in preprocessor.columns}
    served = tf.function(preprocessor.dense, input_signature=[preprocessor.input_signature()])
    specs = preprocessor.input_signature()
    expected = served({name: tf.constant(values, dtype=specs[name].dtype) for name, values in columns.items()})

    encoded = preprocessor.encode_dense(columns, batch_size=3)  # two chunks: the second's rows are offset

    assert encoded.shape == (4, preprocessor.dense_width)
    np.testing.assert_allclose(encoded, expected.numpy(), atol=1e-7)
    assert np.count_nonzero(encoded[:, preprocessor.numeric_and_categorical_width:]) > 10


def test_layer_output_is_the_blocks_side_by_side():
    """`call` writes every block with one sparse scatter; it must equal the blocks built on their own: the
    standardised numeric columns, a one-hot block per categorical column (OOV first), then each text column's
    `TextTfidf` output (tested against scikit-learn in test_text_features.py)."""
    import tensorflow as tf

    train = {"a": np.array([1.0, 2.0, np.nan, 4.0], np.float32), "b": np.array([0.5, 0.5, 1.5, np.nan], np.float32),
             "c": np.array(["x", "y", "x", "z"], object), "d": np.array(["p", "p", "q", "p"], object),
             "t": np.array(["buy shoes", "return shoes", "buy", ""], object)}
    rows = {"a": np.array([3.0, np.nan, 0.0], np.float32), "b": np.array([np.nan, 2.0, 1.0], np.float32),
            "c": np.array(["z", "never", "x"], object), "d": np.array(["q", "p", ""], object),
            "t": np.array(["Buy new shoes", "", "return"], object)}
    preprocessor = TabularPreprocessor(["a", "b"], ["c", "d"], ["t"],
                                       text_settings=TextConfig(max_tokens=30)).adapt(train)
    specs = preprocessor.input_signature()
    served = tf.function(preprocessor.dense, input_signature=[specs])(
        {name: tf.constant(values, dtype=specs[name].dtype) for name, values in rows.items()}).numpy()

    blocks = []
    for name in ["a", "b"]:
        known = train[name][~np.isnan(train[name])]
        filled = np.where(np.isnan(train[name]), np.median(known), train[name])
        value = np.where(np.isnan(rows[name]), np.median(known), rows[name])
        blocks.append(((value - filled.mean()) / filled.std())[:, None])
    for name, vocabulary in (("c", ["[UNK]", "x", "y", "z"]), ("d", ["[UNK]", "p", "q"])):
        assert preprocessor.lookups[name].get_vocabulary() == vocabulary
        blocks.append(np.array([[float(value == slot) if value in vocabulary else float(slot == "[UNK]")
                                 for slot in vocabulary] for value in rows[name]]))
    blocks.append(preprocessor.vectorizers["t"](tf.constant(rows["t"].astype(str))).numpy())
    expected = np.concatenate(blocks, axis=1)

    assert served.shape == expected.shape == (3, preprocessor.dense_width)
    np.testing.assert_allclose(served, expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(preprocessor.encode_dense(rows), expected, rtol=1e-6, atol=1e-7)


def _tensors(preprocessor, columns):
    import tensorflow as tf

    specs = preprocessor.input_signature()
    return {name: tf.constant(np.asarray(columns[name]), dtype=specs[name].dtype) for name in preprocessor.columns}


@pytest.mark.parametrize("short", ["c", "t", "n"])
def test_columns_of_different_lengths_are_refused(preprocessor, short):
    """The served layer takes one tensor per column: a request whose columns differ in length must fail, not fill
    the missing rows with empty text or repeat a single category into every row."""
    import tensorflow as tf

    rows = {"n": np.array([1.0, 2.0, 3.0], np.float32), "c": np.array(["x", "y", "x"], object),
            "t": np.array(["buy", "", "shoes"], object)}
    rows[short] = rows[short][:1]
    served = tf.function(preprocessor.dense, input_signature=[preprocessor.input_signature()])
    with pytest.raises(tf.errors.InvalidArgumentError):
        served(_tensors(preprocessor, rows))


@pytest.mark.parametrize("numeric, categorical, text", [(["n"], ["c"], ["t"]), (["n"], ["c"], []), ([], ["c"], []),
                                                         (["n"], [], [])])
def test_traced_layer_has_a_static_width_and_takes_empty_batches(numeric, categorical, text):
    """The streaming dataset and the model's Input need [None, dense_width] from the traced layer; a batch of no
    rows gives [0, dense_width]; tables without text (or without numbers) encode as the layer computes."""
    import tensorflow as tf

    train = {"n": np.array([1.0, 2.0, np.nan], np.float32), "c": np.array(["x", "y", "x"], object),
             "t": np.array(["buy shoes", "return shoes", ""], object)}
    rows = {"n": np.array([3.0, np.nan], np.float32), "c": np.array(["never", "y"], object),
            "t": np.array(["shoes", "buy"], object)}
    preprocessor = TabularPreprocessor(numeric, categorical, text).adapt({n: train[n] for n in numeric + categorical
                                                                         + text})
    served = tf.function(preprocessor.dense, input_signature=[preprocessor.input_signature()])
    traced = served.get_concrete_function().structured_outputs
    assert traced.shape.as_list() == [None, preprocessor.dense_width]
    empty = served(_tensors(preprocessor, {name: values[:0] for name, values in rows.items()}))
    assert empty.shape == (0, preprocessor.dense_width)
    np.testing.assert_allclose(preprocessor.encode_dense({name: rows[name] for name in preprocessor.columns}),
                               served(_tensors(preprocessor, rows)).numpy(), atol=1e-7)


def test_sparse_rows_hold_the_dense_matrix_by_its_nonzero_entries():
    """A table in memory is held as its nonzero entries; each batch made dense again is the dense matrix, chunk
    boundaries, empty rows and a numeric value at its mean (a zero) included."""
    import tensorflow as tf

    train = {"n": np.array([1.0, 3.0, np.nan], np.float32), "c": np.array(["x", "y", "x"], object),
             "t": np.array(["buy new shoes", "return my shoes!", "card"], object)}
    rows = {"n": np.array([2.0, np.nan, 1.0, 0.0, 2.0], np.float32), "c": np.array(["y", "x", "never", "x", "y"],
                                                                                     object),
            "t": np.array(["Buy SHOES, buy!", "", "unseen", "café shoes", "card shoes"], object)}
    preprocessor = TabularPreprocessor(["n"], ["c"], ["t"], text_settings=TextConfig(max_tokens=40)).adapt(train)
    dense = preprocessor.encode_dense(rows)
    sparse = preprocessor.encode_sparse(rows, batch_size=2)  # three chunks
    assert len(sparse) == 5 and sparse.offsets[0] == 0 and np.all(np.diff(sparse.offsets) >= 0)
    assert len(sparse.columns) == np.count_nonzero(dense)  # the two mean values (2.0 -> 0) are not held
    for row in range(5):
        columns = sparse.columns[sparse.offsets[row]:sparse.offsets[row + 1]]
        assert np.all(np.diff(columns) > 0)  # each row's columns once, in order
    np.testing.assert_array_equal(preprocessor.densify(sparse.tensors()).numpy(), dense)
    batch = tf.nest.map_structure(lambda ragged: tf.gather(ragged, [3, 1]), sparse.tensors())
    np.testing.assert_array_equal(preprocessor.named({"entries": batch})["text_t"].numpy(),
                                  dense[[3, 1], preprocessor.dense_width - preprocessor.block_widths()["text_t"]:])


def test_a_sparse_table_gives_the_batches_of_the_dense_one():
    import tensorflow as tf

    from kerasls.data.epochs import epoch_shuffled_dataset

    rng = np.random.default_rng(4)
    words = np.array(["refund", "card", "lost", "pin", "top", "up", "transfer", "fee", "atm", "cash"], object)
    columns = {"n": rng.normal(size=300).astype(np.float32), "c": rng.choice(np.array(["a", "b", "c"], object), 300),
               "t": np.array([" ".join(rng.choice(words, rng.integers(0, 6))) for _ in range(300)], object)}
    preprocessor = TabularPreprocessor(["n"], ["c"], ["t"], text_settings=TextConfig(max_tokens=30)).adapt(columns)
    targets = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 300)]
    epoch = tf.Variable(2, dtype=tf.int64)
    from_sparse = epoch_shuffled_dataset({"entries": preprocessor.encode_sparse(columns).tensors()}, targets, 32, 7,
                                         epoch, named=preprocessor.named)
    from_dense = epoch_shuffled_dataset({"dense": preprocessor.encode_dense(columns)}, targets, 32, 7, epoch,
                                        named=preprocessor.named)
    batches = 0
    for (sparse_x, sparse_y), (dense_x, dense_y) in zip(from_sparse, from_dense):
        assert sorted(sparse_x) == sorted(dense_x) == ["categorical", "numeric", "text_t"]
        for name in dense_x:
            np.testing.assert_array_equal(sparse_x[name].numpy(), dense_x[name].numpy())
        np.testing.assert_array_equal(sparse_y.numpy(), dense_y.numpy())
        batches += 1
    assert batches == 10  # 9 full batches and the partial last one
