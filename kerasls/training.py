"""Compile, callbacks and fit: the parts of a training script that are the same in every project.

The loss is `CategoricalCrossentropy(label_smoothing=ε, from_logits=True)` on probability-vector targets (with
`prior: class_prior`, the same cross-entropy smoothed toward the class prior inside the loss). Smoothed loss is
not a measure of the model, so every model also gets metrics on the unsmoothed targets, named for what they are:
- hard labels (one-hot targets) and distillation (their hard part): `nll` and `accuracy`;
- distributions (`soft_labels` probabilities or votes): `soft_ce`, the cross-entropy H(q, p) to the target
  distributions, and `argmax_agreement`, the share of rows whose predicted class is the argmax of q (not the
  accuracy: that is measured against the observed class, in metrics.json).
Their validation twin (`val_nll` or `val_soft_ce`, `validation_score`) drives checkpoints and early stopping.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import Optional

import keras
import numpy as np
import tensorflow as tf

from kerasls.config import TargetsConfig, TrainingConfig
from kerasls.data.epochs import epoch_variable, use_parallel_maps
from kerasls.distributed import fit_multi_worker, multi_worker_strategy
from kerasls.errors import first_line
from kerasls.losses import DistillationLoss, PriorSmoothedCrossentropy, hard_part_metrics
from kerasls.memory import check_free_space
from kerasls.replicas import splittable_batches
from kerasls.resume import EpochState


def set_seeds(seed: int, deterministic: bool = False) -> None:
    """Seed Python, numpy and TensorFlow; `deterministic` also turns on TF op determinism (slower)."""
    keras.utils.set_random_seed(seed)
    use_parallel_maps(not deterministic)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def configure_precision(training: TrainingConfig) -> str:
    """`mixed_precision`: float16 compute on a GPU, bfloat16 on CPU; variables and logits stay float32.

    Sets the global Keras policy, so call it before building the model; returns the policy name. Under
    mixed_float16 `compile_classifier` adds loss scaling; the models' last layer and the tabular preprocessing
    stay float32 (`dtype="float32"`), so logits, metrics, calibration and the export are float32.
    """
    policy = "float32"
    if training.mixed_precision:
        policy = "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"
    keras.mixed_precision.set_global_policy(policy)
    return policy


_STRATEGIES: dict = {}


def distribution_strategy(training: TrainingConfig):
    """The `tf.distribute` strategy of `training.distribute`, made once per process and cached.

    `auto`: all local GPUs when there are several, else the default strategy; `one_device`: the default
    strategy; `mirrored`: `MirroredStrategy` on all local GPUs; `multi_worker`: `MultiWorkerMirroredStrategy`
    over the workers of TF_CONFIG (`kerasls.distributed`). Call it before any other TensorFlow work: the
    multi-worker strategy configures collective ops, which TensorFlow allows only at program startup, and only
    once, hence the cache (library code can ask for the strategy again).
    """
    if training.distribute not in _STRATEGIES:
        _STRATEGIES[training.distribute] = _new_strategy(training.distribute)
    return _STRATEGIES[training.distribute]


def _new_strategy(distribute: str):
    if distribute == "multi_worker":
        return multi_worker_strategy()
    gpus = tf.config.list_physical_devices("GPU")
    if distribute == "mirrored" or (distribute == "auto" and len(gpus) > 1):
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def describe_setup(strategy, training: TrainingConfig) -> str:
    """One line: what trains where (devices, strategy, replicas, precision, XLA)."""
    gpus = tf.config.list_logical_devices("GPU")
    devices = f"{len(gpus)} GPU" + ("s" if len(gpus) > 1 else "") if gpus else "CPU"
    names = {"MirroredStrategy": "mirrored", "MultiWorkerMirroredStrategy": "multi-worker"}
    return (f"training on {devices}: {names.get(type(strategy).__name__, 'one device')}, "
            f"{strategy.num_replicas_in_sync} replica(s), "
            f"precision {keras.mixed_precision.global_policy().name}, XLA {'on' if uses_xla(training) else 'off'}")


def uses_xla(training: TrainingConfig) -> bool:
    """Will the train step be XLA-compiled? Then training batches should keep one shape (`drop_remainder`): a
    partial last batch is a new shape, compiled again. `auto` follows Keras 3.15: XLA only with a GPU and
    without op determinism, so on a CPU-only machine no rows are dropped."""
    if training.jit_compile == "auto":
        return bool(tf.config.list_physical_devices("GPU")) and not training.deterministic
    return bool(training.jit_compile)


def trains_on_distributions(targets: TargetsConfig) -> bool:
    """Are the training targets per-row distributions (probability or vote columns)?"""
    return targets.soft_labels is not None and targets.soft_labels.source != "teacher"


def validation_score(targets: TargetsConfig) -> str:
    """The history column that ranks epochs: `val_soft_ce` for distribution targets, else `val_nll`."""
    return "val_soft_ce" if trains_on_distributions(targets) else "val_nll"


def make_loss(targets: TargetsConfig, prior=None):
    """The loss of `targets`: `CategoricalCrossentropy(label_smoothing=ε, from_logits=True)`; with `prior:
    class_prior` the same cross-entropy smoothed toward `prior` (the training class frequencies π) inside the loss;
    with a teacher, the distillation loss on packed [hard | teacher] targets (`kerasls.losses`)."""
    soft, epsilon = targets.soft_labels, targets.label_smoothing
    if targets.prior == "class_prior" and prior is None:
        raise ValueError("targets.prior is class_prior: pass the training class frequencies as `prior`")
    prior = prior if targets.prior == "class_prior" else None
    if soft is not None and soft.source == "teacher":
        return DistillationLoss(alpha=soft.alpha, temperature=soft.temperature, label_smoothing=epsilon, prior=prior)
    if prior is not None:
        return PriorSmoothedCrossentropy(epsilon, prior)
    return keras.losses.CategoricalCrossentropy(label_smoothing=epsilon, from_logits=True)


def make_metrics(targets: TargetsConfig, num_classes: int) -> list:
    """Metrics on the unsmoothed targets, named for what they read (the module docstring)."""
    if targets.soft_labels is not None and targets.soft_labels.source == "teacher":
        return hard_part_metrics(num_classes)
    if trains_on_distributions(targets):
        return [keras.metrics.CategoricalCrossentropy(from_logits=True, name="soft_ce"),
                keras.metrics.CategoricalAccuracy(name="argmax_agreement")]
    return [keras.metrics.CategoricalCrossentropy(from_logits=True, name="nll"),
            keras.metrics.CategoricalAccuracy(name="accuracy")]


def learning_rate(training: TrainingConfig, steps_per_epoch: int):
    """`training.learning_rate`, constant, or with `lr_schedule: cosine` a cosine decay to 0 over all epochs after
    `warmup_epochs` of linear warm-up from 0 (timm's default schedule shape)."""
    if training.lr_schedule == "constant":
        return training.learning_rate
    warmup = training.warmup_epochs * steps_per_epoch
    total = max(training.epochs * steps_per_epoch - warmup, 1)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else training.learning_rate, decay_steps=total,
        warmup_target=training.learning_rate if warmup else None, warmup_steps=warmup)


def make_optimizer(training: TrainingConfig, steps_per_epoch: int = 1):
    """AdamW (decoupled weight decay), Adam or SGD with momentum, at `learning_rate(training, steps_per_epoch)`.

    Under a mixed_float16 policy it is wrapped in `LossScaleOptimizer`: float16 gradients underflow without loss
    scaling. Keras' compile wraps the optimizer only when the model's own policy is mixed_float16; wrapping here
    also covers a model built under another policy. bfloat16 has float32's exponent range and needs no scaling.
    """
    rate = learning_rate(training, steps_per_epoch)
    if training.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(learning_rate=rate, weight_decay=training.weight_decay)
    elif training.optimizer == "adam":
        optimizer = keras.optimizers.Adam(learning_rate=rate)
    else:
        optimizer = keras.optimizers.SGD(learning_rate=rate, momentum=training.momentum)
    if keras.mixed_precision.global_policy().name == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def describe_trainable(model) -> str:
    """How many of the model's parameters train now (for the line a phase change prints)."""
    trainable = sum(int(np.prod(variable.shape)) for variable in model.trainable_variables)
    total = sum(int(np.prod(variable.shape)) for variable in model.weights)
    return f"{trainable:,} of {total:,} parameters trainable"


def steps_per_epoch(rows: int, batch_size: int, drop_remainder=False) -> int:
    return max(rows // batch_size if drop_remainder else -(-rows // batch_size), 1)


def check_logits_dtype(model) -> None:
    """Warn when a model outputs float16/bfloat16 logits: mixed precision must keep the logits float32."""
    output_dtypes = {str(getattr(out, "dtype", "")) for out in getattr(model, "outputs", None) or []}
    low_precision = output_dtypes & {"float16", "bfloat16"}
    if low_precision:
        warnings.warn(f"model {model.name!r} outputs {min(low_precision)} logits: give its last layer "
                      "dtype='float32' so mixed precision keeps exact logits (see the template's model.py)",
                      stacklevel=3)


def compile_classifier(model: keras.Model, training: TrainingConfig, targets: TargetsConfig, prior=None,
                       steps=1) -> keras.Model:
    """`model.compile` with `make_loss`, `make_metrics` and `make_optimizer`: what train.py writes out in full, for
    the benchmarks and tests that train a model directly."""
    check_logits_dtype(model)
    optimizer = make_optimizer(training, steps)
    if model.dtype_policy.name == "mixed_float16" and not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    model.compile(optimizer=optimizer, loss=make_loss(targets, prior),
                  metrics=make_metrics(targets, model.output_shape[-1]), jit_compile=training.jit_compile)
    return model


def standard_callbacks(run, training: TrainingConfig, phase="train", monitor="val_nll") -> list:
    """TensorBoard, best checkpoint and early stopping on `monitor` (`validation_score`), and `EpochState`
    (history.csv and exact crash resume; `kerasls.resume`), which must come last so it sees the others'
    end-of-epoch state."""
    os.makedirs(run.checkpoints, exist_ok=True)
    checkpoint = keras.callbacks.ModelCheckpoint(
        str(run.checkpoints / "best.weights.h5"), monitor=monitor, mode="min", save_best_only=True,
        save_weights_only=True,
    )
    callbacks = [keras.callbacks.TensorBoard(str(run.tensorboard), write_graph=False), checkpoint]
    early_stopping = None
    if training.early_stopping:
        early_stopping = keras.callbacks.EarlyStopping(
            monitor=monitor, mode="min", patience=training.early_stopping, restore_best_weights=True
        )
        callbacks.append(early_stopping)
    callbacks.append(EpochState(run.checkpoints / phase, run.history, epoch_variable(), early_stopping, checkpoint,
                                monitor=monitor))
    return callbacks


def epochs_done(run, phase="train") -> int:
    """Epochs a phase has committed (`EpochState`): where the next phase starts, the same after a resume as in an
    unbroken run (the epochs run in this process would be 0 after a resume)."""
    state = run.checkpoints / phase / "state.json"
    return len(json.loads(state.read_text())["history"]) if state.is_file() else 0


def fit(model, train_data, val_data, training: TrainingConfig, callbacks, epochs=None, initial_epoch=0):
    """`model.fit` over epochs `initial_epoch`..`epochs` (default `training.epochs`) with `callbacks` (those of
    `standard_callbacks` last); a later phase passes the epochs already done (`epochs_done`).

    A model built under `MultiWorkerMirroredStrategy`, where `model.fit` fails (keras#20585), is trained by the
    custom loop of `kerasls.distributed` instead, with the same callbacks, logs and return value.
    """
    check_logits_dtype(model)
    if isinstance(model.distribute_strategy, tf.distribute.MultiWorkerMirroredStrategy):
        monitor = next((c.monitor for c in callbacks if isinstance(c, EpochState)), "val_nll")
        names = ("soft_ce", "argmax_agreement") if monitor == "val_soft_ce" else ("nll", "accuracy")
        return fit_multi_worker(model, train_data, val_data, epochs=epochs or training.epochs,
                                initial_epoch=initial_epoch, callbacks=callbacks, verbose=training.verbose,
                                metric_names=names)
    return model.fit(
        splittable_batches(model.distribute_strategy, train_data, training.batch_size),
        validation_data=val_data,
        epochs=epochs or training.epochs,
        initial_epoch=initial_epoch,
        shuffle=False,  # the dataset shuffles itself each epoch
        callbacks=list(callbacks),
        verbose=progress_verbosity(training.verbose),
    )


def progress_verbosity(verbose: int) -> int:
    """`training.verbose`, except that the progress bar (1) becomes one line per epoch (2) when standard output is
    not a terminal: a bar redrawn with escape codes fills a log file with them."""
    return 2 if verbose == 1 and not sys.stdout.isatty() else verbose


def save_keras_model(model, run) -> Optional[Path]:
    """`runs/<name>/model.keras`: the trained model for further work in Keras (`keras.models.load_model`; it takes
    the encoded named inputs, or decoded images, not raw columns or image bytes: those go through the export).
    Written to a temporary name, loaded back once, and renamed: Keras 3 saves a custom layer it cannot rebuild (no
    `get_config` for its arguments) and fails only at loading, so such a model gets one note and no file; the
    export and `checkpoints/best.weights.h5` still hold its weights. Returns the path, or None."""
    path = run.path / "model.keras"
    weights = sum(int(np.prod(variable.shape)) * tf.as_dtype(variable.dtype).size for variable in model.variables)
    check_free_space(run.path, 2 * weights + (16 << 20), "saving model.keras")
    temporary = run.path / ".model.tmp.keras"
    try:
        model.save(temporary)
        keras.models.load_model(temporary)
    except Exception as error:  # noqa: BLE001 (whatever Keras raises, the run's results stand)
        temporary.unlink(missing_ok=True)
        print(f"note: model.keras not saved: Keras cannot save and load this model ({first_line(error)}); the "
              "export and checkpoints/best.weights.h5 hold its weights")
        return None
    os.replace(temporary, path)
    return path
