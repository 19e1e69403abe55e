"""Helpers for tests that train a model directly: `compile_classifier` (kerasls.training: `model.compile` with
kerasls' loss, metrics and optimizer, as train.py writes it out) and in-memory `tf.data` batches in the (seed, epoch)
order (`make_dataset`)."""

import tensorflow as tf

from kerasls.data.epochs import epoch_shuffled_dataset, epoch_variable
from kerasls.training import compile_classifier  # noqa: F401 (the tests import it from here)


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
