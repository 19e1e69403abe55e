"""Decisions: answer a class, or abstain (plain numpy, no TensorFlow).

A classifier always has an argmax; a client needs to know when not to act on it. A rule decides, from a row's
calibrated probabilities (after temperature), whether the export answers its most probable class or abstains
with a label of its own (`calibration.abstain.label`, e.g. "out_of_scope"). Conventions as in kerasls.calibration
(`probs` [N, K]), except that an observed class of `OUT_OF_SCOPE` (-1) marks a row whose true answer is none of
the K classes (`data.out_of_scope_label`).

Rules (`calibration.abstain.rule`):
- `confidence`: abstain when the top-label confidence is below a threshold t chosen on the validation rows.
  - With out-of-scope rows among them, t minimises the cost of the K + 1 outcomes: a wrong class (an in-scope row
    answered wrongly, or an out-of-scope row answered at all) costs `costs.wrong_answer`, an abstention on an
    in-scope row `costs.abstention`; both 1 by default, which maximises the accuracy over the K + 1 outcomes
    (the "oos-threshold" protocol of Larson et al. 2019, "An evaluation dataset for intent classification and
    out-of-scope prediction").
  - Without, t is the lowest threshold whose accepted validation rows reach `calibration.target_accuracy` (or
    minimises the cost over the in-scope rows when `costs` is set). When no threshold reaches the target, t lies
    above every probability: every row abstains, and `note` says so.
  Candidates are the midpoints between consecutive distinct validation confidences (0 accepts every row; 1 +
  1e-6 abstains on every row), so no validation row sits on the threshold; ties go to the lowest threshold.
- `conformal`: abstain when the row's LAC prediction set (kerasls.conformal) is empty, i.e. when no class reaches
  probability 1 − q̂. An in-scope row exchangeable with the validation rows is in its set with probability at least
  1 − α, so it abstains with probability at most α; no out-of-scope row is needed to choose q̂. A row whose set
  holds two or more classes is accepted, and reported as ambiguous.

Either rule abstains on an unreadable row (a row whose text columns hold no known word or n-gram), whatever its
confidence. The threshold's uncertainty is the 5-95% range of the thresholds chosen on bootstrap resamples of
the validation rows; rates come with Wilson 95% intervals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from kerasls import conformal
from kerasls.targets import OUT_OF_SCOPE  # the observed class of a row whose answer is none of the classes

RULES = ("confidence", "conformal")
ABSTAIN_ALL = 1.0 + 1e-6  # a confidence threshold above every probability
BOOTSTRAP_RESAMPLES = 200


# ----------------------------------------------------------------------------------------------- validation
def _check_probs(probs):
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or 0 in probs.shape or not np.all(np.isfinite(probs)):
        raise ValueError(f"`probs` must be a finite non-empty 2-D array [N, K]. Received shape: {probs.shape}")
    return probs


def _check_observed(observed, probs):
    observed = np.asarray(observed)
    if observed.shape != (probs.shape[0],) or not np.issubdtype(observed.dtype, np.integer):
        raise ValueError(f"`observed` must be {probs.shape[0]} integer class indices. Received shape "
                         f"{observed.shape}, dtype {observed.dtype}")
    if observed.size and (observed.min() < OUT_OF_SCOPE or observed.max() >= probs.shape[1]):
        raise ValueError(f"`observed` must be in [-1, {probs.shape[1] - 1}] (-1: out of scope). Received values in "
                         f"[{observed.min()}, {observed.max()}]")
    return observed.astype(np.int64)


def _check_flags(flags, rows):
    if flags is None:
        return np.zeros(rows, dtype=bool)
    flags = np.asarray(flags, dtype=bool).reshape(-1)
    if flags.shape != (rows,):
        raise ValueError(f"`unreadable` must hold one flag per row ({rows}). Received shape {flags.shape}")
    return flags


# --------------------------------------------------------------------------------------- choosing thresholds
def candidate_thresholds(confidence) -> np.ndarray:
    """0, the midpoints between consecutive distinct values of `confidence`, and `ABSTAIN_ALL`, increasing."""
    values = np.unique(np.asarray(confidence, dtype=np.float64))
    return np.concatenate([[0.0], (values[:-1] + values[1:]) / 2.0, [ABSTAIN_ALL]])


def _accepted_counts(confidence, thresholds, *masks):
    """For each threshold, how many rows of each boolean `mask` have confidence >= it."""
    order = np.argsort(confidence, kind="stable")
    ordered = confidence[order]
    first_kept = np.searchsorted(ordered, thresholds, side="left")  # rows [first_kept:] are accepted
    counts = []
    for mask in masks:
        after = np.concatenate([np.cumsum(mask[order][::-1])[::-1], [0]])
        counts.append(after[first_kept])
    return counts


def threshold_by_cost(confidence, correct, out_of_scope, wrong_answer=1.0, abstention=1.0) -> float:
    """The lowest candidate threshold minimising the total cost (module docstring) of the rows; `correct`: the
    argmax is the row's class (False for out-of-scope rows)."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct, out_of_scope = np.asarray(correct, bool), np.asarray(out_of_scope, bool)
    thresholds = candidate_thresholds(confidence)
    in_scope = ~out_of_scope
    accepted_right, accepted_wrong, accepted_out = _accepted_counts(
        confidence, thresholds, in_scope & correct, in_scope & ~correct, out_of_scope)
    abstained_in = in_scope.sum() - accepted_right - accepted_wrong
    cost = wrong_answer * (accepted_wrong + accepted_out) + abstention * abstained_in
    return float(thresholds[np.flatnonzero(cost <= cost.min() + 1e-9)[0]])


def threshold_for_accuracy(confidence, correct, target_accuracy) -> float:
    """The lowest candidate threshold whose accepted rows (at least one) have accuracy >= `target_accuracy`;
    `ABSTAIN_ALL` when none has."""
    confidence, correct = np.asarray(confidence, dtype=np.float64), np.asarray(correct, bool)
    thresholds = candidate_thresholds(confidence)
    right, kept = _accepted_counts(confidence, thresholds, correct, np.ones_like(correct))
    reached = np.flatnonzero((kept > 0) & (right >= target_accuracy * kept - 1e-9))
    return float(thresholds[reached[0]]) if reached.size else ABSTAIN_ALL


# ------------------------------------------------------------------------------------------------ the rule
@dataclass(frozen=True)
class DecisionRule:
    """A fitted rule: `rule` ("confidence" or "conformal"), `threshold` (confidence for "confidence", the LAC
    threshold q̂ for "conformal"), `label` (the decision of an abstained row), and how it was chosen (`chosen_by`,
    `threshold_interval`, `validation_rows`, `note`), for metrics.json and the export's `assets/kerasls.json`."""

    rule: str
    threshold: float
    label: str = "out_of_scope"
    chosen_by: str = ""
    threshold_interval: Optional[list] = None
    validation_rows: dict = field(default_factory=dict)
    note: str = ""

    @property
    def confidence_threshold(self) -> float:
        """The top-label confidence below which a row abstains (for "conformal": 1 − q̂, where the set empties)."""
        return 1.0 - self.threshold if self.rule == "conformal" else self.threshold

    def abstains(self, probs, unreadable=None) -> np.ndarray:
        """bool [N]: the rows that abstain (unreadable rows always do)."""
        probs = _check_probs(probs)
        flags = _check_flags(unreadable, probs.shape[0])
        if self.rule == "conformal":
            low = ~np.any(conformal.prediction_sets(probs, self.threshold, "lac"), axis=1)
        else:
            low = probs.max(axis=1) < self.threshold
        return low | flags

    def decisions(self, probs, classes, unreadable=None) -> np.ndarray:
        """The answer of every row: its most probable class name, or `label` where it abstains."""
        names = np.asarray([str(c) for c in classes], dtype=object)[np.asarray(probs).argmax(axis=1)]
        return np.where(self.abstains(probs, unreadable), self.label, names)

    def to_json(self) -> dict:
        return {"rule": self.rule, "threshold": self.threshold, "label": self.label,
                "confidence_threshold": self.confidence_threshold, "chosen_by": self.chosen_by,
                "threshold_interval": self.threshold_interval, "validation_rows": self.validation_rows,
                "note": self.note}

    @classmethod
    def from_json(cls, data: dict) -> "DecisionRule":
        keys = ("rule", "threshold", "label", "chosen_by", "threshold_interval", "validation_rows", "note")
        return cls(**{key: data[key] for key in keys if key in data})


def fit(settings, probs, observed, target_accuracy=0.95, set_predictor=None, seed=0) -> DecisionRule:
    """The rule of `settings` (`calibration.abstain`: rule, label, costs) on the validation rows' calibrated
    `probs` and `observed` classes (-1: out of scope); `set_predictor` (conformal.SetPredictor, score lac) for the
    conformal rule."""
    probs = _check_probs(probs)
    observed = _check_observed(observed, probs)
    out_of_scope = observed == OUT_OF_SCOPE
    rows = {"in_scope": int((~out_of_scope).sum()), "out_of_scope": int(out_of_scope.sum())}
    if settings.rule == "conformal":
        if set_predictor is None or set_predictor.score != "lac":
            raise ValueError("the conformal rule needs LAC prediction sets (calibration.conformal.score: lac)")
        in_scope = ~out_of_scope
        resampled = _bootstrap(in_scope.sum(), seed, lambda picked: conformal.threshold(
            conformal.conformity_scores(probs[in_scope][picked], observed[in_scope][picked], "lac"),
            set_predictor.alpha))
        return DecisionRule("conformal", float(set_predictor.threshold), settings.label,
                            f"empty LAC prediction set at alpha={set_predictor.alpha:g}", resampled, rows)
    chooser, chosen_by = _chooser(settings, out_of_scope.any(), target_accuracy)
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == observed) & ~out_of_scope
    threshold = chooser(confidence, correct, out_of_scope)
    note = ""
    if threshold == ABSTAIN_ALL:
        note = (f"no confidence threshold reaches {chosen_by.split(' ')[-1]} on the validation rows, so the export "
                "abstains on every row; lower calibration.target_accuracy, or set calibration.abstain.costs")
    interval = _bootstrap(len(confidence), seed, lambda picked: chooser(confidence[picked], correct[picked],
                                                                          out_of_scope[picked]))
    return DecisionRule("confidence", threshold, settings.label, chosen_by, interval, rows, note)


def _chooser(settings, has_out_of_scope, target_accuracy):
    """(function (confidence, correct, out_of_scope) -> threshold, what it does in words)."""
    costs = settings.costs
    if has_out_of_scope or costs is not None:
        wrong, abstention = (costs.wrong_answer, costs.abstention) if costs is not None else (1.0, 1.0)
        scope = "the K + 1 outcomes" if has_out_of_scope else "the in-scope rows"
        words = ("best accuracy over the K + 1 outcomes" if costs is None
                 else f"least cost over {scope} (wrong answer {wrong:g}, abstention {abstention:g})")
        return (lambda confidence, correct, out: threshold_by_cost(confidence, correct, out, wrong, abstention),
                words)
    return (lambda confidence, correct, out: threshold_for_accuracy(confidence, correct, target_accuracy),
            f"lowest threshold whose accepted validation rows reach accuracy {target_accuracy:g}")


def _bootstrap(rows, seed, choose) -> Optional[list]:
    """[5th, 95th] percentile of `choose(resampled row indices)` over `BOOTSTRAP_RESAMPLES` resamples (None with
    fewer than 2 rows, or when a resample cannot choose)."""
    if rows < 2:
        return None
    generator = np.random.default_rng(seed)
    values = []
    for _ in range(BOOTSTRAP_RESAMPLES):
        try:
            values.append(choose(generator.integers(0, rows, rows)))
        except ValueError:  # too few distinct rows for a conformal threshold
            return None
    return [float(np.percentile(values, 5)), float(np.percentile(values, 95))]


# ------------------------------------------------------------------------------------------------- metrics
def wilson_interval(successes: int, trials: int, z=1.959964) -> Optional[list]:
    """The Wilson score 95% interval of a binomial proportion (Wilson 1927); None without trials."""
    if trials == 0:
        return None
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return [max(0.0, centre - half), min(1.0, centre + half)]


def _rate(successes, trials):
    return float(successes / trials) if trials else None


def report(rule: DecisionRule, probs, observed, unreadable=None, set_predictor=None) -> dict:
    """What metrics.json holds under `decision` for rows with calibrated `probs` and `observed` classes (-1: out of
    scope): the rule (`to_json`), `n`, `abstain_rate`, `accepted_accuracy` (of the accepted rows; an accepted
    out-of-scope row is wrong), `in_scope_accuracy` (an abstained in-scope row is wrong, as Larson et al. count
    it), `out_of_scope_recall` (share of out-of-scope rows abstained; None without any), `unreadable_rows`, and for
    the conformal rule `ambiguous_share` (accepted rows whose set holds two or more classes); `intervals` holds
    the Wilson 95% interval of each rate."""
    probs = _check_probs(probs)
    observed = _check_observed(observed, probs)
    flags = _check_flags(unreadable, probs.shape[0])
    abstained = rule.abstains(probs, flags)
    out_of_scope, accepted = observed == OUT_OF_SCOPE, ~abstained
    right = (probs.argmax(axis=1) == observed) & ~out_of_scope & accepted
    counts = {"abstain_rate": (abstained.sum(), len(observed)),
              "accepted_accuracy": (right.sum(), accepted.sum()),
              "in_scope_accuracy": (right.sum(), (~out_of_scope).sum()),
              "out_of_scope_recall": ((abstained & out_of_scope).sum(), out_of_scope.sum()),
              "k_plus_1_accuracy": (right.sum() + (abstained & out_of_scope).sum(), len(observed))}
    result = {**rule.to_json(), "n": int(len(observed)), "in_scope_rows": int((~out_of_scope).sum()),
              "out_of_scope_rows": int(out_of_scope.sum()), "abstained_rows": int(abstained.sum()),
              "unreadable_rows": int(flags.sum())}
    result.update({name: _rate(*pair) for name, pair in counts.items()})
    if rule.rule == "conformal":
        sizes = conformal.prediction_sets(probs, rule.threshold, "lac").sum(axis=1)
        result["ambiguous_share"] = _rate((accepted & (sizes > 1)).sum(), accepted.sum())
    result["intervals"] = {name: wilson_interval(int(s), int(n)) for name, (s, n) in counts.items()}
    return result


def automation_curve(probs, observed, points=101) -> dict:
    """Accuracy of the accepted rows against the share of rows accepted, thresholding the confidence at every
    value: {"share_automated": [...], "accepted_accuracy": [...]} for the report (an accepted out-of-scope row is
    wrong), at most `points` points."""
    probs = _check_probs(probs)
    observed = _check_observed(observed, probs)
    order = np.argsort(-probs.max(axis=1), kind="stable")
    right = ((probs.argmax(axis=1) == observed) & (observed != OUT_OF_SCOPE))[order]
    accepted = np.arange(1, len(right) + 1)
    picked = np.unique(np.linspace(0, len(right) - 1, min(points, len(right))).round().astype(int))
    return {"share_automated": (accepted[picked] / len(right)).tolist(),
            "accepted_accuracy": (np.cumsum(right)[picked] / accepted[picked]).tolist()}
