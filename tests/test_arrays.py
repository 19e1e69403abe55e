"""Encoded tables reach TensorFlow without a copy when they can (`kerasls.arrays`), and safely when they cannot."""

import numpy as np
import pytest
import tensorflow as tf

from kerasls.arrays import ALIGNMENT, aligned_zeros, shared_tensor
from kerasls.data.epochs import epoch_shuffled_dataset


@pytest.mark.parametrize("shape, dtype", [((3, 5), np.float32), ((1000, 37), np.float32), ((7,), np.int64),
                                          ((0, 4), np.float32)])
def test_aligned_zeros_are_zeros_on_a_64_byte_boundary(shape, dtype):
    array = aligned_zeros(shape, dtype)
    assert array.shape == shape and array.dtype == dtype and array.flags.c_contiguous
    assert not array.any() and (array.size == 0 or array.ctypes.data % ALIGNMENT == 0)


def test_an_aligned_table_is_shared_and_any_other_array_copied():
    table = aligned_zeros((4, 3))
    table[1, 2] = 5.0
    shared = shared_tensor(table)
    table[2, 0] = 7.0  # the same memory: the tensor sees it (tables are not written again once encoded)
    np.testing.assert_array_equal(shared.numpy(), table)

    misaligned = aligned_zeros((13,)).reshape(-1)[1:].reshape(3, 4)  # 4 bytes past a boundary: would abort TF
    assert misaligned.ctypes.data % ALIGNMENT != 0
    copied = shared_tensor(misaligned)
    misaligned[0, 0] = 9.0
    assert copied.numpy()[0, 0] == 0.0 and copied.shape == (3, 4)
    strided = np.arange(12, dtype=np.float32).reshape(3, 4)[:, ::2]
    np.testing.assert_array_equal(shared_tensor(strided).numpy(), strided)
    np.testing.assert_array_equal(shared_tensor(np.array([True, False])).numpy(), [True, False])


def test_the_training_order_is_the_same_from_a_shared_table():
    rng = np.random.default_rng(0)
    plain = rng.normal(size=(50, 6)).astype(np.float32)
    table = aligned_zeros(plain.shape)
    table[:] = plain
    targets = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 50)]
    epoch = tf.Variable(3, dtype=tf.int64)
    batches = [[(x.numpy(), y.numpy()) for x, y in epoch_shuffled_dataset(features, targets, 8, 11, epoch)]
               for features in (plain, table)]
    assert len(batches[0]) == len(batches[1]) == 7
    for (x0, y0), (x1, y1) in zip(*batches):
        np.testing.assert_array_equal(x0, x1)
        np.testing.assert_array_equal(y0, y1)
