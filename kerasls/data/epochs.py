"""The order of a training epoch, a pure function of (seed, epoch): what makes crash resume exact.

`epoch_variable()` holds the epoch number; `resume.EpochState` sets it at each epoch start and the training
datasets read it when their iterator starts, so a resumed run sees the batches an unbroken run saw. Tables in
memory and cached images use `epoch_shuffled_dataset`; images read from disk use `epoch_permutation`.
"""

from __future__ import annotations

import tensorflow as tf

from kerasls.arrays import shared_tensor

_EPOCH = None


def epoch_variable():
    """The epoch number, set by `EpochState` at each epoch start and read by the shuffled training datasets."""
    global _EPOCH
    if _EPOCH is None:
        _EPOCH = tf.Variable(0, dtype=tf.int64, trainable=False, name="kerasls_epoch")
    return _EPOCH


_PARALLEL_MAPS = {"on": True}


def use_parallel_maps(on: bool) -> None:
    """`training.set_seeds` turns parallel maps off together with op determinism (see `parallel_calls`)."""
    _PARALLEL_MAPS["on"] = bool(on)


def parallel_calls():
    """`num_parallel_calls` for the datasets' maps: AUTOTUNE, or None (a plain map) under op determinism
    (`training.deterministic`), where tf.data would run the map sequentially anyway and, rewriting the parallel
    map, log a C++ notice ("NodeDef mentions attribute use_unbounded_threadpool") that no setting silences."""
    return tf.data.AUTOTUNE if _PARALLEL_MAPS["on"] else None


def epoch_permutation(count, seed, epoch_variable):
    """The permutation of range(count) for the epoch `epoch_variable` holds (read when called, in a dataset)."""
    return tf.random.experimental.stateless_shuffle(
        tf.range(count), seed=tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch_variable, tf.int64)]))


def epoch_shuffled_dataset(features, targets, batch_size, seed, epoch_variable, drop_remainder=False,
                           chunk_bytes=4 << 20, named=None):
    """Batches of (features, targets) in an order that depends only on (seed, epoch), read from `epoch_variable`
    when each epoch's iterator starts. `features` is an array or a dict of arrays and RaggedTensors (one row each
    per target row); `named(features)`, when given, maps each batch's rows to the model's inputs (a table held
    sparse is made dense there, batch by batch).

    The rows of each epoch are a new permutation, cut into consecutive batches. They are gathered a chunk of batches
    (~`chunk_bytes`) at a time, in parallel, and the batches sliced out of the chunk: a gather per batch costs a
    tf.data step each, a gather of the whole table a fresh table-sized buffer each epoch (measured 0.13-0.25 s an
    epoch on 100k rows); chunks cost about what replaying cached batches costs (`benchmarks/tabular_pipeline.py`).
    The last `batch` op of the pipeline groups index batches into chunks, not rows into batches, so `tf.distribute`
    cannot split these batches by itself: with several replicas, `training.fit` re-forms them
    (`replicas.splittable_batches`) and the multi-worker loop splits them (`replicas.split_across_replicas`).
    """
    count = len(targets)
    row_bytes = sum(row_nbytes(array, count) for array in tf.nest.flatten(features)) + targets[:1].nbytes
    features, targets = table_tensors(features), shared_tensor(targets)  # no copy of an aligned table
    drop_remainder = drop_remainder and count >= batch_size
    steps = count // batch_size
    full = steps * batch_size
    has_partial_batch = full < count and not drop_remainder
    batches_per_chunk = max(1, int(chunk_bytes // max(batch_size * row_bytes, 1)))

    def permutation(_):
        return epoch_permutation(count, seed, epoch_variable)

    def rows(indices):
        return tf.nest.map_structure(lambda array: tf.gather(array, indices), features), tf.gather(targets, indices)

    def index_batches(order):
        return tf.data.Dataset.from_tensor_slices(tf.reshape(order[:full], [steps, batch_size]))

    permutations = tf.data.Dataset.from_tensors(0).map(permutation)
    chunks = permutations.flat_map(index_batches).batch(batches_per_chunk).map(rows,
                                                                                num_parallel_calls=parallel_calls())
    dataset = chunks.flat_map(lambda x, y: tf.data.Dataset.from_tensor_slices((x, y)))
    if has_partial_batch:  # the same permutation again (the epoch variable is read when the iterator starts)
        dataset = dataset.concatenate(permutations.map(lambda order: rows(order[full:])))
    if named is not None:
        dataset = dataset.map(lambda x, y: (named(x), y), num_parallel_calls=parallel_calls())
    cardinality = steps + int(has_partial_batch)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(cardinality)).prefetch(tf.data.AUTOTUNE)
    return dataset.with_options(without_static_rewrites())


def table_tensors(features):
    """A table's arrays as tensors over the same memory (`shared_tensor`); RaggedTensors as they are."""
    return tf.nest.map_structure(lambda a: a if isinstance(a, tf.RaggedTensor) else shared_tensor(a), features)


def row_nbytes(array, count: int) -> float:
    """Bytes of one row of `array` (a RaggedTensor: its average row)."""
    if isinstance(array, tf.RaggedTensor):
        return array.flat_values.dtype.size * int(tf.size(array.flat_values)) / max(count, 1)
    return array[:1].nbytes


def without_static_rewrites() -> tf.data.Options:
    """tf.data options that skip the default graph rewrites (map fusion, noop elimination, ...) of a pipeline.

    The rewrites run when the first iterator starts, on a serialized copy of the dataset's graph, and a table held
    in memory is a constant in that graph: on a 9,000 x 20,000 float table (Banking77 with n-grams) the first
    iterator took 3.8 s instead of 0.03 s. The pipelines above already prefetch and map in parallel themselves,
    which is what the rewrites would add; AUTOTUNE still tunes them while they run.
    """
    options = tf.data.Options()
    options.experimental_optimization.apply_default_optimizations = False
    return options
