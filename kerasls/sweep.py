"""`kerasls sweep`: one training per label-smoothing value ε (and seed), then a summary that answers
"does label smoothing help this model, and how much ε?" next to what temperature scaling does on its own.

Each run is the project's own `train.py` with `targets.label_smoothing=ε seed=s` and the user's overrides, in
`<out>/runs/eps<ε>-seed<s>/`. A finished run is reused only when what it ran equals what the sweep would run now
(`run_fingerprint`: resolved config, train.py, model.py, data files), so an interrupted sweep picks up where it
stopped and a changed sweep trains again; a run of other settings is moved aside, never deleted. The
recommended ε has the lowest validation score after temperature scaling, the
quantity temperature scaling itself minimises, so the comparison is fair to ε = 0: the NLL of the observed
classes, or for validation rows that carry distributions the soft cross-entropy to them (each run's
`ranking_score`); ties go to the smaller ε.
"""

from __future__ import annotations

import contextlib
import hashlib
import html
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from kerasls.config import ImageConfig, TabularConfig, dump_config, load_config, read_yaml
from kerasls.errors import KeraslsError
from kerasls.fileio import atomic_write_text

# the last is the ranking column of hard-label runs; soft runs add theirs (`ranking_column`)
COLUMNS = ["accuracy", "nll", "ece", "nll_calibrated", "ece_calibrated", "brier", "temperature",
           "val_nll_calibrated"]
# what a run's prediction sets and decisions give, when it has them: (section of metrics.json, key, column)
EXTRA_COLUMNS = [("conformal", "set_coverage", "set_coverage"), ("conformal", "mean_set_size", "mean_set_size"),
                 ("decision", "abstain_rate", "abstain_rate"), ("decision", "in_scope_accuracy", "in_scope_accuracy"),
                 ("decision", "out_of_scope_recall", "out_of_scope_recall")]


def extra_values(metrics: dict) -> dict:
    """The EXTRA_COLUMNS a run's metrics.json has (prediction sets, decisions)."""
    return {column: (metrics.get(section) or {}).get(key) for section, key, column in EXTRA_COLUMNS
            if (metrics.get(section) or {}).get(key) is not None}


def ranking_column(metrics: dict) -> str:
    """The validation score a run is ranked by (`ranking_score` in metrics.json; older runs: val NLL after T)."""
    return metrics.get("ranking_score", "val_nll_calibrated")


def parse_values(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise KeraslsError(f"--values {text!r}: give comma-separated numbers, e.g. --values 0,0.05,0.1,0.2") from None
    bad = [v for v in values if not 0.0 <= v < 1.0]
    if not values or bad:
        raise KeraslsError(f"--values {text!r}: every ε must be in [0, 1) (received {bad or 'nothing'})")
    return sorted(set(values))


def run_name(epsilon: float, seed: int) -> str:
    return f"eps{epsilon:g}-seed{seed}"


def progress_line(done: int, total: int, message: str, width: int = 24) -> str:
    filled = int(width * done / total)
    return f"[{'#' * filled}{'-' * (width - filled)}] {done}/{total} {message}"


FINGERPRINT_FILE = "sweep_fingerprint.txt"


def run_fingerprint(project: Path, config, overrides) -> str:
    """What a sweep run computes from: the resolved config (the project's config file, the overrides, ε and seed),
    the project's train.py and model.py, and the size and modification time of the data files it names."""
    config_file = config or project / "config.yaml"
    raw = read_yaml(config_file) if Path(config_file).is_file() else {}
    schema = ImageConfig if "augment" in raw else TabularConfig
    with contextlib.chdir(project):  # train.py resolves command-line paths from the project folder
        resolved = load_config(config_file if Path(config_file).is_file() else None, list(overrides), schema)
    digest = hashlib.sha256(dump_config(resolved).encode())
    for name in ("train.py", "model.py"):
        path = project / name
        digest.update(path.read_bytes() if path.is_file() else b"")
    for key in ("train", "val", "test"):
        value = getattr(resolved.data, key, None)
        if value and Path(value).exists():
            stat = Path(value).stat()
            digest.update(f"{value}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def claim_run_folder(folder: Path, fingerprint: str) -> bool:
    """True when `folder` holds a finished run of exactly this fingerprint (reuse it). A folder from other
    settings, code or data is moved aside to `<name>.replaced-<its fingerprint>` (kept, not deleted) and the
    fingerprint of the run about to start is written."""
    stamp = folder / FINGERPRINT_FILE
    if folder.exists():
        previous = stamp.read_text().strip() if stamp.is_file() else "unknown"
        if previous == fingerprint:
            return (folder / "metrics.json").is_file()
        target = folder.with_name(f"{folder.name}.replaced-{previous}")
        suffix = 1
        while target.exists():
            suffix += 1
            target = folder.with_name(f"{folder.name}.replaced-{previous}-{suffix}")
        folder.rename(target)
    folder.mkdir(parents=True)
    stamp.write_text(fingerprint + "\n")
    return False


def train_once(project: Path, runs_dir: Path, epsilon: float, seed: int, overrides: list[str], config=None) -> dict:
    folder = runs_dir / run_name(epsilon, seed)
    arguments = [f"targets.label_smoothing={epsilon}", f"seed={seed}", *overrides]
    if claim_run_folder(folder, run_fingerprint(project, config, arguments)):
        return json.loads((folder / "metrics.json").read_text())
    command = [sys.executable, "train.py", f"targets.label_smoothing={epsilon}", f"seed={seed}",
               "training.verbose=0", *overrides, *(["--config", str(config)] if config else []),
               "--runs-dir", str(runs_dir), "--run-name", run_name(epsilon, seed)]
    result = subprocess.run(command, cwd=project, capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise KeraslsError(f"sweep run ε={epsilon:g} seed={seed} failed in {project}: {last}")
    return json.loads((folder / "metrics.json").read_text())


def summarise(records: pd.DataFrame, columns=COLUMNS) -> pd.DataFrame:
    """One row per ε: the mean of every metric over seeds and, with more than one seed, its std."""
    grouped = records.groupby("label_smoothing")[list(columns)]
    summary = grouped.mean()
    if records["seed"].nunique() > 1:
        summary = summary.join(grouped.std(ddof=1).add_suffix("_std"))
    summary.insert(0, "seeds", records.groupby("label_smoothing")["seed"].nunique())
    if "n" in records:  # rows the metrics were measured on (the same for every run of a sweep)
        summary["n"] = records.groupby("label_smoothing")["n"].first()
    return summary.reset_index()


def recommend(summary: pd.DataFrame, score="val_nll_calibrated") -> float:
    """ε with the lowest validation `score` after temperature; ties (within 1e-4) go to the smaller ε."""
    best = summary[score].min()
    tied = summary[summary[score] <= best + 1e-4]
    return float(tied["label_smoothing"].min())


def sweep(project, values, seeds=1, base_seed=None, overrides=(), out=None, config=None, echo=print) -> Path:
    """Train `project` once per (ε, seed); `config` is a config file for train.py (default: its config.yaml)."""
    project = Path(project).resolve()
    config = Path(config).resolve() if config else None
    if config is not None and not config.is_file():
        raise KeraslsError(f"{config}: config file not found; pass an existing file with --config")
    if not (project / "train.py").is_file():
        raise KeraslsError(f"{project}: not a kerasls project (no train.py); pass the folder made by `kerasls new`")
    out = Path(out).resolve() if out else project / "sweep"
    runs_dir = out / "runs"
    if base_seed is None:
        config_file = config or project / "config.yaml"
        base_seed = int(read_yaml(config_file).get("seed", 42)) if config_file.is_file() else 42
    plan = [(epsilon, base_seed + i) for i in range(seeds) for epsilon in values]
    rows, score = [], None
    for done, (epsilon, seed) in enumerate(plan):
        echo(progress_line(done, len(plan), f"training ε={epsilon:g} seed={seed} ..."))
        started = time.time()
        metrics = train_once(project, runs_dir, epsilon, seed, list(overrides), config)
        score = score or ranking_column(metrics)
        rows.append({"label_smoothing": epsilon, "seed": seed, "run": str(runs_dir / run_name(epsilon, seed)),
                     "seconds": round(time.time() - started, 1), "n": metrics.get("n"),
                     **{key: metrics[key] for key in dict.fromkeys([*COLUMNS, score])}, **extra_values(metrics)})
    echo(progress_line(len(plan), len(plan), "done"))
    records = pd.DataFrame(rows)
    extras = [column for _, _, column in EXTRA_COLUMNS if column in records and records[column].notna().all()]
    columns = list(dict.fromkeys([*COLUMNS, score, *extras]))
    summary = summarise(records, columns)
    best = recommend(summary, score)
    atomic_write_text(out / "runs.csv", records.to_csv(index=False))
    atomic_write_text(out / "summary.csv", summary.to_csv(index=False))
    split = json.loads((Path(rows[0]["run"]) / "metrics.json").read_text())["split"]
    write_sweep_report(out, summary, best, split, score, records)
    echo(summary.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    echo(recommendation_sentence(summary, best, score))
    return out


SCORE_NAMES = {"val_nll_calibrated": "validation NLL after temperature scaling",
               "val_soft_ce_calibrated": "validation soft cross-entropy to the label distributions after temperature "
                                         "scaling"}


# One seed gives no spread: below this gap in the ranking score, two ε cannot be told apart (the score moves by
# about 0.005-0.01 between seeds of the examples' models; examples/README.md).
ONE_SEED_NOISE = 0.005


def noise_sentence(summary: pd.DataFrame, best: float, score: str) -> str:
    """Which other ε the recommended one cannot be told apart from: within ONE_SEED_NOISE for one seed, within
    the larger of the two standard deviations over seeds otherwise; "" when it stands out."""
    row = summary[summary["label_smoothing"] == best].iloc[0]
    others = summary[summary["label_smoothing"] != best]
    if f"{score}_std" in summary:
        close = others[others[score] - row[score] <= others[f"{score}_std"].combine(row[f"{score}_std"], max)]
        reason = f"within one standard deviation over {int(row['seeds'])} seeds"
    else:
        close = others[others[score] - row[score] <= ONE_SEED_NOISE]
        reason = f"within {ONE_SEED_NOISE} with one seed, where seed noise is about that large (use --seeds 3)"
    if close.empty:
        return ""
    values = ", ".join(f"{value:g}" for value in close["label_smoothing"])
    return f" It cannot be told apart from ε = {values}: {reason}."


def recommendation_sentence(summary: pd.DataFrame, best: float, score="val_nll_calibrated") -> str:
    row = summary[summary["label_smoothing"] == best].iloc[0]
    return (f"Recommended label_smoothing = {best:g}: lowest {SCORE_NAMES.get(score, score)} "
            f"({row[score]:.4f}), with accuracy {row['accuracy']:.4f} and ECE "
            f"{row['ece']:.4f} before / {row['ece_calibrated']:.4f} after temperature."
            + noise_sentence(summary, best, score))


def error_bars(summary: pd.DataFrame, column: str):
    """(half-widths or None, legend note) of `column`'s error bars: ± 1 std over seeds; with one seed, accuracy
    gets its binomial standard error over the `n` rows, so a gap of a few rows does not look like a trend."""
    if f"{column}_std" in summary:
        return summary[f"{column}_std"], f" ± 1 std over {int(summary['seeds'].min())} seeds"
    rows = pd.to_numeric(summary["n"], errors="coerce") if "n" in summary else None
    if column == "accuracy" and rows is not None and rows.notna().all():  # runs made before `n`: no bars
        spread = np.sqrt(summary[column] * (1 - summary[column]) / rows)
        return spread, f" ± 1 standard error ({int(rows.iloc[0])} rows)"
    return None, ""


def plot_sweep(summary: pd.DataFrame, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4))
    FigureCanvasAgg(figure)
    accuracy_axes, ece_axes = figure.subplots(1, 2)
    eps = summary["label_smoothing"]
    for axes, columns, title in ((accuracy_axes, [("accuracy", "accuracy")], "Accuracy"),
                                 (ece_axes, [("ece", "ECE before T"), ("ece_calibrated", "ECE after T")], "ECE")):
        for column, label in columns:
            spread, note = error_bars(summary, column)
            axes.errorbar(eps, summary[column], yerr=spread, marker="o", capsize=3, label=label + note)
        axes.set_xlabel("label smoothing ε")
        axes.set_title(f"{title} against ε")
        axes.grid(alpha=0.3)
        axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path


def write_sweep_report(out: Path, summary: pd.DataFrame, best: float, split: str, score="val_nll_calibrated",
                       records=None) -> Path:
    """`out/report.html`: the recommendation, one row per ε (mean ± std over seeds of every column the summary has,
    prediction-set and decision columns included when the runs have them), links to each run's own report
    (`records`: the runs), and the chart; the run report's style."""
    import base64

    from kerasls.report_parts import CSS

    chart = plot_sweep(summary, out / "sweep.png")
    image = base64.b64encode(chart.read_bytes()).decode("ascii")
    has_std = "accuracy_std" in summary

    def cell(row, column):
        value = f"{row[column]:.4f}"
        return f"{value} ± {row[column + '_std']:.4f}" if has_std and column + "_std" in row else value

    def links(epsilon):
        if records is None:
            return ""
        runs = records[records["label_smoothing"] == epsilon]
        return " ".join(f'<a href="{html.escape(Path(run).relative_to(out).as_posix())}/report.html">seed {seed}</a>'
                        for run, seed in zip(runs["run"], runs["seed"]) if Path(run).is_relative_to(out))

    extras = [column for _, _, column in EXTRA_COLUMNS if column in summary]
    columns = list(dict.fromkeys([*COLUMNS, score, *extras]))
    header = "".join(f"<th>{html.escape(c)}</th>" for c in ["ε", "seeds", *columns, "run reports"])
    body = "".join(
        "<tr" + (' class="best"' if row["label_smoothing"] == best else "") + ">"
        + f"<td>{row['label_smoothing']:g}</td><td>{int(row['seeds'])}</td>"
        + "".join(f"<td>{cell(row, c)}</td>" for c in columns) + f"<td>{links(row['label_smoothing'])}</td></tr>"
        for _, row in summary.iterrows()
    )
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>kerasls label-smoothing sweep</title>
<style>{CSS} body {{ max-width: none; }} tr.best td {{ background: #e6f4ea; font-weight: bold; }}
.wide {{ overflow-x: auto; }}</style>
</head><body><h1>Label-smoothing sweep</h1>
<p>{html.escape(recommendation_sentence(summary, best, score))}</p>
<p class="note">Accuracy, NLL, ECE and Brier are on the {html.escape(split)} split against the observed classes;
"calibrated" columns use the temperature T fitted on the validation rows. The recommendation ranks ε by
<code>{html.escape(score)}</code>: {html.escape(SCORE_NAMES.get(score, score))}. With prediction sets,
<code>set_coverage</code> and <code>mean_set_size</code> are theirs on the same split; with decisions
(calibration.abstain), <code>abstain_rate</code>, <code>in_scope_accuracy</code> and
<code>out_of_scope_recall</code>.</p>
<div class="wide"><table><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table></div>
<p><img alt="accuracy and ECE against label smoothing" src="data:image/png;base64,{image}"></p>
</body></html>"""
    return atomic_write_text(out / "report.html", page)
