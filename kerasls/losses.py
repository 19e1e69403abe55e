"""Losses that smooth inside the loss, so metrics always read the unsmoothed targets.

Label smoothing toward the training class prior π (`targets.prior: class_prior`, Pereyra et al. 2017):

    L = CE(y(1 − ε) + ε·π, softmax(z))

the counterpart of `keras.losses.CategoricalCrossentropy(label_smoothing=ε)`, which smooths toward ε/K.

Knowledge distillation (Hinton et al. 2015) with label smoothing on the hard part. Targets are packed as one
tensor [hard (K) | teacher probabilities at temperature T (K)], so they flow through the same tf.data pipeline
as every other target kind. For student logits z:

    L = α · CE(y(1 − ε) + ε·π, softmax(z)) + (1 − α) · T² · KL(q_T ‖ softmax(z / T))

with π uniform (1/K) unless `prior` is given. The T² factor keeps the soft term's gradients the same size as the
hard term's whatever T is: the gradient of KL(q_T ‖ softmax(z/T)) with respect to z is (softmax(z/T) − q_T) / T,
i.e. it shrinks as 1/T (Hinton et al. 2015, section 2; the current keras-io knowledge-distillation example
multiplies its soft term by `temperature**2` too, an early revision of it did not). KL and cross-entropy against
q_T differ by the constant entropy H(q_T), so their gradients are equal; KL is reported because it is 0 for a
perfect student.
"""

import keras
from keras import ops


def split_packed(y_true, num_classes):
    return y_true[:, :num_classes], y_true[:, num_classes:]


def _check_smoothing(label_smoothing):
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"`label_smoothing` must be in [0, 1). Received: label_smoothing={label_smoothing}")


def smoothed_crossentropy(y_true, logits, label_smoothing=0.0, prior=None):
    """Per-example CE(y(1 − ε) + ε·π, softmax(z)); π = `prior` ([K] distribution), or uniform 1/K when None."""
    _check_smoothing(label_smoothing)
    logits = ops.cast(logits, "float32")
    y_true = ops.cast(y_true, "float32")
    if prior is None:
        return keras.losses.categorical_crossentropy(y_true, logits, from_logits=True,
                                                     label_smoothing=label_smoothing)
    prior = ops.convert_to_tensor(prior, "float32")
    smoothed = y_true * (1.0 - label_smoothing) + label_smoothing * prior
    return keras.losses.categorical_crossentropy(smoothed, logits, from_logits=True)


class PriorSmoothedCrossentropy(keras.losses.Loss):
    """`CategoricalCrossentropy(from_logits=True)` with targets smoothed toward the class prior π inside the loss."""

    def __init__(self, label_smoothing=0.0, prior=None, name="prior_smoothed_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        _check_smoothing(label_smoothing)
        self.label_smoothing = label_smoothing
        self.prior = None if prior is None else [float(p) for p in prior]

    def call(self, y_true, y_pred):
        return smoothed_crossentropy(y_true, y_pred, self.label_smoothing, self.prior)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing, "prior": self.prior}


def distillation_loss(y_true, logits, alpha=0.5, temperature=4.0, label_smoothing=0.0, prior=None):
    """Per-example loss for packed targets [hard | q_T] and student logits (see the module docstring)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"`alpha` must be in [0, 1]. Received: alpha={alpha}")
    if temperature <= 0:
        raise ValueError(f"`temperature` must be > 0. Received: temperature={temperature}")
    logits = ops.cast(logits, "float32")
    hard, soft = split_packed(ops.cast(y_true, "float32"), ops.shape(logits)[-1])
    hard_term = smoothed_crossentropy(hard, logits, label_smoothing, prior)
    log_student = ops.log_softmax(logits / temperature, axis=-1)
    log_teacher = ops.log(ops.maximum(soft, 1e-12))
    kl = ops.sum(ops.where(soft > 0, soft * (log_teacher - log_student), 0.0), axis=-1)
    return alpha * hard_term + (1.0 - alpha) * temperature**2 * kl


class DistillationLoss(keras.losses.Loss):
    def __init__(self, alpha=0.5, temperature=4.0, label_smoothing=0.0, prior=None, name="distillation", **kwargs):
        super().__init__(name=name, **kwargs)
        self.alpha, self.temperature, self.label_smoothing = alpha, temperature, label_smoothing
        self.prior = None if prior is None else [float(p) for p in prior]

    def call(self, y_true, y_pred):
        return distillation_loss(y_true, y_pred, self.alpha, self.temperature, self.label_smoothing, self.prior)

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "temperature": self.temperature,
                "label_smoothing": self.label_smoothing, "prior": self.prior}


def hard_part_metrics(num_classes):
    """`nll` and `accuracy` on the hard part of packed targets, so runs stay comparable with other sources."""
    def nll(y_true, logits):
        return keras.losses.categorical_crossentropy(y_true[:, :num_classes], logits, from_logits=True)

    def accuracy(y_true, logits):
        hard = y_true[:, :num_classes]
        return ops.cast(ops.equal(ops.argmax(hard, axis=-1), ops.argmax(logits, axis=-1)), "float32")

    return [keras.metrics.MeanMetricWrapper(nll, name="nll"),
            keras.metrics.MeanMetricWrapper(accuracy, name="accuracy")]
