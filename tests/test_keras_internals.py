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
