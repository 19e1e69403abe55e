"""Several replicas on one machine (`training.distribute: mirrored`), on CPU: `replicas.splittable_batches`
(what `training.fit` gives `model.fit`), `replicas.split_across_replicas` (the multi-worker loop's split) and the
multi-worker custom loop itself on two local replicas.

The in-memory feed (`data.epochs.epoch_shuffled_dataset`) has no `batch` op, so `tf.distribute` cannot split its
batches by itself. Two logical CPU devices stand in for two GPUs. They must be configured
before TensorFlow starts, so the checks run in a fresh interpreter (the script below) and report as JSON.
"""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent("""
    import json
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from kerasls import replicas, training
    from recipe import compile_classifier, make_dataset
    from kerasls.config import TargetsConfig, TrainingConfig
    from kerasls.data.epochs import epoch_shuffled_dataset

    report = {}
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    rng = np.random.default_rng(0)

    # 1. The parts of every batch, across replicas and in order, are the batch (odd sizes: 45 rows, batch 8,
    #    so the last batch of 5 rows splits 2 + 3).
    features = np.arange(45 * 3, dtype=np.float32).reshape(45, 3)
    targets = np.eye(3, dtype=np.float32)[np.arange(45) % 3]
    epoch = tf.Variable(0, dtype=tf.int64)
    dataset = epoch_shuffled_dataset(features, targets, 8, seed=1, epoch_variable=epoch)
    batches = [(x.numpy(), y.numpy()) for x, y in dataset]
    split = []
    for x, y in replicas.split_across_replicas(strategy, dataset):
        parts = [part.numpy() for part in strategy.experimental_local_results(x)]
        split.append((np.concatenate(parts), [len(part) for part in parts]))
    report["steps"] = [len(batches), len(split)]
    report["parts_are_the_batch"] = all(np.array_equal(whole, x) for (x, _), (whole, _) in zip(batches, split))
    report["part_sizes"] = [sizes for _, sizes in split]
    report["every_row_once"] = sorted(np.concatenate([whole for whole, _ in split])[:, 0].tolist()) == \\
        features[:, 0].tolist()

    # 2. model.fit on two replicas reaches the one-device weights (equal parts: 640 rows, batch 64). A large
    #    weight decay, so that decaying once per replica (what Keras does when handed the split of 1.) shows.
    x = rng.normal(size=(640, 6)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 640)]
    config = TrainingConfig(batch_size=64, learning_rate=0.01, weight_decay=0.01)

    def trained(scope):
        with scope:
            keras.utils.set_random_seed(3)
            model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(16, activation="relu"),
                                      keras.layers.Dense(3)])
            compile_classifier(model, config, TargetsConfig(label_smoothing=0.1))
        data = make_dataset(x, y, 64, shuffle=True, seed=5)
        history = model.fit(replicas.splittable_batches(model.distribute_strategy, data, 64), epochs=3,
                            shuffle=False, verbose=0)
        return model.get_weights(), history.history["loss"]

    one_weights, one_loss = trained(tf.distribute.get_strategy().scope())
    two_weights, two_loss = trained(strategy.scope())
    report["weight_difference"] = max(float(np.max(np.abs(a - b))) for a, b in zip(one_weights, two_weights))
    report["loss_difference"] = max(abs(a - b) for a, b in zip(one_loss, two_loss))
    report["replicas"] = strategy.num_replicas_in_sync

    # 3. The multi-worker custom loop (`kerasls.distributed`), run here on two local replicas, reaches them too.
    from kerasls.distributed import fit_multi_worker

    with strategy.scope():
        keras.utils.set_random_seed(3)
        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(3)])
        compile_classifier(model, config, TargetsConfig(label_smoothing=0.1))
    loop_history = fit_multi_worker(model, make_dataset(x, y, 64, shuffle=True, seed=5), None, epochs=3,
                                    verbose=0)
    report["loop_weight_difference"] = max(float(np.max(np.abs(a - b)))
                                           for a, b in zip(one_weights, model.get_weights()))
    report["loop_loss_difference"] = max(abs(a - b) for a, b in zip(one_loss, loop_history.history["loss"]))
    print("REPORT " + json.dumps(report))
""")


@pytest.fixture(scope="module")
def report():
    # run from tests/, so the script imports tests/recipe.py
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300,
                            cwd=Path(__file__).parent)
    lines = [line for line in result.stdout.splitlines() if line.startswith("REPORT ")]
    assert result.returncode == 0 and lines, result.stderr[-3000:]
    return json.loads(lines[-1][len("REPORT "):])


def test_every_replica_gets_a_contiguous_part_of_every_batch(report):
    assert report["replicas"] == 2
    assert report["steps"] == [6, 6]
    assert report["parts_are_the_batch"]
    assert report["every_row_once"]
    assert report["part_sizes"] == [[4, 4]] * 5 + [[2, 3]]


def test_two_replicas_train_like_one_device(report):
    # Same gradient sums, added in another order: ~1e-7. A wrong split (each replica the whole batch) or a wrong
    # loss scale changes the weights by > 1e-3; weight decay applied once per replica, by 5e-5 after one step.
    assert report["weight_difference"] < 1e-6
    assert report["loss_difference"] < 1e-5


def test_the_custom_loop_on_two_replicas_trains_like_one_device(report):
    assert report["loop_weight_difference"] < 1e-6
    assert report["loop_loss_difference"] < 1e-5
