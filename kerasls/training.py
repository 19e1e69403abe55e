"""Compile, callbacks and fit: the parts of a training script that are the same in every project.

The loss is always `CategoricalCrossentropy(label_smoothing=ε, from_logits=True)` on probability-vector targets.
Smoothed loss is not a measure of the model, so every model also gets an unsmoothed cross-entropy metric named
`nll` (its validation twin `val_nll` drives checkpoints and early stopping) and `accuracy`.
"""

from __future__ import annotations

import os

import keras
import numpy as np
import tensorflow as tf

from kerasls.config import TargetsConfig, TrainingConfig
from kerasls.errors import KeraslsError


def set_seeds(seed: int, deterministic: bool = False) -> None:
    """Seed Python, numpy and TensorFlow; `deterministic` also turns on TF op determinism (slower)."""
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def configure_precision(training: TrainingConfig) -> None:
    """`mixed_precision`: float16 compute on a GPU, bfloat16 on CPU; variables and logits stay float32."""
    if training.mixed_precision:
        policy = "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"
        keras.mixed_precision.set_global_policy(policy)
    else:
        keras.mixed_precision.set_global_policy("float32")


def distribution_strategy(training: TrainingConfig):
    gpus = tf.config.list_physical_devices("GPU")
    if training.distribute == "multi_worker":
        raise KeraslsError(
            "training.distribute=multi_worker is not available yet: model.fit fails under "
            "MultiWorkerMirroredStrategy in Keras 3.15 (keras#20585); use auto, one_device or mirrored"
        )
    if training.distribute == "mirrored" or (training.distribute == "auto" and len(gpus) > 1):
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def loss_smoothing(targets: TargetsConfig) -> float:
    """ε for the Keras loss. With `prior: class_prior` the pipeline already smoothed the targets: 0 here."""
    return 0.0 if targets.prior == "class_prior" else targets.label_smoothing


def make_optimizer(training: TrainingConfig):
    if training.optimizer == "adamw":
        return keras.optimizers.AdamW(learning_rate=training.learning_rate, weight_decay=training.weight_decay)
    if training.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=training.learning_rate)
    return keras.optimizers.SGD(learning_rate=training.learning_rate, momentum=0.9)


def compile_classifier(model: keras.Model, training: TrainingConfig, targets: TargetsConfig) -> keras.Model:
    """CCE(label_smoothing=ε, from_logits=True) + `nll` and `accuracy`; with a teacher, the distillation loss
    on packed [hard | teacher] targets (`kerasls.losses`), whose metrics read the hard part."""
    soft = targets.soft_labels
    if soft is not None and soft.source == "teacher":
        from kerasls.losses import DistillationLoss, hard_part_metrics

        loss = DistillationLoss(alpha=soft.alpha, temperature=soft.temperature,
                                label_smoothing=loss_smoothing(targets))
        metrics = hard_part_metrics(model.output_shape[-1])
    else:
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=loss_smoothing(targets), from_logits=True)
        metrics = [keras.metrics.CategoricalCrossentropy(from_logits=True, name="nll"),
                   keras.metrics.CategoricalAccuracy(name="accuracy")]
    model.compile(optimizer=make_optimizer(training), loss=loss, metrics=metrics, jit_compile=training.jit_compile)
    return model


_EPOCH = None


def epoch_variable():
    """The epoch number, set by `EpochState` at each epoch start and read by the shuffled training dataset."""
    global _EPOCH
    if _EPOCH is None:
        _EPOCH = tf.Variable(0, dtype=tf.int64, trainable=False, name="kerasls_epoch")
    return _EPOCH


def standard_callbacks(run, training: TrainingConfig, phase="train") -> list:
    """TensorBoard, best checkpoint and early stopping on val NLL, and `EpochState` (history.csv and exact
    crash resume; `kerasls.resume`), which must come last so it sees the others' end-of-epoch state."""
    from kerasls.resume import EpochState

    os.makedirs(run.checkpoints, exist_ok=True)
    checkpoint = keras.callbacks.ModelCheckpoint(
        str(run.checkpoints / "best.weights.h5"), monitor="val_nll", mode="min", save_best_only=True,
        save_weights_only=True,
    )
    callbacks = [keras.callbacks.TensorBoard(str(run.tensorboard), write_graph=False), checkpoint]
    early_stopping = None
    if training.early_stopping:
        early_stopping = keras.callbacks.EarlyStopping(
            monitor="val_nll", mode="min", patience=training.early_stopping, restore_best_weights=True
        )
        callbacks.append(early_stopping)
    callbacks.append(EpochState(run.checkpoints / phase, run.history, epoch_variable(), early_stopping, checkpoint))
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
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def fit(model, train_data, val_data, training: TrainingConfig, run, epochs=None, initial_epoch=0, phase="train"):
    """`model.fit` with the standard callbacks; `epochs`/`initial_epoch`/`phase` continue a run in a second phase."""
    history = model.fit(
        train_data,
        validation_data=val_data,
        epochs=epochs or training.epochs,
        initial_epoch=initial_epoch,
        shuffle=False,  # the dataset shuffles itself each epoch
        callbacks=standard_callbacks(run, training, phase),
        verbose=training.verbose,
    )
    return history


def predict_logits(model, features, batch_size=1024) -> np.ndarray:
    """Logits in float32 for numpy features, or for a `tf.data.Dataset` of (inputs, targets) batches, in order.

    Calls the model directly instead of `model.predict`, which costs ~30 ms of set-up per call.
    """
    if isinstance(features, tf.data.Dataset):
        outputs = [model(inputs, training=False) for inputs, _ in features]
    else:
        outputs = [model(features[start:start + batch_size], training=False)
                   for start in range(0, len(features), batch_size)]
    if not outputs:
        return np.zeros((0, model.output_shape[-1]), dtype=np.float32)
    return np.concatenate([np.asarray(tf.cast(o, tf.float32)) for o in outputs], axis=0)
