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

import os

import keras
import numpy as np
import tensorflow as tf

from kerasls.config import TargetsConfig, TrainingConfig


def set_seeds(seed: int, deterministic: bool = False) -> None:
    """Seed Python, numpy and TensorFlow; `deterministic` also turns on TF op determinism (slower)."""
    keras.utils.set_random_seed(seed)
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
        from kerasls.distributed import multi_worker_strategy

        return multi_worker_strategy()
    gpus = tf.config.list_physical_devices("GPU")
    if distribute == "mirrored" or (distribute == "auto" and len(gpus) > 1):
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


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


def make_optimizer(training: TrainingConfig):
    if training.optimizer == "adamw":
        return keras.optimizers.AdamW(learning_rate=training.learning_rate, weight_decay=training.weight_decay)
    if training.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=training.learning_rate)
    return keras.optimizers.SGD(learning_rate=training.learning_rate, momentum=0.9)


def compile_classifier(model: keras.Model, training: TrainingConfig, targets: TargetsConfig,
                       prior=None) -> keras.Model:
    """CCE(label_smoothing=ε, from_logits=True) and the metrics of the module docstring; with
    `targets.prior: class_prior`, `prior` (the training class frequencies π) is where ε goes, inside the loss;
    with a teacher, the distillation loss on packed [hard | teacher] targets (`kerasls.losses`), whose metrics
    read the hard part."""
    from kerasls.losses import DistillationLoss, PriorSmoothedCrossentropy, hard_part_metrics

    soft, epsilon = targets.soft_labels, targets.label_smoothing
    if targets.prior == "class_prior" and prior is None:
        raise ValueError("targets.prior is class_prior: pass the training class frequencies as `prior`")
    prior = prior if targets.prior == "class_prior" else None
    if soft is not None and soft.source == "teacher":
        loss = DistillationLoss(alpha=soft.alpha, temperature=soft.temperature, label_smoothing=epsilon, prior=prior)
        metrics = hard_part_metrics(model.output_shape[-1])
    else:
        loss = (PriorSmoothedCrossentropy(epsilon, prior) if prior is not None
                else keras.losses.CategoricalCrossentropy(label_smoothing=epsilon, from_logits=True))
        if trains_on_distributions(targets):
            metrics = [keras.metrics.CategoricalCrossentropy(from_logits=True, name="soft_ce"),
                       keras.metrics.CategoricalAccuracy(name="argmax_agreement")]
        else:
            metrics = [keras.metrics.CategoricalCrossentropy(from_logits=True, name="nll"),
                       keras.metrics.CategoricalAccuracy(name="accuracy")]
    output_dtypes = {str(getattr(out, "dtype", "")) for out in getattr(model, "outputs", None) or []}
    low_precision = output_dtypes & {"float16", "bfloat16"}
    if low_precision:
        import warnings

        warnings.warn(f"model {model.name!r} outputs {min(low_precision)} logits: give its last layer "
                      "dtype='float32' so mixed precision keeps exact logits (see the template's model.py)",
                      stacklevel=2)
    optimizer = make_optimizer(training)
    if "mixed_float16" in (keras.mixed_precision.global_policy().name, model.dtype_policy.name):
        # float16 gradients underflow without loss scaling. Keras' compile wraps the optimizer only when the
        # model's own policy is mixed_float16; wrapping here also covers a model built under another policy.
        # bfloat16 has float32's exponent range and needs no scaling.
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    # jit_compile="auto": XLA when Keras supports it for this model (Keras 3.15: off on CPU-only machines, under a
    # tf.distribute strategy and with op determinism on)
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics, jit_compile=training.jit_compile)
    return model


_EPOCH = None


def epoch_variable():
    """The epoch number, set by `EpochState` at each epoch start and read by the shuffled training dataset."""
    global _EPOCH
    if _EPOCH is None:
        _EPOCH = tf.Variable(0, dtype=tf.int64, trainable=False, name="kerasls_epoch")
    return _EPOCH


def standard_callbacks(run, training: TrainingConfig, phase="train", monitor="val_nll") -> list:
    """TensorBoard, best checkpoint and early stopping on `monitor` (`validation_score`), and `EpochState`
    (history.csv and exact crash resume; `kerasls.resume`), which must come last so it sees the others'
    end-of-epoch state."""
    from kerasls.resume import EpochState

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


def make_dataset(features, targets, batch_size, shuffle=False, seed=0, drop_remainder=False):
    """In-memory features and probability targets -> batched, prefetched `tf.data.Dataset`.

    Training data (`shuffle`) is reshuffled every epoch in an order that depends only on (seed, epoch), so a
    resumed run sees the same batches as an unbroken one. `drop_remainder` keeps every training batch the same
    shape, so XLA compiles once instead of again for a partial last batch; it is ignored when there is less
    than one full batch.
    """
    if shuffle:
        from kerasls.resume import epoch_shuffled_dataset

        return epoch_shuffled_dataset(features, targets, batch_size, seed, epoch_variable(), drop_remainder)
    dataset = tf.data.Dataset.from_tensor_slices((features, targets))
    drop_remainder = bool(drop_remainder) and len(features) >= batch_size
    return dataset.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)


def splittable_batches(strategy, dataset, batch_size):
    """`dataset` as `model.fit` under a strategy with several replicas (`mirrored` on several GPUs) needs it.

    `tf.distribute` splits each global batch across the replicas only when it finds a `batch` op in the
    pipeline, and the in-memory feed (`resume.epoch_shuffled_dataset`) slices its batches without one. With one
    replica the dataset is returned as it is; with several, its batches are re-formed by `unbatch().batch()`
    (the same batches: a full first batch means the partial last one was dropped). Handing Keras a dataset
    split by `split_across_replicas` instead would be cheaper, but Keras 3.15 `fit` then applies AdamW's weight
    decay once per replica (measured: 2x, tests/test_replica_split.py).
    """
    if strategy.num_replicas_in_sync == 1:
        return dataset
    first = tf.nest.flatten(dataset.element_spec)[0]
    return dataset.unbatch().batch(batch_size, drop_remainder=first.shape[0] == batch_size)


def split_across_replicas(strategy, dataset):
    """A dataset of global batches -> a distributed dataset whose replicas each get a contiguous part of every
    batch (the parts differ by at most one row; a replica may get none of a tiny last batch), for the custom
    loop of `kerasls.distributed`.

    `tf.distribute` splits global batches itself only when it finds a `batch` op in the pipeline, which the
    in-memory feed (`resume.epoch_shuffled_dataset`) has not. Splitting here works for every pipeline: every
    input pipeline (one per worker) runs the whole dataset and keeps its replicas' parts, so all workers see the
    same epoch-seeded order. With one replica the dataset is returned as it is.
    """
    replicas = strategy.num_replicas_in_sync
    if replicas == 1:
        return dataset
    steps = int(dataset.cardinality())

    def pipeline(context):
        local = replicas // context.num_input_pipelines
        first = context.input_pipeline_id * local

        def replica_parts(*batch):
            rows = tf.shape(tf.nest.flatten(batch)[0], out_type=tf.int64)[0]

            def part(local_index):
                index = first + local_index
                start, stop = index * rows // replicas, (index + 1) * rows // replicas
                return tf.nest.map_structure(lambda tensor: tensor[start:stop], batch)

            return tf.data.Dataset.range(local).map(part)

        parts = dataset.flat_map(replica_parts)
        if steps >= 0:
            parts = parts.apply(tf.data.experimental.assert_cardinality(steps * local))
        return parts.prefetch(tf.data.AUTOTUNE)

    return strategy.distribute_datasets_from_function(pipeline)


def fit(model, train_data, val_data, training: TrainingConfig, run, epochs=None, initial_epoch=0, phase="train",
        monitor="val_nll"):
    """`model.fit` with the standard callbacks ranking epochs by `monitor`; `epochs`/`initial_epoch`/`phase`
    continue a run in a second phase.

    A model built under `MultiWorkerMirroredStrategy`, where `model.fit` fails (keras#20585), is trained by the
    custom loop of `kerasls.distributed` instead, with the same callbacks, logs and return value.
    """
    callbacks = standard_callbacks(run, training, phase, monitor)
    if isinstance(model.distribute_strategy, tf.distribute.MultiWorkerMirroredStrategy):
        from kerasls.distributed import fit_multi_worker

        return fit_multi_worker(model, train_data, val_data, epochs=epochs or training.epochs,
                                initial_epoch=initial_epoch, callbacks=callbacks, verbose=training.verbose)
    history = model.fit(
        splittable_batches(model.distribute_strategy, train_data, training.batch_size),
        validation_data=val_data,
        epochs=epochs or training.epochs,
        initial_epoch=initial_epoch,
        shuffle=False,  # the dataset shuffles itself each epoch
        callbacks=callbacks,
        verbose=training.verbose,
    )
    return history


def predict_logits(logits_fn, data, batch_size=1024) -> np.ndarray:
    """Logits in float32 of `logits_fn` over `data`, in order: a `tf.data.Dataset` of (inputs, targets) batches,
    or inputs in memory (an array, or a dict of column arrays) cut into batches of `batch_size`.

    For a run's metrics and temperature, `logits_fn` is `Serving.evaluation_function()`: the traced graph the
    export serves (`kerasls.export.Serving` says why). Never `model.predict`, which costs ~30 ms a call.
    """
    if isinstance(data, tf.data.Dataset):
        outputs = [logits_fn(inputs) for inputs, _ in data]
    else:
        rows = len(next(iter(data.values()))) if isinstance(data, dict) else len(data)
        outputs = [logits_fn(tf.nest.map_structure(lambda column: column[start:start + batch_size], data))
                   for start in range(0, rows, batch_size)]
    if not outputs:
        raise ValueError("predict_logits: `data` holds no rows")
    return np.concatenate([np.asarray(tf.cast(o, tf.float32)) for o in outputs], axis=0)
