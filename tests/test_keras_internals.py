"""The Keras private attribute kerasls relies on (`kerasls.keras_internals`) still does what kerasls needs. A
Keras upgrade that moves it fails here, by name."""

import keras
import numpy as np

from kerasls import keras_internals


def test_a_callback_can_move_the_first_epoch_of_fit():
    """What resume does: `on_train_begin` sets the initial epoch, and fit runs only the epochs after it."""
    seen = []

    class StartAtTwo(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            keras_internals.set_initial_epoch(self.model, 2)

        def on_epoch_begin(self, epoch, logs=None):
            seen.append(epoch)

    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    model.compile(optimizer="sgd", loss="mse")
    model.fit(np.zeros((4, 2)), np.zeros((4, 1)), epochs=4, verbose=0, callbacks=[StartAtTwo()])
    assert seen == [2, 3]
    assert keras_internals.initial_epoch(model) == 2


def test_nested_layers_and_a_layers_own_trainable_flag():
    """What restoring a LoRA encoder's flags needs: every nested layer, and a layer's flag set without its
    variables' (the public setter sets them all)."""
    inner_input = keras.Input((3,))
    inner = keras.Model(inner_input, keras.layers.Dense(2, name="inner_dense")(inner_input), name="inner")
    outer_input = keras.Input((3,))
    outer = keras.Model(outer_input, keras.layers.Dense(1, name="head")(inner(outer_input)))
    names = [layer.name for layer in keras_internals.nested_layers(outer)]
    assert "inner" in names and "inner_dense" in names and "head" in names
    dense = inner.get_layer("inner_dense")
    keras_internals.set_own_trainable(dense, False)
    assert dense.trainable is False and all(variable.trainable for variable in dense.weights)
    assert dense.trainable_weights == []  # the layer's own flag still hides its variables
