"""image-classifier end to end: train, export image bytes, serve without Keras, predict files and folders."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from conftest import KERAS_IMPORT_BLOCKER, run_train
from PIL import Image

from kerasls import targets
from kerasls.templates_index import render_template

SERVE_WITHOUT_KERAS = KERAS_IMPORT_BLOCKER + r"""
import numpy as np, tensorflow as tf
loaded = tf.saved_model.load(sys.argv[1])
encoded = tf.constant([open(p, "rb").read() for p in sys.argv[2:]])
by_bytes = loaded.signatures["serving_default"](image_bytes=encoded)
images = tf.stack([tf.image.resize(tf.io.decode_image(e, channels=3, expand_animations=False), (32, 32))
                   for e in encoded.numpy()])
by_tensor = loaded.signatures["serving_tensor"](images=images)
print(json.dumps({"bytes": by_bytes["probabilities"].numpy().tolist(),
                  "names": [n.decode() for n in by_bytes["class_name"].numpy()],
                  "sets": by_bytes["prediction_set"].numpy().tolist(),
                  "tensor": by_tensor["probabilities"].numpy().tolist()}))
"""


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("image")
    project = render_template("image-classifier", output_dir=root, extra_context={"project_slug": "shapes"})
    result = run_train(project, "training.epochs=2", "training.verbose=2", "augment.mixup.probability=0.5",
                       "augment.cutmix.probability=0.5")
    assert result.returncode == 0, result.stderr[-4000:]
    run = Path(result.stdout.strip().splitlines()[-1].removeprefix("run: "))
    return project, run, json.loads((run / "metrics.json").read_text())


def test_run_folder_and_metrics(image_run):
    project, run, metrics = image_run
    assert metrics["classes"] == ["circle", "square", "triangle"]
    assert metrics["split"] == "test" and metrics["n"] == 120
    history = pd.read_csv(run / "history.csv")
    assert list(history["epoch"]) == [0, 1]
    predictions = pd.read_csv(run / "predictions.csv")
    assert predictions.columns[0] == "path" and len(predictions) == 120
    assert all(Path(p).is_file() for p in predictions["path"])
    assert (run / "export" / "1" / "assets" / "labels.txt").read_text().split() == metrics["classes"]


def test_export_serves_image_bytes_and_tensors_without_keras(image_run, tmp_path):
    project, run, metrics = image_run
    predictions = pd.read_csv(run / "predictions.csv").iloc[::6]
    paths = list(predictions["path"])
    # the same picture as JPEG and as grayscale PNG: decoded and converted in the graph
    Image.open(paths[0]).convert("RGB").save(tmp_path / "as.jpg", quality=95)
    Image.open(paths[0]).convert("L").save(tmp_path / "gray.png")
    result = subprocess.run([sys.executable, "-c", SERVE_WITHOUT_KERAS, metrics["export_path"], *paths,
                             str(tmp_path / "as.jpg"), str(tmp_path / "gray.png")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    served = json.loads(result.stdout.strip().splitlines()[-1])
    expected = predictions[[f"calibrated_prob_{c}" for c in metrics["classes"]]].to_numpy()
    by_bytes = np.array(served["bytes"])
    assert np.abs(by_bytes[:len(paths)] - expected).max() < 1e-4
    assert np.abs(np.array(served["tensor"])[:len(paths)] - expected).max() < 1e-4
    np.testing.assert_allclose(by_bytes.sum(axis=1), 1.0, atol=1e-5)
    assert served["names"][:len(paths)] == [metrics["classes"][i] for i in expected.argmax(1)]
    sets, threshold = np.array(served["sets"])[:len(paths)], metrics["conformal"]["threshold"]  # lac by default
    clear = np.abs(1.0 - expected - threshold).min(axis=1) > 1e-4
    np.testing.assert_array_equal(sets[clear], (1.0 - expected <= threshold)[clear])


def test_kerasls_predict_on_files_and_a_folder(image_run, tmp_path):
    project, run, metrics = image_run
    folder = project / "data" / "test" / "square"
    circles = project / "data" / "test" / "circle"
    one_file = circles / sorted(p.name for p in circles.iterdir())[0]
    out = tmp_path / "out.csv"
    result = subprocess.run([sys.executable, "-m", "kerasls.cli", "predict", str(run / "export"), str(one_file),
                             str(folder), "-o", str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    written = pd.read_csv(out)
    assert len(written) == 1 + len(list(folder.iterdir()))
    assert list(written.columns) == ["path", "predicted_class", "confidence",
                                     *[f"prob_{c}" for c in metrics["classes"]], "prediction_set", "set_size"]
    predictions = pd.read_csv(run / "predictions.csv").set_index("path")
    row = predictions.loc[str(one_file)]
    assert written.loc[0, "prob_circle"] == pytest.approx(row["calibrated_prob_circle"], abs=1e-4)


def test_predict_names_a_corrupt_image(image_run, tmp_path):
    project, run, _ = image_run
    bad = tmp_path / "broken.png"
    bad.write_text("not an image")
    result = subprocess.run([sys.executable, "-m", "kerasls.cli", "predict", str(run / "export"), str(bad)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "broken.png: not a readable" in result.stderr
    assert "Traceback" not in result.stderr


def test_corrupt_training_image_is_one_clear_error_or_skipped(image_run, tmp_path):
    project, _, _ = image_run
    copy = tmp_path / "copy"
    shutil.copytree(project, copy, ignore=shutil.ignore_patterns("runs"))
    (copy / "data" / "train" / "circle" / "zero.png").write_bytes(b"")
    result = run_train(copy, "training.epochs=1", "training.verbose=0")
    assert result.returncode == 2
    assert "zero.png" in result.stderr.strip().splitlines()[-1] and "data.skip_corrupt=true" in result.stderr
    assert "Traceback" not in result.stderr and not (copy / "runs").exists()
    skipped = run_train(copy, "training.epochs=1", "training.verbose=0", "data.skip_corrupt=true",
                        "export.enabled=false")
    assert skipped.returncode == 0, skipped.stderr[-3000:]
    assert "skipped 1 unreadable image" in skipped.stdout + skipped.stderr


def test_label_smoothing_after_mixing_equals_timm_order_smooth_then_mix():
    rng = np.random.default_rng(0)
    a, b = targets.one_hot(rng.integers(0, 5, 16), 5), rng.dirichlet(np.ones(5), 16).astype(np.float32)
    lam, epsilon = 0.3, 0.1
    smooth_then_mix = lam * targets.smooth(a, epsilon) + (1 - lam) * targets.smooth(b, epsilon)
    mixed = lam * a + (1 - lam) * b
    np.testing.assert_allclose(targets.smooth(mixed, epsilon), smooth_then_mix, atol=1e-7)
    logits = rng.normal(size=(16, 5)).astype(np.float32)
    keras_loss = keras.losses.CategoricalCrossentropy(label_smoothing=epsilon, from_logits=True)(mixed, logits)
    log_probs = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    assert float(keras_loss) == pytest.approx(float(-(smooth_then_mix * log_probs).sum(1).mean()), rel=1e-5)


def test_mixer_mixes_targets_convexly_and_evaluation_pipeline_does_not():
    import tensorflow as tf

    from kerasls.augmentation import build_mixer
    from kerasls.config import AugmentConfig

    mix = build_mixer(AugmentConfig(mixup={"alpha": 0.4, "probability": 1.0}), seed=3)
    images = tf.random.uniform([8, 8, 8, 3], 0, 255)
    hard = tf.one_hot(tf.range(8), 8)  # distinct classes: any partner but itself makes a soft row
    mixed_images, mixed_targets = mix(images, hard)
    mixed_targets = mixed_targets.numpy()
    np.testing.assert_allclose(mixed_targets.sum(1), 1.0, atol=1e-6)
    assert (mixed_targets.max(1) < 1.0).any()  # at least one row became soft
    assert build_mixer(AugmentConfig()) is None  # probabilities 0: no mixing at all


def test_a_keras_application_backbone_trains_in_two_phases_and_exports(tmp_path):
    """A keras.applications backbone (MobileNetV3Small) trains, frozen then fine-tuned (tiny: a manifest of 12
    training and 6 test images, no XLA), and exports; the other backbones take the same path (built below)."""
    project = render_template("image-classifier", output_dir=tmp_path,
                              extra_context={"project_slug": "p", "backbone": "MobileNetV3Small"})
    for split, per_class in (("train", 4), ("test", 2)):
        rows = [(f"{split}/{kind}/{index:03d}.png", kind) for kind in ("circle", "square", "triangle")
                for index in range(per_class)]
        pd.DataFrame(rows, columns=["path", "label"]).to_csv(project / "data" / f"{split}.csv", index=False)
    result = run_train(project, "training.epochs=1", "training.verbose=0", "training.jit_compile=false",
                       "training.batch_size=4", "data.train=data/train.csv", "data.test=data/test.csv",
                       "data.val_fraction=0.3", "model.freeze_backbone=true", "model.fine_tune_epochs=1",
                       "calibration.conformal=null")  # 3 validation images: too few for prediction sets at 0.1
    assert result.returncode == 0, result.stderr[-3000:]
    run = Path(result.stdout.strip().splitlines()[-1].removeprefix("run: "))
    assert len(pd.read_csv(run / "history.csv")) == 2  # frozen phase + fine-tuning phase
    assert (run / "export" / "1" / "saved_model.pb").is_file()
    assert json.loads((run / "metrics.json").read_text())["n"] == 6


@pytest.mark.parametrize("backbone, width", [("ResNet50", 2048), ("EfficientNetV2B0", 1280)])
def test_the_other_backbones_build_through_the_same_path(backbone, width):
    """ResNet50 and EfficientNetV2B0 go through the same `image_backbone` code as MobileNetV3Small above
    (training and exporting them too took 90 s and 155 s of the suite); here each is built and run once."""
    from kerasls.config import ImageModelConfig
    from kerasls.models import image_backbone

    backbone_model = image_backbone(ImageModelConfig(backbone=backbone), (32, 32, 3))
    features = backbone_model(np.zeros((2, 32, 32, 3), dtype="float32"))
    assert features.shape == (2, width) and np.isfinite(np.asarray(features)).all()


def test_backbone_loads_a_local_weights_file_and_never_downloads(tmp_path):
    from kerasls.config import ImageModelConfig
    from kerasls.errors import KeraslsError
    from kerasls.models import application_backbone, image_backbone

    reference = keras.applications.MobileNetV3Small(include_top=False, weights=None, input_shape=(32, 32, 3),
                                                    pooling="avg")
    kernel = reference.trainable_weights[0]
    kernel.assign(np.full(kernel.shape, 0.125, dtype="float32"))
    reference.save_weights(tmp_path / "mobilenet.weights.h5")
    weights = str(tmp_path / "mobilenet.weights.h5")
    loaded = image_backbone(ImageModelConfig(backbone="MobileNetV3Small", weights=weights),
                            (32, 32, 3))
    np.testing.assert_allclose(loaded.trainable_weights[0].numpy(), 0.125)
    with pytest.raises(KeraslsError, match="file not found"):
        image_backbone(ImageModelConfig(backbone="ResNet50", weights=str(tmp_path / "none.h5")), (32, 32, 3))
    with pytest.raises(KeraslsError, match="needs 3-channel images"):
        image_backbone(ImageModelConfig(backbone="ResNet50"), (32, 32, 1))
    with pytest.raises(KeraslsError, match="not small_cnn or a keras.applications model"):
        application_backbone("AlexNet", (32, 32, 3))  # the config refuses the name already (test_config.py)


def test_kerasls_evaluate_takes_a_class_folder_tree_or_a_manifest_for_an_image_export(image_run, tmp_path):
    """The same metrics as the run's own evaluation of data/test, from the folder tree and from a manifest."""
    from kerasls.evaluate import evaluate_export

    project, run, metrics = image_run
    folder_metrics, _ = evaluate_export(run / "export", project / "data" / "test", out=tmp_path / "folder")
    rows = [(str(path.relative_to(project / "data" / "test")), path.parent.name)
            for path in sorted((project / "data" / "test").glob("*/*.png"))]
    manifest = project / "data" / "test" / "manifest.csv"
    pd.DataFrame(rows, columns=["path", "label"]).to_csv(manifest, index=False)
    try:
        manifest_metrics, out = evaluate_export(run / "export", manifest, out=tmp_path / "manifest")
    finally:
        manifest.unlink()
    for evaluated in (folder_metrics, manifest_metrics):
        assert evaluated["n"] == metrics["n"] == len(rows)
        for key in ("accuracy", "nll", "ece", "nll_calibrated"):
            assert evaluated[key] == pytest.approx(metrics[key], abs=1e-5), key
        for key in ("set_coverage", "mean_set_size", "singleton_share"):  # the export's stored thresholds
            assert evaluated["conformal"][key] == pytest.approx(metrics["conformal"][key], abs=1e-9), key
    assert "path" in pd.read_csv(out / "predictions.csv").columns


def test_a_table_for_an_image_export_and_an_image_for_a_table_export_name_the_expected_input(image_run,
                                                                                            trained_project):
    from kerasls.errors import KeraslsError
    from kerasls.predict import predict_file

    project, run, _ = image_run
    with pytest.raises(KeraslsError, match=r"image classifier; it takes image files or folders"):
        predict_file(run / "export", [trained_project.eval_rows])
    png = next((project / "data" / "test").glob("*/*.png"))
    with pytest.raises(KeraslsError, match=r"table classifier; it takes a CSV or Parquet file with the columns"):
        predict_file(trained_project.run / "export", [png])
