"""Multi-worker training (`training.distribute: multi_worker`): a custom training loop for
`tf.distribute.MultiWorkerMirroredStrategy`.

Why it exists: `model.fit` fails under MultiWorkerMirroredStrategy in Keras 3.15 (keras#20585), so
`kerasls.training.fit` calls `fit_multi_worker` instead. It drives the same callbacks (`standard_callbacks`:
history.csv, TensorBoard, best checkpoint and early stopping on `val_nll`, `kerasls.resume.EpochState`) through a
`keras.callbacks.CallbackList`, with the same log keys as `model.fit` (loss, nll, accuracy and their `val_`
twins) and returns the same `keras.callbacks.History`.

What one step computes: `replicas.split_across_replicas` splits each global batch of the training dataset across the
replicas (every worker runs the whole input pipeline and keeps its part of each batch). Each replica's loss is Σ
per-example loss / (examples in the global batch) plus the regularization losses / replicas; the optimizer sums the
replicas' gradients, so a step equals the one-device step on the same global batch up to the order of float
additions. The metrics are sums of per-example values (loss, unsmoothed cross-entropy on the hard part of the
targets, correct predictions) added over replicas, so they match `model.fit`'s means without Keras metric objects.
Validation runs on each worker over the whole validation set, locally: the weights are the same everywhere, so
every worker gets the same numbers, and no batch is split. Not jit-compiled.

Workers must run the same steps, or one waits forever in an all-reduce; so the chief decides. Each worker restores
its own `EpochState`, then every worker takes the chief's variables and epoch number (an all-reduce to which the
other workers add zeros: exact), so workers killed at different points continue together from the chief's last
committed epoch. The chief's early-stopping decision stops every worker, and after training (where early stopping
restores the best weights) every worker takes the chief's weights again. A non-chief worker's own history.csv
can miss an epoch the chief had committed when a crash stopped that worker first.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from kerasls import keras_internals
from kerasls.cluster import cluster_task
from kerasls.errors import KeraslsError
from kerasls.replicas import split_across_replicas

# Sums of one batch (or of an epoch so far), in this order; `count` is the number of examples.
_SUMS = ("loss", "nll", "accuracy", "count")


def multi_worker_strategy():
    """`MultiWorkerMirroredStrategy` over the workers of TF_CONFIG, with a clear error for a missing TF_CONFIG or
    a strategy made after other TensorFlow work."""
    cluster_task()  # TF_CONFIG is present and names this task
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except RuntimeError as error:
        if "program startup" not in str(error):
            raise
        raise KeraslsError("training.distribute=multi_worker: call training.distribution_strategy(config.training) "
                           "before any other TensorFlow work in train.py (TensorFlow: "
                           f"{error})") from None


def fit_multi_worker(model, train_data, val_data, epochs, initial_epoch=0, callbacks=(), verbose=1,
                     metric_names=("nll", "accuracy")):
    """Train `model` (built and compiled in the strategy's scope) like `model.fit(train_data,
    validation_data=val_data, epochs=..., initial_epoch=..., callbacks=...)`; returns the `History`.

    `metric_names` name the unsmoothed cross-entropy and the argmax agreement in the logs, as the model's
    compiled metrics do (`training.compile_classifier`: nll/accuracy, or soft_ce/argmax_agreement)."""
    names = {"nll": metric_names[0], "accuracy": metric_names[1]}
    strategy = model.distribute_strategy
    with strategy.scope():
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
    train_step = _train_step(model, strategy)
    evaluate = _evaluator(model)
    distributed_data = split_across_replicas(strategy, train_data)
    callback_list = keras.callbacks.CallbackList(
        list(callbacks), add_history=True, add_progbar=verbose != 0, verbose=verbose, epochs=epochs,
        steps=_known_steps(train_data), model=model,
    )
    model.stop_training = False
    keras_internals.set_initial_epoch(model, None)  # set by EpochState when it restores a saved state
    callback_list.on_train_begin()
    initial_epoch = _take_chief_state(strategy, model, keras_internals.initial_epoch(model) or initial_epoch)
    epoch_logs = None
    for epoch in range(initial_epoch, epochs):
        callback_list.on_epoch_begin(epoch)  # sets the epoch the shuffled dataset reads: before iterating it
        epoch_logs = _renamed(_train_epoch(train_step, distributed_data, callback_list), names)
        if val_data is not None:
            epoch_logs.update({f"val_{key}": value for key, value in _renamed(evaluate(val_data), names).items()})
        epoch_logs = dict(sorted(epoch_logs.items()))  # model.fit's order
        callback_list.on_epoch_end(epoch, epoch_logs)
        if _chief_says(strategy, model.stop_training):  # every worker stops at the same epoch
            break
    model.optimizer.finalize_variable_values(model.trainable_weights)
    callback_list.on_train_end(logs=epoch_logs)  # early stopping restores the best weights here
    _take_chief_state(strategy, model, 0)
    return next(c for c in callback_list.callbacks if isinstance(c, keras.callbacks.History))


def _renamed(logs: dict, names: dict) -> dict:
    return {names.get(key, key): value for key, value in logs.items()}


def _train_epoch(train_step, distributed_data, callback_list) -> dict:
    totals = np.zeros(len(_SUMS))
    for step, batch in enumerate(distributed_data):
        callback_list.on_train_batch_begin(step)
        totals += train_step(batch).numpy()
        callback_list.on_train_batch_end(step, _means(totals))
    return _means(totals)


def _per_example_terms(model, targets, logits):
    """[loss, nll, correct] per example; nll and accuracy read the first K target columns, the hard part of packed
    distillation targets (`kerasls.losses.hard_part_metrics`) and all of ordinary targets."""
    loss_fn = model.loss.call if isinstance(model.loss, keras.losses.Loss) else keras.losses.get(model.loss)
    logits, targets = tf.cast(logits, tf.float32), tf.cast(targets, tf.float32)
    hard = targets[:, :logits.shape[-1]]
    nll = keras.losses.categorical_crossentropy(hard, logits, from_logits=True)
    correct = tf.cast(tf.equal(tf.argmax(hard, axis=-1), tf.argmax(logits, axis=-1)), tf.float32)
    return tf.cast(loss_fn(targets, logits), tf.float32), nll, correct


def _regularization(model):
    return tf.add_n([tf.cast(loss, tf.float32) for loss in model.losses]) if model.losses else tf.constant(0.0)


def _batch_sums(per_example_loss, nll, correct, regularization):
    """One batch's sums in `_SUMS` order; the loss of each example includes the regularization, as in `fit`."""
    count = tf.cast(tf.shape(nll)[0], tf.float32)
    return tf.stack([tf.reduce_sum(per_example_loss) + count * regularization, tf.reduce_sum(nll),
                     tf.reduce_sum(correct), count])


def _train_step(model, strategy):
    """A `tf.function` running one optimizer step on a distributed global batch; returns its sums (`_SUMS`)."""
    replicas = strategy.num_replicas_in_sync

    def replica_step(batch):
        features, targets = batch
        local_count = tf.cast(tf.shape(targets)[0], tf.float32)
        global_count = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, local_count)
        with tf.GradientTape() as tape:
            logits = model(features, training=True)
            per_example_loss, nll, correct = _per_example_terms(model, targets, logits)
            regularization = _regularization(model)
            loss = tf.reduce_sum(per_example_loss) / global_count + regularization / replicas
            scaled_loss = model.optimizer.scale_loss(loss)  # a LossScaleOptimizer (mixed_float16) scales
        gradients = tape.gradient(scaled_loss, model.trainable_variables)
        if isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer):
            gradients = _non_finite_everywhere_if_anywhere(gradients)
        model.optimizer.apply_gradients(zip(gradients, model.trainable_variables))  # sums over replicas
        return _batch_sums(per_example_loss, nll, correct, regularization)

    @tf.function
    def train_step(batch):
        per_replica = strategy.run(replica_step, args=(batch,))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    return train_step


def _non_finite_everywhere_if_anywhere(gradients):
    """A LossScaleOptimizer (mixed_float16) skips a step whose gradients hold an inf or NaN, but it checks each
    worker's own gradients before they are summed over workers (Keras 3.15): a worker that skips leaves the others
    waiting in the sum forever. So when any replica's gradients overflowed, every replica's become NaN (all skip
    the step and halve the loss scale together); otherwise they are unchanged."""
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(_values(g))) for g in gradients if g is not None])
    overflowed = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM,
                                                                1.0 - tf.cast(finite, tf.float32))
    factor = tf.where(overflowed > 0, float("nan"), 1.0)
    return [g if g is None else _scaled(g, tf.cast(factor, g.dtype)) for g in gradients]


def _values(gradient):
    return gradient.values if isinstance(gradient, tf.IndexedSlices) else gradient


def _scaled(gradient, factor):
    if isinstance(gradient, tf.IndexedSlices):
        return tf.IndexedSlices(gradient.values * factor, gradient.indices, gradient.dense_shape)
    return gradient * factor


def _evaluator(model):
    """A function: validation dataset -> {"loss", "nll", "accuracy"}, evaluated on this worker alone."""

    @tf.function
    def batch_sums(features, targets):
        logits = model(features, training=False)
        return _batch_sums(*_per_example_terms(model, targets, logits), _regularization(model))

    def evaluate(dataset) -> dict:
        totals = np.zeros(len(_SUMS))
        for features, targets in dataset:
            totals += batch_sums(features, targets).numpy()
        return _means(totals)

    return evaluate


def _means(totals) -> dict:
    count = max(totals[_SUMS.index("count")], 1.0)
    return {name: float(total / count) for name, total in zip(_SUMS, totals) if name != "count"}


def _known_steps(dataset):
    steps = int(dataset.cardinality())
    return steps if steps >= 0 else None


def _sum_over_replicas(strategy, value, chief_only=False):
    """Σ of `value` over all replicas of all workers, on every worker. With `chief_only`, only global replica 0
    (the chief's first device) contributes and the others add zeros: a broadcast of the chief's value, exact."""

    def replica_fn(value):
        context = tf.distribute.get_replica_context()
        value = tf.identity(value)  # on this replica's device: the all-reduce needs one, a function input has none
        if chief_only:
            value = tf.where(tf.equal(context.replica_id_in_sync_group, 0), value, tf.zeros_like(value))
        return context.all_reduce(tf.distribute.ReduceOp.SUM, value)

    @tf.function  # an eager `strategy.run` is slow and warns
    def run(value):
        return strategy.run(replica_fn, args=(value,))

    return strategy.experimental_local_results(run(value))[0]


def _from_chief(strategy, tensors):
    """`tensors` as the chief has them, on every worker. Sent as one float64 vector, which holds float32,
    int32/uint32 seeds and int64 step counters exactly."""
    shapes, dtypes = [t.shape for t in tensors], [t.dtype for t in tensors]
    flat = tf.concat([tf.reshape(tf.cast(t, tf.float64), [-1]) for t in tensors], axis=0)
    summed = _sum_over_replicas(strategy, flat, chief_only=True)
    pieces = tf.split(summed, [int(np.prod(shape)) for shape in shapes])
    return [tf.cast(tf.reshape(piece, shape), dtype) for piece, shape, dtype in zip(pieces, shapes, dtypes)]


def _take_chief_state(strategy, model, epoch: int) -> int:
    """Give every worker the chief's model and optimizer variables; returns the chief's `epoch`."""
    variables = list(model.variables) + list(model.optimizer.variables)
    values = _from_chief(strategy, [tf.convert_to_tensor(v) for v in variables] + [tf.constant(epoch, tf.int64)])
    for variable, value in zip(variables, values[:-1]):
        variable.assign(value)
    return int(values[-1])


def _chief_says(strategy, flag: bool) -> bool:
    """The chief's `flag`, on every worker."""
    return bool(_sum_over_replicas(strategy, tf.constant(1.0 if flag else 0.0), chief_only=True) > 0)
