"""The classification head: encoded features in, logits out. Edit freely.

`train.py` feeds this model the output of kerasls' `TabularPreprocessor` (one float32 vector per row) and
trains it with `CategoricalCrossentropy(label_smoothing=ε, from_logits=True)`. Two rules keep that correct:
the last layer outputs logits (no softmax), and it computes in float32, so mixed precision keeps exact logits.
"""

import keras
from keras import layers


def build_model(input_dim, num_classes, config):
    """A multilayer perceptron; `config` is the `model` section of config.yaml."""
    inputs = keras.Input(shape=(input_dim,), name="features")
    x = inputs
    for units in config.hidden_units:
        x = layers.Dense(units, activation="relu")(x)
        x = layers.Dropout(config.dropout)(x)
    logits = layers.Dense(num_classes, dtype="float32", name="logits")(x)
    return keras.Model(inputs, logits, name="intent_classifier")
