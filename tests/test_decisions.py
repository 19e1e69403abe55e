"""Decisions (kerasls.decisions): the thresholds each rule chooses, against independent brute-force searches; the
conformal rule's guarantee over random splits; the rates of `report` against hand counts; outlier-exposure targets.
Plain numpy, no TensorFlow."""


import numpy as np
import pytest

from kerasls import conformal, decisions, targets
from kerasls.config import AbstainConfig, CalibrationConfig, CostsConfig
from kerasls.decisions import ABSTAIN_ALL, OUT_OF_SCOPE


def random_rows(rows, classes=5, out_share=0.2, seed=0):
    """Calibrated probabilities of a mostly confident model: an in-scope row's top probability ~ Beta(8, 1), the
    rest spread at random, and its class drawn from its probabilities; an out-of-scope row's top probability
    ~ U(0.2, 0.7) (the model is less sure on them), observed class -1."""
    rng = np.random.default_rng(seed)
    out = rng.random(rows) < out_share
    top = np.where(out, rng.uniform(0.2, 0.7, rows), rng.beta(8.0, 1.0, rows))
    probs = rng.dirichlet(np.ones(classes - 1), rows) * (1.0 - top)[:, None]
    first = rng.integers(0, classes, rows)
    probs = np.stack([np.insert(rest, k, p) for rest, k, p in zip(probs, first, top)])
    observed = np.array([rng.choice(classes, p=p) for p in probs])
    observed[out] = OUT_OF_SCOPE
    return probs, observed


def brute_force_cost(confidence, correct, out, wrong, abstention):
    """Every way to accept the rows at or above one confidence value (or none), cost by a loop over rows:
    (least cost, the lowest confidence that reaches it, or None if only accepting nothing does)."""
    best = None
    for cut in [*sorted(set(confidence.tolist())), None]:
        cost = 0.0
        for c, right, oos in zip(confidence, correct, out):
            accepted = cut is not None and c >= cut
            if oos:
                cost += wrong if accepted else 0.0
            else:
                cost += (0.0 if right else wrong) if accepted else abstention
        if best is None or cost < best[0] - 1e-9:
            best = (cost, cut)
    return best


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("costs", [(1.0, 1.0), (3.0, 1.0), (1.0, 0.25)])
def test_cost_threshold_equals_a_brute_force_search(seed, costs):
    probs, observed = random_rows(60 + 13 * seed, seed=seed)
    probs[:5] = probs[5]  # ties: equal confidences stand or fall together
    confidence = probs.max(axis=1)
    out = observed == OUT_OF_SCOPE
    correct = (probs.argmax(axis=1) == observed) & ~out
    threshold = decisions.threshold_by_cost(confidence, correct, out, *costs)
    best_cost, cut = brute_force_cost(confidence, correct, out, *costs)
    accepted = confidence >= threshold
    chosen_cost = (costs[0] * np.sum(accepted & (out | ~correct)) + costs[1] * np.sum(~accepted & ~out))
    assert chosen_cost == pytest.approx(best_cost)
    if cut is None:
        assert threshold == ABSTAIN_ALL
    else:  # the same rows accepted as the lowest optimal cut, and no validation row on the threshold
        assert np.array_equal(accepted, confidence >= cut)
        assert not np.any(confidence == threshold) or threshold == 0.0


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("target", [0.6, 0.8, 0.95])
def test_accuracy_threshold_is_the_lowest_that_reaches_the_target(seed, target):
    probs, observed = random_rows(80, out_share=0.0, seed=seed)
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == observed
    threshold = decisions.threshold_for_accuracy(confidence, correct, target)
    reaching = [cut for cut in sorted(set(confidence.tolist()))
                if correct[confidence >= cut].mean() >= target]
    if not reaching:
        assert threshold == ABSTAIN_ALL
    else:
        assert np.array_equal(confidence >= threshold, confidence >= reaching[0])


def test_the_confidence_rule_uses_target_accuracy_without_out_of_scope_rows_and_costs_with_them():
    probs, observed = random_rows(300, seed=4)
    settings = AbstainConfig(rule="confidence")
    with_out = decisions.fit(settings, probs, observed, target_accuracy=0.9)
    assert with_out.chosen_by == "best accuracy over the K + 1 outcomes"
    assert with_out.validation_rows == {"in_scope": int((observed >= 0).sum()), "out_of_scope": int((observed < 0)
                                                                                                    .sum())}
    scoped = observed >= 0
    without = decisions.fit(settings, probs[scoped], observed[scoped], target_accuracy=0.9)
    assert without.chosen_by.startswith("lowest threshold") and without.validation_rows["out_of_scope"] == 0
    accepted = probs[scoped].max(axis=1) >= without.threshold
    assert (probs[scoped].argmax(axis=1) == observed[scoped])[accepted].mean() >= 0.9
    costly = decisions.fit(AbstainConfig(costs=CostsConfig(wrong_answer=5.0, abstention=1.0)), probs[scoped],
                           observed[scoped])
    assert costly.chosen_by.startswith("least cost over the in-scope rows")
    lo, hi = with_out.threshold_interval
    assert 0.0 <= lo <= hi <= ABSTAIN_ALL


def test_no_threshold_reaching_the_target_abstains_on_every_row_and_says_so():
    probs = np.full((20, 4), 0.25)
    probs[:, 0] = 0.4
    probs[:, 1:] = 0.2
    observed = np.arange(20) % 4  # a quarter right at every threshold
    rule = decisions.fit(AbstainConfig(), probs, observed, target_accuracy=0.95)
    assert rule.threshold == ABSTAIN_ALL and "abstains on every row" in rule.note
    assert rule.abstains(probs).all()


def test_the_conformal_rule_abstains_on_at_most_alpha_of_in_scope_rows_over_200_random_splits():
    """Split conformal: an in-scope row exchangeable with the calibration rows lands in an empty set (abstains)
    with probability at most alpha. Mean in-scope abstention over 200 random calibration/test splits of one pool
    stays within alpha + 3 Monte Carlo standard errors, and the rule does abstain (it is not vacuous)."""
    alpha, pool_rows = 0.1, 1200
    probs, observed = random_rows(pool_rows, classes=6, out_share=0.15, seed=7)
    rng = np.random.default_rng(0)
    in_scope_abstention, out_recall = [], []
    for _ in range(200):
        order = rng.permutation(pool_rows)
        cal, test = order[:400], order[400:]
        scoped = cal[observed[cal] >= 0]
        predictor = conformal.fit(probs[scoped], observed[scoped], "lac", alpha)
        rule = decisions.fit(AbstainConfig(rule="conformal"), probs[cal], observed[cal], set_predictor=predictor)
        abstained = rule.abstains(probs[test])
        in_scope_abstention.append(abstained[observed[test] >= 0].mean())
        out_recall.append(abstained[observed[test] < 0].mean())
        # abstaining is exactly an empty prediction set
        assert np.array_equal(abstained, predictor.sets(probs[test]).sum(axis=1) == 0)
    mean = float(np.mean(in_scope_abstention))
    standard_error = float(np.std(in_scope_abstention) / np.sqrt(len(in_scope_abstention)))
    assert mean <= alpha + 3 * standard_error
    assert mean > 0.0 and np.mean(out_recall) > 0.5  # it abstains, and mostly on out-of-scope rows


def test_report_rates_equal_hand_counts():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.55, 0.45], [0.6, 0.4], [0.52, 0.48]])
    observed = np.array([0, 1, 1, 0, OUT_OF_SCOPE, OUT_OF_SCOPE])
    unreadable = np.array([False, False, False, False, False, True])
    rule = decisions.DecisionRule("confidence", 0.58, "none")
    metrics = decisions.report(rule, probs, observed, unreadable)
    # abstained: row 3 (0.55 < 0.58) and row 5 (unreadable); accepted: 0 right, 1 wrong, 2 right, 4 out of scope
    assert metrics["abstained_rows"] == 2 and metrics["abstain_rate"] == pytest.approx(2 / 6)
    assert metrics["accepted_accuracy"] == pytest.approx(2 / 4)
    assert metrics["in_scope_accuracy"] == pytest.approx(2 / 4)
    assert metrics["out_of_scope_recall"] == pytest.approx(1 / 2)
    assert metrics["k_plus_1_accuracy"] == pytest.approx(3 / 6)
    assert metrics["unreadable_rows"] == 1 and metrics["out_of_scope_rows"] == 2
    assert list(rule.decisions(probs, ["a", "b"], unreadable)) == ["a", "a", "b", "none", "a", "none"]
    without_out = decisions.report(rule, probs[:4], observed[:4])
    assert without_out["out_of_scope_recall"] is None and without_out["intervals"]["out_of_scope_recall"] is None


def test_wilson_interval_matches_published_values():
    # Newcombe 1998, Table I: 81/263 -> 0.2553 to 0.3662; 15/148 -> 0.0624 to 0.1605
    assert decisions.wilson_interval(81, 263) == pytest.approx([0.2553, 0.3662], abs=1e-4)
    assert decisions.wilson_interval(15, 148) == pytest.approx([0.0624, 0.1605], abs=1e-4)
    assert decisions.wilson_interval(0, 10)[0] == 0.0 and decisions.wilson_interval(0, 0) is None


def test_rule_survives_json():
    probs, observed = random_rows(200, seed=2)
    rule = decisions.fit(AbstainConfig(label="fallback"), probs, observed)
    again = decisions.DecisionRule.from_json(rule.to_json())
    assert again == rule
    assert np.array_equal(again.abstains(probs), rule.abstains(probs))


def test_outlier_exposure_targets_are_exactly_uniform_and_stay_so_under_smoothing():
    hard = targets.hard_targets(np.array([2, -1, 0, -1]), 4)
    assert hard.dtype == np.float32
    np.testing.assert_array_equal(hard[[1, 3]], np.full((2, 4), 0.25, np.float32))
    np.testing.assert_array_equal(hard[[0, 2]], np.eye(4, dtype=np.float32)[[2, 0]])
    np.testing.assert_array_equal(targets.smooth(hard[[1]], 0.2), hard[[1]])
    assert targets.class_prior(np.array([0, 0, 1, -1, -1]), 2) == pytest.approx([2 / 3, 1 / 3])


def test_the_conformal_rule_needs_lac_sets_in_the_config():
    with pytest.raises(ValueError, match="calibration.conformal.score: lac"):
        CalibrationConfig(abstain={"rule": "conformal"}, conformal={"score": "aps"})
    with pytest.raises(ValueError, match="calibration.conformal is null"):
        CalibrationConfig(abstain={"rule": "conformal"}, conformal=None)
    assert CalibrationConfig(abstain={"rule": "conformal"}).abstain.rule == "conformal"


def test_automation_curve_ends_at_the_accuracy_of_all_rows():
    probs, observed = random_rows(300, seed=5)
    curve = decisions.automation_curve(probs, observed)
    right = (probs.argmax(axis=1) == observed) & (observed >= 0)
    assert curve["share_automated"][-1] == 1.0
    assert curve["accepted_accuracy"][-1] == pytest.approx(right.mean())
    assert len(curve["share_automated"]) <= 101
