"""The run report: three PNG plots and one self-contained `report.html`.

Plots are drawn on `matplotlib.figure.Figure` objects with an explicit Agg canvas, so this module never touches
pyplot's global state or the process-wide backend. `report.html` embeds every image as a base64 `data:image/png`
URI and carries inline CSS only: no scripts, no external links, so it can be mailed or archived as one file.
Every file is written atomically (kerasls.fileio).
"""

import html
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from kerasls import calibration, class_report, conformal, decision_report, decisions
from kerasls.fileio import atomic_write_text
from kerasls.report_parts import CSS, format_value, image, percent, save

_LOSS_COLUMNS = ("loss", "val_loss", "nll", "val_nll", "soft_ce", "val_soft_ce")
_ACCURACY_COLUMNS = ("accuracy", "val_accuracy", "argmax_agreement", "val_argmax_agreement")
_CURVE_COLOURS = {"loss": "#4c72b0", "nll": "#dd8452", "soft_ce": "#dd8452", "accuracy": "#55a868",
                  "argmax_agreement": "#55a868"}  # train solid, val dashed


# ------------------------------------------------------------------------------------------------- helpers
def _history_columns(history):
    """{column: float array} from a CSVLogger DataFrame or a Keras `History.history` dict; {} for None/empty."""
    if history is None:
        return {}
    items = [(column, history[column]) for column in history.columns] if hasattr(history, "columns") else \
        list(dict(history).items())
    columns = {}
    for name, values in items:
        try:
            values = np.asarray(values, dtype=float).reshape(-1)
        except (TypeError, ValueError):
            continue  # a non-numeric column is not a curve
        if values.size:
            columns[str(name)] = values
    return columns


# --------------------------------------------------------------------------------------------------- plots
def _reliability_panel(diagram, histogram, probs, labels, bins, title):
    """Reliability diagram (accuracy per bin vs the diagonal, gap hatched, rows per bin on top) above a
    confidence histogram."""
    table = calibration.reliability_bins(probs, labels, bins)
    ece = calibration.expected_calibration_error(probs, labels, bins)
    edges, width = table["edges"], 1.0 / bins
    left = edges[:-1]
    filled = table["count"] > 0
    accuracy = np.where(filled, table["accuracy"], 0.0)
    confidence = np.where(filled, table["confidence"], 0.0)
    diagram.bar(left[filled], accuracy[filled], width=width, align="edge", color="#4c72b0", edgecolor="white",
                label="accuracy in the bin")
    gap_bottom, gap_height = np.minimum(accuracy, confidence), np.abs(confidence - accuracy)
    # hatch lines only (no fill), so a gap inside an accuracy bar does not blend into a colour of its own
    diagram.bar(left[filled], gap_height[filled], bottom=gap_bottom[filled], width=width, align="edge",
                facecolor="none", edgecolor="#c44e52", hatch="//", linewidth=0.8, label="gap to confidence")
    for x, top, count in zip(left[filled], np.maximum(accuracy, confidence)[filled], table["count"][filled]):
        # rows per bin, above the bar: a tall gap over a handful of rows weighs little in ECE
        # on a white box drawn over the diagonal, which crosses the labels of well-calibrated bins
        diagram.text(x + width / 2, top + 0.01, str(int(count)), ha="center", va="bottom", fontsize="small",
                     color="#333333", zorder=3, bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.6})
    diagram.plot([0, 1], [0, 1], linestyle="--", color="#555555", label="perfect calibration")
    # headroom above 1 for the row counts and a one-line legend, so neither covers a bar
    diagram.set(xlim=(0, 1), ylim=(0, 1.17), yticks=np.linspace(0, 1, 6), ylabel="accuracy",
                title=f"{title} — ECE {ece:.4f}")
    diagram.axhline(1.0, color="#bbbbbb", linewidth=0.8)
    diagram.legend(loc="upper center", ncol=3, fontsize="small", frameon=False, borderaxespad=0.2)
    diagram.tick_params(labelbottom=False)
    share = table["count"] / max(int(table["count"].sum()), 1)
    histogram.bar(left, share, width=width, align="edge", color="#8c8c8c", edgecolor="white")
    top_confidence = np.max(probs, axis=1)
    histogram.axvline(float(np.mean(top_confidence)), color="#c44e52", label="mean confidence")
    histogram.axvline(float(np.mean(np.argmax(probs, axis=1) == labels)), color="#4c72b0", linestyle="--",
                      label="accuracy (all rows)")
    histogram.set(xlim=(0, 1), ylim=(0, max(float(share.max()), 1e-9) * 1.45), xlabel="top-label confidence",
                  ylabel="share of rows")
    # on white: the two lines run through the legend when they sit near the middle
    histogram.legend(loc="upper center", ncol=2, fontsize="small", frameon=True, facecolor="white", edgecolor="none",
                     framealpha=1.0, borderaxespad=0.2)


def plot_reliability(probs_before, probs_after, labels, bins, path):
    """One PNG, two columns (before / after temperature scaling), each a reliability diagram over a confidence
    histogram with `bins` equal-width bins; `probs_after=None` draws the first column only. Returns the path."""
    panels = [(probs_before, "Before temperature")]
    if probs_after is not None:
        panels.append((probs_after, "After temperature"))
    labels = np.asarray(labels)
    figure = Figure(figsize=(6.0 * len(panels), 7.0), layout="constrained")
    grid = figure.add_gridspec(2, len(panels), height_ratios=(3, 1))
    for column, (probs, title) in enumerate(panels):
        diagram = figure.add_subplot(grid[0, column])
        histogram = figure.add_subplot(grid[1, column], sharex=diagram)
        _reliability_panel(diagram, histogram, np.asarray(probs, dtype=float), labels, bins, title)
    return save(figure, path)


def plot_history(history, path, best_epoch=None):
    """Training curves from a CSVLogger DataFrame (columns `epoch`, `loss`, `val_loss`, `nll`, `val_nll`,
    `accuracy`, `val_accuracy`, any may be missing): loss/NLL panel and accuracy panel; epochs 1-based.
    `best_epoch` (1-based), the epoch whose weights the run kept, is marked on both panels."""
    columns = _history_columns(history)
    length = max((len(values) for values in columns.values()), default=0)
    epochs = columns["epoch"] + 1 if "epoch" in columns else np.arange(1, length + 1)
    figure = Figure(figsize=(11.0, 4.0), layout="constrained")
    panels = figure.subplots(1, 2)
    unsmoothed = "soft CE" if "soft_ce" in columns or "val_soft_ce" in columns else "NLL"
    accuracy = "argmax agreement" if "argmax_agreement" in columns or "val_argmax_agreement" in columns else "accuracy"
    for axes, names, title in ((panels[0], _LOSS_COLUMNS, f"loss (smoothed targets) and {unsmoothed} (unsmoothed)"),
                               (panels[1], _ACCURACY_COLUMNS, accuracy)):
        drawn = [name for name in names if name in columns]
        if best_epoch is not None and drawn:
            axes.axvline(best_epoch, color="#888888", linestyle=":", linewidth=1.5,
                         label=f"epoch kept ({best_epoch})")
        for name in drawn:
            family = name.removeprefix("val_")
            axes.plot(epochs, columns[name], marker="o", markersize=3, label=name,
                      color=_CURVE_COLOURS.get(family, "#555555"), linestyle="--" if name.startswith("val_") else "-")
        if drawn:
            axes.legend(fontsize="medium")
        else:
            axes.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=axes.transAxes)
        axes.set(title=title, xlabel="epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
    return save(figure, path)


# ---------------------------------------------------------------------------------------------------- HTML


def _threshold_text(threshold):
    """0.9 -> "0.90"; thresholds finer than the grid keep four decimals."""
    threshold = float(threshold)
    return f"{threshold:.2f}" if round(threshold, 2) == threshold else f"{threshold:.4f}"


def _metrics_section(metrics):
    rows = [("accuracy", "accuracy", "accuracy"), ("NLL", "nll", "nll_calibrated"),
            ("ECE", "ece", "ece_calibrated"), ("MCE", "mce", "mce_calibrated"),
            ("Brier", "brier", "brier_calibrated"), ("adaptive ECE", "adaptive_ece", None),
            ("classwise ECE", "classwise_ece", None),
            ("soft cross-entropy H(q, p)", "soft_ce", "soft_ce_calibrated"),
            ("soft KL(q ‖ p)", "soft_kl", "soft_kl_calibrated")]
    body = "".join(f"<tr><td>{name}</td><td>{format_value(metrics.get(before))}</td>"
                   f"<td>{format_value(metrics.get(after)) if after else '—'}</td></tr>"
                   for name, before, after in rows if before in metrics)
    temperature = metrics.get("temperature")
    details = [("temperature T", format_value(temperature)),
               ("label smoothing ε", format_value(metrics.get("label_smoothing"))),
               ("split", format_value(metrics.get("split"))), ("n", format_value(metrics.get("n"))),
               ("calibration bins", format_value(metrics.get("bins"))),
               ("export", format_value(metrics.get("export_path")))]
    if metrics.get("out_of_scope_rows"):
        details.append(("out-of-scope rows (in no metric but Decisions)", format_value(metrics["out_of_scope_rows"])))
    observed = ("the argmax of each row's distribution (the table has no label column"
                + (f"; {metrics['argmax_ties']} tied rows went to the lowest class index)" if "argmax_ties" in metrics
                   else ")")
                if metrics.get("observed_class") == "argmax" else "each row's label column")
    objective = ("the soft cross-entropy to the validation rows' distributions"
                 if metrics.get("temperature_fit_on") == "soft" else "the NLL of the validation rows' observed classes")
    ranking = metrics.get("epoch_score")
    parts = ["<h2>Metrics</h2>",
             f"<table><thead><tr><th>metric</th><th>before temperature</th><th>after temperature</th></tr></thead>"
             f"<tbody>{body}</tbody></table>",
             "<table><tbody>" + "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in details) + "</tbody></table>",
             f'<p class="note">Accuracy, NLL, ECE, MCE, Brier, the confusion matrix and the automation table use '
             f"unsmoothed observed classes: {observed}. ECE is top-label with equal-width bins; MCE is the largest "
             "gap of any one bin, so a bin of a few rows can move it a lot (the diagram shows each bin's rows). The "
             f"temperature minimises {objective} and divides the logits, so accuracy is unchanged."
             + (" The soft rows compare the probabilities with the rows' own distributions q." if "soft_ce" in metrics
                else "")
             + (f" The best epoch was picked by <code>{html.escape(ranking)}</code>." if ranking else "") + "</p>"]
    if metrics.get("temperature_scaling") is False:
        parts.append('<p class="note">Temperature scaling was turned off (calibration.temperature_scaling), '
                     "so T=1.</p>")
    elif temperature is not None and float(temperature) == 1.0:
        parts.append(f'<p class="note">Temperature scaling did not lower {objective}, so T=1 was kept.</p>')
    elif temperature is not None and any(metrics.get(f"{name}_calibrated", 0) > metrics.get(name, 0)
                                         for name in ("nll", "ece")):
        parts.append('<p class="note">Temperature scaling did not help on these rows: T was fitted on the '
                     "validation rows, and here it makes NLL or ECE worse (see the table); compare with more "
                     "validation rows or seeds before relying on it.</p>")
    return "\n".join(parts)


def _interval_text(accuracy, rows):
    """The Wilson 95% interval of an accuracy measured on `rows` rows, as text ("—" without rows)."""
    bounds = decisions.wilson_interval(round(accuracy * rows), rows) if accuracy is not None and rows else None
    return f"{percent(bounds[0])} – {percent(bounds[1])}" if bounds else "—"


def _thresholds_section(thresholds):
    if not thresholds:
        return ""
    body = "".join(f"<tr><td>{_threshold_text(row['threshold'])}</td><td>{percent(row['coverage'])}</td>"
                   f"<td>{percent(row['accuracy'])}</td><td>{_interval_text(row['accuracy'], row['n'])}</td>"
                   f"<td>{row['n']}</td></tr>" for row in thresholds["rows"])
    target = thresholds.get("target_accuracy")
    smallest = thresholds.get("smallest_threshold_for_target")
    if target is None:
        sentence = ""
    elif smallest is None:
        sentence = (f"No confidence threshold reaches {percent(target)} accuracy on these rows: "
                    "every threshold leaves accuracy below the target.")
    else:
        rows = thresholds.get("rows_at_target") or 0
        sentence = (f"The smallest confidence threshold reaching {percent(target)} accuracy is {smallest:.4f}, "
                    f"automating {percent(thresholds.get('coverage_at_target'))} of rows ({rows} rows; accuracy "
                    f"{percent(thresholds.get('accuracy_at_target'))}, 95% interval "
                    f"{_interval_text(thresholds.get('accuracy_at_target'), rows)}"
                    + (": too few rows to rely on" if rows < 30 else "") + ").")
    return ("<h2>Automation rate</h2>"
            '<p class="note">Rows whose calibrated top-label confidence is at least the threshold are handled '
            "automatically; coverage is their share of all rows, accuracy is measured on them, with its Wilson 95% "
            "interval.</p>"
            "<table><thead><tr><th>threshold</th><th>coverage</th><th>accuracy</th><th>95% interval</th>"
            f"<th>rows</th></tr></thead><tbody>{body}</tbody></table><p>{sentence}</p>")


_SET_RULES = {"lac": "every class whose calibrated probability is at least 1 − q̂",
              "aps": "the most probable classes, up to and including the one at which their cumulative probability "
                     "passes q̂",
              "raps": "the most probable classes, up to and including the one at which their cumulative probability "
                      "plus λ·(rank − k<sub>reg</sub>)<sup>+</sup> passes q̂"}


def _sets_section(sets):
    """Prediction sets: the coverage table over α, the configured α's singletons and empty sets, the classes that
    fall short of 1 − α, and the other scores' coverage and mean set size."""
    if not sets:
        return ""
    alpha = sets["alpha"]
    body = "".join(
        f"<tr><td>{'<strong>' if row['alpha'] == alpha else ''}{row['alpha']:g}"
        f"{' (served)</strong>' if row['alpha'] == alpha else ''}</td><td>{percent(1 - row['alpha'])}</td>"
        f"<td>{format_value(row['threshold'])}</td><td>{percent(row['set_coverage'])}</td>"
        f"<td>{format_value(row['mean_set_size'], 2)}</td><td>{percent(row['singleton_share'])}</td>"
        f"<td>{percent(row['singleton_accuracy'])}</td><td>{percent(row['empty_share'])}</td></tr>"
        for row in sets["table"])
    parts = ["<h2>Prediction sets</h2>",
             f'<p class="note">Split conformal prediction with the <code>{sets["score"]}</code> score: a row\'s set '
             f"holds {_SET_RULES[sets['score']]}, where q̂ is the ⌈(n+1)(1−α)⌉-th smallest conformity score of the "
             f"n = {sets['calibration_rows']} validation rows (calibrated probabilities, observed classes). For rows "
             "exchangeable with those, a set holds the true class with probability at least 1 − α (coverage); a "
             "threshold shown as — means too few validation rows for that α. The export serves the sets at α = "
             f"{alpha:g} (<code>prediction_set</code>, <code>set_size</code>).</p>",
             "<table><thead><tr><th>α</th><th>target 1 − α</th><th>threshold q̂</th><th>coverage</th>"
             "<th>mean set size</th><th>single class</th><th>its accuracy</th><th>empty</th></tr></thead>"
             f"<tbody>{body}</tbody></table>",
             f"<p>At α = {alpha:g}, {percent(sets['set_coverage'])} of the {sets['n']} rows have their class in the "
             "set; " + (f"{percent(sets['singleton_share'])} get a single class, correct on "
                        f"{percent(sets['singleton_accuracy'])} of them: rows to handle automatically, as in the "
                        "automation table above" if sets["singleton_share"] else "no row gets a single class")
             + (f"; {percent(sets['empty_share'])} get an empty set (no class likely enough)"
                if sets["empty_share"] else "") + ".</p>"]
    shortfall = conformal.coverage_shortfall(sets)
    if shortfall:
        parts.append(f'<p class="warning">Note: {html.escape(shortfall[0].upper() + shortfall[1:])}</p>')
    if sets.get("in_sample"):
        parts.append('<p class="note">These are the validation rows the thresholds were fitted on, so the '
                     "coverage holds by construction; set data.test to measure it on other rows.</p>")
    below = [(name, sets["classes"][name]) for name in sets["classes_below"]]
    if below:
        listed = ", ".join(f"<code>{html.escape(name)}</code> {percent(row['set_coverage'])} of {row['rows']}"
                           for name, row in below)
        parts.append(f"<p>Classes below 1 − α = {percent(1 - alpha)}: {listed}. The guarantee is on average over "
                     "rows, not for each class; with few rows a class's coverage also varies by chance (about "
                     f"±{percent(conformal.coverage_standard_error(alpha, min(r['rows'] for _, r in below)))} "
                     "at the smallest of these).</p>")
    else:
        parts.append(f"<p>Every class reaches 1 − α = {percent(1 - alpha)}.</p>")
    others = sets.get("other_scores") or {}
    if others:
        head = "".join(f"<th>α = {row['alpha']:g}</th>" for row in sets["table"])
        rows = "".join(f"<tr><td>{html.escape(name)}</td>" + "".join(
            f"<td>{percent(row['set_coverage'])} / {format_value(row['mean_set_size'], 2)}</td>" for row in table)
            + "</tr>" for name, table in [(sets["score"], sets["table"]), *others.items()])
        parts.append('<p class="note">Coverage / mean set size of each score on the same rows (the first is the '
                     f"one served):</p><table><thead><tr><th>score</th>{head}</tr></thead><tbody>{rows}</tbody>"
                     "</table>")
    return "\n".join(parts)


def _curves_note(metrics):
    """With out-of-scope rows, what the training and validation curves count."""
    if not metrics.get("out_of_scope_label"):
        return ""
    return ('<p class="note">The training curves include the rows of <code>'
            f'{html.escape(str(metrics["out_of_scope_label"]))}</code> (their target is uniform, so no answer is '
            "right on them and the training accuracy stays lower); the validation curves leave them out.</p>")


def _kept_epoch(history, metrics):
    """The 1-based epoch with the best `epoch_score` in the history (the weights the run kept), or None."""
    score = metrics.get("epoch_score")
    columns = _history_columns(history)
    if not score or score not in columns or "epoch" not in columns:
        return None
    return int(columns["epoch"][int(np.nanargmin(columns[score]))]) + 1


def write_report(run_dir, metrics, history, probs_before, probs_after, labels, classes, title="kerasls run",
                 row_ids=None):
    """Write `plots/reliability.png`, `plots/history.png` (only when `history` has rows),
    `plots/confusion.png` and a self-contained `report.html` under `run_dir`; returns the report's path.

    `metrics` is calibration.evaluate's dict plus `classes`, `split`, `label_smoothing`, `export_path`;
    `probs_before`/`probs_after` are [N, K] probabilities without/with temperature, `labels` [N] class indices,
    `row_ids` (image paths, or None: rows are named by their line in predictions.csv) name the confused rows.
    """
    run_dir = Path(run_dir)
    plots = run_dir / "plots"
    probs_before = np.asarray(probs_before, dtype=float)
    labels = np.asarray(labels)
    bins = int(metrics.get("bins", 15))
    images = {"reliability": plot_reliability(probs_before, probs_after, labels, bins, plots / "reliability.png")}
    if _history_columns(history):
        images["history"] = plot_history(history, plots / "history.png", _kept_epoch(history, metrics))

    def embedded(name, alt):
        return image(images[name].read_bytes(), alt) if name in images else ""

    predicted = np.argmax(probs_before, axis=1)
    sections = [
        f"<h1>{html.escape(str(title))}</h1>",
        class_report.classes_section(classes, labels, predicted),
        _metrics_section(metrics),
        ("<h2>Training curves</h2>" + embedded("history", "training curves") + _curves_note(metrics))
        if "history" in images
        else '<h2>Training curves</h2><p class="note">No training history (for example, an evaluated export).</p>',
        "<h2>Reliability diagram</h2>" + embedded("reliability", "reliability diagram before and after temperature"),
        class_report.confusion_section(labels, predicted, classes, plots / "confusion.png", row_ids),
        _thresholds_section(metrics.get("thresholds")),
        _sets_section(metrics.get("conformal")),
        decision_report.decision_section(metrics.get("decision"), plots),
    ]
    document = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<title>{html.escape(str(title))}</title><style>{CSS}</style></head>\n<body>\n"
                + "\n".join(section for section in sections if section) + "\n</body></html>\n")
    return atomic_write_text(run_dir / "report.html", document)
