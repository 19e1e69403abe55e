"""Global batches split across the replicas of a `tf.distribute` strategy, for the in-memory feed, whose batches
are sliced without a `batch` op that tf.distribute could split itself.

`splittable_batches` is what `training.fit` hands `model.fit` under `mirrored` (several local GPUs);
`split_across_replicas` is the split the multi-worker loop (`kerasls.distributed`) uses.
"""

from __future__ import annotations

import tensorflow as tf


def splittable_batches(strategy, dataset, batch_size):
    """`dataset` as `model.fit` under a strategy with several replicas (`mirrored` on several GPUs) needs it.

    `tf.distribute` splits each global batch across the replicas only when it finds a `batch` op in the
    pipeline, and the in-memory feed (`data.epochs.epoch_shuffled_dataset`) slices its batches without one. With one
    replica the dataset is returned as it is; with several, its batches are re-formed by `unbatch().batch()`
    (the same batches: a full first batch means the partial last one was dropped). Handing Keras a dataset
    split by `split_across_replicas` instead would be cheaper, but Keras 3.15 `fit` then applies AdamW's weight
    decay once per replica (measured: 2x, tests/test_replica_split.py).
    """
    if strategy.num_replicas_in_sync == 1:
        return dataset
    targets = tf.nest.flatten(dataset.element_spec)[-1]  # static batch size where the feed drops the remainder
    return dataset.unbatch().batch(batch_size, drop_remainder=targets.shape[0] == batch_size)


def split_across_replicas(strategy, dataset):
    """A dataset of global batches -> a distributed dataset whose replicas each get a contiguous part of every
    batch (the parts differ by at most one row; a replica may get none of a tiny last batch), for the custom
    loop of `kerasls.distributed`.

    `tf.distribute` splits global batches itself only when it finds a `batch` op in the pipeline, which the
    in-memory feed (`data.epochs.epoch_shuffled_dataset`) has not. Splitting here works for every pipeline: every
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
