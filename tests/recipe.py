"""What a generated train.py writes out in full, as two helpers for tests that train a model directly: `model.compile`
with kerasls' loss, metrics and optimizer, and in-memory `tf.data` batches in the (seed, epoch) order."""

import keras
import tensorflow as tf

from kerasls.config import TargetsConfig, TrainingConfig
from kerasls.data.epochs import epoch_shuffled_dataset, epoch_variable
from kerasls.training import check_logits_dtype, make_loss, make_metrics, make_optimizer


def compile_classifier(model: keras.Model, training: TrainingConfig, targets: TargetsConfig, prior=None,
                       steps=1) -> keras.Model:
    """`model.compile` with `make_loss`, `make_metrics` and `make_optimizer`: what train.py writes out in full."""
    check_logits_dtype(model)
    optimizer = make_optimizer(training, steps)
    if model.dtype_policy.name == "mixed_float16" and not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    model.compile(optimizer=optimizer, loss=make_loss(targets, prior),
                  metrics=make_metrics(targets, model.output_shape[-1]), jit_compile=training.jit_compile)
    return model


def make_dataset(features, targets, batch_size, shuffle=False, seed=0, drop_remainder=False):
    """In-memory features and probability targets -> batched, prefetched `tf.data.Dataset`.

    Training data (`shuffle`) is reshuffled every epoch in an order that depends only on (seed, epoch), so a
    resumed run sees the same batches as an unbroken one. `drop_remainder` keeps every training batch the same
    shape, so XLA compiles once instead of again for a partial last batch; it is ignored when there is less
    than one full batch.
    """
    if shuffle:
        return epoch_shuffled_dataset(features, targets, batch_size, seed, epoch_variable(), drop_remainder)
    dataset = tf.data.Dataset.from_tensor_slices((features, targets))
    drop_remainder = bool(drop_remainder) and len(features) >= batch_size
    return dataset.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)
