"""The report's "Decisions" section: when the export answers and when it abstains (kerasls.decisions).

One plot, accuracy of the accepted rows against the share of rows automated (every confidence threshold), with the
served rule's point marked, and one table of the rates the rule gives on the report's rows, each with its Wilson
95% interval.
"""

import html

from matplotlib.figure import Figure

from kerasls.report_parts import format_value, image, percent, save

_RATES = (("abstain_rate", "abstained", "of all rows"),
          ("accepted_accuracy", "accuracy of the answered rows", "an answered out-of-scope row is wrong"),
          ("in_scope_accuracy", "in-scope accuracy", "an abstained in-scope row is wrong"),
          ("out_of_scope_recall", "out-of-scope recall", "out-of-scope rows abstained"),
          ("k_plus_1_accuracy", "accuracy over the K + 1 outcomes", "a class, or abstaining on out-of-scope rows"),
          ("ambiguous_share", "ambiguous", "answered rows whose prediction set holds two or more classes"))


def plot_decisions(decision: dict, path):
    """Accepted accuracy against share automated, the served rule's point marked; the PNG's path."""
    curve = decision["curve"]
    figure = Figure(figsize=(5.5, 4.0))
    axes = figure.add_subplot()
    axes.plot(curve["share_automated"], curve["accepted_accuracy"], color="#4c72b0",
              label="every confidence threshold")
    share = 1.0 - decision["abstain_rate"]
    if decision["accepted_accuracy"] is not None:
        axes.plot([share], [decision["accepted_accuracy"]], "o", color="#c44e52", markersize=8,
                  label=f"served: {decision['rule']} rule")
    axes.set_xlabel("share of rows answered (automated)")
    axes.set_ylabel("accuracy of the answered rows")
    axes.set_xlim(0.0, 1.02)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower left")
    figure.tight_layout()
    return save(figure, path)


def _interval(decision, name):
    bounds = (decision.get("intervals") or {}).get(name)
    return f"{percent(bounds[0])} – {percent(bounds[1])}" if bounds else "—"


def decision_section(decision, plots_dir) -> str:
    """The section's HTML ("" without a decision rule); writes `plots_dir/decisions.png`."""
    if not decision:
        return ""
    png = plot_decisions(decision, plots_dir / "decisions.png")
    rows = "".join(f"<tr><td>{title}</td><td>{percent(decision[name])}</td><td>{_interval(decision, name)}</td>"
                   f"<td>{html.escape(what)}</td></tr>"
                   for name, title, what in _RATES if decision.get(name) is not None)
    rows_used = decision.get("validation_rows") or {}
    interval = decision.get("threshold_interval")
    if decision["rule"] == "conformal":
        served = (f"abstains when a row's prediction set is empty (no class with calibrated probability at least "
                  f"1 − q̂ = {format_value(decision['confidence_threshold'])})")
        rests = f"q̂ rests on the {rows_used.get('in_scope', '—')} in-scope validation rows alone"
        interval = [1.0 - interval[1], 1.0 - interval[0]] if interval else None  # in confidence, as 1 − q̂
    else:
        served = (f"abstains below a calibrated confidence of {format_value(decision['threshold'])}, chosen on the "
                  f"validation rows: {html.escape(decision['chosen_by'])}")
        rests = (f"it rests on {rows_used.get('in_scope', '—')} in-scope and {rows_used.get('out_of_scope', 0)} "
                 "out-of-scope validation rows")
    spread = (f" Bootstrap resamples of those rows put this confidence threshold between {format_value(interval[0])}"
              f" and {format_value(interval[1])} (5–95%)." if interval else "")
    parts = ["<h2>Decisions</h2>",
             f'<p class="note">The export answers a row\'s most probable class, or <code>'
             f'{html.escape(decision["label"])}</code>: it {served}; {rests}.{spread} A row whose text holds no known '
             "word or n-gram always abstains. The automation table above is another question: the lowest threshold "
             "whose in-scope rows reach calibration.target_accuracy, on the rows shown; this rule is the one served."
             "</p>",
             image(png.read_bytes(), "accuracy of the answered rows against the share answered"),
             f"<p>On these {decision['n']} rows ({decision['in_scope_rows']} in scope, "
             f"{decision['out_of_scope_rows']} out of scope, {decision['unreadable_rows']} unreadable):</p>",
             "<table><thead><tr><th>rate</th><th>value</th><th>95% interval</th><th>what it counts</th></tr></thead>"
             f"<tbody>{rows}</tbody></table>"]
    if decision.get("note"):
        parts.append(f'<p class="warning">Note: {html.escape(decision["note"])}</p>')
    return "\n".join(parts)
