"""Split conformal prediction sets in plain numpy (no TensorFlow, no Keras).

A prediction set holds, for each row, the classes that fit it well enough; split conformal prediction picks "well
enough" on held-out calibration rows so that a set holds the true class for at least 1 − α of new rows, for any
model, when the new rows and the calibration rows are exchangeable (Vovk et al. 2005; Angelopoulos & Bates 2021,
"A gentle introduction to conformal prediction"). In a run the calibration rows are the validation rows, their
probabilities are the calibrated ones (after temperature) and their truth is the observed class.

Conventions as in kerasls.calibration: `probs` [N, K] probabilities, `labels` [N] class indices.

Threshold. A conformity score s(x, y) (large: class y fits row x badly) is computed for the n calibration rows and
their classes; the threshold q̂ is the k-th smallest of the n scores, k = ⌈(n + 1)(1 − α)⌉: the empirical quantile
at level k/n taken as an order statistic (numpy `method="inverted_cdf"`; MAPIE computes it with `method="lower"`,
the same value). numpy's `method="higher"` at level k/n is not this: for k < n it takes the (k + 1)-th smallest, one
rank too conservative. When k > n (n < 1/α − 1) no finite threshold exists, and `fit` refuses.

Scores. All three are deterministic, since an export is a pure function of its inputs: the randomised variants
draw a uniform U per row, so the same row could get another set on another call.
- `lac` (Sadinle et al. 2019, least ambiguous set-valued classifier): s = 1 − p_y; the set is {k : 1 − p_k ≤ q̂}.
  Among sets with the coverage it has the smallest mean size when the probabilities are right. It can be empty,
  when no class reaches probability 1 − q̂ (no class is likely enough: hand the row to a person); MAPIE's "lac"
  builds the same sets, empty ones included.
- `aps` (Romano et al. 2020, adaptive prediction sets) and `raps` (Angelopoulos et al. 2021, regularised APS):
  s = ρ(x, y) + λ·(o(x, y) − k_reg)⁺, where ρ is the probability mass of the classes more probable than y, o the
  rank of y (1 + the number of classes more probable), and λ = 0 for aps. This is the papers' randomised score
  ρ + U·p_y + λ·(o − k_reg)⁺ at U = 0, and the set is {y : s(x, y) ≤ q̂}, their randomised set at the same U: the
  classes in decreasing probability up to and including the one at which the cumulative mass passes q̂. So the
  set is never empty (the most probable class has s = 0 when k_reg ≥ 1). MAPIE writes the APS score as the
  cumulative mass up to and including y minus U·p_y, draws U at calibration, and at prediction includes the last
  class (`include_last_label=True`, its default); with its U set to 1 its aps sets equal these. For raps its
  prediction rule charges each class the penalty of the rank before it, a set one penalty step larger.
  λ (`raps_lambda`) and k_reg (`raps_k_reg`) are fixed values here; MAPIE picks them on a fifth of the calibration
  rows.

Coverage. A set is {y : s(x, y) ≤ q̂} for every score, so P(y ∈ set) ≥ 1 − α for exchangeable rows, and for scores
without ties it is k/(n + 1) < 1 − α + 1/(n + 1) (Lei et al. 2018). aps and raps scores tie at 0, the most probable
class: when more than 1 − α of the calibration rows have it right, q̂ = 0, every set is that class alone, and the
coverage is the accuracy.

Ties. A class is in a set with every class as probable as it (its rank and ρ count only the classes more probable),
so a set depends on the probabilities, never on the order of equal ones.
"""

import math
from dataclasses import dataclass

import numpy as np

SCORES = ("lac", "aps", "raps")
TABLE_ALPHAS = (0.01, 0.05, 0.1, 0.2)  # the coverage table of a run's report
SUMMARY_KEYS = ("set_coverage", "mean_set_size", "singleton_share", "singleton_accuracy", "empty_share")


# ---------------------------------------------------------------------------------------------- validation
def _check_probs(probs):
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or 0 in probs.shape:
        raise ValueError(f"`probs` must be a non-empty 2-D array [N, K]. Received shape: {probs.shape}")
    if not np.all(np.isfinite(probs)) or probs.min() < -1e-6 or probs.max() > 1.0 + 1e-6:
        raise ValueError("`probs` must hold finite probabilities in [0, 1]. "
                         f"Received values in [{np.nanmin(probs)}, {np.nanmax(probs)}]")
    return np.clip(probs, 0.0, 1.0)


def _check_labels(labels, probs):
    labels = np.asarray(labels)
    if labels.shape != (probs.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"`labels` must be {probs.shape[0]} integer class indices, one per row of `probs`. "
                         f"Received shape {labels.shape}, dtype {labels.dtype}")
    if labels.min() < 0 or labels.max() >= probs.shape[1]:
        raise ValueError(f"`labels` must be in [0, {probs.shape[1] - 1}]. "
                         f"Received values in [{labels.min()}, {labels.max()}]")
    return labels.astype(np.int64)


def _check_score(score):
    if score not in SCORES:
        raise ValueError(f"`score` must be one of {', '.join(SCORES)}. Received: score={score!r}")
    return score


def _check_alpha(alpha):
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.number)) or not 0.0 < alpha < 1.0:
        raise ValueError(f"`alpha` must be a number in (0, 1). Received: alpha={alpha!r}")
    return float(alpha)


# -------------------------------------------------------------------------------------------------- scores
def penalties(num_classes, score="raps", raps_lambda=0.01, raps_k_reg=1) -> np.ndarray:
    """The regularisation added to the sorted cumulative mass at ranks 1..K: λ·(rank − k_reg)⁺ for `raps`, else 0."""
    ranks = np.arange(1, num_classes + 1, dtype=np.float64)
    if _check_score(score) != "raps":
        return np.zeros(num_classes)
    if raps_lambda < 0 or raps_k_reg < 0:
        raise ValueError(f"`raps_lambda` and `raps_k_reg` must be >= 0. Received: {raps_lambda}, {raps_k_reg}")
    return raps_lambda * np.maximum(ranks - raps_k_reg, 0.0)


def _sorted_scores(probs, score, raps_lambda, raps_k_reg):
    """(probabilities sorted in decreasing order, the score of the class at each of those places) [N, K]: the mass
    before the place (exclusive cumulative sum) plus the RAPS penalty of its rank; non-decreasing along a row."""
    ordered = -np.sort(-probs, axis=1)
    before = np.concatenate([np.zeros((probs.shape[0], 1)), np.cumsum(ordered[:, :-1], axis=1)], axis=1)
    return ordered, before + penalties(probs.shape[1], score, raps_lambda, raps_k_reg)


def conformity_scores(probs, labels, score="lac", raps_lambda=0.01, raps_k_reg=1) -> np.ndarray:
    """s(x, y) of each row and its class `labels` [N]: 1 − p_y (lac); the mass of the classes more probable than y
    (aps), plus λ·(rank of y − k_reg)⁺ (raps). Large scores mean the class fits the row badly."""
    probs = _check_probs(probs)
    labels = _check_labels(labels, probs)
    p_true = probs[np.arange(labels.size), labels]
    if _check_score(score) == "lac":
        return 1.0 - p_true
    _, by_place = _sorted_scores(probs, score, raps_lambda, raps_k_reg)
    more_probable = np.sum(probs > p_true[:, None], axis=1)  # y's place: the first of the classes as probable
    return by_place[np.arange(labels.size), more_probable]


# ----------------------------------------------------------------------------------------------- threshold
def quantile_rank(n: int, alpha: float) -> int:
    """k = ⌈(n + 1)(1 − α)⌉: the threshold is the k-th smallest of n calibration scores. (Rounded to 9 decimals
    before the ceiling: in floats 1000 · (1 − 0.059) = 941.0000000000001, which must count as 941, not 942.)"""
    return math.ceil(round((n + 1) * (1.0 - _check_alpha(alpha)), 9))


def minimum_rows(alpha: float) -> int:
    """The fewest calibration rows that give a finite threshold at `alpha`: the least n with k ≤ n (n ≥ 1/α − 1)."""
    n = max(1, math.floor((1.0 - _check_alpha(alpha)) / alpha) - 1)
    while quantile_rank(n, alpha) > n:
        n += 1
    return n


def threshold(scores, alpha: float) -> float:
    """q̂: the ⌈(n + 1)(1 − α)⌉-th smallest of the n calibration `scores`; a ValueError when n < 1/α − 1."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    k = quantile_rank(scores.size, alpha)
    if k > scores.size:
        raise ValueError(f"{scores.size} calibration rows are too few for alpha={alpha:g}: the threshold is the "
                         f"⌈(n+1)(1-alpha)⌉ = {k}-th smallest score; it needs at least {minimum_rows(alpha)} rows")
    return float(np.sort(scores)[k - 1])


# ---------------------------------------------------------------------------------------------------- sets
def prediction_sets(probs, threshold, score="lac", raps_lambda=0.01, raps_k_reg=1) -> np.ndarray:
    """bool [N, K] sets {k : s(x, k) ≤ q̂}: for lac the classes with 1 − p_k ≤ q̂ (can be empty); for aps and raps
    the classes in decreasing probability up to and including the one at which the (regularised) cumulative mass
    passes q̂, with every class as probable as that one (never empty)."""
    probs = _check_probs(probs)
    if _check_score(score) == "lac":
        return 1.0 - probs <= threshold
    ordered, by_place = _sorted_scores(probs, score, raps_lambda, raps_k_reg)
    places = np.maximum(np.sum(by_place <= threshold, axis=1), 1)  # a prefix: scores rise along the places
    return probs >= ordered[np.arange(probs.shape[0]), places - 1][:, None]


def set_summary(sets, labels) -> dict:
    """`set_coverage` (share of rows whose set holds their class), `mean_set_size`, `singleton_share` (sets of one
    class: rows that can be handled automatically), `singleton_accuracy` (on those rows; None without any) and
    `empty_share`, as python floats."""
    sets = np.asarray(sets, dtype=bool)
    labels = np.asarray(labels)
    covered = sets[np.arange(labels.size), labels]
    size = sets.sum(axis=1)
    single = size == 1
    return {"set_coverage": float(covered.mean()), "mean_set_size": float(size.mean()),
            "singleton_share": float(single.mean()),
            "singleton_accuracy": float(covered[single].mean()) if single.any() else None,
            "empty_share": float(np.mean(size == 0))}


def class_coverage(sets, labels, classes) -> dict:
    """{class name: {"rows": rows of that class, "set_coverage": share of them covered (None without rows)}}."""
    sets = np.asarray(sets, dtype=bool)
    labels = np.asarray(labels)
    covered = sets[np.arange(labels.size), labels]
    result = {}
    for k, name in enumerate(classes):
        rows = labels == k
        result[str(name)] = {"rows": int(rows.sum()),
                             "set_coverage": float(covered[rows].mean()) if rows.any() else None}
    return result


# --------------------------------------------------------------------------------------------- the fitted sets
@dataclass(frozen=True)
class SetPredictor:
    """Fitted split-conformal sets: the configured `score` and `alpha`, and the thresholds of every score at every
    reported α (`thresholds[score][alpha]`, None where the calibration rows are too few for that α), so a report
    can compare them and an export or `kerasls evaluate` can rebuild them from JSON (`to_json`/`from_json`)."""

    score: str
    alpha: float
    thresholds: dict
    calibration_rows: int
    raps_lambda: float = 0.01
    raps_k_reg: int = 1

    @property
    def threshold(self) -> float:
        return self.thresholds[self.score][self.alpha]

    @property
    def alphas(self) -> list:
        return sorted(self.thresholds[self.score])

    def sets(self, probs, alpha=None, score=None) -> np.ndarray:
        """bool [N, K] prediction sets of `probs` at `alpha` with `score` (default: the configured ones)."""
        score, alpha = score or self.score, self.alpha if alpha is None else alpha
        value = self.thresholds[score][alpha]
        if value is None:
            raise ValueError(f"no threshold at alpha={alpha:g}: {self.calibration_rows} calibration rows are too few "
                             f"(it needs {minimum_rows(alpha)})")
        return prediction_sets(probs, value, score, self.raps_lambda, self.raps_k_reg)

    def report(self, probs, labels, classes, in_sample=False) -> dict:
        """What metrics.json holds under `conformal` for rows with `probs` (calibrated) and observed `labels`: the
        settings (`to_json`), the summary of the configured sets (`set_summary`), `table` (one row per α, with its
        threshold; None where the calibration rows were too few), `classes` and `classes_below` (the classes
        whose coverage falls below 1 − α), and `other_scores` (coverage and mean set size of the other scores).
        `in_sample`: the rows are the calibration rows themselves (no test file), where coverage holds by
        construction."""
        probs = _check_probs(probs)
        labels = _check_labels(labels, probs)
        configured = self.sets(probs)
        per_class = class_coverage(configured, labels, classes)
        result = {**self.to_json(), "n": int(labels.size), "in_sample": bool(in_sample),
                  **set_summary(configured, labels), "table": self._table(probs, labels, self.score),
                  "classes": per_class,
                  "classes_below": [name for name, row in per_class.items()
                                    if row["set_coverage"] is not None and row["set_coverage"] < 1.0 - self.alpha],
                  "other_scores": {score: [{key: row[key] for key in ("alpha", "set_coverage", "mean_set_size")}
                                           for row in self._table(probs, labels, score)]
                                   for score in SCORES if score != self.score and score in self.thresholds}}
        return result

    def _table(self, probs, labels, score) -> list:
        rows = []
        for alpha in self.alphas:
            value = self.thresholds[score].get(alpha)
            row = {"alpha": alpha, "threshold": value}
            row.update(set_summary(self.sets(probs, alpha, score), labels) if value is not None
                       else dict.fromkeys(SUMMARY_KEYS))
            rows.append(row)
        return rows

    def to_json(self) -> dict:
        return {"score": self.score, "alpha": self.alpha, "threshold": self.threshold,
                "calibration_rows": self.calibration_rows, "raps_lambda": self.raps_lambda,
                "raps_k_reg": self.raps_k_reg,
                "thresholds": {score: {str(alpha): value for alpha, value in by_alpha.items()}
                               for score, by_alpha in self.thresholds.items()}}

    @classmethod
    def from_json(cls, data: dict) -> "SetPredictor":
        """The inverse of `to_json` (also reads metrics.json's `conformal` and an export's `assets/kerasls.json`)."""
        thresholds = {score: {float(alpha): value for alpha, value in by_alpha.items()}
                      for score, by_alpha in data["thresholds"].items()}
        return cls(data["score"], float(data["alpha"]), thresholds, int(data["calibration_rows"]),
                   float(data["raps_lambda"]), int(data["raps_k_reg"]))


def fit(probs, labels, score="lac", alpha=0.1, raps_lambda=0.01, raps_k_reg=1, alphas=TABLE_ALPHAS) -> SetPredictor:
    """Thresholds of every score at `alpha` and at each of `alphas` from calibration rows (`probs`, `labels`).

    A ValueError when the rows are too few for `alpha` itself (n < 1/α − 1: `minimum_rows`); for a smaller α of
    `alphas` the threshold is None instead.
    """
    probs = _check_probs(probs)
    labels = _check_labels(labels, probs)
    alpha, score = _check_alpha(alpha), _check_score(score)
    if labels.size < minimum_rows(alpha):
        threshold(np.zeros(labels.size), alpha)  # raises, naming n and the rows needed
    levels = sorted({alpha, *(_check_alpha(a) for a in alphas)})
    thresholds = {}
    for name in SCORES:
        scores = conformity_scores(probs, labels, name, raps_lambda, raps_k_reg)
        thresholds[name] = {a: threshold(scores, a) if labels.size >= minimum_rows(a) else None for a in levels}
    return SetPredictor(score, alpha, thresholds, int(labels.size), float(raps_lambda), int(raps_k_reg))


def coverage_standard_error(alpha, rows) -> float:
    """The standard error of a coverage measured on `rows` rows when the true coverage is 1 − α: √(α(1 − α)/n)."""
    return math.sqrt(alpha * (1 - alpha) / max(rows, 1))


def coverage_shortfall(sets: dict) -> str:
    """One sentence when a run's (or an evaluation's) coverage falls short of 1 − α by more than two standard
    errors of a coverage measured on `n` rows (`coverage_standard_error`), else "". `sets`: metrics.json's
    `conformal`.

    The guarantee holds for rows exchangeable with the calibration rows. A clear shortfall on held-out rows says
    they are not: the data shifted, or the validation rows were used to choose too much (early stopping picks the
    epoch and T is fitted on the very rows that fit q̂, which makes them look a little easier than new rows)."""
    if not sets or sets.get("in_sample") or sets.get("set_coverage") is None or not sets.get("n"):
        return ""
    alpha, coverage, rows = sets["alpha"], sets["set_coverage"], sets["n"]
    gap = (1 - alpha - coverage) / coverage_standard_error(alpha, rows)
    if gap <= 2:
        return ""
    return (f"prediction sets covered {coverage:.1%} of these {rows} rows, {gap:.1f} standard errors below "
            f"1 - alpha = {1 - alpha:.0%}: these rows may differ from the validation rows that fitted the threshold, "
            "or early stopping and T, chosen on those same rows, made them look easier than new rows; a separate "
            "data.val file and more validation rows make the threshold more reliable.")
