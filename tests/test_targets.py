"""Soft-target math against closed forms, and the pipeline's targets + the Keras loss against y(1-ε)+ε/K."""

import keras
import numpy as np
import pytest

from kerasls import targets


def closed_form_smoothed_cross_entropy(labels, logits, epsilon):
    """Mean over rows of -Σ_k (y_k(1-ε) + ε/K) log softmax(z)_k, written out with numpy."""
    num_classes = logits.shape[1]
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    total = 0.0
    for row, label in enumerate(labels):
        for k in range(num_classes):
            y = 1.0 if k == label else 0.0
            total -= (y * (1 - epsilon) + epsilon / num_classes) * log_probs[row, k]
    return total / len(labels)


@pytest.mark.parametrize("num_classes", [2, 5])
@pytest.mark.parametrize("epsilon", [0.0, 0.05, 0.1, 0.3])
def test_pipeline_targets_and_keras_loss_match_closed_form(num_classes, epsilon):
    rng = np.random.default_rng(num_classes)
    logits = rng.normal(scale=3.0, size=(64, num_classes))
    labels = rng.integers(0, num_classes, size=64)
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=epsilon, from_logits=True)
    keras_value = float(loss(targets.one_hot(labels, num_classes), logits.astype(np.float32)))
    expected = closed_form_smoothed_cross_entropy(labels, logits, epsilon)
    assert keras_value == pytest.approx(expected, abs=1e-5, rel=1e-6)


def test_smooth_is_the_keras_formula():
    y = targets.one_hot(np.array([0, 2]), 4)
    np.testing.assert_allclose(targets.smooth(y, 0.2), [[0.85, 0.05, 0.05, 0.05], [0.05, 0.05, 0.85, 0.05]], atol=1e-7)


def test_class_prior_smooth_closed_form_and_rows_sum_to_one():
    labels = np.array([0, 0, 0, 1])
    prior = targets.class_prior(labels, 3)
    np.testing.assert_allclose(prior, [0.75, 0.25, 0.0])
    smoothed = targets.class_prior_smooth(targets.one_hot(labels, 3), 0.1, prior)
    np.testing.assert_allclose(smoothed[3], [0.075, 0.9 + 0.025, 0.0], atol=1e-7)
    np.testing.assert_allclose(smoothed.sum(axis=1), 1.0, atol=1e-6)


def test_from_votes_and_from_teacher():
    np.testing.assert_allclose(targets.from_votes([[3, 1, 0]]), [[0.75, 0.25, 0.0]])
    np.testing.assert_allclose(targets.from_votes([[3, 1, 0]], alpha=1.0), [[4 / 7, 2 / 7, 1 / 7]], rtol=1e-6)
    logits = np.array([[2.0, 0.0]])
    np.testing.assert_allclose(targets.from_teacher(logits, 2.0), [[np.e / (np.e + 1), 1 / (np.e + 1)]], rtol=1e-6)


def test_invalid_distribution_rows():
    rows = np.array([[0.5, 0.5], [0.7, 0.2], [np.nan, 1.0], [-0.1, 1.1], [1.0, 0.0]])
    assert targets.invalid_distribution_rows(rows).tolist() == [1, 2, 3]


@pytest.mark.parametrize("epsilon", [-0.1, 1.0, 1.5])
def test_epsilon_out_of_range_names_the_value(epsilon):
    with pytest.raises(ValueError, match=f"label_smoothing={epsilon}"):
        targets.smooth(np.eye(2), epsilon)


def test_one_hot_rejects_out_of_range_indices():
    with pytest.raises(ValueError, match="max=3"):
        targets.one_hot(np.array([0, 3]), 3)


def test_class_prior_moves_smoothing_from_the_loss_to_the_targets():
    from kerasls.config import TargetsConfig
    from kerasls.training import loss_smoothing

    assert loss_smoothing(TargetsConfig(label_smoothing=0.1)) == 0.1
    assert loss_smoothing(TargetsConfig(label_smoothing=0.1, prior="class_prior")) == 0.0  # ε applied once
