"""`data.epochs.epoch_shuffled_dataset`: the in-memory training feed.

Every epoch is one permutation of the rows, cut into consecutive batches, that depends only on (seed, epoch): so a
resumed run sees the batches an unbroken run saw. Small `chunk_bytes` force several gather chunks per epoch.
"""

import numpy as np
import pytest
import tensorflow as tf

from kerasls.data.epochs import epoch_shuffled_dataset

ROWS, WIDTH, BATCH = 103, 4, 10


def table():
    features = np.arange(ROWS * WIDTH, dtype=np.float32).reshape(ROWS, WIDTH)
    targets = np.eye(3, dtype=np.float32)[np.arange(ROWS) % 3]
    return features, targets


def epoch_batches(dataset, epoch_variable, epoch):
    epoch_variable.assign(epoch)
    return [(x.numpy(), y.numpy()) for x, y in dataset]


@pytest.mark.parametrize("chunk_bytes", [1, 3 * BATCH * (WIDTH + 3) * 4, 4 << 20])
def test_each_epoch_is_a_permutation_cut_into_batches(chunk_bytes):
    features, targets = table()
    epoch = tf.Variable(0, dtype=tf.int64)
    dataset = epoch_shuffled_dataset(features, targets, BATCH, seed=7, epoch_variable=epoch,
                                     chunk_bytes=chunk_bytes)
    assert int(dataset.cardinality()) == 11
    batches = epoch_batches(dataset, epoch, 3)
    assert [len(x) for x, _ in batches] == [BATCH] * 10 + [3]
    rows = np.concatenate([x for x, _ in batches])[:, 0] / WIDTH
    assert sorted(rows.astype(int).tolist()) == list(range(ROWS))
    assert not np.array_equal(rows, np.arange(ROWS))  # shuffled
    for x, y in batches:  # targets travel with their rows
        np.testing.assert_array_equal(y, targets[(x[:, 0] / WIDTH).astype(int)])
    expected = tf.random.experimental.stateless_shuffle(tf.range(ROWS), seed=[7, 3]).numpy()
    np.testing.assert_array_equal(rows, expected)  # the batches are consecutive runs of the epoch's permutation


def test_the_order_depends_only_on_seed_and_epoch():
    features, targets = table()
    epoch = tf.Variable(0, dtype=tf.int64)
    first = epoch_shuffled_dataset(features, targets, BATCH, seed=7, epoch_variable=epoch, chunk_bytes=500)
    again = epoch_shuffled_dataset(features, targets, BATCH, seed=7, epoch_variable=epoch)
    other_seed = epoch_shuffled_dataset(features, targets, BATCH, seed=8, epoch_variable=epoch)

    def rows(dataset, at):
        return np.concatenate([x for x, _ in epoch_batches(dataset, epoch, at)])[:, 0]

    np.testing.assert_array_equal(rows(first, 2), rows(again, 2))
    np.testing.assert_array_equal(rows(first, 2), rows(first, 2))  # a new iterator of the same epoch
    assert not np.array_equal(rows(first, 2), rows(first, 5))
    assert not np.array_equal(rows(first, 2), rows(other_seed, 2))


def test_drop_remainder_keeps_full_batches_of_static_shape():
    features, targets = table()
    epoch = tf.Variable(1, dtype=tf.int64)
    dataset = epoch_shuffled_dataset(features, targets, BATCH, seed=0, epoch_variable=epoch, drop_remainder=True)
    assert dataset.element_spec[0].shape.as_list() == [BATCH, WIDTH]
    assert int(dataset.cardinality()) == 10
    assert [len(x) for x, _ in epoch_batches(dataset, epoch, 1)] == [BATCH] * 10


def test_fewer_rows_than_a_batch_make_one_batch_even_with_drop_remainder():
    features, targets = table()
    epoch = tf.Variable(0, dtype=tf.int64)
    dataset = epoch_shuffled_dataset(features[:4], targets[:4], BATCH, seed=0, epoch_variable=epoch,
                                     drop_remainder=True)
    assert [len(x) for x, _ in epoch_batches(dataset, epoch, 0)] == [4]
