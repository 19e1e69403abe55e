"""The classification head: the named inputs in, logits out. Edit freely.

`build_model(model_inputs, num_classes, config)` receives `model_inputs` (kerasls' `ModelInputs`), built by
`train.py` from the data:
- `model_inputs.inputs`: the `keras.Input`s the model takes, by name: "numeric" (standardised numbers),
  "categorical" (one-hot blocks), and per text column "text_<column>": its TF-IDF vector, or, with
  `data.text.encoder`, its tokens (a dict: token_ids, padding_mask, ...);
- `model_inputs.features`: what each input is before the head, by the same names: the input itself, or for an
  encoder column the pretrained encoder's features [N, hidden] (the backbone is already in the graph).
The default concatenates the features into a multilayer perceptron; combine them differently, or give a column
a layer of its own, here. `train.py` trains the result with `CategoricalCrossentropy(label_smoothing=ε,
from_logits=True)`. Two rules keep that correct: the last layer outputs logits (no softmax), and it computes in
float32, so mixed precision keeps exact logits.
"""

import keras
from keras import layers


def build_model(model_inputs, num_classes, config):
    """A multilayer perceptron over all features; `config` is the `model` section of config.yaml."""
    features = list(model_inputs.features.values())
    x = layers.Concatenate(name="features")(features) if len(features) > 1 else features[0]
    for units in config.hidden_units:
        x = layers.Dense(units, activation="relu")(x)
        x = layers.Dropout(config.dropout)(x)
    logits = layers.Dense(num_classes, dtype="float32", name="logits")(x)
    return keras.Model(model_inputs.inputs, logits, name="intent_classifier")
