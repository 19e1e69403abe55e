"""`kerasls sweep` and `kerasls evaluate`: summaries, recommendation rule, and agreement with training."""

import json
import subprocess
import sys

import pandas as pd
import pytest

from kerasls.errors import KeraslsError
from kerasls.sweep import COLUMNS, error_bars, parse_values, recommend, summarise


def records(rows):
    base = {column: 0.5 for column in COLUMNS}
    return pd.DataFrame([{**base, **row} for row in rows])


def test_summary_gives_mean_and_std_over_seeds():
    summary = summarise(records([
        {"label_smoothing": 0.0, "seed": 1, "accuracy": 0.8},
        {"label_smoothing": 0.0, "seed": 2, "accuracy": 0.9},
        {"label_smoothing": 0.1, "seed": 1, "accuracy": 0.7},
        {"label_smoothing": 0.1, "seed": 2, "accuracy": 0.7},
    ]))
    row = summary[summary["label_smoothing"] == 0.0].iloc[0]
    assert row["accuracy"] == pytest.approx(0.85) and row["accuracy_std"] == pytest.approx(0.0707107, rel=1e-5)
    assert row["seeds"] == 2
    assert summary[summary["label_smoothing"] == 0.1].iloc[0]["accuracy_std"] == 0.0


def test_single_seed_has_no_std_columns():
    summary = summarise(records([{"label_smoothing": 0.0, "seed": 1}, {"label_smoothing": 0.1, "seed": 1}]))
    assert not any(column.endswith("_std") for column in summary.columns)


def test_error_bars_are_the_std_over_seeds_or_one_seeds_binomial_standard_error():
    one_seed = summarise(records([{"label_smoothing": 0.0, "seed": 1, "accuracy": 0.81, "n": 500},
                                  {"label_smoothing": 0.1, "seed": 1, "accuracy": 0.8, "n": 500}]))
    spread, note = error_bars(one_seed, "accuracy")
    assert list(spread) == pytest.approx([(0.81 * 0.19 / 500) ** 0.5, (0.8 * 0.2 / 500) ** 0.5])
    assert note == " ± 1 standard error (500 rows)" and list(one_seed["n"]) == [500, 500]
    assert error_bars(one_seed, "ece") == (None, "")
    seeds = summarise(records([{"label_smoothing": 0.0, "seed": s, "accuracy": a, "n": 500}
                               for s, a in ((1, 0.8), (2, 0.9))]))
    spread, note = error_bars(seeds, "accuracy")
    assert list(spread) == pytest.approx([0.0707107], rel=1e-5) and note == " ± 1 std over 2 seeds"
    older = summarise(records([{"label_smoothing": 0.0, "seed": 1, "n": 500}, {"label_smoothing": 0.1, "seed": 1}]))
    assert error_bars(older, "accuracy") == (None, "")  # a reused run from before `n` was recorded: no bars


def test_recommendation_is_lowest_validation_nll_after_temperature_ties_to_smaller_epsilon():
    summary = pd.DataFrame({"label_smoothing": [0.0, 0.05, 0.1, 0.2], "val_nll_calibrated": [0.52, 0.50, 0.50, 0.51]})
    assert recommend(summary) == 0.05
    summary["val_nll_calibrated"] = [0.60, 0.55, 0.50, 0.51]
    assert recommend(summary) == 0.1


@pytest.mark.parametrize("text", ["", "a,b", "0,1.0", "-0.1"])
def test_bad_values_are_refused(text):
    with pytest.raises(KeraslsError, match="--values"):
        parse_values(text)


def test_values_are_sorted_and_deduplicated():
    assert parse_values("0.1,0,0.1,0.05") == [0.0, 0.05, 0.1]


def test_sweep_on_a_project_writes_summary_and_report_and_reuses_finished_runs(trained_project):
    command = [sys.executable, "-m", "kerasls.cli", "sweep", str(trained_project.project), "--values", "0,0.1",
               "training.epochs=2"]
    first = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    out = trained_project.project / "sweep"
    summary = pd.read_csv(out / "summary.csv")
    assert summary["label_smoothing"].tolist() == [0.0, 0.1]
    assert {"accuracy", "nll", "ece", "nll_calibrated", "ece_calibrated", "brier"} <= set(summary.columns)
    for epsilon in (0.0, 0.1):
        metrics = json.loads((out / "runs" / f"eps{epsilon:g}-seed42" / "metrics.json").read_text())
        assert metrics["label_smoothing"] == epsilon
        row = summary[summary["label_smoothing"] == epsilon].iloc[0]
        assert row["ece"] == pytest.approx(metrics["ece"]) and row["val_nll_calibrated"] == pytest.approx(
            metrics["val_nll_calibrated"])
    best = recommend(summary)
    assert f"Recommended label_smoothing = {best:g}" in first.stdout
    report = (out / "report.html").read_text()
    assert "data:image/png;base64," in report and "Recommended label_smoothing" in report
    assert "2/2 done" in first.stdout
    # prediction sets are on by default: their columns, and a link to each run's own report
    assert {"set_coverage", "mean_set_size"} <= set(summary.columns) and "abstain_rate" not in summary.columns
    assert row["set_coverage"] == pytest.approx(metrics["conformal"]["set_coverage"])
    assert '<a href="runs/eps0.1-seed42/report.html">seed 42</a>' in report

    stamp = (out / "runs" / "eps0-seed42" / "metrics.json").stat().st_mtime_ns
    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (out / "runs" / "eps0-seed42" / "metrics.json").stat().st_mtime_ns == stamp  # reused, not retrained
    assert pd.read_csv(out / "summary.csv").equals(summary)

    # another override: what the finished runs ran is not what this sweep runs, so it trains again; the old runs
    # are moved aside, not deleted
    changed = subprocess.run([*command, "model.dropout=0.5"], capture_output=True, text=True, timeout=600)
    assert changed.returncode == 0, changed.stderr[-3000:]
    rerun = json.loads((out / "runs" / "eps0-seed42" / "metrics.json").read_text())
    assert (out / "runs" / "eps0-seed42" / "metrics.json").stat().st_mtime_ns != stamp
    assert "dropout: 0.5" in (out / "runs" / "eps0-seed42" / "config.yaml").read_text()
    kept = sorted(p.name for p in (out / "runs").iterdir() if ".replaced-" in p.name)
    assert len(kept) == 2 and all((out / "runs" / name / "metrics.json").is_file() for name in kept)
    assert rerun["label_smoothing"] == 0.0


def test_sweep_refuses_a_folder_that_is_not_a_project(tmp_path):
    result = subprocess.run([sys.executable, "-m", "kerasls.cli", "sweep", str(tmp_path)], capture_output=True,
                            text=True)
    assert result.returncode == 2 and "not a kerasls project (no train.py)" in result.stderr


def test_evaluate_reproduces_the_training_metrics(trained_project, tmp_path):
    out = tmp_path / "evaluation"
    result = subprocess.run([sys.executable, "-m", "kerasls.cli", "evaluate", str(trained_project.run / "export"),
                             str(trained_project.eval_rows), "-o", str(out)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("n", "accuracy", "nll", "ece", "mce", "brier", "temperature", "nll_calibrated", "ece_calibrated"):
        assert metrics[key] == pytest.approx(trained_project.metrics[key], abs=1e-5), key
    sets, trained_sets = metrics["conformal"], trained_project.metrics["conformal"]  # the export's thresholds
    assert sets["thresholds"] == trained_sets["thresholds"] and sets["classes_below"] == trained_sets["classes_below"]
    for key in ("set_coverage", "mean_set_size", "singleton_share"):
        assert sets[key] == pytest.approx(trained_sets[key], abs=1e-9), key
    assert metrics["label_smoothing"] == 0.1
    assert (out / "report.html").is_file() and (out / "predictions.csv").is_file()
    again = subprocess.run([sys.executable, "-m", "kerasls.cli", "evaluate", str(trained_project.run / "export"),
                            str(trained_project.eval_rows), "-o", str(out)], capture_output=True, text=True)
    assert again.returncode == 2 and "already holds an evaluation" in again.stderr


def test_evaluate_names_an_unknown_label(trained_project, tmp_path):
    rows = pd.read_csv(trained_project.eval_rows)
    rows.loc[4, "intent"] = "refund"
    rows.to_csv(tmp_path / "rows.csv", index=False)
    result = subprocess.run([sys.executable, "-m", "kerasls.cli", "evaluate", str(trained_project.run / "export"),
                             str(tmp_path / "rows.csv"), "-o", str(tmp_path / "e")], capture_output=True, text=True)
    assert result.returncode == 2
    assert "rows.csv: line 6: label 'refund' is not a class of the export" in result.stderr
    assert not (tmp_path / "e").exists()


def test_a_recommendation_within_seed_noise_says_so():
    from kerasls.sweep import recommendation_sentence

    one_seed = summarise(records([{"label_smoothing": 0.0, "seed": 1, "val_nll_calibrated": 0.3010},
                                  {"label_smoothing": 0.1, "seed": 1, "val_nll_calibrated": 0.3000},
                                  {"label_smoothing": 0.2, "seed": 1, "val_nll_calibrated": 0.3300}]))
    sentence = recommendation_sentence(one_seed, recommend(one_seed))
    assert "Recommended label_smoothing = 0.1" in sentence and "cannot be told apart from ε = 0:" in sentence
    assert "0.2" not in sentence.split("cannot be told apart")[1]
    seeds = summarise(records([{"label_smoothing": eps, "seed": seed, "val_nll_calibrated": value}
                               for eps, values in ((0.0, (0.30, 0.32)), (0.1, (0.40, 0.42)))
                               for seed, value in zip((1, 2), values)]))
    assert "cannot be told apart" not in recommendation_sentence(seeds, recommend(seeds))


def test_headline_says_when_temperature_did_not_help():
    from kerasls.results import headline

    metrics = {"split": "test", "n": 500, "accuracy": 0.79, "nll": 0.5264, "ece": 0.0302, "brier": 0.29,
               "temperature": 0.867, "nll_calibrated": 0.5299, "ece_calibrated": 0.0405}
    text = headline(metrics)
    assert text.splitlines()[1].startswith("note: Temperature scaling did not help on the test rows (NLL 0.5264 -> "
                                           "0.5299, ECE 0.0302 -> 0.0405)")
    assert "\n" not in headline({**metrics, "nll_calibrated": 0.52, "ece_calibrated": 0.02})


def test_headline_says_when_the_model_is_at_chance():
    from kerasls.results import headline

    metrics = {"split": "test", "n": 120, "accuracy": 0.3417, "nll": 1.09, "ece": 0.05, "brier": 0.66,
               "temperature": 1.0, "nll_calibrated": 1.09, "ece_calibrated": 0.05, "majority_share": 0.3417}
    assert "no better than always answering the most frequent class (0.3417" in headline(metrics)
    assert "note:" not in headline({**metrics, "accuracy": 0.9})


def test_sweep_report_has_decision_columns_and_the_run_report_style(tmp_path):
    from kerasls import sweep as sweep_module

    records = pd.DataFrame([{"label_smoothing": eps, "seed": 42, "run": str(tmp_path / "runs" / f"eps{eps:g}-seed42"),
                             "accuracy": 0.9, "nll": 0.3, "ece": 0.02, "nll_calibrated": 0.29, "ece_calibrated": 0.01,
                             "brier": 0.1, "temperature": 1.1, "val_nll_calibrated": 0.3 + eps, "abstain_rate": 0.2,
                             "in_scope_accuracy": 0.85, "out_of_scope_recall": 0.7} for eps in (0.0, 0.1)])
    columns = [*sweep_module.COLUMNS, "abstain_rate", "in_scope_accuracy", "out_of_scope_recall"]
    summary = sweep_module.summarise(records, columns)
    page = sweep_module.write_sweep_report(tmp_path, summary, 0.0, "test", records=records).read_text()
    assert "<th>out_of_scope_recall</th>" in page and "<td>0.7000</td>" in page
    assert '<a href="runs/eps0-seed42/report.html">seed 42</a>' in page and "thead th { background" in page
