"""What a finished run leaves behind: `metrics.json`, `predictions.csv` and `report.html`.

Which truth each number uses:
- accuracy, NLL, ECE/MCE, Brier, the confusion matrix and the automation table use each row's observed class:
  its label column when the table has one, else the argmax of its distribution (`observed_class` in
  metrics.json says which; `argmax_ties` counts rows whose argmax was a tie, given to the lowest class index);
- rows that carry distributions q also get `soft_ce` = H(q, p) and `soft_kl` = KL(q ‖ p), before and after T;
- T minimises the soft cross-entropy to the validation distributions when the validation rows carry them, else
  the NLL of the validation rows' observed classes (`calibration.fit_on`; `temperature_fit_on` says which);
- prediction sets (`calibration.conformal`, kerasls.conformal) are fitted on the validation rows' calibrated
  probabilities (after T) and observed classes, and measured on the evaluated rows' observed classes;
- rows labelled `data.out_of_scope_label` (observed class -1) belong to no class: every number above leaves them
  out (`out_of_scope_rows` counts them); the decision rule (`calibration.abstain`, kerasls.decisions) is chosen on
  all readable validation rows and `decision` is measured on all evaluated rows.
Files are written atomically, `metrics.json` last among the tables, so a reader that finds it finds the rest
complete.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from kerasls import calibration, conformal, decisions, report
from kerasls.errors import KeraslsError
from kerasls.fileio import atomic_write_text


def temperature_objective(fit_on: str, validation_is_soft: bool) -> str:
    """"soft" or "hard": what T minimises, from `calibration.fit_on` (auto: soft when the validation rows carry
    distributions)."""
    if fit_on == "auto":
        return "soft" if validation_is_soft else "hard"
    if fit_on == "soft" and not validation_is_soft:
        raise KeraslsError("calibration.fit_on is soft, but the validation rows carry no distributions (no "
                           "probability or vote columns); set calibration.fit_on: auto or hard")
    return fit_on


def fit_temperature(val_logits, val_labels, enabled=True, soft_targets=None) -> float:
    """T on the validation rows: the soft cross-entropy to `soft_targets` when given, else the NLL of the observed
    classes `val_labels` (Guo et al. 2017); 1.0 when turned off or when no T lowers the objective."""
    if not enabled:
        return 1.0
    if soft_targets is not None:
        return calibration.fit_temperature_soft(val_logits, soft_targets)
    return calibration.fit_temperature(val_logits, val_labels)


@dataclass
class Calibrated:
    """A run's evaluation through its served graph: validation and evaluated logits, their targets, and T."""

    val_logits: np.ndarray
    eval_logits: np.ndarray
    val: object  # targets.SplitTargets of the validation rows
    evaluated: object  # targets.SplitTargets of the evaluated split (test, else val)
    eval_split: str
    temperature: float
    fit_on: str
    set_predictor: Optional[conformal.SetPredictor] = None  # prediction sets (calibration.conformal), or None
    decision_rule: Optional[decisions.DecisionRule] = None  # calibration.abstain, or None
    val_unreadable: Optional[np.ndarray] = None  # bool [N]: rows without a known word (tables with text)
    eval_unreadable: Optional[np.ndarray] = None


def calibrate(serving, feed, calibration_config, seed=0) -> Calibrated:
    """Validation and evaluated logits from `serving.evaluation_function()` (the graph the export serves) over
    `feed.evaluation_inputs(split)`, one temperature fitted on the validation rows (`temperature_objective`), the
    prediction sets of `calibration.conformal` fitted on the same rows (`fit_prediction_sets`), both on the in-scope
    rows, and the decision rule of `calibration.abstain` on all readable ones (`fit_decision_rule`)."""
    logits_fn = serving.evaluation_function()
    val, evaluated = feed.targets("val"), feed.targets(feed.eval_split)
    val_logits, val_unreadable = predict_outputs(logits_fn, feed.evaluation_inputs("val"))
    in_scope = ~val.out_of_scope
    if not in_scope.any():
        raise KeraslsError("every validation row is out of scope (data.out_of_scope_label): temperature and "
                           "thresholds need in-scope rows; give validation rows of the classes")
    scoped = val.in_scope()
    fit_on = temperature_objective(calibration_config.fit_on, val.soft)
    temperature = fit_temperature(val_logits[in_scope], scoped.observed,
                                  enabled=calibration_config.temperature_scaling,
                                  soft_targets=scoped.distributions if fit_on == "soft" else None)
    set_predictor = fit_prediction_sets(calibration_config, val_logits[in_scope], scoped.observed, temperature)
    rule = fit_decision_rule(calibration_config, val_logits, val.observed, temperature, set_predictor,
                             val_unreadable, seed)
    eval_logits, eval_unreadable = predict_outputs(logits_fn, feed.evaluation_inputs(feed.eval_split))
    return Calibrated(val_logits, eval_logits, val, evaluated, feed.eval_split, temperature, fit_on, set_predictor,
                      rule, val_unreadable, eval_unreadable)


def fit_decision_rule(calibration_config, val_logits, val_observed, temperature, set_predictor=None,
                      unreadable=None, seed=0) -> Optional[decisions.DecisionRule]:
    """The rule of `calibration.abstain` on the validation rows' calibrated probabilities σ(z/T) and observed
    classes (-1: out of scope), leaving out unreadable rows (they abstain whatever the threshold); None when off."""
    settings = calibration_config.abstain
    if settings is None:
        return None
    readable = np.ones(len(val_observed), bool) if unreadable is None else ~np.asarray(unreadable, bool)
    return decisions.fit(settings, calibration.softmax(val_logits[readable], temperature),
                         np.asarray(val_observed)[readable], calibration_config.target_accuracy, set_predictor, seed)


def check_validation_rows(calibration_config, rows: int) -> None:
    """A KeraslsError when `rows` validation rows are too few for `calibration.conformal.alpha` (n < 1/α − 1: no
    finite threshold). train.py calls it once the data are read, so the error comes before training."""
    settings = calibration_config.conformal
    if settings is None or rows >= conformal.minimum_rows(settings.alpha):
        return
    lowest = math.ceil(10_000 / (rows + 1)) / 10_000  # the least alpha these rows allow, 1/(n + 1), rounded up
    raise KeraslsError(
        f"calibration.conformal.alpha={settings.alpha:g} needs at least {conformal.minimum_rows(settings.alpha)} "
        f"validation rows (n >= 1/alpha - 1), but there are {rows}: give more validation rows (data.val, or a larger "
        f"data.val_fraction)" + (f", raise calibration.conformal.alpha to {lowest:g} or more" if lowest < 1 else "")
        + ", or turn prediction sets off with calibration.conformal=null")


def fit_prediction_sets(calibration_config, val_logits, val_labels, temperature) -> Optional[conformal.SetPredictor]:
    """The split-conformal sets of `calibration.conformal` on the validation rows' calibrated probabilities
    σ(z/T) and observed classes; None when it is off."""
    settings = calibration_config.conformal
    if settings is None:
        return None
    check_validation_rows(calibration_config, len(val_labels))
    return conformal.fit(calibration.softmax(val_logits, temperature), np.asarray(val_labels), settings.score,
                         settings.alpha, settings.raps_lambda, settings.raps_k_reg)


def predict_logits(logits_fn, data, batch_size=1024) -> np.ndarray:
    """The logits of `predict_outputs`."""
    return predict_outputs(logits_fn, data, batch_size)[0]


def predict_outputs(logits_fn, data, batch_size=1024):
    """(logits float32 [N, K], unreadable bool [N] or None) of `logits_fn` over `data`, in order: a
    `tf.data.Dataset` of (inputs, targets) batches, or inputs in memory (an array, or a dict of column arrays) cut
    into batches of `batch_size`. `logits_fn` returns logits, or {"logits", "unreadable"} (tables with text).

    For a run's metrics and temperature, `logits_fn` is `Serving.evaluation_function()`: the traced graph the
    export serves (`kerasls.export.Serving` says why). Never `model.predict`, which costs ~30 ms a call.
    """
    import tensorflow as tf

    if isinstance(data, tf.data.Dataset):
        outputs = [logits_fn(inputs) for inputs, _ in data]
    else:
        rows = len(next(iter(data.values()))) if isinstance(data, dict) else len(data)
        outputs = [logits_fn(tf.nest.map_structure(lambda column, start=start: column[start:start + batch_size],
                                                   data)) for start in range(0, rows, batch_size)]
    if not outputs:
        raise ValueError("predict_outputs: `data` holds no rows")
    outputs = [o if isinstance(o, dict) else {"logits": o} for o in outputs]
    logits = np.concatenate([np.asarray(tf.cast(o["logits"], tf.float32)) for o in outputs], axis=0)
    if "unreadable" not in outputs[0]:
        return logits, None
    return logits, np.concatenate([np.asarray(o["unreadable"]) for o in outputs], axis=0)


def report_run(run, feed, calibrated: Calibrated, config, export_path=None, epoch_score=None, title="kerasls run"):
    """`write_results` for a trained run: metrics against the observed classes of the evaluated split, the
    soft metrics where rows carry distributions, and the validation score `kerasls sweep` ranks by."""
    evaluated, val = calibrated.evaluated, calibrated.val.in_scope()
    return write_results(
        run, classes=feed.classes, labels=evaluated.observed, logits=calibrated.eval_logits,
        temperature=calibrated.temperature, split=calibrated.eval_split,
        label_smoothing=config.targets.label_smoothing, bins=config.calibration.bins,
        target_accuracy=config.calibration.target_accuracy, export_path=export_path,
        validation=(calibrated.val_logits[~calibrated.val.out_of_scope], val.observed, val.soft_or_none()),
        temperature_scaling=config.calibration.temperature_scaling, temperature_fit_on=calibrated.fit_on,
        row_ids=feed.row_ids(calibrated.eval_split), soft_targets=evaluated.soft_or_none(),
        observed_class=evaluated.observed_class, epoch_score=epoch_score, title=title,
        set_predictor=calibrated.set_predictor, sets_in_sample=calibrated.eval_split == "val",
        decision_rule=calibrated.decision_rule, unreadable=calibrated.eval_unreadable,
        out_of_scope_label=config.data.out_of_scope_label,
    )


def soft_metrics(logits, soft_targets, temperature, prefix="") -> dict:
    """`soft_ce` and `soft_kl` to the rows' distributions, before and after T."""
    before, after = calibration.softmax(logits), calibration.softmax(logits, temperature)
    return {f"{prefix}soft_ce": calibration.soft_cross_entropy(before, soft_targets),
            f"{prefix}soft_ce_calibrated": calibration.soft_cross_entropy(after, soft_targets),
            f"{prefix}soft_kl": calibration.soft_kl(before, soft_targets),
            f"{prefix}soft_kl_calibrated": calibration.soft_kl(after, soft_targets)}


def prediction_table(classes, labels, logits, temperature, row_ids=None, out_of_scope_label=None, decided=None,
                     unreadable=None) -> pd.DataFrame:
    """`row_ids` (e.g. image paths) become a first column `path`, so each row can be traced to its input. A label
    of -1 is written as `out_of_scope_label`; `decided` ((decision names, abstained flags) of a decision rule) and
    `unreadable` add those columns."""
    before = calibration.softmax(logits)
    after = calibration.softmax(logits, temperature)
    columns = {"path": list(row_ids)} if row_ids is not None else {}
    columns["label"] = [classes[i] if i >= 0 else out_of_scope_label for i in labels]
    columns.update({f"prob_{name}": before[:, k] for k, name in enumerate(classes)})
    columns.update({f"calibrated_prob_{name}": after[:, k] for k, name in enumerate(classes)})
    if unreadable is not None:
        columns["unreadable"] = np.asarray(unreadable, bool)
    if decided is not None:
        columns["decision"], columns["abstained"] = decided
    return pd.DataFrame(columns)


def write_results(run, *, classes, labels, logits, temperature, split, label_smoothing, bins=15,
                  target_accuracy=0.95, export_path=None, validation=None, temperature_scaling=True,
                  row_ids=None, soft_targets=None, observed_class="label", temperature_fit_on="hard",
                  epoch_score=None, extra_metrics=None, title="kerasls run", set_predictor=None,
                  sets_in_sample=False, decision_rule=None, unreadable=None, out_of_scope_label=None) -> dict:
    """Metrics on (`labels`, `logits`) (see the module docstring).

    `validation=(val_logits, val_labels[, val_soft_targets])` adds `val_accuracy`, `val_nll`, `val_nll_calibrated`
    and, for distributions, `val_soft_ce`/`val_soft_kl` before and after T; `ranking_score` names the one `kerasls
    sweep` ranks ε by (`val_soft_ce_calibrated` when the validation rows carry distributions, else
    `val_nll_calibrated`). `soft_targets`: the evaluated rows' distributions, or None. `observed_class`: "label" or
    "argmax" (where `labels` came from). `epoch_score`: the history column that picked the best epoch.
    `set_predictor` (a conformal.SetPredictor) adds `conformal`: its report on these rows' calibrated probabilities;
    `sets_in_sample`: these rows are the ones it was fitted on. Rows labelled -1 (`out_of_scope_label`) are left out
    of every metric but `decision`: `decision_rule` (kerasls.decisions.DecisionRule) adds it, measured on all rows
    with their `unreadable` flags.
    """
    all_labels, all_logits = np.asarray(labels), np.asarray(logits)
    in_scope = all_labels >= 0
    if not in_scope.any():
        raise KeraslsError(f"every {split} row is out of scope ({out_of_scope_label!r}): accuracy and calibration "
                           "need rows of the classes")
    labels, logits = all_labels[in_scope], all_logits[in_scope]
    soft_targets = None if soft_targets is None else np.asarray(soft_targets)[in_scope]
    metrics = {"classes": list(classes), "split": split}
    metrics.update(calibration.evaluate(logits, labels, temperature=temperature, bins=bins,
                                        target_accuracy=target_accuracy))
    metrics["majority_share"] = float(np.bincount(labels, minlength=len(classes)).max() / max(len(labels), 1))
    metrics["label_smoothing"] = None if label_smoothing is None else float(label_smoothing)
    metrics["temperature_scaling"] = bool(temperature_scaling)
    metrics["temperature_fit_on"] = temperature_fit_on
    metrics["observed_class"] = observed_class
    if soft_targets is not None and observed_class == "argmax":
        metrics["argmax_ties"] = calibration.argmax_ties(soft_targets)
    metrics["ranking_score"] = "val_nll_calibrated"
    if validation is not None:
        val_logits, val_labels, val_soft = (*validation, None)[:3]
        val_labels = np.asarray(val_labels)
        metrics["val_accuracy"] = float((np.argmax(val_logits, axis=1) == val_labels).mean())
        metrics["val_nll"] = calibration.negative_log_likelihood(calibration.softmax(val_logits), val_labels)
        metrics["val_nll_calibrated"] = calibration.negative_log_likelihood(
            calibration.softmax(val_logits, temperature), val_labels)
        if val_soft is not None:
            metrics.update(soft_metrics(val_logits, val_soft, temperature, prefix="val_"))
            metrics["ranking_score"] = "val_soft_ce_calibrated"
    if epoch_score is not None:
        metrics["epoch_score"] = epoch_score
    metrics["export_path"] = str(export_path) if export_path is not None else None
    if soft_targets is not None:  # the evaluated rows carry label distributions: compare to them too
        metrics.update(soft_metrics(logits, soft_targets, temperature))
    if set_predictor is not None:
        metrics["conformal"] = set_predictor.report(calibration.softmax(logits, temperature), labels, classes,
                                                    in_sample=sets_in_sample)
    decided = None
    if out_of_scope_label is not None:
        metrics["out_of_scope_label"] = out_of_scope_label
    if not in_scope.all():
        metrics["out_of_scope_rows"] = int((~in_scope).sum())
    if decision_rule is not None:
        calibrated = calibration.softmax(all_logits, temperature)
        metrics["decision"] = {**decisions.report(decision_rule, calibrated, all_labels, unreadable),
                               "curve": decisions.automation_curve(calibrated, all_labels)}
        decided = (decision_rule.decisions(calibrated, classes, unreadable),
                   decision_rule.abstains(calibrated, unreadable))
    metrics.update(extra_metrics or {})

    table = prediction_table(classes, all_labels, all_logits, temperature, row_ids, out_of_scope_label, decided,
                             unreadable)
    atomic_write_text(run.predictions, table.to_csv(index=False))
    history = pd.read_csv(run.history) if Path(run.history).is_file() else None
    report.write_report(
        run.path, metrics, history, calibration.softmax(logits), calibration.softmax(logits, temperature), labels,
        list(classes), title=title, row_ids=np.asarray(
            [f"predictions.csv line {line}" for line in np.arange(len(all_labels)) + 2] if row_ids is None
            else row_ids, dtype=object)[in_scope],
    )
    atomic_write_text(run.metrics, json.dumps(metrics, indent=2))
    return metrics


def metrics_from_predictions(run_folder) -> dict:
    """`n`, `accuracy` and `nll` recomputed from a run's predictions.csv alone (its `label` and `prob_<class>`
    columns), to check metrics.json against the per-row predictions it was computed from; with prediction sets,
    also their `set_summary` from the `calibrated_prob_<class>` columns and the thresholds in metrics.json."""
    run_folder = Path(run_folder)
    metrics = json.loads((run_folder / "metrics.json").read_text(encoding="utf-8"))
    classes = metrics["classes"]
    rows = pd.read_csv(run_folder / "predictions.csv", dtype={"label": str}, keep_default_na=False)
    rows = rows[rows["label"].isin(classes)]  # out-of-scope rows are in no metric but `decision`
    probabilities = rows[[f"prob_{name}" for name in classes]].to_numpy()
    observed = rows["label"].map({name: k for k, name in enumerate(classes)}).to_numpy()
    result = {"n": len(rows), "accuracy": float((probabilities.argmax(axis=1) == observed).mean()),
              "nll": calibration.negative_log_likelihood(probabilities, observed)}
    if metrics.get("conformal"):
        calibrated = rows[[f"calibrated_prob_{name}" for name in classes]].to_numpy()
        sets = conformal.SetPredictor.from_json(metrics["conformal"]).sets(calibrated)
        result.update(conformal.set_summary(sets, observed))
    return result


def temperature_note(metrics: dict) -> str:
    """One sentence when temperature scaling did not help on the evaluated split (it is fitted on validation rows,
    so on another split it can make NLL or ECE a little worse), else ""."""
    if metrics.get("temperature", 1.0) == 1.0:
        return ""
    worse = [name for name in ("nll", "ece") if metrics[f"{name}_calibrated"] > metrics[name]]
    if not worse:
        return ""
    changes = ", ".join(f"{name.upper()} {metrics[name]:.4f} -> {metrics[name + '_calibrated']:.4f}" for name in worse)
    return (f"Temperature scaling did not help on the {metrics['split']} rows ({changes}): T was fitted on the "
            "validation rows, and on these rows it does not transfer; compare with more validation rows or seeds "
            "before relying on it.")


def headline(metrics: dict) -> str:
    """The console summary: accuracy and calibration before and after temperature, and a note when T did not
    help on the evaluated split."""
    outside = f" (+{metrics['out_of_scope_rows']} out of scope)" if metrics.get("out_of_scope_rows") else ""
    line = (
        f"{metrics['split']} n={metrics['n']}{outside}  accuracy={metrics['accuracy']:.4f}  "
        f"nll={metrics['nll']:.4f}  ece={metrics['ece']:.4f}  brier={metrics['brier']:.4f}  "
        f"T={metrics['temperature']:.3f} -> nll={metrics['nll_calibrated']:.4f} ece={metrics['ece_calibrated']:.4f}"
    )
    notes = [temperature_note(metrics), chance_note(metrics), conformal.coverage_shortfall(metrics.get("conformal"))]
    notes.append((metrics.get("decision") or {}).get("note", ""))
    return "\n".join([line, *sets_line(metrics), *decision_line(metrics),
                      *(f"note: {note}" for note in notes if note)])


def decision_line(metrics: dict) -> list:
    """The decision rule's line of the console summary ([] without one)."""
    decision = metrics.get("decision")
    if not decision:
        return []
    rates = [f"abstained={decision['abstain_rate']:.1%}"]
    for name, key in (("accuracy answered", "accepted_accuracy"), ("in-scope accuracy", "in_scope_accuracy"),
                      ("out-of-scope recall", "out_of_scope_recall")):
        if decision[key] is not None:
            rates.append(f"{name}={decision[key]:.4f}")
    if decision["unreadable_rows"]:
        rates.append(f"unreadable={decision['unreadable_rows']}")
    threshold = (f"empty set, 1-q={decision['confidence_threshold']:.4f}" if decision["rule"] == "conformal"
                 else f"confidence < {decision['threshold']:.4f}")
    return [f"decisions {decision['rule']} ({threshold} -> {decision['label']!r}): " + "  ".join(rates)]


def sets_line(metrics: dict) -> list:
    """The prediction sets' line of the console summary ([] without them)."""
    sets = metrics.get("conformal")
    if not sets:
        return []
    accuracy = sets["singleton_accuracy"]
    return [f"prediction sets {sets['score']} alpha={sets['alpha']:g}: coverage={sets['set_coverage']:.4f}  "
            f"mean size={sets['mean_set_size']:.2f}  singletons={sets['singleton_share']:.1%}"
            + (f" (accuracy {accuracy:.4f})" if accuracy is not None else "")
            + (f"  empty={sets['empty_share']:.1%}" if sets["empty_share"] else "")]


CHANCE_NOTE_ROWS = 30  # fewer rows cannot tell a model from always answering one class


def chance_note(metrics: dict) -> str:
    """One sentence when the accuracy is no better than always answering the most frequent class, else ""."""
    share = metrics.get("majority_share")
    if share is None or metrics["accuracy"] > share + 0.01 or metrics["n"] < CHANCE_NOTE_ROWS:
        return ""
    return (f"accuracy {metrics['accuracy']:.4f} is no better than always answering the most frequent class "
            f"({share:.4f} of the {metrics['split']} rows): the model has not learnt yet; train longer "
            "(training.epochs) or check the labels.")
