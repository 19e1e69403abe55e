"""Numpy arrays that TensorFlow reads in place instead of copying.

`tf.constant(array)` copies an array into a buffer of TensorFlow's own: for the encoded Banking77 training table
(9,000 x 20,000 floats) that is 720 MB more memory and 2.2 s. A C-contiguous array whose data starts on a 64-byte
boundary (what TensorFlow's CPU kernels require; a misaligned buffer aborts the process) becomes a tensor over
the same memory through DLPack instead. `aligned_zeros` makes such arrays; numpy's own allocations are only
16-byte aligned.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

ALIGNMENT = 64  # bytes
_SHAREABLE = (np.float32, np.float64, np.int32, np.int64)


def aligned_zeros(shape, dtype=np.float32) -> np.ndarray:
    """`np.zeros(shape, dtype)` whose data starts on an ALIGNMENT-byte boundary (an empty array has no data)."""
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.zeros(size + ALIGNMENT, np.uint8)
    start = (-raw.ctypes.data) % ALIGNMENT
    return raw[start:start + size].view(dtype).reshape(shape)


def shared_tensor(array) -> tf.Tensor:
    """A tensor over `array`'s memory when TensorFlow can read it in place, else a copy (`tf.constant`).

    Writing to the array afterwards changes the tensor: the tables handed in here (encoded rows) are not written
    again once encoded."""
    array = np.asarray(array)
    if (array.size and array.dtype.type in _SHAREABLE and array.flags.c_contiguous
            and array.ctypes.data % ALIGNMENT == 0):
        return tf.experimental.dlpack.from_dlpack(array.__dlpack__())
    return tf.constant(array)
