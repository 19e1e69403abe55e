"""Rows labelled `data.out_of_scope_label` are never a class, in every reader: tables in memory and streamed,
class folders and manifests. They get class -1 and the uniform distribution (outlier exposure), are split between
training and validation like a class, and any other unknown label keeps its error."""

import numpy as np
import pytest
from test_images import config as image_config
from test_images import write_image

from kerasls.config import DataConfig, TabularConfig
from kerasls.data import images, streaming, tabular
from kerasls.errors import KeraslsError


def table(path, rows=60):
    intents = np.array(["refund", "card", "out_of_scope"])[np.arange(rows) % 3]
    text = [f"{intent} words {i}" for i, intent in enumerate(intents)]
    path.write_text("text,intent\n" + "".join(f"{t},{i}\n" for t, i in zip(text, intents)))
    return path


def check_targets(distributions, observed, classes):
    out = observed == -1
    assert out.any() and (~out).any()
    np.testing.assert_array_equal(distributions[out], np.full((out.sum(), len(classes)), 1 / len(classes),
                                                              np.float32))
    np.testing.assert_array_equal(distributions[~out], np.eye(len(classes), dtype=np.float32)[observed[~out]])


def test_tables_in_memory_give_out_of_scope_rows_uniform_targets(tmp_path):
    train = table(tmp_path / "train.csv")
    test = tmp_path / "test.csv"
    test.write_text("text,intent\nrefund words,refund\nweather today,out_of_scope\n")
    splits = tabular.load_splits(DataConfig(train=str(train), test=str(test), out_of_scope_label="out_of_scope"),
                                 seed=0)
    assert splits.classes == ["card", "refund"]
    for frame in (splits.train, splits.val, splits.test):
        check_targets(*splits.targets(frame)[:2], splits.classes)
    assert (splits.targets(splits.val)[1] == -1).sum() == 4  # a fifth of the 20 out-of-scope rows, like a class


def test_without_the_setting_the_label_is_a_class_and_other_unknown_labels_still_fail(tmp_path):
    train = table(tmp_path / "train.csv")
    assert "out_of_scope" in tabular.load_splits(DataConfig(train=str(train)), seed=0).classes
    test = tmp_path / "test.csv"
    test.write_text("text,intent\nrefund words,refund\nhello,greeting\n")
    with pytest.raises(KeraslsError, match=r"line 3: label 'greeting' in column 'intent' is not a training class"):
        tabular.load_splits(DataConfig(train=str(train), test=str(test), out_of_scope_label="out_of_scope"), seed=0)


def test_streamed_tables_agree_with_tables_in_memory(tmp_path):
    train = table(tmp_path / "train.csv", rows=90)
    stream = streaming.TableStream(DataConfig(train=str(train), streaming=True, chunk_rows=16,
                                              out_of_scope_label="out_of_scope"), seed=1)
    assert stream.classes == ["card", "refund"]
    distributions, observed, _ = stream.targets("train")
    check_targets(distributions, observed, stream.classes)
    assert stream.class_prior() == pytest.approx([0.5, 0.5], abs=0.1)


def test_class_folders_and_manifests_name_an_out_of_scope_folder_or_label(tmp_path):
    root = tmp_path / "train"
    for name in ("cat", "dog", "other"):
        for k in range(5):
            write_image(root / name / f"{k}.png")
    data, soft = image_config(root, out_of_scope_label="other")
    train, val, _, classes = images.load_image_sets(data, soft, seed=0)
    assert classes == ["cat", "dog"]
    check_targets(train.targets, train.labels, classes)
    assert (val.labels == -1).sum() == 1  # the folder is split like a class
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,label\n" + "".join(f"train/{n}/{k}.png,{n}\n" for n in ("cat", "dog", "other")
                                                 for k in range(5)))
    data, soft = image_config(manifest, out_of_scope_label="other")
    train, _, _, classes = images.load_image_sets(data, soft, seed=0)
    assert classes == ["cat", "dog"]
    check_targets(train.targets, train.labels, classes)


def test_out_of_scope_rows_need_hard_labels():
    with pytest.raises(ValueError, match="data.out_of_scope_label marks rows by their label"):
        TabularConfig(data={"out_of_scope_label": "oos"}, targets={"soft_labels": {"votes": ["votes_a", "votes_b"]}})


def test_an_image_export_decides_as_the_run_does_on_out_of_scope_images(tmp_path):
    """Class folders with an `other` folder, a seeded untrained CNN, `results.calibrate` with the confidence rule:
    the rule rests on the validation images of `other`, and the export's `decision`/`abstained` for encoded image
    bytes equal the decisions computed in process on the same images."""
    import keras
    import tensorflow as tf

    from kerasls import calibration, results, training
    from kerasls.config import ImageConfig
    from kerasls.export import export_classifier
    from kerasls.image_feed import ImageFeed

    root = tmp_path / "train"
    for index, name in enumerate(("cat", "dog", "other")):
        for k in range(12):
            write_image(root / name / f"{k}.png", value=(index * 90 + k * 5) % 256)
    config = ImageConfig(data={"train": str(root), "image_size": [8, 8], "out_of_scope_label": "other"},
                         calibration={"abstain": {"rule": "confidence", "label": "none of these"}, "conformal": None})
    feed = ImageFeed(config)
    assert feed.classes == ["cat", "dog"] and "out of scope ('other')" in feed.summary()
    assert feed.in_scope_rows("val") == int((feed.sets["val"].labels >= 0).sum()) < feed.rows["val"]
    training.set_seeds(0)
    inputs = keras.Input((8, 8, 3))
    hidden = keras.layers.Dense(8, activation="relu")(keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs)))
    model = keras.Model(inputs, keras.layers.Dense(2)(hidden))
    assert sum(len(y) for _, y in feed.dataset("val", 4)) == int((feed.sets["val"].labels >= 0).sum())
    serving = feed.serving(model)
    calibrated = results.calibrate(serving, feed, config.calibration)
    rule = calibrated.decision_rule
    assert rule.validation_rows["out_of_scope"] == int((feed.sets["val"].labels < 0).sum()) > 0
    path = export_classifier(tmp_path / "export", serving, tracked=[model], classes=feed.classes,
                             temperature=calibrated.temperature, decision_rule=rule)
    paths = feed.sets["val"].paths
    served = tf.saved_model.load(str(path)).signatures["serving_default"](
        image_bytes=tf.constant([open(p, "rb").read() for p in paths]))
    probabilities = calibration.softmax(calibrated.val_logits, calibrated.temperature)
    assert [d.decode() for d in served["decision"].numpy()] == list(rule.decisions(probabilities, feed.classes))
    np.testing.assert_array_equal(served["abstained"].numpy(), rule.abstains(probabilities))


def test_a_misspelt_out_of_scope_label_is_an_error_naming_the_closest(tmp_path):
    train = table(tmp_path / "train.csv")
    for reader in (lambda data: tabular.load_splits(data, seed=0),
                   lambda data: streaming.TableStream(data.model_copy(update={"streaming": True}), seed=0)):
        with pytest.raises(KeraslsError, match=r"data.out_of_scope_label 'out_of_scop' labels no row \(did you mean "
                                               r"'out_of_scope'\?\); the labels are \['card', 'out_of_scope', "
                                               r"'refund'\]"):
            reader(DataConfig(train=str(train), out_of_scope_label="out_of_scop"))
    root = tmp_path / "images"
    for name in ("cat", "dog"):
        for k in range(3):
            write_image(root / name / f"{k}.png")
    with pytest.raises(KeraslsError, match="'Dog' labels no row"):
        images.load_image_sets(*image_config(root, out_of_scope_label="Dog"), seed=0)


def test_the_abstain_label_cannot_be_a_class(tmp_path):
    from kerasls.data.labels import check_decision_label

    calibration = TabularConfig(calibration={"abstain": {"label": "card"}}).calibration
    with pytest.raises(KeraslsError, match="calibration.abstain.label 'card' is also a class"):
        check_decision_label(calibration, ["card", "refund"])
    check_decision_label(calibration, ["refund", "top_up"])
