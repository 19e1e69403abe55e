"""Split conformal prediction sets (kerasls.conformal): the finite-sample threshold, coverage over random splits,
and the sets against MAPIE (a test-only dependency) and against the papers' formulas written out class by class."""

import math

import numpy as np
import pytest
from mapie.classification import SplitConformalClassifier
from mapie.conformity_scores.sets.aps import APSConformityScore
from mapie.conformity_scores.sets.raps import RAPSConformityScore
from mapie.utils import _compute_classification_quantile
from sklearn.base import BaseEstimator, ClassifierMixin

from kerasls import conformal


def exchangeable_rows(rows=1000, classes=10, scale=1.5, seed=1):
    """Rows whose class is drawn from their own probabilities (a calibrated model of accuracy about 0.45), so a
    random calibration/test split of them is exchangeable."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(rows, classes)) * scale
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = (probs.cumsum(axis=1) > rng.random((rows, 1))).argmax(axis=1)
    return probs, labels


class GivenProbabilities(ClassifierMixin, BaseEstimator):
    """A prefit scikit-learn classifier whose inputs are already the probabilities (for MAPIE)."""

    def fit(self, X, y):
        self.classes_ = np.arange(np.asarray(X).shape[1])
        return self

    def predict_proba(self, X):
        return np.asarray(X)

    def predict(self, X):
        return np.asarray(X).argmax(axis=1)


class UniformAtOne(np.random.RandomState):
    """MAPIE's random state with every uniform draw U = 1: its randomised APS score becomes deterministic."""

    def uniform(self, low=0.0, high=1.0, size=None):
        return np.ones(size)


def mapie_sets(probs, labels, test_probs, score, alpha, **kwargs):
    mapie = SplitConformalClassifier(GivenProbabilities().fit(probs, labels), confidence_level=1 - alpha,
                                     conformity_score=score, prefit=True, **kwargs).conformalize(probs, labels)
    _, sets = mapie.predict_set(test_probs)
    return mapie, sets[:, :, 0]


# ------------------------------------------------------------------------------------------------- threshold
def test_threshold_is_the_kth_smallest_score_as_mapie_takes_it():
    scores = np.arange(1.0, 20.0)  # n = 19, alpha 0.1: k = ⌈20 · 0.9⌉ = 18
    assert conformal.quantile_rank(19, 0.1) == 18 and conformal.threshold(scores, 0.1) == 18.0
    assert np.quantile(scores, 18 / 19, method="higher") == 19.0  # numpy's "higher" at k/n is one rank above
    assert conformal.threshold(scores[:9], 0.1) == 9.0  # n = 9: k = 9, the largest
    assert conformal.quantile_rank(999, 0.059) == 941  # 1000 · 0.941 is 941.0000000000001 in floats
    rng = np.random.default_rng(0)
    for n in (9, 19, 50, 99, 100, 101, 400, 1234):
        scores = rng.random(n)
        for alpha in conformal.TABLE_ALPHAS:
            if n < conformal.minimum_rows(alpha):
                continue
            k = math.ceil((n + 1) * (1 - alpha))
            assert conformal.threshold(scores, alpha) == np.sort(scores)[k - 1]
            assert conformal.threshold(scores, alpha) == np.quantile(scores, k / n, method="inverted_cdf")
            assert conformal.threshold(scores, alpha) == _compute_classification_quantile(scores, np.array([alpha]))[0]


@pytest.mark.parametrize("alpha, rows", [(0.2, 4), (0.1, 9), (0.05, 19), (0.01, 99), (0.3, 3), (0.5, 1)])
def test_too_few_calibration_rows_for_alpha_is_an_error_naming_the_rows_needed(alpha, rows):
    assert conformal.minimum_rows(alpha) == rows  # the least n with n >= 1/alpha - 1
    assert conformal.quantile_rank(rows, alpha) <= rows
    conformal.threshold(np.zeros(rows), alpha)
    if rows > 1:
        with pytest.raises(ValueError, match=rf"{rows - 1} calibration rows are too few for alpha={alpha:g}: .* "
                                             rf"needs at least {rows} rows"):
            conformal.threshold(np.zeros(rows - 1), alpha)
    probs, labels = exchangeable_rows(rows=120)
    predictor = conformal.fit(probs[:20], labels[:20], alpha=0.1)
    assert predictor.thresholds["lac"][0.01] is None and predictor.thresholds["lac"][0.05] is not None


# -------------------------------------------------------------------------------------------------- coverage
@pytest.mark.parametrize("score", conformal.SCORES)
def test_mean_coverage_over_200_random_splits_is_within_the_finite_sample_bounds(score):
    """Split conformal on exchangeable rows: P(y ∈ set) = k/(n + 1) ∈ [1 − α, 1 − α + 1/(n + 1)) when the scores do
    not tie (the model here is right on fewer than 1 − α of the rows, so aps/raps scores do not tie at 0). The mean
    over 200 splits may stray from it by Monte-Carlo error: 4 standard errors are allowed."""
    probs, labels = exchangeable_rows()
    rng = np.random.default_rng(7)
    n = 300
    for alpha in (0.05, 0.1, 0.2):
        coverage = []
        for _ in range(200):
            order = rng.permutation(len(labels))
            calibration, test = order[:n], order[n:]
            predictor = conformal.fit(probs[calibration], labels[calibration], score=score, alpha=alpha)
            sets = predictor.sets(probs[test])
            coverage.append(sets[np.arange(test.size), labels[test]].mean())
        mean, error = np.mean(coverage), np.std(coverage) / np.sqrt(len(coverage))
        assert 1 - alpha - 4 * error <= mean <= 1 - alpha + 1 / (n + 1) + 4 * error, (alpha, mean, error)


# ---------------------------------------------------------------------------------------------- against MAPIE
@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.3])
def test_lac_sets_equal_mapie_split_conformal_classifier(alpha):
    probs, labels = exchangeable_rows(rows=900, classes=5, scale=2.0, seed=3)
    mapie, expected = mapie_sets(probs[:400], labels[:400], probs[400:], "lac", alpha)
    predictor = conformal.fit(probs[:400], labels[:400], score="lac", alpha=alpha)
    np.testing.assert_allclose(np.ravel(mapie.conformity_scores),
                               conformal.conformity_scores(probs[:400], labels[:400], "lac"), atol=1e-15)
    np.testing.assert_array_equal(predictor.sets(probs[400:]), expected)
    if alpha == 0.3:
        assert (expected.sum(axis=1) == 0).any()  # empty sets are part of LAC, in both


@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.2])
def test_aps_sets_equal_mapie_with_its_uniform_draw_at_one(alpha):
    """MAPIE's APS score is the cumulative mass up to and including y minus U·p_y with U uniform; at U = 1 it is
    kerasls' score, and MAPIE's sets (its default include_last_label=True) equal kerasls' sets."""
    probs, labels = exchangeable_rows(rows=900, classes=6, scale=2.0, seed=4)
    mapie, expected = mapie_sets(probs[:400], labels[:400], probs[400:], "aps", alpha, random_state=UniformAtOne(0))
    np.testing.assert_allclose(np.ravel(mapie.conformity_scores),
                               conformal.conformity_scores(probs[:400], labels[:400], "aps"), atol=1e-12)
    predictor = conformal.fit(probs[:400], labels[:400], score="aps", alpha=alpha)
    np.testing.assert_array_equal(predictor.sets(probs[400:]), expected)
    assert expected.sum(axis=1).min() >= 1


@pytest.mark.parametrize("raps_lambda, raps_k_reg", [(0.01, 1), (0.05, 2), (0.2, 0)])
def test_raps_scores_equal_mapie_and_its_sets_charge_one_penalty_step_less(raps_lambda, raps_k_reg):
    """MAPIE's regularised scores (at U = 1) equal kerasls'; at the same threshold, MAPIE's prediction rule charges
    each class the penalty of the rank before it, so its sets equal kerasls' sets at k_reg + 1 and contain them."""
    probs, labels = exchangeable_rows(rows=800, classes=8, scale=2.0, seed=5)
    cumulative, rank = APSConformityScore.get_true_label_cumsum_proba(labels, probs, np.arange(8))
    at_one = cumulative - probs[np.arange(len(labels)), labels][:, None]
    expected_scores = RAPSConformityScore._regularize_conformity_score(np.array([raps_k_reg]), raps_lambda, at_one,
                                                                       rank)
    scores = conformal.conformity_scores(probs, labels, "raps", raps_lambda, raps_k_reg)
    np.testing.assert_allclose(np.ravel(expected_scores), scores, atol=1e-12)

    threshold = conformal.threshold(scores[:400], 0.1)
    mapie = RAPSConformityScore()
    mapie.quantiles_, mapie.lambda_star, mapie.k_star = np.array([threshold]), raps_lambda, np.array([raps_k_reg])
    mapie_sets = mapie.get_prediction_sets(probs[400:, :, None], scores[:400], np.array([0.1]), cv="prefit")[:, :, 0]
    sets = conformal.prediction_sets(probs[400:], threshold, "raps", raps_lambda, raps_k_reg)
    assert np.all(sets <= mapie_sets)
    np.testing.assert_array_equal(conformal.prediction_sets(probs[400:], threshold, "raps", raps_lambda,
                                                            raps_k_reg + 1), mapie_sets)


# ------------------------------------------------------------------------------ against the formulas, written out
def score_by_definition(p, k, score, raps_lambda=0.01, raps_k_reg=1):
    """s(x, k) for one row p, from the papers' definitions, one class at a time."""
    if score == "lac":
        return 1.0 - p[k]
    more_probable = [j for j in range(len(p)) if p[j] > p[k]]
    rho = sum(p[j] for j in more_probable)  # Romano et al. 2020 / Angelopoulos et al. 2021 ρ_x(k)
    rank = len(more_probable) + 1
    return rho + (raps_lambda * max(rank - raps_k_reg, 0) if score == "raps" else 0.0)


@pytest.mark.parametrize("score", conformal.SCORES)
def test_sets_are_every_class_whose_score_is_within_the_threshold(score):
    """C(x) = {k : s(x, k) ≤ q̂} from the definitions, including rows with tied probabilities (tied classes are
    in or out together) and a row that is all on one class."""
    probs, labels = exchangeable_rows(rows=300, classes=7, scale=2.0, seed=6)
    tied = np.array([[0.3, 0.3, 0.2, 0.1, 0.1, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25, 0.0, 0.0, 0.0],
                     [1.0, 0, 0, 0, 0, 0, 0]])
    probs = np.concatenate([probs, tied])
    labels = np.concatenate([labels, [1, 3, 0]])
    scores = np.array([score_by_definition(p, y, score) for p, y in zip(probs, labels)])
    np.testing.assert_allclose(conformal.conformity_scores(probs, labels, score), scores, atol=1e-12)
    for threshold in (conformal.threshold(scores[:200], 0.1), 0.3, 0.55, 0.0):
        expected = np.array([[score_by_definition(p, k, score) <= threshold + 1e-12 for k in range(7)] for p in probs])
        # a class whose score equals the threshold up to rounding may fall either way: compare the others
        clear = np.array([[abs(score_by_definition(p, k, score) - threshold) > 1e-9 for k in range(7)] for p in probs])
        sets = conformal.prediction_sets(probs, threshold, score)
        np.testing.assert_array_equal(sets[clear], expected[clear])
        assert sets[-3, 0] == sets[-3, 1] and sets[-3, 3] == sets[-3, 4] and len(set(sets[-2, :4])) == 1
        if score != "lac":
            assert sets.sum(axis=1).min() >= 1  # never empty: the most probable class has score 0


# ------------------------------------------------------------------------------------------ summary and JSON
def test_set_summary_counts_coverage_size_singletons_and_empty_sets():
    sets = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=bool)
    labels = np.array([0, 1, 2, 0, 2])
    assert conformal.set_summary(sets, labels) == {
        "set_coverage": 0.6, "mean_set_size": 1.0, "singleton_share": 0.6, "singleton_accuracy": 2 / 3,
        "empty_share": 0.2}
    assert conformal.class_coverage(sets, labels, ["a", "b", "c"]) == {
        "a": {"rows": 2, "set_coverage": 0.5}, "b": {"rows": 1, "set_coverage": 1.0},
        "c": {"rows": 2, "set_coverage": 0.5}}
    assert conformal.set_summary(np.zeros((2, 2), bool), np.array([0, 1]))["singleton_accuracy"] is None


def test_report_has_the_table_the_classes_below_target_and_round_trips_through_json():
    probs, labels = exchangeable_rows(rows=600, classes=4, scale=2.0, seed=8)
    predictor = conformal.fit(probs[:300], labels[:300], score="aps", alpha=0.1)
    report = predictor.report(probs[300:], labels[300:], ["w", "x", "y", "z"])
    assert [row["alpha"] for row in report["table"]] == [0.01, 0.05, 0.1, 0.2]
    assert report["score"] == "aps" and report["alpha"] == 0.1 and report["n"] == 300 and not report["in_sample"]
    configured = next(row for row in report["table"] if row["alpha"] == 0.1)
    assert configured["threshold"] == report["threshold"] and configured["set_coverage"] == report["set_coverage"]
    assert report["classes_below"] == [name for name, row in report["classes"].items()
                                       if row["set_coverage"] < 0.9]
    assert set(report["other_scores"]) == {"lac", "raps"}
    assert conformal.SetPredictor.from_json(predictor.to_json()) == predictor
    assert conformal.SetPredictor.from_json(report) == predictor  # metrics.json's `conformal` rebuilds it too


@pytest.mark.parametrize("bad, message", [(dict(score="top_k"), "`score` must be one of lac, aps, raps"),
                                          (dict(alpha=1.0), r"`alpha` must be a number in \(0, 1\)"),
                                          (dict(alpha=0), r"`alpha` must be a number in \(0, 1\)")])
def test_bad_arguments_name_the_received_value(bad, message):
    probs, labels = exchangeable_rows(rows=50, classes=3)
    with pytest.raises(ValueError, match=message):
        conformal.fit(probs, labels, **bad)
    with pytest.raises(ValueError, match=r"`labels` must be in \[0, 2\]"):
        conformal.conformity_scores(probs, labels + 1)


def test_a_clear_coverage_shortfall_on_held_out_rows_is_named_and_chance_is_not():
    sets = {"alpha": 0.1, "n": 500, "set_coverage": 0.862, "in_sample": False}
    note = conformal.coverage_shortfall(sets)  # standard error sqrt(0.1 * 0.9 / 500) = 0.0134: 2.8 below
    assert "86.2% of these 500 rows, 2.8 standard errors below 1 - alpha = 90%" in note
    assert conformal.coverage_shortfall({**sets, "set_coverage": 0.875}) == ""  # 1.9 standard errors: chance
    assert conformal.coverage_shortfall({**sets, "in_sample": True}) == ""  # the rows that fitted q̂
    assert conformal.coverage_shortfall(None) == ""
