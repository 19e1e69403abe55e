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
