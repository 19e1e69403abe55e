"""Backbones for the image template: a small CNN that trains on a CPU in minutes, or a `keras.applications` model.

Every backbone takes images with values in [0, 255] (what the data pipeline and the `image_bytes` export
decode to) and does its own input scaling (a keras.applications model that does not rescale inside gets its
module's `preprocess_input` in front), so the export needs no separate preprocessing step. Weights are random by
default: kerasls never downloads anything unless `weights: imagenet` is asked for explicitly, and a local weights
file is the offline way to start from pretrained weights.

Under mixed precision (`training.mixed_precision`) a backbone computes in the policy's float16/bfloat16 and
returns features in that dtype, with float32 variables; the head (the template's model.py) must end in a
`dtype="float32"` Dense layer so the logits, the loss and the export stay float32 (tests/test_precision.py).
"""

from __future__ import annotations

from pathlib import Path

import keras
from keras import layers

from kerasls.config import KERAS_APPLICATIONS, SUGGESTED_BACKBONES
from kerasls.errors import KeraslsError

# keras.applications modules whose models take 0..255 inputs and scale them inside the model (their
# `preprocess_input` passes the input through); every other model gets its module's `preprocess_input` in front
# (caffe-style BGR mean subtraction for ResNet and VGG, [-1, 1] for Inception, Xception, MobileNet(V2), NASNet and
# ResNetV2, ImageNet mean and std for DenseNet), as its weights expect.
_SCALES_ITS_OWN_INPUTS = ("convnext", "efficientnet", "efficientnet_v2", "mobilenet_v3")


def application_preprocessing(name):
    """`keras.applications.<module>.preprocess_input` of model `name`, or None when the model scales its inputs."""
    module = getattr(keras.applications, name).__module__.rsplit(".", 1)[-1]
    return None if module in _SCALES_ITS_OWN_INPUTS else getattr(keras.applications, module).preprocess_input


def small_cnn(input_shape, filters=(32, 64, 128), name="small_cnn") -> keras.Model:
    """Conv-BN-ReLU blocks with max pooling, global average pooling at the end. Inputs in [0, 255]."""
    inputs = keras.Input(shape=input_shape)
    x = layers.Rescaling(1.0 / 255)(inputs)
    for index, width in enumerate(filters):
        x = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"conv{index}")(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"bn{index}")(x)  # small data: faster moving statistics
        x = layers.Activation("relu")(x)
        if index < len(filters) - 1:
            x = layers.MaxPooling2D()(x)
    outputs = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, outputs, name=name)


def _check_weights(weights):
    if weights is None or weights == "imagenet":
        return weights
    if not Path(weights).is_file():
        raise KeraslsError(f"model.weights={weights!r}: file not found; give a local weights file, null or imagenet")
    return str(weights)


def application_backbone(name, input_shape, weights=None) -> keras.Model:
    """A `keras.applications` model without its top, average-pooled, taking inputs in [0, 255]."""
    if name not in KERAS_APPLICATIONS:  # the config refuses it already; this is for direct callers
        raise KeraslsError(
            f"model.backbone={name!r} is not small_cnn or a keras.applications model; "
            f"try one of {', '.join(SUGGESTED_BACKBONES)}"
        )
    if input_shape[-1] != 3:
        raise KeraslsError(f"model.backbone={name} needs 3-channel images: set data.channels=3")
    if min(input_shape[:2]) < 32:
        raise KeraslsError(f"model.backbone={name} needs images of at least 32x32: raise data.image_size")
    preprocess = application_preprocessing(name)
    constructor = getattr(keras.applications, name)
    backbone = constructor(include_top=False, weights=_check_weights(weights), input_shape=input_shape, pooling="avg")
    if preprocess is None:
        return backbone
    inputs = keras.Input(shape=input_shape)
    return keras.Model(inputs, backbone(layers.Lambda(preprocess, name="preprocess")(inputs)), name=name)


def image_backbone(config, input_shape) -> keras.Model:
    """The `model.backbone` of the config: `small_cnn` or a keras.applications name."""
    if config.backbone == "small_cnn":
        if config.weights == "imagenet":
            raise KeraslsError("model.weights=imagenet: small_cnn has no pretrained weights; use null or a local file")
        if config.weights is not None:
            cnn = small_cnn(input_shape, config.filters)
            cnn.load_weights(_check_weights(config.weights))
            return cnn
        return small_cnn(input_shape, config.filters)
    return application_backbone(config.backbone, input_shape, config.weights)
