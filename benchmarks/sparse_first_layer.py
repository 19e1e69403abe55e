"""The first Dense layer over sparse text features, in training: a dense matmul against TensorFlow's sparse kernels.

A TF-IDF row is tens of thousands of features with a few hundred nonzero (Banking77: 152 of 20,000). A training step
of the template's MLP (first layer `width` x `hidden`, ReLU, logits; softmax cross-entropy; AdamW) is timed three
ways on the same batch, interleaved in one loop:

  (a) dense: the batch made dense, `tf.matmul` (what kerasls does: `TabularPreprocessor.densify` per batch);
  (b) sparse: the batch as a `tf.SparseTensor`, `tf.sparse.sparse_dense_matmul`;
  (c) embedding bag: `tf.gather` of the weight rows of the nonzero features, weighted, `unsorted_segment_sum`.

Forward, backward and the optimizer step (all weights: AdamW's decay touches every row, so a lazy update of the
touched rows only would change the training). Usage::

    python benchmarks/sparse_first_layer.py [--batch 256] [--width 20000] [--nonzero 152] [--hidden 256]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--width", type=int, default=20000)
    parser.add_argument("--nonzero", type=int, default=152)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--classes", type=int, default=77)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args(argv)

    import keras
    import numpy as np
    import tensorflow as tf

    batch, width, nonzero, hidden, classes = args.batch, args.width, args.nonzero, args.hidden, args.classes
    rng = np.random.default_rng(0)
    columns = np.sort(np.stack([rng.choice(width, nonzero, replace=False) for _ in range(batch)]), axis=1)
    weights = rng.random((batch, nonzero)).astype("float32")
    dense = np.zeros((batch, width), "float32")
    np.put_along_axis(dense, columns, weights, axis=1)
    targets = tf.constant(np.eye(classes, dtype="float32")[rng.integers(0, classes, batch)])
    rows = np.repeat(np.arange(batch), nonzero)
    sparse = tf.SparseTensor(np.stack([rows, columns.ravel()], 1).astype("int64"), weights.ravel(), [batch, width])
    dense, rows = tf.constant(dense), tf.constant(rows)
    flat_columns, flat_weights = tf.constant(columns.ravel().astype("int32")), tf.constant(weights.ravel())
    first_layer = {
        "(a) dense: the batch made dense, tf.matmul": lambda kernel: tf.matmul(dense, kernel),
        "(b) sparse: tf.sparse.sparse_dense_matmul": lambda kernel: tf.sparse.sparse_dense_matmul(sparse, kernel),
        "(c) embedding bag: gather + unsorted_segment_sum": lambda kernel: tf.math.unsorted_segment_sum(
            tf.gather(kernel, flat_columns) * flat_weights[:, None], rows, batch),
    }

    def training_step(layer):
        keras.utils.set_random_seed(0)
        variables = [tf.Variable(tf.random.normal([width, hidden], stddev=0.01)), tf.Variable(tf.zeros([hidden])),
                     tf.Variable(tf.random.normal([hidden, classes], stddev=0.05)), tf.Variable(tf.zeros([classes]))]
        optimizer = keras.optimizers.AdamW(1e-3)
        optimizer.build(variables)

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                features = tf.nn.relu(layer(variables[0]) + variables[1])
                logits = tf.matmul(features, variables[2]) + variables[3]
                loss = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(targets, logits))
            gradients = [tf.convert_to_tensor(gradient) for gradient in tape.gradient(loss, variables)]
            optimizer.apply_gradients(zip(gradients, variables))
            return loss

        return step

    steps = {name: training_step(layer) for name, layer in first_layer.items()}
    for step in steps.values():  # tracing
        step(), step()
    times = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            step().numpy()
            times[name].append(time.perf_counter() - start)
    dense_ms = statistics.median(times[next(iter(times))]) * 1e3
    print(f"\nbatch {batch}, {width:,} features with {nonzero} nonzero a row, hidden {hidden}, {classes} classes; "
          f"median of {args.rounds} interleaved rounds; TF {tf.__version__}, {os.cpu_count()} CPUs\n")
    print("| first layer | ms per training step | ratio to dense |\n|---|---:|---:|")
    for name, values in times.items():
        median = statistics.median(values) * 1e3
        print(f"| {name} | {median:.1f} | {median / dense_ms:.2f} |")


if __name__ == "__main__":
    main()
