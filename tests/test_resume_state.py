"""A run's saved state resumes only the model it was trained with (kerasls.resume.architecture)."""

import json
import re

import keras
import numpy as np
import pytest

from kerasls.errors import KeraslsError
from kerasls.resume import EpochState, architecture, without_name

X, Y = np.random.default_rng(0).normal(size=(16, 4)), np.eye(3)[np.arange(16) % 3]


def mlp(activation="relu", units=8, preprocess=False):
    inputs = keras.Input((4,))
    x = keras.layers.Lambda(lambda t: t * 2.0)(inputs) if preprocess else inputs
    x = keras.layers.Dense(units, activation=activation)(x)
    return keras.Model(inputs, keras.layers.Dense(3)(x))


def fit(model, folder, epochs=2):
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    state = EpochState(folder / "checkpoints" / "train", folder / "history.csv")
    model.fit(X, Y, epochs=epochs, verbose=0, callbacks=[state])
    return model


def test_the_same_model_built_again_resumes(tmp_path):
    """Also within one process, where Keras numbers the layer names (dense_7, ...): names do not count."""
    trained = fit(mlp(), tmp_path)
    rebuilt = fit(mlp(), tmp_path)  # the state is finished: the rerun restores it and trains no further
    for saved, restored in zip(trained.get_weights(), rebuilt.get_weights()):
        np.testing.assert_array_equal(saved, restored)
    again, before = architecture(mlp()), architecture(trained)
    assert [without_name(entry) for entry in again] == [without_name(entry) for entry in before]
    assert [entry["name"] for entry in again] != [entry["name"] for entry in before]


@pytest.mark.parametrize("changed, expected", [
    (lambda: mlp(activation="gelu"), r"\(Dense\): activation 'relu' -> 'gelu'"),  # the same variables
    (lambda: mlp(preprocess=True), r"layer 'dense_\d+' \(Dense\) is now 'lambda_?\d*' \(Lambda\)"),  # no weights
    (lambda: mlp(units=5), r"\(Dense\): units 8 -> 5"),  # other shapes
])
def test_another_model_is_refused_naming_the_first_change(tmp_path, changed, expected):
    fit(mlp(), tmp_path)
    state = (tmp_path / "checkpoints" / "train" / "state.json").read_bytes()
    with pytest.raises(KeraslsError, match="--run-name") as refused:
        fit(changed(), tmp_path)
    assert re.search(expected, str(refused.value)) and "model.py" in str(refused.value), str(refused.value)
    assert (tmp_path / "checkpoints" / "train" / "state.json").read_bytes() == state  # nothing overwritten


def test_a_frozen_backbone_unfrozen_for_fine_tuning_is_the_same_architecture():
    model = mlp()
    before = architecture(model)
    model.layers[1].trainable = False
    assert architecture(model) == before


def test_a_state_saved_before_the_check_resumes_with_a_note(tmp_path, capsys):
    fit(mlp(), tmp_path)
    path = tmp_path / "checkpoints" / "train" / "state.json"
    state = json.loads(path.read_text())
    del state["architecture"]
    path.write_text(json.dumps(state))
    capsys.readouterr()
    fit(mlp(activation="gelu"), tmp_path)  # cannot be told apart: resumed, with the note
    assert "does not record the model it was trained with" in capsys.readouterr().out


def test_a_disk_too_full_for_the_epochs_checkpoints_stops_before_writing(tmp_path, monkeypatch):
    """A full disk used to end training with an OSError traceback in the epoch commit, or h5py ending the process
    while it wrote best.weights.h5: the epoch now checks the space its checkpoints need first."""
    from collections import namedtuple

    from kerasls import memory

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(memory.shutil, "disk_usage", lambda path: usage(10 << 20, 9 << 20, 1 << 20))  # 1 MB free
    with pytest.raises(KeraslsError, match=r"checkpoints: saving an epoch.s checkpoints takes about \d+ MB and "
                                           r"the disk has 1 MB free; free some space .* rerun the same command"):
        fit(mlp(), tmp_path)
    assert not (tmp_path / "history.csv").exists()
    assert not list((tmp_path / "checkpoints").glob("**/*.npz")) if (tmp_path / "checkpoints").exists() else True
    monkeypatch.undo()
    fit(mlp(), tmp_path)  # with space, the same run trains
    assert (tmp_path / "history.csv").is_file()


def test_no_space_left_while_writing_is_one_line(tmp_path, capsys):
    import errno

    from kerasls.errors import run_with_clear_errors

    def fills_the_disk(argv):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "runs" / "x" / "metrics.json"))

    with pytest.raises(SystemExit) as exited:
        run_with_clear_errors(fills_the_disk, [])
    assert exited.value.code == 2
    message = capsys.readouterr().err
    assert message.count("\n") == 1 and "Traceback" not in message
    assert message.startswith(f"error: {tmp_path / 'runs' / 'x' / 'metrics.json'}: no space left on the device; "
                              "free some space (or pass --runs-dir on a larger disk)")
