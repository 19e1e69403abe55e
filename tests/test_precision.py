"""Mixed precision and XLA, checked on CPU: the same small model trained in float32, mixed_bfloat16 and
mixed_float16 (forced on CPU) ends where float32 does; logits, metrics, calibration and the export stay float32;
loss scaling under float16 only; `drop_remainder` gives XLA one batch shape, so it compiles once.

Tolerances. bfloat16 keeps 8 significant bits (unit roundoff u = 2^-8 ≈ 0.4%, ~3 decimal digits), float16 11
(u = 2^-11 ≈ 0.05%). Variables, the logits layer, the loss and the metrics are float32, so only the hidden
activations are rounded: a few roundings of ≤ u each per forward pass. On losses of 0.3-0.8 that is a few 1e-3
for bfloat16 and 8x less for float16; over 4 epochs the trajectories drift apart a little more (measured
≤ 1e-3 for both). Allowed: 0.01 (bfloat16), 0.005 (float16): 10x and 5x the measured gap, and below the
training loss's own change from one epoch to the next (0.018-0.45 here), so training that goes elsewhere fails.
The models have no dropout: a bfloat16 dropout mask is drawn in bfloat16 and differs from the float32 one, like
another seed would.
"""

import configparser
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from conftest import flat_model_inputs, run_train, tabular_build_model
from recipe import compile_classifier, make_dataset

from kerasls import results, training
from kerasls.config import AugmentConfig, TargetsConfig, TextConfig, TrainingConfig, load_config
from kerasls.templates_index import render_template

REPO = Path(__file__).resolve().parents[1]
IMAGE_DATA = REPO / "templates" / "image-classifier" / "{{cookiecutter.project_slug}}" / "data" / "train"
HAS_GPU = bool(tf.config.list_physical_devices("GPU"))
BATCH, FEATURES, CLASSES, EPOCHS = 64, 16, 3, 4
TOLERANCE = {"mixed_bfloat16": 0.01, "mixed_float16": 0.005}


pytestmark = pytest.mark.usefixtures("float32_policy")


def blobs(rows=1000, seed=0):
    """Three overlapping Gaussian classes in 16 dimensions: learnable, not separable (val NLL ≈ 0.26)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, 1.0, (CLASSES, FEATURES))
    labels = rng.integers(0, CLASSES, rows)
    features = (centers[labels] + rng.normal(0.0, 1.5, (rows, FEATURES))).astype(np.float32)
    return features, np.eye(CLASSES, dtype=np.float32)[labels]


def train_blobs(policy, epochs=EPOCHS):
    """The tabular template's model (no dropout) on `blobs`, seeded; returns (model, history dict)."""
    keras.mixed_precision.set_global_policy(policy)
    training.set_seeds(7)
    training.epoch_variable().assign(0)  # the shuffle order reads it; no EpochState callback here
    config = TrainingConfig(epochs=epochs, batch_size=BATCH, learning_rate=3e-3, jit_compile=False)
    model = tabular_build_model()(flat_model_inputs(FEATURES), CLASSES,
                                  SimpleNamespace(hidden_units=[64, 32], dropout=0.0))
    compile_classifier(model, config, TargetsConfig(label_smoothing=0.1))
    features, targets = blobs()
    train_data = make_dataset(features[:800], targets[:800], BATCH, shuffle=True, seed=3)
    val_data = make_dataset(features[800:], targets[800:], BATCH)
    history = model.fit(train_data, validation_data=val_data, epochs=epochs, verbose=0, shuffle=False)
    return model, history.history


@pytest.fixture(scope="module")
def runs():
    """float32, mixed_bfloat16 and mixed_float16 (forced: configure_precision picks bfloat16 on a CPU)."""
    try:
        return {policy: train_blobs(policy) for policy in ("float32", "mixed_bfloat16", "mixed_float16")}
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_loss_and_val_nll_track_float32(runs, policy):
    _, reference = runs["float32"]
    _, history = runs[policy]
    assert reference["val_nll"][-1] < 0.5 * np.log(CLASSES)  # it learnt something: the comparison means something
    for key in ("loss", "nll", "val_loss", "val_nll"):
        gap = np.abs(np.array(history[key]) - np.array(reference[key]))
        assert gap.max() <= TOLERANCE[policy], (key, history[key], reference[key])
    assert abs(history["val_accuracy"][-1] - reference["val_accuracy"][-1]) <= 0.02  # ≤ 4 of 200 rows flip


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_hidden_layers_compute_in_low_precision_and_logits_are_float32(runs, policy):
    model, _ = runs[policy]
    hidden, logits_layer = model.layers[1], model.get_layer("logits")
    assert hidden.compute_dtype == policy.removeprefix("mixed_") and hidden.variable_dtype == "float32"
    assert logits_layer.compute_dtype == "float32"
    features, _ = blobs()
    assert model(features[:5], training=False).dtype == tf.float32
    logits = results.predict_logits(model, features[800:])
    assert logits.dtype == np.float32 and logits.shape == (200, CLASSES) and np.isfinite(logits).all()
    assert all(v.dtype == "float32" for v in model.trainable_variables)


def test_loss_scale_optimizer_under_float16_only(runs):
    scaled = runs["mixed_float16"][0].optimizer
    assert isinstance(scaled, keras.optimizers.LossScaleOptimizer)
    assert isinstance(scaled.inner_optimizer, keras.optimizers.AdamW)
    assert np.isfinite(float(scaled.dynamic_scale)) and float(scaled.dynamic_scale) >= 1.0
    for policy in ("float32", "mixed_bfloat16"):  # bfloat16 has float32's exponent range: no scaling needed
        assert isinstance(runs[policy][0].optimizer, keras.optimizers.AdamW)


def test_compile_adds_loss_scaling_for_a_float16_policy_even_when_the_model_was_built_before():
    model = tabular_build_model()(flat_model_inputs(FEATURES), CLASSES, SimpleNamespace(hidden_units=[8], dropout=0.0))
    keras.mixed_precision.set_global_policy("mixed_float16")  # Keras' own wrapping looks at the model's policy
    compile_classifier(model, TrainingConfig(), TargetsConfig())
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)


def test_compile_warns_about_low_precision_logits():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    inputs = keras.Input((FEATURES,))
    model = keras.Model(inputs, keras.layers.Dense(CLASSES)(inputs), name="bfloat16_head")
    with pytest.warns(UserWarning, match="outputs bfloat16 logits"):
        compile_classifier(model, TrainingConfig(), TargetsConfig())


def test_config_mixed_precision_true_picks_bfloat16_on_a_cpu_and_false_restores_float32():
    config = load_config(None, ["training.mixed_precision=true"])
    expected = "mixed_float16" if HAS_GPU else "mixed_bfloat16"
    assert training.configure_precision(config.training) == expected
    assert keras.mixed_precision.global_policy().name == expected
    assert training.configure_precision(load_config(None, []).training) == "float32"
    assert keras.mixed_precision.global_policy().name == "float32"


def test_tabular_preprocessing_stays_float32_under_mixed_bfloat16():
    """Keras would cast the raw numeric inputs to bfloat16 first (1000.7 -> 1000): the layer is float32."""
    from kerasls.preprocessing import TabularPreprocessor

    columns = {"amount": np.array([123456.7, 1000.7, np.nan, 5.25]), "device": np.array(["a", "b", "a", "c"]),
               "query": np.array(["red shoes", "blue shoes size 9", "", "red"])}

    def encoded(policy):
        keras.mixed_precision.set_global_policy(policy)
        preprocessor = TabularPreprocessor(["amount"], ["device"], ["query"],
                                           text_settings=TextConfig(max_tokens=20)).adapt(columns)
        return preprocessor.encode_dense(columns)

    reference = encoded("float32")
    for policy in ("mixed_bfloat16", "mixed_float16"):
        matrix = encoded(policy)
        assert matrix.dtype == np.float32
        np.testing.assert_array_equal(matrix, reference)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_distillation_loss_is_float32_for_low_precision_logits(dtype):
    from kerasls.losses import DistillationLoss

    rng = np.random.default_rng(1)
    logits = rng.normal(0.0, 3.0, (32, 4)).astype(np.float32)
    hard = np.eye(4, dtype=np.float32)[rng.integers(0, 4, 32)]
    teacher = tf.nn.softmax(rng.normal(0.0, 2.0, (32, 4)) / 4.0).numpy().astype(np.float32)
    loss = DistillationLoss(alpha=0.5, temperature=4.0, label_smoothing=0.1)
    packed = np.concatenate([hard, teacher], axis=1)
    reference = loss(packed, logits)
    low = loss(packed, tf.cast(logits, dtype))
    assert low.dtype == tf.float32
    # the logits are rounded once (relative ≤ u); T² = 16 amplifies the soft term's share of that
    assert float(low) == pytest.approx(float(reference), rel=0.02 if dtype == "bfloat16" else 0.003)


def test_float16_model_exports_float32_probabilities_that_serve(runs, tmp_path):
    from kerasls.export import Serving, export_classifier, traced

    model, _ = runs["mixed_float16"]
    features, _ = blobs()
    temperature = 1.3
    signature = {"features": tf.TensorSpec([None, FEATURES], tf.float32, name="features")}
    # traced, as a run evaluates: float16 ops run eagerly round differently from the fused graph (3e-4 here)
    serving = Serving(logits_fn=traced(lambda inputs: model(inputs["features"], training=False), signature),
                      input_signature=signature)
    export = export_classifier(tmp_path / "export", serving, tracked=[model], classes=["a", "b", "c"],
                               temperature=temperature)
    serve = tf.saved_model.load(str(export)).signatures["serving_default"]
    assert serve.structured_outputs["probabilities"].dtype == tf.float32
    out = serve(features=tf.constant(features[:50]))
    probabilities = out["probabilities"].numpy()
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    evaluated = results.predict_logits(serving.evaluation_function(), {"features": features[:50]})
    expected = tf.nn.softmax(evaluated / temperature).numpy()
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# jit_compile and drop_remainder


@pytest.fixture()
def without_op_determinism():
    """Op determinism off for the test (Keras refuses jit_compile=True under it), restored after. An earlier test
    in this process may have turned it on (a train.py run in-process, `training.deterministic` defaults to true);
    TensorFlow has no public switch back, hence its private config module, in this test only."""
    from tensorflow.python.framework import config as tf_config

    was_on = tf_config.is_op_determinism_enabled()
    tf_config.disable_op_determinism()
    yield
    if was_on:
        tf_config.enable_op_determinism()


def test_jit_compile_auto_means_xla_only_where_keras_supports_it(without_op_determinism):
    """Keras 3.15 resolves "auto" to False on a CPU-only machine (and under tf.distribute or op determinism)."""
    for setting, expected in (("auto", HAS_GPU), (True, True), (False, False)):
        model = tabular_build_model()(flat_model_inputs(FEATURES), CLASSES,
                                      SimpleNamespace(hidden_units=[8], dropout=0.0))
        config = TrainingConfig(jit_compile=setting, deterministic=False)
        compile_classifier(model, config, TargetsConfig())
        assert model.jit_compile is expected, setting
        # train.py drops the last partial training batch exactly when the step is compiled
        assert training.uses_xla(config) is expected, setting
    assert training.uses_xla(TrainingConfig(jit_compile="auto", deterministic=True)) is False


def test_make_dataset_drop_remainder_gives_a_static_batch_dimension():
    features, targets = blobs(rows=200)  # 200 = 3 x 64 + 8
    for shuffle in (True, False):
        dropped = make_dataset(features, targets, BATCH, shuffle=shuffle, drop_remainder=True)
        assert dropped.element_spec[0].shape.as_list() == [BATCH, FEATURES]
        assert [len(x) for x, _ in dropped] == [BATCH] * 3
        kept = make_dataset(features, targets, BATCH, shuffle=shuffle, drop_remainder=False)
        assert kept.element_spec[0].shape.as_list() == [None, FEATURES]
        assert [len(x) for x, _ in kept] == [BATCH] * 3 + [8]
    # fewer rows than one batch: nothing would be left to train on, so the partial batch is kept
    small = make_dataset(features[:10], targets[:10], BATCH, shuffle=True, drop_remainder=True)
    assert [len(x) for x, _ in small] == [10]


def test_image_dataset_drop_remainder_with_augmentation_and_mixing_under_mixed_precision():
    """Static batch shape and float32 images/targets through flips, MixUp and CutMix under mixed_bfloat16 (the
    random layers would otherwise cast the batch to bfloat16, and MixUp failed on the dtype mismatch)."""
    from kerasls.augmentation import build_augmenter, build_mixer
    from kerasls.data.images import ImageSet, make_image_dataset, scan_class_folders

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    paths, names = scan_class_folders(IMAGE_DATA)
    classes = sorted(set(names))
    chosen = list(range(0, len(paths), len(paths) // 40))[:40]  # 40 images of every class
    labels = np.array([classes.index(names[i]) for i in chosen])
    image_set = ImageSet([paths[i] for i in chosen], labels, np.eye(len(classes), dtype=np.float32)[labels],
                         False, str(IMAGE_DATA))
    augment = AugmentConfig(flip="horizontal", mixup={"alpha": 0.2, "probability": 0.5},
                            cutmix={"alpha": 1.0, "probability": 0.5})
    dataset = make_image_dataset(image_set, (32, 32), 3, 16, shuffle=True, seed=1, augment=build_augmenter(augment, 1),
                                 mix=build_mixer(augment, 1), drop_remainder=True)
    images_spec, targets_spec = dataset.element_spec
    assert images_spec.shape.as_list() == [16, 32, 32, 3] and images_spec.dtype == tf.float32
    assert targets_spec.shape.as_list() == [16, len(classes)] and targets_spec.dtype == tf.float32
    batches = list(dataset)
    assert len(batches) == 2  # 40 = 2 x 16 + 8: the 8 are dropped
    for images, targets in batches:
        assert images.dtype == tf.float32 and float(tf.reduce_max(images)) <= 255.0
        np.testing.assert_allclose(targets.numpy().sum(axis=1), 1.0, atol=1e-6)


COUNT_XLA_COMPILATIONS = r"""
import json, os, sys
import keras, numpy as np
from kerasls import training
from kerasls.config import TargetsConfig, TrainingConfig
from kerasls.training import compile_classifier
sys.path.insert(0, "tests")  # run from the repository root: tests/recipe.py
from recipe import make_dataset

dump = sys.argv[1]
def compiled():  # XLA writes one module per compilation of the train step
    return {f for f in os.listdir(dump) if "one_step_on_data" in f and f.endswith(".before_optimizations.txt")} \
        if os.path.isdir(dump) else set()

class Steps(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None): self.counts.append(0)
    def on_train_batch_end(self, batch, logs=None): self.counts[-1] += 1

rng = np.random.default_rng(0)
features = rng.normal(size=(200, 8)).astype(np.float32)  # 200 = 3 x 64 + 8
targets = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 200)]
result = {}
for drop_remainder in (True, False):
    training.set_seeds(1)
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, dtype="float32")(hidden))
    compile_classifier(model, TrainingConfig(batch_size=64, jit_compile=True), TargetsConfig())
    traces, train_step = [], model.train_step
    def counted(data, train_step=train_step, traces=traces):  # Python runs only while tf.function traces
        traces.append(data[0].shape.as_list())
        return train_step(data)
    model.train_step = counted
    dataset = make_dataset(features, targets, 64, shuffle=True, seed=1, drop_remainder=drop_remainder)
    before, steps = compiled(), Steps()
    steps.counts = []
    model.fit(dataset, epochs=3, verbose=0, shuffle=False, callbacks=[steps])
    result[str(drop_remainder)] = {"jit": model.jit_compile, "compilations": len(compiled() - before),
                                   "steps": steps.counts, "spec": dataset.element_spec[0].shape.as_list(),
                                   "traced_shapes": traces}
print(json.dumps(result))
"""


@pytest.mark.slow
@pytest.mark.e2e
def test_xla_compiles_the_train_step_once_with_drop_remainder_and_again_for_a_partial_batch(tmp_path):
    """XLA compiles per input shape; counted from XLA's own dump of compiled modules (`--xla_dump_to`), in a
    fresh process so no earlier compilation is in the count. The train step is traced with the dataset's
    static shape either way, so counting traces would not show the second compilation; the dump does.
    (LLVM optimisation level 0 only makes the compilations quicker.)"""
    dump = tmp_path / "xla"
    flags = f"--xla_dump_to={dump} --xla_dump_hlo_module_re=.*one_step_on_data.* --xla_backend_optimization_level=0"
    env = {**os.environ, "XLA_FLAGS": flags, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([sys.executable, "-c", COUNT_XLA_COMPILATIONS, str(dump)], capture_output=True, text=True,
                            timeout=300, env=env, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    counts = json.loads(result.stdout.strip().splitlines()[-1])
    dropped, kept = counts["True"], counts["False"]
    assert dropped["jit"] is True and kept["jit"] is True
    # drop_remainder: every batch has 64 rows, statically, over all 3 epochs -> one trace shape, one compilation
    assert dropped["spec"] == [64, 8] and dropped["steps"] == [3, 3, 3]
    assert {tuple(shape) for shape in dropped["traced_shapes"]} == {(64, 8)}
    assert dropped["compilations"] == 1
    # without it, the last batch of 8 rows is a second shape: a second compilation (then cached)
    assert kept["spec"] == [None, 8] and kept["steps"] == [4, 4, 4]
    assert kept["compilations"] == 2


# ---------------------------------------------------------------------------------------------------------------
# End to end and packaging


@pytest.mark.slow
def test_generated_project_trains_with_mixed_precision_and_exports_float32(trained_project, tmp_path):
    """`training.mixed_precision=true` (mixed_bfloat16 on this CPU) against the float32 run of `trained_project`:
    same data, seed and epochs. The template's dropout draws its masks in bfloat16, so the runs may differ like two
    seeds do; the tolerances are the float32 seed-to-seed spread of this run (seeds 42/43/44: accuracy 0.70-0.76,
    NLL 0.64-0.70, train loss per epoch within 0.06). Measured bfloat16 vs float32: accuracy 0.032 (2 of 63 rows),
    NLL 0.003, loss and val_nll per epoch ≤ 0.004."""
    project = render_template("tabular-intent", output_dir=tmp_path, extra_context={"project_slug": "shop"})
    result = run_train(project, "training.epochs=2", "training.verbose=2", f"data.test={trained_project.eval_rows}",
                       "training.mixed_precision=true")
    assert result.returncode == 0, result.stderr[-4000:]
    run = project / result.stdout.strip().splitlines()[-1].removeprefix("run: ")
    metrics, reference = json.loads((run / "metrics.json").read_text()), trained_project.metrics
    assert metrics["n"] == reference["n"] == 63
    assert abs(metrics["accuracy"] - reference["accuracy"]) <= 0.08  # 5 of 63 rows
    assert abs(metrics["nll"] - reference["nll"]) <= 0.05
    assert abs(metrics["nll_calibrated"] - reference["nll_calibrated"]) <= 0.05
    history, reference_history = (pd.read_csv(folder / "history.csv") for folder in (run, trained_project.run))
    for key in ("loss", "val_nll"):
        np.testing.assert_allclose(history[key], reference_history[key], atol=0.05, err_msg=key)

    serve = tf.saved_model.load(metrics["export_path"]).signatures["serving_default"]
    _, specs = serve.structured_input_signature
    rows = pd.read_csv(trained_project.eval_rows)
    inputs = {name: tf.constant(["" if pd.isna(v) else str(v) for v in rows[name]]) if spec.dtype == tf.string
              else tf.constant(rows[name].to_numpy("float32")) for name, spec in specs.items()}
    probabilities = serve(**inputs)["probabilities"].numpy()
    assert probabilities.dtype == np.float32 and probabilities.shape == (63, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    predictions = pd.read_csv(run / "predictions.csv")
    expected = predictions[[f"calibrated_prob_{c}" for c in metrics["classes"]]].to_numpy()
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)  # export == training process, also in bf16


def test_and_cuda_extra_pulls_tensorflow_and_cuda():
    """`pip install kerasls[and-cuda]` installs `tensorflow[and-cuda]` (the CUDA and cuDNN wheels) at the same
    version range as the plain dependency."""
    from packaging.requirements import Requirement

    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    extra = [Requirement(line) for line in setup["options.extras_require"]["and-cuda"].split("\n") if line.strip()]
    base = {Requirement(line).name: Requirement(line) for line in setup["options"]["install_requires"].split("\n")
            if line.strip()}
    assert [(r.name, r.extras) for r in extra] == [("tensorflow", {"and-cuda"})]
    assert extra[0].specifier == base["tensorflow"].specifier
    # the installed metadata (editable install) says the same
    import importlib.metadata

    declared = [Requirement(r) for r in importlib.metadata.requires("kerasls") or []]
    cuda = [r for r in declared if r.marker is not None and r.marker.evaluate({"extra": "and-cuda"})
            and not r.marker.evaluate({"extra": ""})]
    assert [(r.name, r.extras) for r in cuda] == [("tensorflow", {"and-cuda"})]
