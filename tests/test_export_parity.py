"""Served equals evaluated: the logits a run computes its metrics and temperature from are the logits its export
serves, to float32 rounding (1e-5), under float32, mixed_bfloat16 and mixed_float16, for both templates' serving
graphs; and the prediction sets it serves are the sets the run measured. The run evaluates through
`Serving.evaluation_function()`, the traced graph the export writes; calling the model eagerly instead rounds
low-precision intermediates op by op, which a CPU with native bfloat16 (or a GPU) fuses differently in the graph
(measured: 4e-3 in probabilities), so this test fails on such hardware when the run evaluates eagerly.

No training: the models keep their seeded initial weights, scaled up so logits span several units and the
hidden activations are far from zero (where bfloat16 rounding is visible).
"""

import json
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tabular_build_model

from kerasls import calibration, conformal, results, training
from kerasls.config import TextConfig
from kerasls.data.images import ImageSet, make_image_dataset
from kerasls.export import METADATA_FILE, export_classifier, image_serving, tabular_serving
from kerasls.preprocessing import TabularPreprocessor

POLICIES = ["float32", "mixed_bfloat16", "mixed_float16"]
TEMPERATURE = 1.7


pytestmark = pytest.mark.usefixtures("float32_policy")


def raw_columns(rows=300, seed=0):
    rng = np.random.default_rng(seed)
    words = np.array(["refund", "card", "lost", "top", "up", "pending", "Transfer!", "café", "ATM"], dtype=object)
    text = [" ".join(rng.choice(words, rng.integers(0, 6))) for _ in range(rows)]
    # held-out rows a client sends: unseen words, punctuation and case, non-ASCII, empty, odd spacing
    text[200:206] = ["zzz unseen qqq", "REFUND!!! ¿dónde está mi tarjeta?", "日本語のテキスト", "",
                     "  top\tup   pending  ", "Café-ATM, top-up."]
    return {
        "amount": rng.normal(50, 30, rows).astype(np.float32),
        "minutes": np.where(rng.random(rows) < 0.1, np.nan, rng.gamma(2.0, 3.0, rows)).astype(np.float32),
        "device": rng.choice(np.array(["mobile", "desktop", "tablet", ""], dtype=object), rows),
        "message": np.array(text, dtype=object),
    }


def scale_weights(model, factor):
    for variable in model.trainable_variables:
        variable.assign(variable * factor)


def load_export(path):
    return tf.saved_model.load(str(path))


@pytest.mark.parametrize("policy", POLICIES)
def test_tabular_export_serves_the_logits_the_run_evaluated(policy, tmp_path):
    keras.mixed_precision.set_global_policy(policy)
    training.set_seeds(11)
    columns = raw_columns()
    preprocessor = TabularPreprocessor(["amount", "minutes"], ["device"], ["message"],
                                       text_settings=TextConfig(max_tokens=50))
    preprocessor.adapt({name: values[:200] for name, values in columns.items()})
    model = tabular_build_model()(preprocessor.model_inputs(), 4, SimpleNamespace(hidden_units=[64, 32], dropout=0.0))
    scale_weights(model, 3.0)
    serving = tabular_serving(model, preprocessor)
    held_out = {name: values[200:] for name, values in columns.items()}
    evaluated = results.predict_logits(serving.evaluation_function(), held_out, batch_size=64)

    path = export_classifier(tmp_path / "export", serving, tracked=[preprocessor, model], classes=list("abcd"),
                             temperature=TEMPERATURE)
    serve = load_export(path).signatures["serving_default"]
    outputs = {name: value.numpy() for name, value in serve(**{name: tf.constant(values) for name, values in
                                                               held_out.items()}).items()}
    assert outputs["logits"].dtype == np.float32
    assert np.abs(evaluated).max() > 1.0  # logits that span units, not a model that outputs ~0
    np.testing.assert_allclose(outputs["logits"], evaluated, atol=1e-5, rtol=0)
    expected = tf.nn.softmax(evaluated / TEMPERATURE).numpy()
    np.testing.assert_allclose(outputs["probabilities"], expected, atol=1e-5, rtol=0)
    assert "prediction_set" not in outputs and "set_size" not in outputs  # no sets unless given


@pytest.mark.parametrize("score", conformal.SCORES)
def test_export_serves_the_prediction_sets_the_run_measured(score, tmp_path):
    """Sets fitted on calibrated probabilities of held-out rows, then served by the graph for other rows: equal to
    `SetPredictor.sets` in process, but for a row with a class whose score is within float32 rounding of the
    threshold (the graph computes in float32, the run in float64)."""
    training.set_seeds(3)
    columns = raw_columns(rows=700, seed=3)
    preprocessor = TabularPreprocessor(["amount", "minutes"], ["device"], ["message"],
                                       text_settings=TextConfig(max_tokens=50))
    preprocessor.adapt({name: values[:200] for name, values in columns.items()})
    model = tabular_build_model()(preprocessor.model_inputs(), 5, SimpleNamespace(hidden_units=[32], dropout=0.0))
    scale_weights(model, 2.0)
    serving = tabular_serving(model, preprocessor)
    logits = results.predict_logits(serving.evaluation_function(), {name: values[200:] for name, values in
                                                                     columns.items()}, batch_size=128)
    probabilities = calibration.softmax(logits, TEMPERATURE)
    labels = np.random.default_rng(3).integers(0, 5, len(logits))  # any classes: parity, not accuracy
    predictor = conformal.fit(probabilities[:200], labels[:200], score=score, alpha=0.2, raps_lambda=0.05)
    path = export_classifier(tmp_path / "export", serving, tracked=[preprocessor, model], classes=list("abcde"),
                             temperature=TEMPERATURE, set_predictor=predictor)
    served = load_export(path).signatures["serving_default"](
        **{name: tf.constant(values[400:]) for name, values in columns.items()})
    expected = predictor.sets(probabilities[200:])
    sets, sizes = served["prediction_set"].numpy(), served["set_size"].numpy()
    assert sets.dtype == bool and sizes.dtype == np.int32 and sets.shape == expected.shape
    np.testing.assert_array_equal(sizes, sets.sum(axis=1))
    near = np.zeros(len(expected), bool)
    for k in range(5):
        class_scores = conformal.conformity_scores(probabilities[200:], np.full(len(expected), k), score, 0.05)
        near |= np.abs(class_scores - predictor.threshold) < 1e-5
    assert near.sum() <= 2 and 1 < expected.sum(axis=1).mean() < 5  # sets of several sizes, rarely a close call
    np.testing.assert_array_equal(sets[~near], expected[~near])
    stored = json.loads((path / "assets" / METADATA_FILE).read_text())["conformal"]
    assert conformal.SetPredictor.from_json(stored) == predictor


@pytest.mark.parametrize("policy", POLICIES)
def test_image_export_serves_the_logits_the_run_evaluated(policy, tmp_path):
    """Evaluation reads files through the tf.data pipeline (decode + resize in `make_image_dataset`); the export
    decodes the same bytes in its graph. Both feed one traced model function."""
    keras.mixed_precision.set_global_policy(policy)
    training.set_seeds(5)
    rng = np.random.default_rng(5)
    paths = []
    for index in range(24):
        size = (40, 36) if index % 2 else (24, 24)  # shrunk (antialiased) and enlarged
        pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        path = tmp_path / f"image_{index}.png"
        path.write_bytes(tf.io.encode_png(pixels).numpy())
        paths.append(str(path))
    inputs = keras.Input((32, 32, 3))
    hidden = keras.layers.Rescaling(1 / 255)(inputs)
    hidden = keras.layers.Conv2D(16, 3, activation="relu")(hidden)
    hidden = keras.layers.Conv2D(16, 3, activation="relu")(hidden)
    hidden = keras.layers.GlobalAveragePooling2D()(hidden)
    model = keras.Model(inputs, keras.layers.Dense(3, dtype="float32")(hidden))
    scale_weights(model, 4.0)
    image_set = ImageSet(paths, np.zeros(24, np.int64), np.eye(3, dtype=np.float32)[np.zeros(24, np.int64)],
                         False, str(tmp_path))
    serving = image_serving(model, (32, 32), 3)
    evaluated = results.predict_logits(serving.evaluation_function(),
                                        make_image_dataset(image_set, (32, 32), 3, batch_size=8))

    path = export_classifier(tmp_path / "export", serving, tracked=[model], classes=["x", "y", "z"],
                             temperature=TEMPERATURE)
    loaded = load_export(path)
    encoded = tf.constant([Path(p).read_bytes() for p in paths])
    served = loaded.signatures["serving_default"](image_bytes=encoded)
    assert np.abs(evaluated).max() > 0.5
    np.testing.assert_allclose(served["logits"].numpy(), evaluated, atol=1e-5, rtol=0)
    np.testing.assert_allclose(served["probabilities"].numpy(), tf.nn.softmax(evaluated / TEMPERATURE).numpy(),
                               atol=1e-5, rtol=0)
    images = np.stack([image for batch, _ in make_image_dataset(image_set, (32, 32), 3, 8) for image in batch])
    tensor_served = loaded.signatures["serving_tensor"](images=tf.constant(images))
    np.testing.assert_allclose(tensor_served["logits"].numpy(), evaluated, atol=1e-5, rtol=0)


@pytest.mark.parametrize("classes", [2, 3, 20, 21, 77])
def test_served_probabilities_are_softmax_of_logits_over_temperature(classes):
    """The export's probabilities are softmax(z / T) to float32 rounding, on both sides of `FEW_CLASSES` (where it
    computes exp(log_softmax) instead of Softmax), with logits up to +-80 and rows of +-1e4; class_id, confidence
    and class_name follow from them."""
    from kerasls.export import FEW_CLASSES, classifier_outputs

    assert FEW_CLASSES == 20
    rng = np.random.default_rng(classes)
    logits = np.concatenate([rng.normal(0, 3, (64, classes)), rng.uniform(-80, 80, (64, classes)),
                             rng.uniform(-1e4, 1e4, (8, classes))]).astype(np.float32)
    names = np.array([f"class {k}" for k in range(classes)])
    outputs = classifier_outputs(tf.constant(logits), tf.constant(TEMPERATURE), tf.constant(names))

    # z / T rounded to float32 as the export rounds it (at 1e4 / 1.7 that rounding alone moves a probability by 4e-4)
    scaled = (logits / np.float32(TEMPERATURE)).astype(np.float64)
    expected = np.exp(scaled - scaled.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    probabilities = outputs["probabilities"].numpy()
    np.testing.assert_allclose(probabilities, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=2e-6)
    np.testing.assert_array_equal(outputs["class_id"].numpy(), expected.argmax(axis=1))
    np.testing.assert_allclose(outputs["confidence"].numpy(), expected.max(axis=1), rtol=1e-5)
    assert [name.decode() for name in outputs["class_name"].numpy()] == list(names[expected.argmax(axis=1)])
    traced = tf.function(lambda z: classifier_outputs(z, tf.constant(TEMPERATURE), tf.constant(names)))
    graph = traced.get_concrete_function(tf.TensorSpec([None, classes], tf.float32)).graph
    assert ("Softmax" in {op.type for op in graph.get_operations()}) == (classes > FEW_CLASSES)


def test_an_export_the_disk_cannot_hold_is_refused_before_writing(tmp_path, monkeypatch):
    from collections import namedtuple

    from kerasls import memory
    from kerasls.errors import KeraslsError

    columns = raw_columns(rows=60)
    preprocessor = TabularPreprocessor(["amount", "minutes"], ["device"], ["message"],
                                       text_settings=TextConfig(max_tokens=20)).adapt(columns)
    model = tabular_build_model()(preprocessor.model_inputs(), 2, SimpleNamespace(hidden_units=[8], dropout=0.0))
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(memory.shutil, "disk_usage", lambda path: usage(1 << 30, 1 << 30, 1 << 20))
    with pytest.raises(KeraslsError, match=r"export: writing the export takes about \d+ MB and the disk has 1 MB"):
        export_classifier(tmp_path / "export", tabular_serving(model, preprocessor), tracked=[preprocessor, model],
                          classes=["a", "b"])
    assert not [path for path in (tmp_path / "export").iterdir() if not path.name.startswith(".")]
