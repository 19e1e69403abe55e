"""The image model: images with values in [0, 255] in, logits out. Edit freely.

`model.backbone` picks the feature extractor (a small CNN, or a keras.applications model with random or local
weights); the head is dropout and one Dense layer. The last layer outputs logits in float32: the loss is
`CategoricalCrossentropy(label_smoothing=ε, from_logits=True)`, and mixed precision keeps exact logits.
"""

import keras
from keras import layers

from kerasls import image_backbone


def build_model(input_shape, num_classes, config):
    """`config` is the `model` section of config.yaml."""
    inputs = keras.Input(shape=input_shape, name="images")
    backbone = image_backbone(config, input_shape)
    backbone.trainable = not config.freeze_backbone
    # A frozen backbone runs in inference mode (batch-norm statistics stay fixed), also after unfreezing.
    features = backbone(inputs, training=False if config.freeze_backbone else None)
    features = layers.Dropout(config.dropout)(features)
    logits = layers.Dense(num_classes, dtype="float32", name="logits")(features)
    return keras.Model(inputs, logits, name="image_classifier")
