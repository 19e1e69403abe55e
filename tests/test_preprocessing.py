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
    encoded = preprocessor.encode({"n": np.array([np.nan, 5.0], np.float32), "c": np.array(["x", "x"], object),
                                   "t": np.array(["", ""], object)})
    expected = (np.array([2.0, 5.0]) - filled.mean()) / filled.std()
    np.testing.assert_allclose(encoded[:, 0], expected, rtol=1e-6)


def test_unseen_category_goes_to_the_out_of_vocabulary_slot(preprocessor):
    encoded = preprocessor.encode({"n": np.array([1.0, 1.0], np.float32), "c": np.array(["x", "never"], object),
                                   "t": np.array(["", ""], object)})
    categorical = encoded[:, 1:4]  # [OOV, "x", "y"]
    np.testing.assert_array_equal(categorical, [[0, 1, 0], [1, 0, 0]])


def test_unknown_words_are_ignored_and_width_is_stable(preprocessor):
    encoded = preprocessor.encode({"n": np.array([1.0], np.float32), "c": np.array(["x"], object),
                                   "t": np.array(["zzzz qqqq"], object)})
    assert encoded.shape == (1, preprocessor.output_dim)
    text_part = encoded[0, 4:]
    assert text_part.sum() == 0  # no known word or character n-gram: unseen n-grams have no slot
    known = preprocessor.encode({"n": np.array([1.0], np.float32), "c": np.array(["x"], object),
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
    served = tf.function(preprocessor.call, input_signature=[preprocessor.input_signature()])
    specs = preprocessor.input_signature()
    expected = served({name: tf.constant(values, dtype=specs[name].dtype) for name, values in columns.items()})

    encoded = preprocessor.encode(columns, batch_size=3)  # two chunks: the second's rows are offset

    assert encoded.shape == (4, preprocessor.output_dim)
    np.testing.assert_allclose(encoded, expected.numpy(), atol=1e-7)
    assert np.count_nonzero(encoded[:, preprocessor.numeric_and_categorical_width:]) > 10
