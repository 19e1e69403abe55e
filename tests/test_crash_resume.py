"""Kill training with SIGKILL at several points; the same command resumes and ends exactly where an unbroken run
ends (op determinism on). Also: one training per run folder, exports never half-appear."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from conftest import run_train

ARGS = ["training.epochs=4", "training.verbose=0", "training.deterministic=true", "training.early_stopping=2"]


def train(project, name, fault=None, extra=()):
    env = {**os.environ, **({"KERASLS_FAULT": fault} if fault else {})}
    env.pop("KERASLS_FAULT", None) if not fault else None
    return subprocess.run([sys.executable, "train.py", *ARGS, *extra, "--run-name", name], cwd=project, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def reference(trained_project):
    result = train(trained_project.project, "unbroken")
    assert result.returncode == 0, result.stderr[-3000:]
    return trained_project.project / "runs" / "unbroken"


@pytest.mark.parametrize("fault", [
    "batch:40",            # mid-epoch (25 batches an epoch): epoch 2 is half done
    "epoch_end:2",         # epoch 2 ran, not committed
    "checkpoint_write:3",  # arrays of epoch 3 written, state.json not yet
    "after_commit:1",      # between epochs
    "export:1",            # training finished, export written but not renamed
])
def test_killed_run_resumes_to_the_same_result(trained_project, reference, fault):
    project, name = trained_project.project, f"killed-{fault.replace(':', '-')}"
    killed = train(project, name, fault)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    run = project / "runs" / name
    assert not (run / "metrics.json").exists() and not (run / "report.html").exists()
    assert not any(p.name.isdigit() for p in (run / "export").glob("*")) if (run / "export").exists() else True
    assert (run / ".lock").is_file()  # stale: its process is gone

    resumed = train(project, name)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    history, expected_history = pd.read_csv(run / "history.csv"), pd.read_csv(reference / "history.csv")
    assert history["epoch"].tolist() == expected_history["epoch"].tolist()  # every epoch exactly once
    np.testing.assert_allclose(history.drop(columns="epoch").to_numpy(),
                               expected_history.drop(columns="epoch").to_numpy(), atol=1e-5)
    classes = json.loads((reference / "metrics.json").read_text())["classes"]
    columns = [f"prob_{c}" for c in classes]
    np.testing.assert_allclose(pd.read_csv(run / "predictions.csv")[columns].to_numpy(),
                               pd.read_csv(reference / "predictions.csv")[columns].to_numpy(), atol=1e-5)
    assert sorted(p.name for p in (run / "export").iterdir()) == ["1"]  # the killed export left nothing behind
    assert not (run / ".lock").exists()


def test_a_killed_streaming_run_resumes_to_the_same_result(trained_project):
    """data.streaming: the epoch order depends on (seed, epoch, chunk) only, so resume stays exact."""
    project, streamed = trained_project.project, ["data.streaming=true", "data.chunk_rows=300"]
    unbroken = train(project, "stream-unbroken", extra=streamed)
    assert unbroken.returncode == 0, unbroken.stderr[-3000:]
    killed = train(project, "stream-killed", "batch:30", extra=streamed)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    resumed = train(project, "stream-killed", extra=streamed)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    run, reference = project / "runs" / "stream-killed", project / "runs" / "stream-unbroken"
    history, expected = pd.read_csv(run / "history.csv"), pd.read_csv(reference / "history.csv")
    assert history["epoch"].tolist() == expected["epoch"].tolist()
    np.testing.assert_allclose(history.to_numpy(), expected.to_numpy(), atol=1e-5)
    np.testing.assert_allclose(pd.read_csv(run / "predictions.csv").filter(like="prob_").to_numpy(),
                               pd.read_csv(reference / "predictions.csv").filter(like="prob_").to_numpy(), atol=1e-5)


def test_same_seed_and_config_give_the_same_metrics_twice(trained_project, reference):
    again = train(trained_project.project, "unbroken-again")
    assert again.returncode == 0, again.stderr[-3000:]
    first = json.loads((reference / "metrics.json").read_text())
    second = json.loads((trained_project.project / "runs" / "unbroken-again" / "metrics.json").read_text())
    for key in ("accuracy", "nll", "ece", "brier", "temperature", "nll_calibrated"):
        assert second[key] == pytest.approx(first[key], abs=1e-6), key


def test_a_second_training_on_the_same_run_folder_is_refused(trained_project):
    project = trained_project.project
    first = subprocess.Popen([sys.executable, "train.py", "training.epochs=50", "training.verbose=0",
                              "training.early_stopping=0", "--run-name", "busy"], cwd=project,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lock = project / "runs" / "busy" / ".lock"
        deadline = time.time() + 120
        while not lock.exists() and time.time() < deadline and first.poll() is None:
            time.sleep(0.2)
        assert lock.exists(), "the first training never locked its run folder"
        second = run_train(project, "--run-name", "busy")
        assert second.returncode == 2
        assert f"is in use by another training (pid {first.pid})" in second.stderr.strip().splitlines()[-1]
    finally:
        first.kill()
        first.wait(timeout=60)


IMAGE_PHASES = ["training.epochs=2", "model.freeze_backbone=true", "model.fine_tune_epochs=2", "model.filters=[8,16]",
                "training.deterministic=true", "training.early_stopping=0", "augment.flip=none", "training.verbose=0"]


@pytest.fixture(scope="module")
def image_project(tmp_path_factory):
    from kerasls.templates_index import render_template

    return render_template("image-classifier", output_dir=tmp_path_factory.mktemp("phases"),
                           extra_context={"project_slug": "phases"})


@pytest.mark.parametrize("fault", [
    "epoch_end:3",     # the first fine-tuning epoch ran, not committed (2 frozen epochs committed)
    "after_commit:3",  # between the two fine-tuning epochs
])
def test_a_run_killed_while_fine_tuning_resumes_to_the_unbroken_result(image_project, fault):
    """Two phases (frozen backbone, then fine-tuning): the second starts at the epochs the first committed, so a
    resumed run (whose first phase trains nothing in this process) continues the fine-tuning where it stopped.
    Images are cached and each epoch's order depends on (seed, epoch) only, so the result is the same."""
    def images_run(name, fault=None):
        env = {**os.environ, **({"KERASLS_FAULT": fault} if fault else {})}
        if not fault:
            env.pop("KERASLS_FAULT", None)
        return subprocess.run([sys.executable, "train.py", *IMAGE_PHASES, "--run-name", name], cwd=image_project,
                              env=env, capture_output=True, text=True, timeout=600)

    reference = image_project / "runs" / "phases-unbroken"
    if not (reference / "metrics.json").is_file():
        assert images_run("phases-unbroken").returncode == 0
    name = f"phases-{fault.replace(':', '-')}"
    assert images_run(name, fault).returncode == -signal.SIGKILL
    resumed = images_run(name)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    run = image_project / "runs" / name
    history, expected = pd.read_csv(run / "history.csv"), pd.read_csv(reference / "history.csv")
    assert history["epoch"].tolist() == expected["epoch"].tolist() == [0, 1, 2, 3]
    np.testing.assert_allclose(history.drop(columns="epoch").to_numpy(), expected.drop(columns="epoch").to_numpy(),
                               atol=1e-5)
    np.testing.assert_allclose(pd.read_csv(run / "predictions.csv").filter(like="prob_").to_numpy(),
                               pd.read_csv(reference / "predictions.csv").filter(like="prob_").to_numpy(), atol=1e-5)


def test_resuming_with_other_settings_is_refused_naming_the_keys(trained_project):
    """A killed run resumes only with the settings and the model it started with; what changed is named, nothing
    is written."""
    project, name = trained_project.project, "changed-settings"
    assert train(project, name, "after_commit:1").returncode == -signal.SIGKILL
    run = project / "runs" / name
    saved = (run / "config.yaml").read_text()
    changed = train(project, name, extra=["training.learning_rate=0.01", "model.dropout=0.5"])
    assert changed.returncode == 2
    last = changed.stderr.strip().splitlines()[-1]
    assert "training.learning_rate" in last and "model.dropout" in last and "--run-name" in last, last
    assert "Traceback" not in changed.stderr
    assert (run / "config.yaml").read_text() == saved and not (run / "metrics.json").exists()
    model_py = project / "model.py"
    original = model_py.read_text()
    try:  # the same settings, but model.py edited: the saved weights would load into another computation
        model_py.write_text(original.replace('activation="relu"', 'activation="gelu"'))
        edited = train(project, name)
    finally:
        model_py.write_text(original)
    assert edited.returncode == 2 and "Traceback" not in edited.stderr
    last = edited.stderr.strip().splitlines()[-1]
    assert "layer 'dense' (Dense): activation 'relu' -> 'gelu'" in last and "--run-name" in last, last
    resumed = train(project, name, extra=["training.verbose=2"])  # verbosity may change
    assert resumed.returncode == 0, resumed.stderr[-2000:]


def test_ctrl_c_prints_the_command_that_resumes_the_run(trained_project):
    project, name = trained_project.project, "interrupted"
    env = {key: value for key, value in os.environ.items() if key != "KERASLS_FAULT"}
    process = subprocess.Popen([sys.executable, "train.py", *ARGS, "training.epochs=30", "training.early_stopping=0",
                                "--run-name", name], cwd=project, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               # a shell's background job starts with SIGINT ignored, and an ignored signal stays
                               # ignored across exec: give the run the default a terminal's process has
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    history = project / "runs" / name / "history.csv"
    deadline = time.time() + 120
    while not history.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    last = stderr.strip().splitlines()[-1]
    assert "Traceback" not in stderr
    assert last.startswith("error: interrupted; to resume from the last finished epoch, run: python train.py "), last
    assert last.endswith(f"--run-name {name}") and "training.epochs=30" in last, last
