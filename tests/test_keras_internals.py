"""The Keras private attributes kerasls relies on (`kerasls.keras_internals`) still do what kerasls needs. A Keras
upgrade that moves one fails here, by name."""

import keras
import numpy as np
import tensorflow as tf

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


def test_text_vectorization_exposes_its_lookup_tables_and_tokenizer():
    vectorizer = keras.layers.TextVectorization(max_tokens=10, output_mode="tf_idf")
    vectorizer.adapt(tf.constant([["Refund, please!"], ["refund my card"]]))
    lookup = keras_internals.text_lookup_layer(vectorizer)
    for table in ("token_counts", "token_document_counts", "num_documents"):
        assert hasattr(lookup, table), table
    tokens = keras_internals.text_tokens(vectorizer, tf.constant([["Refund, please!"]]))
    assert isinstance(tokens, tf.RaggedTensor)
    assert [t.decode() for t in tokens.flat_values.numpy()] == ["refund", "please"]
