"""Calibration metrics and temperature scaling, in plain numpy (no TensorFlow, no Keras).

Conventions shared by every function:
- `probs` is an [N, K] array of class probabilities, `logits` an [N, K] array of unnormalised scores, `labels`
  an [N] array of true class indices (hard, unsmoothed labels), `target_probs` an [N, K] array of target
  distributions q.
- Top-label confidence is `max_k p_k`, the prediction is `argmax_k p_k` (first index on ties).
- Equal-width bins split [0, 1] into `bins` intervals with numpy's histogram convention: every bin is half-open
  [a, b) except the last, which is closed [a, 1], so a confidence of exactly 1.0 falls in the last bin.
- Logarithms are natural; probabilities are clipped at `EPSILON` = 1e-12 before taking a logarithm.

References: Guo et al. 2017 (ECE, MCE, temperature scaling), Mukhoti et al. 2020 (AdaECE: top-label ECE with
equal-mass bins; Nixon et al. 2019 proposed adaptive binning for their classwise ACE), Kull et al. 2019
(classwise ECE), Brier 1950.

Bin edges come from `np.linspace(0, 1, bins + 1)`, whose interior edges are the nearest floats to b/bins, not
exact: a confidence that equals the exact fraction (0.2 with 15 bins, say) can land in the bin below the one
the written interval names, when its nearest float is a hair below the computed edge. It moves one row by one bin.
"""

import math

import numpy as np

EPSILON = 1e-12
DEFAULT_THRESHOLDS = (0.0, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.97, 0.99)
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0  # 1/φ ≈ 0.618


# ---------------------------------------------------------------------------------------------- validation
def _check_bins(bins):
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ValueError(f"`bins` must be an integer >= 1. Received: bins={bins!r}")
    return int(bins)


def _check_matrix(values, name):
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] == 0 or values.shape[1] == 0:
        raise ValueError(f"`{name}` must be a non-empty 2-D array [N, K]. Received shape: {values.shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"`{name}` must be finite. Received {int(np.sum(~np.isfinite(values)))} non-finite values")
    return values


def _check_probs(probs, name="probs"):
    probs = _check_matrix(probs, name)
    low, high = float(probs.min()), float(probs.max())
    if low < -1e-6 or high > 1.0 + 1e-6:
        raise ValueError(f"`{name}` must hold probabilities in [0, 1]. Received values in [{low}, {high}]")
    return np.clip(probs, 0.0, 1.0)


def _check_labels(labels, num_rows, num_classes):
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] != num_rows:
        raise ValueError(f"`labels` must have shape ({num_rows},) to match the {num_rows} rows of probabilities. "
                         f"Received shape: {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        if labels.dtype == bool or not np.issubdtype(labels.dtype, np.number) or not np.all(labels == np.round(labels)):
            raise ValueError(f"`labels` must be integer class indices. Received dtype: {labels.dtype}")
    labels = labels.astype(np.int64)
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"`labels` must be in [0, {num_classes - 1}] for K={num_classes} classes. "
                         f"Received values in [{labels.min()}, {labels.max()}]")
    return labels


def _check_inputs(probs, labels):
    probs = _check_probs(probs)
    return probs, _check_labels(labels, probs.shape[0], probs.shape[1])


def _check_temperature(temperature):
    if not (isinstance(temperature, (int, float, np.number)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"`temperature` must be a finite number > 0. Received: temperature={temperature!r}")
    return float(temperature)


# ------------------------------------------------------------------------------------------ basic functions
def softmax(logits, temperature=1.0):
    """σ(z / T) along the last axis, computed as exp(z/T − max z/T) / Σ exp(·) so large logits cannot overflow."""
    temperature = _check_temperature(temperature)
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    shifted = scaled - np.max(scaled, axis=-1, keepdims=True)
    exponentials = np.exp(shifted)
    return exponentials / np.sum(exponentials, axis=-1, keepdims=True)


def log_softmax(logits, temperature=1.0):
    """log σ(z / T) along the last axis: z/T − logsumexp(z/T), exact even where σ underflows to 0."""
    temperature = _check_temperature(temperature)
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    shifted = scaled - np.max(scaled, axis=-1, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


# ------------------------------------------------------------------------------------------------- binning
def _equal_width_statistics(confidence, outcome, bins):
    """Per-bin mean confidence, mean outcome and count for equal-width bins, histogram convention [a, b), [a, 1]."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, bins - 1)
    count = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(index, weights=confidence, minlength=bins) / count
        mean_outcome = np.bincount(index, weights=outcome, minlength=bins) / count
    return {"edges": edges, "confidence": np.where(count > 0, mean_confidence, np.nan),
            "accuracy": np.where(count > 0, mean_outcome, np.nan), "count": count.astype(np.int64)}


def _weighted_gap(statistics):
    """(Σ_b |B_b|/N · |acc(B_b) − conf(B_b)|, max_b |acc(B_b) − conf(B_b)|) over the non-empty bins B_b."""
    filled = statistics["count"] > 0
    gap = np.abs(statistics["accuracy"][filled] - statistics["confidence"][filled])
    weights = statistics["count"][filled] / statistics["count"].sum()
    return float(np.sum(weights * gap)), float(np.max(gap))


def reliability_bins(probs, labels, bins=15):
    """Reliability-diagram data for top-label confidence with `bins` equal-width bins.

    Returns numpy arrays `edges` [bins+1], `confidence` (mean top-label confidence per bin, nan if empty),
    `accuracy` (share of rows whose argmax equals the label, nan if empty) and `count` [bins]. Bins follow
    numpy's histogram convention: [a, b) except the last, which is [a, 1].
    """
    bins = _check_bins(bins)
    probs, labels = _check_inputs(probs, labels)
    confidence, prediction = probs.max(axis=1), probs.argmax(axis=1)
    return _equal_width_statistics(confidence, (prediction == labels).astype(np.float64), bins)


# ------------------------------------------------------------------------------------------------- metrics
def expected_calibration_error(probs, labels, bins=15):
    """Top-label ECE (Guo et al. 2017): Σ_b |B_b|/N · |acc(B_b) − conf(B_b)|, equal-width bins [a, b), last [a, 1]."""
    return _weighted_gap(reliability_bins(probs, labels, bins))[0]


def maximum_calibration_error(probs, labels, bins=15):
    """Top-label MCE (Guo et al. 2017): max over non-empty equal-width bins of |acc(B_b) − conf(B_b)|."""
    return _weighted_gap(reliability_bins(probs, labels, bins))[1]


def adaptive_calibration_error(probs, labels, bins=15):
    """AdaECE (Mukhoti et al. 2020), top-label ECE over equal-mass bins: rows sorted by confidence and cut into
    `bins` groups with np.array_split (sizes differ by at most one; empty groups when N < bins are skipped), then
    Σ_b |B_b|/N · |acc(B_b) − conf(B_b)|."""
    bins = _check_bins(bins)
    probs, labels = _check_inputs(probs, labels)
    confidence, prediction = probs.max(axis=1), probs.argmax(axis=1)
    order = np.argsort(confidence, kind="stable")
    correct = (prediction == labels).astype(np.float64)[order]
    total = 0.0
    for group_confidence, group_correct in zip(np.array_split(confidence[order], bins), np.array_split(correct, bins)):
        if group_confidence.size:
            total += group_confidence.size * abs(group_correct.mean() - group_confidence.mean())
    return float(total / confidence.size)


def classwise_calibration_error(probs, labels, bins=15):
    """Classwise ECE (Kull et al. 2019): (1/K) Σ_k Σ_b |B_bk|/N · |mean 1[y=k] − mean p_k| over equal-width bins
    of p_k (histogram convention [a, b), [a, 1]); every row counts in every class's binning."""
    bins = _check_bins(bins)
    probs, labels = _check_inputs(probs, labels)
    per_class = [_weighted_gap(_equal_width_statistics(probs[:, k], (labels == k).astype(np.float64), bins))[0]
                 for k in range(probs.shape[1])]
    return float(np.mean(per_class))


def negative_log_likelihood(probs, labels):
    """Mean −log p_y over rows (natural log), with p_y clipped at 1e-12 so a zero probability costs ≈27.6."""
    probs, labels = _check_inputs(probs, labels)
    return float(-np.mean(np.log(np.clip(probs[np.arange(labels.size), labels], EPSILON, 1.0))))


def brier_score(probs, labels):
    """Multiclass Brier score (Brier 1950): mean over rows of Σ_k (p_k − 1[y=k])², range [0, 2].
    (Not divided by K; for K=2 it is twice the binary Brier score (p − y)².)"""
    probs, labels = _check_inputs(probs, labels)
    one_hot = np.eye(probs.shape[1])[labels]
    return float(np.mean(np.sum((probs - one_hot) ** 2, axis=1)))


def _check_pair(probs, target_probs):
    probs, target_probs = _check_probs(probs), _check_probs(target_probs, "target_probs")
    if probs.shape != target_probs.shape:
        raise ValueError(f"`probs` and `target_probs` must have the same shape. "
                         f"Received: {probs.shape} and {target_probs.shape}")
    return probs, target_probs


def soft_cross_entropy(probs, target_probs):
    """Mean over rows of H(q, p) = −Σ_k q_k log p_k, with p clipped at 1e-12 (natural log)."""
    probs, target_probs = _check_pair(probs, target_probs)
    return float(np.mean(-np.sum(target_probs * np.log(np.clip(probs, EPSILON, 1.0)), axis=1)))


def soft_kl(probs, target_probs):
    """Mean over rows of KL(q ‖ p) = Σ_k q_k log(q_k / p_k), with 0·log 0 = 0 and p clipped at 1e-12."""
    probs, target_probs = _check_pair(probs, target_probs)
    positive = target_probs > 0
    log_ratio = np.log(np.where(positive, target_probs, 1.0)) - np.log(np.clip(probs, EPSILON, 1.0))
    return float(np.mean(np.sum(np.where(positive, target_probs * log_ratio, 0.0), axis=1)))


# ------------------------------------------------------------------------------------ temperature scaling
def _nll_at_temperature(logits, labels, temperature):
    """Mean −log σ(z/T)_y, computed with log-softmax (no clipping needed)."""
    return float(-np.mean(log_softmax(logits, temperature)[np.arange(labels.size), labels]))


def _soft_ce_at_temperature(logits, target_probs, temperature):
    """Mean H(q, σ(z/T)) = −Σ_k q_k log σ(z/T)_k, computed with log-softmax."""
    return float(-np.mean(np.sum(target_probs * log_softmax(logits, temperature), axis=1)))


def _check_bounds(bounds):
    try:
        low, high = (float(bound) for bound in bounds)
    except (TypeError, ValueError):
        raise ValueError(f"`bounds` must be a pair (low, high) of numbers. Received: bounds={bounds!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and 0 < low < high):
        raise ValueError(f"`bounds` must satisfy 0 < low < high (finite). Received: bounds={bounds!r}")
    return low, high


def _minimise_temperature(objective, bounds):
    """T minimising `objective(T)` over `bounds`: golden-section search on log T to 1e-6, then the two bounds are
    checked too (both objectives here are unimodal in log T, being convex in 1/T). Returns 1.0 if the best T does
    not lower the objective at T = 1."""
    low, high = _check_bounds(bounds)

    def at(log_temperature):
        return objective(math.exp(log_temperature))

    a, b = math.log(low), math.log(high)
    c, d = b - _GOLDEN * (b - a), a + _GOLDEN * (b - a)
    value_c, value_d = at(c), at(d)
    while b - a > 1e-6:
        if value_c <= value_d:
            b, d, value_d = d, c, value_c
            c = b - _GOLDEN * (b - a)
            value_c = at(c)
        else:
            a, c, value_c = c, d, value_d
            d = a + _GOLDEN * (b - a)
            value_d = at(d)
    candidates = [(at(0.5 * (a + b)), 0.5 * (a + b)), (at(math.log(low)), math.log(low)),
                  (at(math.log(high)), math.log(high))]
    best_value, best_log_temperature = min(candidates)
    if best_value >= objective(1.0):
        return 1.0
    return float(math.exp(best_log_temperature))


def fit_temperature(logits, labels, bounds=(0.05, 20.0)):
    """Temperature T (Guo et al. 2017) minimising mean NLL of σ(z/T) on the given (validation) rows' hard labels.

    Returns 1.0 if no T in `bounds` lowers the NLL of T = 1. Dividing logits by T > 0 never changes the argmax,
    so accuracy is unchanged.
    """
    logits = _check_matrix(logits, "logits")
    labels = _check_labels(labels, logits.shape[0], logits.shape[1])
    return _minimise_temperature(lambda t: _nll_at_temperature(logits, labels, t), bounds)


def fit_temperature_soft(logits, target_probs, bounds=(0.05, 20.0)):
    """Temperature T minimising the mean soft cross-entropy H(q, σ(z/T)) to the rows' target distributions q.

    For rows that carry distributions (annotator votes, known probabilities) this is the proper scoring rule for
    the targets the user gave; fitting T to their argmax instead rewards over-confidence (with 5 overlapping
    classes: T = 0.12 and a served cross-entropy to q worse than uniform). With one-hot q it equals
    `fit_temperature`. Returns 1.0 if no T in `bounds` lowers the cross-entropy of T = 1.
    """
    logits = _check_matrix(logits, "logits")
    target_probs = _check_probs(target_probs, "target_probs")
    if target_probs.shape != logits.shape:
        raise ValueError(f"`logits` and `target_probs` must have the same shape. "
                         f"Received: {logits.shape} and {target_probs.shape}")
    return _minimise_temperature(lambda t: _soft_ce_at_temperature(logits, target_probs, t), bounds)


def argmax_ties(target_probs) -> int:
    """Rows whose largest probability is shared by two or more classes (argmax then takes the lowest index)."""
    target_probs = np.asarray(target_probs, dtype=np.float64)
    top = target_probs.max(axis=1, keepdims=True)
    return int(np.sum(np.sum(np.isclose(target_probs, top, rtol=0.0, atol=1e-9), axis=1) > 1))


# ------------------------------------------------------------------------------------ confidence thresholds
def confidence_thresholds(probs, labels, thresholds=None, target_accuracy=0.95):
    """Automation table: for each threshold t, the rows whose top-label confidence is ≥ t.

    Returns a JSON-ready dict: `rows` = [{"threshold", "coverage" (share of all rows with confidence ≥ t),
    "accuracy" (on those rows, None if none), "n"}] for `thresholds` (default DEFAULT_THRESHOLDS);
    `target_accuracy`; `smallest_threshold_for_target` = the smallest t among the distinct confidence values at
    which accuracy on rows with confidence ≥ t is ≥ target_accuracy (None if never), with its
    `coverage_at_target`, `accuracy_at_target` and `rows_at_target` (None if never).
    """
    probs, labels = _check_inputs(probs, labels)
    if not (isinstance(target_accuracy, (int, float, np.number)) and 0 < target_accuracy <= 1):
        raise ValueError(f"`target_accuracy` must be in (0, 1]. Received: target_accuracy={target_accuracy!r}")
    thresholds = DEFAULT_THRESHOLDS if thresholds is None else tuple(float(t) for t in thresholds)
    if any(not (0.0 <= t <= 1.0) for t in thresholds):
        raise ValueError(f"`thresholds` must be in [0, 1]. Received: thresholds={list(thresholds)!r}")
    confidence, prediction = probs.max(axis=1), probs.argmax(axis=1)
    correct = prediction == labels
    total = confidence.size
    rows = []
    for threshold in thresholds:
        kept = confidence >= threshold
        n = int(kept.sum())
        rows.append({"threshold": float(threshold), "coverage": n / total,
                     "accuracy": float(correct[kept].mean()) if n else None, "n": n})

    order = np.argsort(confidence, kind="stable")
    sorted_confidence, sorted_correct = confidence[order], correct[order].astype(np.int64)
    values, first = np.unique(sorted_confidence, return_index=True)
    kept_count = total - first  # rows with confidence >= value
    kept_correct = np.cumsum(sorted_correct[::-1])[::-1][first]
    reached = np.flatnonzero(kept_correct >= target_accuracy * kept_count - 1e-9)
    result = {"rows": rows, "target_accuracy": float(target_accuracy), "smallest_threshold_for_target": None,
              "coverage_at_target": None, "accuracy_at_target": None, "rows_at_target": None}
    if reached.size:
        i = reached[0]
        result.update(smallest_threshold_for_target=float(values[i]), coverage_at_target=float(kept_count[i] / total),
                      accuracy_at_target=float(kept_correct[i] / kept_count[i]), rows_at_target=int(kept_count[i]))
    return result


# ------------------------------------------------------------------------------------------------ evaluate
def evaluate(logits, labels, temperature=1.0, bins=15, target_accuracy=0.95):
    """All metrics of one split as plain python numbers (JSON-ready), on hard labels.

    `accuracy`, `nll`, `ece`, `mce`, `adaptive_ece`, `classwise_ece`, `brier` use σ(z); `nll_calibrated`,
    `ece_calibrated`, `mce_calibrated`, `brier_calibrated` and `thresholds` (confidence_thresholds) use σ(z/T)
    with the given `temperature` T (fit it on validation rows with fit_temperature). Also returns `n`, `bins`.
    """
    temperature = _check_temperature(temperature)
    bins = _check_bins(bins)
    logits = _check_matrix(logits, "logits")
    labels = _check_labels(labels, logits.shape[0], logits.shape[1])
    probs, calibrated = softmax(logits), softmax(logits, temperature)
    return {
        "n": int(labels.size),
        "accuracy": float(np.mean(probs.argmax(axis=1) == labels)),
        "nll": negative_log_likelihood(probs, labels),
        "ece": expected_calibration_error(probs, labels, bins),
        "mce": maximum_calibration_error(probs, labels, bins),
        "adaptive_ece": adaptive_calibration_error(probs, labels, bins),
        "classwise_ece": classwise_calibration_error(probs, labels, bins),
        "brier": brier_score(probs, labels),
        "temperature": temperature,
        "nll_calibrated": negative_log_likelihood(calibrated, labels),
        "ece_calibrated": expected_calibration_error(calibrated, labels, bins),
        "mce_calibrated": maximum_calibration_error(calibrated, labels, bins),
        "brier_calibrated": brier_score(calibrated, labels),
        "bins": bins,
        "thresholds": confidence_thresholds(calibrated, labels, target_accuracy=target_accuracy),
    }
