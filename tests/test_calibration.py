"""Tests for kerasls.calibration: golden values, closed forms, an independent loop implementation, synthetic data."""

import json
import math

import numpy as np
import pytest

from kerasls import calibration

GOLDEN_PROBS = np.array([[0.25, 0.2, 0.55], [0.55, 0.05, 0.4], [0.1, 0.3, 0.6], [0.9, 0.05, 0.05]])
GOLDEN_LABELS = np.array([0, 1, 2, 0])


def random_probs(rng, n, k, sharpness=2.0):
    return calibration.softmax(rng.normal(size=(n, k)) * sharpness)


def sample_labels(rng, probs):
    """One label per row drawn from the row's distribution (inverse CDF)."""
    cumulative = np.cumsum(probs, axis=1)
    draws = rng.random((probs.shape[0], 1))
    return np.minimum((draws > cumulative).sum(axis=1), probs.shape[1] - 1)


def reference_ece(probs, labels, bins):
    """Independent top-label ECE with explicit python loops; bins [a, b) except the last [a, 1]."""
    edges = [i / bins for i in range(bins + 1)]
    members = [[] for _ in range(bins)]
    for row, label in zip(probs.tolist(), labels.tolist()):
        confidence = max(row)
        prediction = row.index(confidence)
        for b in range(bins):
            last = b == bins - 1
            if edges[b] <= confidence < edges[b + 1] or (last and confidence == 1.0):
                members[b].append((confidence, prediction == label))
                break
    total, worst = 0.0, 0.0
    for bin_members in members:
        if bin_members:
            mean_confidence = sum(c for c, _ in bin_members) / len(bin_members)
            accuracy = sum(1.0 for _, hit in bin_members if hit) / len(bin_members)
            total += len(bin_members) / len(labels) * abs(accuracy - mean_confidence)
            worst = max(worst, abs(accuracy - mean_confidence))
    return total, worst


# ------------------------------------------------------------------------------------------------ softmax
def test_softmax_is_stable_and_normalised():
    logits = np.array([[1000.0, 1000.0, -1000.0], [0.0, 1.0, 2.0]])
    probs = calibration.softmax(logits)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    np.testing.assert_allclose(probs[0], [0.5, 0.5, 0.0], atol=1e-12)
    expected = np.exp([0.0, 1.0, 2.0]) / np.exp([0.0, 1.0, 2.0]).sum()
    np.testing.assert_allclose(probs[1], expected)
    np.testing.assert_allclose(calibration.softmax(logits, temperature=2.0), calibration.softmax(logits / 2.0))


# ------------------------------------------------------------------------------------------------ ECE / MCE
def test_golden_vector():
    assert calibration.expected_calibration_error(GOLDEN_PROBS, GOLDEN_LABELS, bins=3) == pytest.approx(0.2, abs=1e-4)
    assert calibration.maximum_calibration_error(GOLDEN_PROBS, GOLDEN_LABELS, bins=3) == pytest.approx(
        0.2333, abs=1e-4)


def test_reliability_bins_golden():
    table = calibration.reliability_bins(GOLDEN_PROBS, GOLDEN_LABELS, bins=3)
    np.testing.assert_allclose(table["edges"], [0.0, 1 / 3, 2 / 3, 1.0])
    np.testing.assert_array_equal(table["count"], [0, 3, 1])
    assert np.isnan(table["confidence"][0]) and np.isnan(table["accuracy"][0])
    np.testing.assert_allclose(table["confidence"][1:], [(0.55 + 0.55 + 0.6) / 3, 0.9])
    np.testing.assert_allclose(table["accuracy"][1:], [1 / 3, 1.0])


def test_bin_edges_follow_histogram_convention():
    # Confidence exactly on an inner edge goes to the upper bin; 1.0 goes to the last (closed) bin.
    probs = np.array([[0.5, 0.5], [1.0, 0.0], [0.75, 0.25]])
    table = calibration.reliability_bins(probs, np.array([0, 0, 0]), bins=4)
    np.testing.assert_array_equal(table["count"], [0, 0, 1, 2])
    np.testing.assert_array_equal(table["count"], np.histogram(probs.max(axis=1), bins=4, range=(0, 1))[0])
    # Values on float edges such as 0.3 or 0.7 land where np.histogram puts them.
    rng = np.random.default_rng(0)
    confidence = np.concatenate([np.arange(5, 11) / 10, np.arange(15, 31) / 30, rng.uniform(0.5, 1.0, 200)])
    probs = np.stack([confidence, 1 - confidence], axis=1)
    for bins in (3, 7, 10, 15, 30):
        table = calibration.reliability_bins(probs, np.zeros(len(confidence), dtype=int), bins=bins)
        np.testing.assert_array_equal(table["count"], np.histogram(confidence, bins=bins, range=(0, 1))[0])


@pytest.mark.parametrize("bins", [1, 3, 10, 15, 37])
def test_ece_matches_loop_reference(bins):
    rng = np.random.default_rng(bins)
    probs = random_probs(rng, 500, 4)
    probs[:5] = np.eye(4)[[0, 1, 2, 3, 0]]  # confidence exactly 1.0
    labels = rng.integers(0, 4, size=500)
    expected_ece, expected_mce = reference_ece(probs, labels, bins)
    assert calibration.expected_calibration_error(probs, labels, bins) == pytest.approx(expected_ece, abs=1e-12)
    assert calibration.maximum_calibration_error(probs, labels, bins) == pytest.approx(expected_mce, abs=1e-12)


def test_perfectly_calibrated_ece_shrinks_with_n():
    rng = np.random.default_rng(0)
    errors = []
    for n in (2_000, 200_000):
        confidence = rng.uniform(0.5, 1.0, size=n)
        correct = rng.random(n) < confidence
        # Two classes: predicted class 0 with probability `confidence`; label 0 when correct.
        probs = np.stack([confidence, 1.0 - confidence], axis=1)
        labels = np.where(correct, 0, 1)
        errors.append(calibration.expected_calibration_error(probs, labels, bins=15))
        assert calibration.adaptive_calibration_error(probs, labels, bins=15) < 0.05
    assert errors[1] < 0.01
    assert errors[1] < errors[0]


def test_adaptive_ece_uses_equal_mass_bins():
    probs = np.array([[0.6, 0.4], [0.7, 0.3], [0.8, 0.2], [0.9, 0.1]])
    labels = np.array([0, 1, 0, 0])
    # Two bins of two rows: {0.6, 0.7} acc 0.5 conf 0.65; {0.8, 0.9} acc 1 conf 0.85.
    expected = 0.5 * abs(0.5 - 0.65) + 0.5 * abs(1.0 - 0.85)
    assert calibration.adaptive_calibration_error(probs, labels, bins=2) == pytest.approx(expected)
    # More bins than rows: empty groups are skipped, one row per group.
    expected_single = np.mean([abs(1 - 0.6), abs(0 - 0.7), abs(1 - 0.8), abs(1 - 0.9)])
    assert calibration.adaptive_calibration_error(probs, labels, bins=10) == pytest.approx(expected_single)


def test_classwise_ece_closed_form():
    probs = np.array([[0.6, 0.4], [0.7, 0.3], [0.8, 0.2], [0.9, 0.1]])
    labels = np.array([0, 1, 0, 0])
    # One bin: per class |mean p_k - mean 1[y=k]|. Class 0: |0.75 - 0.75| = 0; class 1: |0.25 - 0.25| = 0.
    assert calibration.classwise_calibration_error(probs, labels, bins=1) == pytest.approx(0.0, abs=1e-12)
    # Two bins [0, .5), [.5, 1]: class 0 all in bin 2 -> 0; class 1 all in bin 1 -> 0.
    assert calibration.classwise_calibration_error(probs, labels, bins=2) == pytest.approx(0.0, abs=1e-12)
    # Ten bins, values away from the edges: each row alone -> mean over rows of |p_k - 1[y=k]|, the same for
    # both classes when K=2.
    probs = np.array([[0.62, 0.38], [0.73, 0.27], [0.84, 0.16], [0.95, 0.05]])
    expected = np.mean([0.38, 0.73, 0.16, 0.05])
    assert calibration.classwise_calibration_error(probs, labels, bins=10) == pytest.approx(expected)


# ------------------------------------------------------------------------------------------------ NLL, Brier, soft
def test_nll_closed_form_and_clipping():
    expected = -np.mean(np.log([0.25, 0.05, 0.6, 0.9]))
    assert calibration.negative_log_likelihood(GOLDEN_PROBS, GOLDEN_LABELS) == pytest.approx(expected)
    zero = np.array([[1.0, 0.0]])
    assert calibration.negative_log_likelihood(zero, [1]) == pytest.approx(-math.log(1e-12))


def test_brier_closed_form():
    expected = np.mean([
        0.75**2 + 0.2**2 + 0.55**2,
        0.55**2 + 0.95**2 + 0.4**2,
        0.1**2 + 0.3**2 + 0.4**2,
        0.1**2 + 0.05**2 + 0.05**2,
    ])
    assert calibration.brier_score(GOLDEN_PROBS, GOLDEN_LABELS) == pytest.approx(expected)
    assert calibration.brier_score([[0.0, 1.0]], [0]) == pytest.approx(2.0)
    assert calibration.brier_score([[1.0, 0.0]], [0]) == pytest.approx(0.0)


def test_soft_cross_entropy_and_kl():
    rng = np.random.default_rng(3)
    p, q = random_probs(rng, 50, 5), random_probs(rng, 50, 5)
    q[0] = [1.0, 0.0, 0.0, 0.0, 0.0]  # zero entries: 0 log 0 = 0
    assert calibration.soft_kl(q, q) == pytest.approx(0.0, abs=1e-12)
    assert calibration.soft_kl(p, q) > 0
    entropy = np.mean(-np.sum(np.where(q > 0, q * np.log(np.where(q > 0, q, 1.0)), 0.0), axis=1))
    assert calibration.soft_cross_entropy(p, q) == pytest.approx(entropy + calibration.soft_kl(p, q))
    # Hard targets: soft cross-entropy is the NLL.
    labels = rng.integers(0, 5, size=50)
    assert calibration.soft_cross_entropy(p, np.eye(5)[labels]) == pytest.approx(
        calibration.negative_log_likelihood(p, labels))


# ------------------------------------------------------------------------------------------------ temperature
def overconfident_case(seed=0, n=4000, k=5, scale=3.0):
    rng = np.random.default_rng(seed)
    true_logits = rng.normal(size=(n, k)) * 1.5
    labels = sample_labels(rng, calibration.softmax(true_logits))
    return true_logits, true_logits * scale, labels


def test_fit_temperature_recovers_overconfidence():
    _, logits, labels = overconfident_case()
    temperature = calibration.fit_temperature(logits, labels)
    assert isinstance(temperature, float)
    assert temperature == pytest.approx(3.0, rel=0.1)
    before = calibration.evaluate(logits, labels)
    after = calibration.evaluate(logits, labels, temperature=temperature)
    assert after["nll_calibrated"] < before["nll"]
    assert after["ece_calibrated"] < before["ece"]
    assert after["accuracy"] == before["accuracy"]
    calibrated = calibration.softmax(logits, temperature)
    np.testing.assert_array_equal(calibrated.argmax(axis=1), calibration.softmax(logits).argmax(axis=1))


def test_fit_temperature_on_calibrated_logits_is_one():
    true_logits, _, labels = overconfident_case(seed=1)
    assert calibration.fit_temperature(true_logits, labels) == pytest.approx(1.0, rel=0.1)


def test_fit_temperature_returns_one_when_no_improvement():
    # Uniform logits: NLL is log K for every T, so nothing beats T=1.
    assert calibration.fit_temperature(np.zeros((10, 3)), np.arange(10) % 3) == 1.0
    # Bounds that exclude the optimum (~3) and make NLL worse than T=1: return 1.0, not the bound.
    _, logits, labels = overconfident_case(seed=2, n=500)
    assert calibration.fit_temperature(logits, labels, bounds=(0.05, 0.5)) == 1.0


def grid_search_temperature(objective, low=0.05, high=20.0, points=40001):
    """An independent scalar search: the best of a dense log-spaced grid, refined on a second grid around it."""
    grid = np.exp(np.linspace(np.log(low), np.log(high), points))
    best = grid[np.argmin([objective(t) for t in grid])]
    fine = np.exp(np.linspace(np.log(best) - 2e-4, np.log(best) + 2e-4, 2001))
    return float(fine[np.argmin([objective(t) for t in fine])])


def soft_objective(logits, q):
    def objective(temperature):
        z = logits / temperature
        z = z - z.max(axis=1, keepdims=True)
        return float(-np.mean(np.sum(q * (z - np.log(np.exp(z).sum(axis=1, keepdims=True))), axis=1)))
    return objective


def test_fit_temperature_soft_matches_an_independent_search_of_its_objective():
    """Known p(y|x): the distributions q are softmax(z_true); the model's logits are 2.5x over-confident and a
    little noisy. T minimising H(q, softmax(z/T)) is near 2.5 and equals a grid search of the same objective."""
    rng = np.random.default_rng(4)
    true_logits = rng.normal(0, 1.2, (600, 5))
    q = calibration.softmax(true_logits)
    logits = 2.5 * true_logits + rng.normal(0, 0.3, true_logits.shape)
    fitted = calibration.fit_temperature_soft(logits, q)
    assert fitted == pytest.approx(grid_search_temperature(soft_objective(logits, q)), abs=1e-3)
    assert fitted == pytest.approx(2.5, rel=0.1)
    # one-hot q: the same T as the hard-label fit
    labels = rng.integers(0, 5, 600)
    assert calibration.fit_temperature_soft(logits, np.eye(5)[labels]) == pytest.approx(
        calibration.fit_temperature(logits, labels), rel=1e-4)


def test_soft_temperature_is_not_the_argmax_temperature_on_ambiguous_rows():
    """Fitting T to the argmax of overlapping distributions sharpens the model far below what the
    distributions support: the failure the soft fit exists for (soft T near 1, argmax T far below 1)."""
    rng = np.random.default_rng(5)
    true_logits = rng.normal(0, 0.8, (800, 5))
    q = calibration.softmax(true_logits)
    soft_t = calibration.fit_temperature_soft(true_logits, q)
    argmax_t = calibration.fit_temperature(true_logits, q.argmax(axis=1))
    assert soft_t == pytest.approx(1.0, abs=0.05)
    assert argmax_t < 0.5
    served_soft = calibration.soft_cross_entropy(calibration.softmax(true_logits, soft_t), q)
    served_argmax = calibration.soft_cross_entropy(calibration.softmax(true_logits, argmax_t), q)
    assert served_soft < served_argmax


def test_argmax_ties_counts_rows_with_a_shared_maximum():
    q = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5], [0.4, 0.2, 0.4], [1 / 3, 1 / 3, 1 / 3], [0.1, 0.8, 0.1]])
    assert calibration.argmax_ties(q) == 3


def test_fit_temperature_checks_bounds():
    # Separable data: NLL falls as T -> 0, so the lower bound wins.
    logits = np.array([[2.0, 0.0], [0.0, 2.0]] * 5)
    labels = np.array([0, 1] * 5)
    assert calibration.fit_temperature(logits, labels, bounds=(0.1, 10.0)) == pytest.approx(0.1)


# ------------------------------------------------------------------------------------------------ thresholds
def test_confidence_thresholds_hand_made():
    # Confidences 0.55 (wrong), 0.65 (right), 0.75 (wrong), 0.85 (right), 0.95 (right) x2.
    confidence = np.array([0.55, 0.65, 0.75, 0.85, 0.95, 0.95])
    probs = np.stack([confidence, 1 - confidence], axis=1)
    labels = np.array([1, 0, 1, 0, 0, 0])
    table = calibration.confidence_thresholds(probs, labels, thresholds=[0.0, 0.6, 0.8, 0.99],
                                              target_accuracy=0.9)
    rows = {row["threshold"]: row for row in table["rows"]}
    assert rows[0.0] == {"threshold": 0.0, "coverage": 1.0, "accuracy": pytest.approx(4 / 6), "n": 6}
    assert rows[0.6]["n"] == 5 and rows[0.6]["coverage"] == pytest.approx(5 / 6)
    assert rows[0.6]["accuracy"] == pytest.approx(4 / 5)
    assert rows[0.8] == {"threshold": 0.8, "coverage": pytest.approx(0.5), "accuracy": 1.0, "n": 3}
    assert rows[0.99] == {"threshold": 0.99, "coverage": 0.0, "accuracy": None, "n": 0}
    # Searched over the data's confidences, not the grid: 0.85 is the smallest with accuracy >= 0.9.
    assert table["smallest_threshold_for_target"] == pytest.approx(0.85)
    assert table["coverage_at_target"] == pytest.approx(0.5)
    assert table["target_accuracy"] == 0.9
    json.dumps(table)
    # Exactly reaching the target counts (4 of 5 = 0.8 at t = 0.65).
    assert calibration.confidence_thresholds(probs, labels, target_accuracy=0.8)[
        "smallest_threshold_for_target"] == pytest.approx(0.65)


def test_confidence_thresholds_never_reached():
    probs = np.array([[0.9, 0.1], [0.8, 0.2]])
    table = calibration.confidence_thresholds(probs, np.array([1, 1]))
    assert table["smallest_threshold_for_target"] is None and table["coverage_at_target"] is None
    assert [row["threshold"] for row in table["rows"]] == list(calibration.DEFAULT_THRESHOLDS)


def test_evaluate_is_json_ready():
    _, logits, labels = overconfident_case(n=300)
    metrics = calibration.evaluate(logits, labels, temperature=2.5, bins=10)
    text = json.dumps(metrics)
    assert "NaN" not in text
    for key in ("n", "accuracy", "nll", "ece", "mce", "adaptive_ece", "classwise_ece", "brier", "temperature",
                "nll_calibrated", "ece_calibrated", "mce_calibrated", "brier_calibrated", "thresholds"):
        assert key in metrics
    assert metrics["n"] == 300 and metrics["temperature"] == 2.5
    probs = calibration.softmax(logits, 2.5)
    assert metrics["ece_calibrated"] == pytest.approx(calibration.expected_calibration_error(probs, labels, 10))


# ------------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("call, message", [
    (lambda: calibration.expected_calibration_error(GOLDEN_PROBS, GOLDEN_LABELS, bins=0), "bins=0"),
    (lambda: calibration.expected_calibration_error(GOLDEN_PROBS, GOLDEN_LABELS, bins=2.5), "bins=2.5"),
    (lambda: calibration.expected_calibration_error(GOLDEN_PROBS, GOLDEN_LABELS[:3]), r"\(3,\)"),
    (lambda: calibration.expected_calibration_error(GOLDEN_PROBS[0], GOLDEN_LABELS), r"\(3,\)"),
    (lambda: calibration.negative_log_likelihood(GOLDEN_PROBS, [0, 1, 3, 0]), r"\[0, 3\]"),
    (lambda: calibration.negative_log_likelihood(GOLDEN_PROBS, [0, -1, 2, 0]), r"\[-1, 2\]"),
    (lambda: calibration.brier_score(GOLDEN_PROBS, [0.5, 1, 2, 0]), "float64"),
    (lambda: calibration.brier_score(GOLDEN_PROBS * 2, GOLDEN_LABELS), "1.8"),
    (lambda: calibration.soft_kl(GOLDEN_PROBS, GOLDEN_PROBS[:, :2]), r"\(4, 2\)"),
    (lambda: calibration.softmax(GOLDEN_PROBS, temperature=0.0), "temperature=0.0"),
    (lambda: calibration.fit_temperature(GOLDEN_PROBS, GOLDEN_LABELS, bounds=(2.0, 1.0)), r"\(2.0, 1.0\)"),
    (lambda: calibration.fit_temperature(GOLDEN_PROBS, GOLDEN_LABELS, bounds=(0.0, 1.0)), r"\(0.0, 1.0\)"),
    (lambda: calibration.fit_temperature(GOLDEN_PROBS, GOLDEN_LABELS, bounds=(1.0,)), r"\(1.0,\)"),
    (lambda: calibration.confidence_thresholds(GOLDEN_PROBS, GOLDEN_LABELS, target_accuracy=1.5), "1.5"),
    (lambda: calibration.confidence_thresholds(GOLDEN_PROBS, GOLDEN_LABELS, thresholds=[1.2]), "1.2"),
    (lambda: calibration.evaluate(np.zeros((0, 3)), np.zeros(0, dtype=int)), r"\(0, 3\)"),
])
def test_bad_input_raises_value_error_naming_the_value(call, message):
    with pytest.raises(ValueError, match=message):
        call()
