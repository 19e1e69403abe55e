"""model.keras: the trained model saved with the run loads with `keras.models.load_model` and predicts what the
model did; a model Keras cannot serialise gets one note and no file, and the run goes on."""

from types import SimpleNamespace

import keras
import numpy as np
import pytest

from kerasls import training

pytestmark = pytest.mark.usefixtures("float32_policy")


def named_model():
    inputs = {"numeric": keras.Input((3,), name="numeric"), "text_message": keras.Input((5,), name="text_message")}
    hidden = keras.layers.Dense(4, activation="relu")(keras.layers.Concatenate()(list(inputs.values())))
    return keras.Model(inputs, keras.layers.Dense(2, name="logits")(hidden))


class Unsaveable(keras.layers.Layer):
    def __init__(self, scale):  # a required argument and no get_config: Keras cannot rebuild it
        super().__init__()
        self.scale = scale

    def call(self, inputs):
        return inputs * self.scale


def test_model_keras_loads_and_predicts_as_the_trained_model(tmp_path):
    model = named_model()
    run = SimpleNamespace(path=tmp_path)
    path = training.save_keras_model(model, run)
    assert path == tmp_path / "model.keras" and not list(tmp_path.glob(".*tmp*"))
    rows = {"numeric": np.random.default_rng(0).normal(size=(6, 3)).astype("float32"),
            "text_message": np.random.default_rng(1).random((6, 5)).astype("float32")}
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(rows, verbose=0), model.predict(rows, verbose=0), atol=1e-6)


def test_a_model_keras_cannot_serialise_gets_a_note_not_a_crash(tmp_path, capsys):
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(Unsaveable(2.0)(inputs)))
    assert training.save_keras_model(model, SimpleNamespace(path=tmp_path)) is None
    assert "note: model.keras not saved" in capsys.readouterr().out
    assert not list(tmp_path.iterdir())
