"""keras.applications backbones get the input preprocessing their weights expect, from 0..255 images (what the
image pipeline and the `image_bytes` export decode to); checked against the closed forms of the three modes."""

import keras
import numpy as np
import pytest

from kerasls.config import KERAS_APPLICATIONS
from kerasls.models import application_preprocessing

CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68])
TORCH_MEAN, TORCH_STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
MODES = {
    "caffe": lambda x: x[..., ::-1] - CAFFE_MEAN_BGR,
    "tf": lambda x: x / 127.5 - 1.0,
    "torch": lambda x: (x / 255.0 - TORCH_MEAN) / TORCH_STD,
}
EXPECTED_MODE = {
    **dict.fromkeys(["ResNet50", "ResNet101", "ResNet152", "VGG16", "VGG19"], "caffe"),
    **dict.fromkeys(["ResNet50V2", "ResNet101V2", "ResNet152V2", "InceptionV3", "InceptionResNetV2", "Xception",
                     "MobileNet", "MobileNetV2", "NASNetLarge", "NASNetMobile"], "tf"),
    **dict.fromkeys(["DenseNet121", "DenseNet169", "DenseNet201"], "torch"),
}


@pytest.mark.parametrize("name", KERAS_APPLICATIONS)
def test_each_application_gets_the_preprocessing_of_its_weights(name):
    images = np.random.default_rng(0).uniform(0, 255, (2, 4, 4, 3)).astype(np.float32)
    preprocess = application_preprocessing(name)
    if name in EXPECTED_MODE:
        # a tensor, as the model's Lambda passes (on numpy input preprocess_input works in place)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(preprocess(keras.ops.convert_to_tensor(images))),
                                   MODES[EXPECTED_MODE[name]](images.astype(np.float64)), rtol=1e-5, atol=1e-4)
    else:  # ConvNeXt, EfficientNet(V2), MobileNetV3: the model rescales 0..255 itself
        assert preprocess is None
        assert name.startswith(("ConvNeXt", "EfficientNet", "MobileNetV3"))
        module = getattr(keras.applications, name).__module__.rsplit(".", 1)[-1]
        passed = getattr(keras.applications, module).preprocess_input(keras.ops.convert_to_tensor(images))
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(passed), images)


@pytest.mark.parametrize("name, scales_inside", [("MobileNet", False), ("MobileNetV3Small", True)])
def test_the_backbone_puts_the_preprocessing_in_front_of_the_model(name, scales_inside):
    from kerasls.models import application_backbone

    backbone = application_backbone(name, (32, 32, 3))
    names = [layer.name for layer in backbone.layers]
    assert ("preprocess" not in names) == scales_inside, names
    if not scales_inside:
        images = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
        inner = backbone.layers[-1]
        np.testing.assert_allclose(keras.ops.convert_to_numpy(backbone(images)),
                                   keras.ops.convert_to_numpy(inner(images / 127.5 - 1.0)), rtol=1e-4, atol=1e-5)
