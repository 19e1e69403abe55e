"""Config schema: defaults, overrides, and one clear error per mistake."""

from pathlib import Path

import pytest

from kerasls.config import TabularConfig, load_config
from kerasls.errors import KeraslsError


def write(tmp_path, text, name="config.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_match_the_design_contract():
    config = TabularConfig()
    assert config.seed == 42
    assert config.data.val_fraction == 0.2 and config.data.label == "intent" and config.data.features is None
    assert config.targets.label_smoothing == 0.1 and config.targets.prior == "uniform"
    assert config.model.hidden_units == [128, 64] and config.model.dropout == 0.2
    assert config.training.epochs == 20 and config.training.batch_size == 256
    assert config.training.optimizer == "adamw" and config.training.jit_compile == "auto"
    assert config.calibration.bins == 15 and config.calibration.temperature_scaling is True
    assert config.export.enabled is True


def test_overrides_are_typed_and_merge(tmp_path):
    path = write(tmp_path, "training:\n  epochs: 5\n  batch_size: 32\n")
    config = load_config(path, ["training.epochs=3", "targets.label_smoothing=0.05", "data.test=null"])
    assert config.training.epochs == 3 and isinstance(config.training.epochs, int)
    assert config.training.batch_size == 32
    assert config.targets.label_smoothing == 0.05
    assert config.data.test is None


def test_relative_paths_resolve_against_the_config_file_and_cwd(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    path = write(tmp_path / "sub", "data:\n  train: data/x.csv\n")
    assert Path(load_config(path).data.train) == (tmp_path / "sub" / "data" / "x.csv").resolve()
    monkeypatch.chdir(tmp_path)
    assert Path(load_config(path, ["data.train=y.csv"]).data.train) == (tmp_path / "y.csv").resolve()


@pytest.mark.parametrize(
    "text, overrides, expected",
    [
        ("training:\n  epoch: 3\n", [], r"unknown config key 'training.epoch'; did you mean 'training.epochs'\?"),
        ("", ["trainng.epochs=3"], r"unknown config key 'trainng'; did you mean 'training'\?"),
        ("training:\n  epochs: many\n", [], r"'training.epochs'.*received 'many'"),
        ("", ["model.hidden_units=abc"], r"received 'abc'\); write a list, e.g. model.hidden_units=\[128,64\]$"),
        ("", ["data.features.numeric=abc"], r"write a list, e.g. data.features.numeric=\[a,b\]$"),
        ("training:\n  epochs: -2\n", [], r"'training.epochs'.*greater than or equal to 1"),
        ("targets:\n  label_smoothing: 1.0\n", [], r"'targets.label_smoothing'.*less than 1"),
        ("", ["targets.label_smoothing=-0.1"], r"'targets.label_smoothing'.*greater than or equal to 0"),
        ("training:\n  optimizer: rmsprop\n", [], r"'training.optimizer'.*received 'rmsprop'"),
        ("data:\n  label: y\n  features: {numeric: [y]}\n", [], r"lists the label column 'y'"),
        ("targets:\n  soft_labels: {foo: 1}\n", [], r"unknown config key 'targets.soft_labels.foo'"),
        ("targets:\n  soft_labels: {vote_smoothing: 1}\n", [], r"targets.soft_labels.*exactly one source"),
        ("targets:\n  soft_labels: {votes: [a], teacher: x}\n", [], r"exactly one source.*\['votes', 'teacher'\]"),
    ],
)
def test_config_errors_name_the_key(tmp_path, text, overrides, expected):
    path = write(tmp_path, text)
    with pytest.raises(KeraslsError, match=expected):
        load_config(path, overrides)


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path, "training:\n  epochs: [3\nseed: 1\n")
    with pytest.raises(KeraslsError, match=r"config.yaml: line \d+, column \d+: invalid YAML"):
        load_config(path)


def test_python_object_tags_are_refused(tmp_path):
    path = write(tmp_path, "seed: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(KeraslsError, match="invalid YAML"):
        load_config(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(KeraslsError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_override_without_equals_sign(tmp_path):
    with pytest.raises(KeraslsError, match="not of the form key=value"):
        load_config(None, ["training.epochs"])


def test_changed_keys_names_every_differing_leaf():
    from kerasls.run import changed_keys

    saved = {"seed": 42, "training": {"epochs": 3, "learning_rate": 0.001}, "data": {"features": None}}
    current = {"seed": 42, "training": {"epochs": 3, "learning_rate": 0.01}, "data": {"features": {"numeric": []}},
               "export": {"enabled": True}}
    assert changed_keys(saved, current) == ["data.features", "export", "training.learning_rate"]
    assert changed_keys(saved, saved) == []


def test_backbone_names_are_the_installed_keras_applications():
    """`model.backbone` is checked against a list written down in config.py (so the check runs before TensorFlow
    loads); it must be exactly the model constructors of the Keras installed, or a valid name would be refused."""
    import keras

    from kerasls.config import KERAS_APPLICATIONS, ImageConfig

    installed = sorted(name for name in dir(keras.applications)
                       if name[0].isupper() and callable(getattr(keras.applications, name)))
    assert sorted(KERAS_APPLICATIONS) == installed
    for name in ("small_cnn", *KERAS_APPLICATIONS):
        assert load_config(None, [f"model.backbone={name}"], ImageConfig).model.backbone == name
    with pytest.raises(KeraslsError, match=r"did you mean 'MobileNetV3Small'\?.*Received: 'MobilenetV3small'"):
        load_config(None, ["model.backbone=MobilenetV3small"], ImageConfig)
