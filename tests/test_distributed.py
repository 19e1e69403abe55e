"""Multi-worker training (`training.distribute: multi_worker`, `kerasls.distributed`).

The slow tests run a generated tabular-intent project as two workers on 127.0.0.1 (TF_CONFIG, free ports) next to
a one-device run of the same config, and check that the two workers end with bitwise-equal weights and the
one-device run's weights and metrics; then kill one worker mid-training and resume both; and overflow float16 on
one worker only. The fast tests check the custom loop against `model.fit` in one process, and the TF_CONFIG and
run-folder rules.

Tolerances: the workers apply the same all-reduced gradients to the same values, so they agree exactly. Against
one device, the only difference is the order of float additions (two sums over 32 examples, all-reduced, instead
of one over 64), a relative rounding of ~1e-7 per step: measured 1.0e-7 on weights and 7e-8 on the history after
75 steps. 1e-5 leaves a wide margin and still catches a wrong loss scale (a factor 2 in the gradient) or a wrong
shuffle order, which change the history in the second decimal.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from recipe import compile_classifier

from kerasls import run as run_module
from kerasls.errors import KeraslsError
from kerasls.templates_index import render_template

# 1600 training rows / 64 = 25 full batches, split 32 + 32 over the two workers; early stopping never fires in
# 3 epochs. Dropout 0: each replica draws its own dropout masks, so dropout would differ from one device.
ARGS = ["training.epochs=3", "training.batch_size=64", "training.verbose=0", "training.deterministic=true",
        "model.dropout=0"]
TIMEOUT = 300


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start_training(project, name, log, extra=(), env=None):
    """train.py in a subprocess, its output to a file: two workers filling pipes nobody reads would deadlock."""
    env = {**{k: v for k, v in os.environ.items() if k not in ("KERASLS_FAULT", "TF_CONFIG")}, **(env or {})}
    with open(log, "w") as output:
        return subprocess.Popen([sys.executable, "train.py", *ARGS, *extra, "--run-name", name], cwd=project,
                                env=env, stdout=output, stderr=subprocess.STDOUT)


def start_workers(project, name, logs, faults=(None, None), extra=()):
    """One train.py per worker of a TF_CONFIG cluster on free local ports; `faults[i]` is worker i's KERASLS_FAULT."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(len(faults))]}
    processes = []
    for index, fault in enumerate(faults):
        env = {"TF_CONFIG": tf_config(cluster, "worker", index), **({"KERASLS_FAULT": fault} if fault else {})}
        processes.append(start_training(project, name, logs / f"{name}-worker-{index}.log",
                                        ["training.distribute=multi_worker", *extra], env))
    return processes


def tf_config(cluster, task_type, index):
    return json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})


def wait_all(processes, timeout=TIMEOUT):
    deadline = time.time() + timeout
    for process in processes:
        process.wait(timeout=max(deadline - time.time(), 1))
    return [process.returncode for process in processes]


def kill_all(processes):
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=60)


def tail(path, lines=30):
    return "\n".join(Path(path).read_text().splitlines()[-lines:])


def final_state(run):
    """Every model and optimizer variable of the finished training (`kerasls.resume.EpochState`)."""
    folder = run / "checkpoints" / "train"
    state = json.loads((folder / "state.json").read_text())
    assert state["finished"]
    with np.load(folder / state["arrays"]) as arrays:
        return [arrays[f"arr_{i}"] for i in range(len(arrays.files))]


def probabilities(run):
    frame = pd.read_csv(run / "predictions.csv")
    return frame[[c for c in frame.columns if c.startswith("prob_")]].to_numpy()


def max_difference(first, second):
    return max(float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)), initial=0.0))
               for a, b in zip(first, second))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("distributed")
    return render_template("tabular-intent", output_dir=root, extra_context={"project_slug": "shop"})


@pytest.fixture(scope="module")
def unbroken(project):
    """A one-device run and a two-worker run of the same config, started together."""
    logs = project / "logs"
    logs.mkdir()
    started = time.time()
    processes = [start_training(project, "one-device", logs / "one-device.log", ["training.distribute=one_device"])]
    processes += start_workers(project, "two-workers", logs)
    try:
        codes = wait_all(processes)
    finally:
        kill_all(processes)
    print(f"one-device and two-worker runs: {time.time() - started:.0f} s")
    for log, code in zip(["one-device.log", "two-workers-worker-0.log", "two-workers-worker-1.log"], codes):
        assert code == 0, tail(logs / log)
    return project / "runs" / "one-device", project / "runs" / "two-workers"


@pytest.mark.slow
def test_two_workers_agree_with_each_other_and_with_one_device(project, unbroken):
    reference, chief = unbroken
    worker = chief / "worker-1"  # worker 1 writes into its own folder; the chief into runs/two-workers/
    for run in (chief, worker):
        assert (run / "metrics.json").is_file() and sorted(p.name for p in (run / "export").iterdir()) == ["1"]
        assert not (run / ".lock").exists()

    chief_state, worker_state, reference_state = final_state(chief), final_state(worker), final_state(reference)
    assert max_difference(chief_state, worker_state) == 0.0
    weight_difference = max_difference(chief_state, reference_state)
    assert weight_difference < 1e-5, weight_difference
    np.testing.assert_array_equal(probabilities(chief), probabilities(worker))
    np.testing.assert_allclose(probabilities(chief), probabilities(reference), atol=1e-5)

    history, reference_history = pd.read_csv(chief / "history.csv"), pd.read_csv(reference / "history.csv")
    assert list(history.columns) == list(reference_history.columns)  # epoch, accuracy, loss, nll, val_...
    assert history["epoch"].tolist() == [0, 1, 2]
    pd.testing.assert_frame_equal(history, pd.read_csv(worker / "history.csv"))
    np.testing.assert_allclose(history.to_numpy(), reference_history.to_numpy(), atol=1e-5)
    metrics, reference_metrics = (json.loads((run / "metrics.json").read_text()) for run in (chief, reference))
    assert metrics["accuracy"] == pytest.approx(reference_metrics["accuracy"], abs=1e-9)
    assert metrics["nll"] == pytest.approx(reference_metrics["nll"], abs=1e-5)
    print(f"max |weight difference| vs one device: {weight_difference:.2e}; max |history difference|: "
          f"{np.max(np.abs(history.to_numpy() - reference_history.to_numpy())):.2e}")


@pytest.mark.slow
def test_workers_killed_at_different_epochs_resume_together(project, unbroken):
    """Worker 1 is killed after its second epoch, before committing it; the chief commits that epoch. Rerun, both
    continue from the chief's epoch (the worker takes the chief's state) and end as an unbroken run."""
    reference, _ = unbroken
    logs, name = project / "logs", "killed"
    chief_state_file = project / "runs" / name / "checkpoints" / "train" / "state.json"
    processes = start_workers(project, name, logs, faults=(None, "epoch_end:2"), extra=["export.enabled=false"])
    try:
        assert processes[1].wait(timeout=TIMEOUT) == -signal.SIGKILL, tail(logs / f"{name}-worker-1.log")
        deadline = time.time() + 60  # the chief finishes its epoch alone, then waits for the dead worker
        while time.time() < deadline and not (
                chief_state_file.is_file() and json.loads(chief_state_file.read_text())["epoch"] == 2):
            time.sleep(0.2)
        assert json.loads(chief_state_file.read_text())["epoch"] == 2
        worker_state = json.loads((project / "runs" / name / "worker-1" / "checkpoints" / "train" / "state.json")
                                  .read_text())
        assert worker_state["epoch"] == 1  # the workers' saved states now disagree
    finally:
        kill_all(processes)

    resumed = start_workers(project, name, logs, extra=["export.enabled=false"])
    try:
        codes = wait_all(resumed)
    finally:
        kill_all(resumed)
    for index, code in enumerate(codes):
        assert code == 0, tail(logs / f"{name}-worker-{index}.log")
    chief = project / "runs" / name
    history, reference_history = pd.read_csv(chief / "history.csv"), pd.read_csv(reference / "history.csv")
    assert history["epoch"].tolist() == [0, 1, 2]  # every epoch exactly once
    np.testing.assert_allclose(history.to_numpy(), reference_history.to_numpy(), atol=1e-5)
    assert max_difference(final_state(chief), final_state(chief / "worker-1")) == 0.0
    assert max_difference(final_state(chief), final_state(reference)) < 1e-5
    np.testing.assert_allclose(probabilities(chief), probabilities(reference), atol=1e-5)


OVERFLOW_ON_ONE_WORKER = r"""
import json
import keras, numpy as np, tensorflow as tf
from kerasls import training
from kerasls.config import TargetsConfig, TrainingConfig
from kerasls.distributed import fit_multi_worker
from recipe import compile_classifier

config = TrainingConfig(distribute="multi_worker", jit_compile=False, learning_rate=0.01)
keras.mixed_precision.set_global_policy("mixed_float16")
strategy = training.distribution_strategy(config)
assert training.distribution_strategy(config) is strategy
keras.utils.set_random_seed(0)
rng = np.random.default_rng(0)
x, y = rng.normal(size=(64, 4)).astype("float32"), np.eye(3, dtype="float32")[rng.integers(0, 3, 64)]
x[16] = 60000.0  # row 16 of the first global batch of 32 goes to worker 1: float16 overflows there only
with strategy.scope():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3, dtype="float32")(keras.layers.Dense(16, "relu")(inputs)))
    compile_classifier(model, config, TargetsConfig())
train = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
history = fit_multi_worker(model, train, train, epochs=3, verbose=0)
print("RESULT", json.dumps({"optimizer": type(model.optimizer).__name__,
                            "scale": float(model.optimizer.dynamic_scale.numpy()),
                            "steps": int(model.optimizer.iterations.numpy()),
                            "weights": [w.tolist() for w in model.get_weights()]}))
"""


@pytest.mark.slow
def test_a_float16_overflow_on_one_worker_skips_the_step_on_all(tmp_path):
    """mixed_float16's LossScaleOptimizer checks each worker's own gradients for inf: without agreement, the
    worker that overflowed skips the step and the other waits for it forever (measured: a hang)."""
    script = tmp_path / "overflow.py"
    script.write_text(OVERFLOW_ON_ONE_WORKER)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    processes = []
    try:
        for index in range(2):
            env = {**os.environ, "TF_CONFIG": tf_config(cluster, "worker", index),
                   "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
            with open(tmp_path / f"worker-{index}.log", "w") as log:
                processes.append(subprocess.Popen([sys.executable, str(script)], env=env, stdout=log,
                                                  stderr=subprocess.STDOUT))
        codes = wait_all(processes, timeout=120)
    finally:
        kill_all(processes)
    results = []
    for index, code in enumerate(codes):
        assert code == 0, tail(tmp_path / f"worker-{index}.log")
        line = next(line for line in (tmp_path / f"worker-{index}.log").read_text().splitlines()
                    if line.startswith("RESULT "))
        results.append(json.loads(line.removeprefix("RESULT ")))
    assert results[0] == results[1]  # the same steps applied and skipped on both workers
    assert results[0]["optimizer"] == "LossScaleOptimizer"
    assert results[0]["steps"] == 3 and results[0]["scale"] == 2.0**15 / 2**3  # 3 of 6 steps skipped
    assert np.all(np.isfinite(np.concatenate([np.ravel(w) for w in results[0]["weights"]])))


@pytest.mark.parametrize("teacher", [False, True])
def test_custom_loop_matches_model_fit(teacher):
    """`fit_multi_worker` under the default strategy = `model.fit`: same log keys and values, same weights; with a
    teacher, the distillation loss and the hard-part `nll`/`accuracy`."""
    import keras
    import tensorflow as tf

    from kerasls.config import SoftLabelsConfig, TargetsConfig, TrainingConfig
    from kerasls.distributed import fit_multi_worker

    rng = np.random.default_rng(0)
    classes, rows = 3, 96
    features = rng.normal(size=(rows, 5)).astype("float32")
    targets = np.eye(classes, dtype="float32")[rng.integers(0, classes, rows)]
    soft = None
    if teacher:
        targets = np.concatenate([targets, rng.dirichlet(np.ones(classes), rows).astype("float32")], axis=1)
        soft = SoftLabelsConfig(teacher="unused", temperature=2.0, alpha=0.3)
    config = TrainingConfig(jit_compile=False, learning_rate=0.01)
    train = tf.data.Dataset.from_tensor_slices((features, targets)).batch(32)
    val = tf.data.Dataset.from_tensor_slices((features[:40], targets[:40])).batch(16)

    def compiled_model():
        keras.utils.set_random_seed(1)
        inputs = keras.Input((5,))
        hidden = keras.layers.Dense(8, activation="relu", kernel_regularizer=keras.regularizers.L2(0.01))(inputs)
        model = keras.Model(inputs, keras.layers.Dense(classes)(hidden))
        return compile_classifier(model, config, TargetsConfig(label_smoothing=0.1, soft_labels=soft))

    expected_model, model = compiled_model(), compiled_model()
    expected = expected_model.fit(train, validation_data=val, epochs=2, shuffle=False, verbose=0)
    history = fit_multi_worker(model, train, val, epochs=2, verbose=0)
    assert sorted(history.history) == sorted(expected.history)
    assert sorted(history.history) == ["accuracy", "loss", "nll", "val_accuracy", "val_loss", "val_nll"]
    for key, values in expected.history.items():
        np.testing.assert_allclose(history.history[key], values, atol=1e-5, err_msg=key)
    assert history.epoch == [0, 1]
    for actual, wanted in zip(model.get_weights(), expected_model.get_weights()):
        np.testing.assert_allclose(actual, wanted, atol=1e-5)


@pytest.mark.parametrize("cluster, task_type, index, folder", [
    ({"worker": ["a:1", "b:1"]}, "worker", 0, None),  # worker 0 is the chief when there is no chief task
    ({"worker": ["a:1", "b:1"]}, "worker", 1, "worker-1"),
    ({"chief": ["c:1"], "worker": ["a:1"]}, "chief", 0, None),
    ({"chief": ["c:1"], "worker": ["a:1"]}, "worker", 0, "worker-0"),
])
def test_only_the_chief_writes_the_run_folder(tmp_path, monkeypatch, cluster, task_type, index, folder):
    from kerasls.config import TabularConfig

    monkeypatch.setenv("TF_CONFIG", tf_config(cluster, task_type, index))
    config = TabularConfig.model_validate({"training": {"distribute": "multi_worker"}})
    assert run_module.worker_folder_name(config) == folder
    run = run_module.create_run_folder(tmp_path, "shared", worker=folder)
    assert run.path == tmp_path / "shared" / (folder or "")
    run_module.lock_run_folder(run)  # a worker's lock is its own: it never trips the chief's
    assert (run.path / ".lock").is_file()


def test_multi_worker_without_tf_config_says_what_to_set(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(KeraslsError, match="needs the TF_CONFIG environment variable, e.g. TF_CONFIG="):
        run_module.cluster_task()
    monkeypatch.setenv("TF_CONFIG", tf_config({"worker": ["a:1"]}, "worker", 1))
    with pytest.raises(KeraslsError, match="task worker 1 is not in the cluster"):
        run_module.cluster_task()
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(KeraslsError, match="TF_CONFIG is not valid"):
        run_module.cluster_task()
