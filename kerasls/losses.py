"""Knowledge distillation loss (Hinton et al. 2015) with label smoothing on the hard part.

Targets are packed as one tensor [hard (K) | teacher probabilities at temperature T (K)], so they flow through
the same tf.data pipeline as every other target kind. For student logits z:

    L = α · CE(y(1 − ε) + ε/K, softmax(z)) + (1 − α) · T² · KL(q_T ‖ softmax(z / T))

The T² factor keeps the soft term's gradients the same size as the hard term's whatever T is: the gradient of
KL(q_T ‖ softmax(z/T)) with respect to z is (softmax(z/T) − q_T) / T, i.e. it shrinks as 1/T (Hinton et al.
2015, section 2; the keras-io distillation example omits this factor). KL and cross-entropy against q_T differ
by the constant entropy H(q_T), so their gradients are equal; KL is reported because it is 0 for a perfect
student.
"""

import keras
from keras import ops


def split_packed(y_true, num_classes):
    return y_true[:, :num_classes], y_true[:, num_classes:]


def distillation_loss(y_true, logits, alpha=0.5, temperature=4.0, label_smoothing=0.0):
    """Per-example loss for packed targets [hard | q_T] and student logits (see the module docstring)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"`alpha` must be in [0, 1]. Received: alpha={alpha}")
    if temperature <= 0:
        raise ValueError(f"`temperature` must be > 0. Received: temperature={temperature}")
    logits = ops.cast(logits, "float32")
    hard, soft = split_packed(ops.cast(y_true, "float32"), ops.shape(logits)[-1])
    hard_term = keras.losses.categorical_crossentropy(hard, logits, from_logits=True,
                                                      label_smoothing=label_smoothing)
    log_student = ops.log_softmax(logits / temperature, axis=-1)
    log_teacher = ops.log(ops.maximum(soft, 1e-12))
    kl = ops.sum(ops.where(soft > 0, soft * (log_teacher - log_student), 0.0), axis=-1)
    return alpha * hard_term + (1.0 - alpha) * temperature**2 * kl


class DistillationLoss(keras.losses.Loss):
    def __init__(self, alpha=0.5, temperature=4.0, label_smoothing=0.0, name="distillation", **kwargs):
        super().__init__(name=name, **kwargs)
        self.alpha, self.temperature, self.label_smoothing = alpha, temperature, label_smoothing

    def call(self, y_true, y_pred):
        return distillation_loss(y_true, y_pred, self.alpha, self.temperature, self.label_smoothing)

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "temperature": self.temperature,
                "label_smoothing": self.label_smoothing}


def hard_part_metrics(num_classes):
    """`nll` and `accuracy` on the hard part of packed targets, so runs stay comparable with other sources."""
    def nll(y_true, logits):
        return keras.losses.categorical_crossentropy(y_true[:, :num_classes], logits, from_logits=True)

    def accuracy(y_true, logits):
        hard = y_true[:, :num_classes]
        return ops.cast(ops.equal(ops.argmax(hard, axis=-1), ops.argmax(logits, axis=-1)), "float32")

    return [keras.metrics.MeanMetricWrapper(nll, name="nll"), keras.metrics.MeanMetricWrapper(accuracy, name="accuracy")]
