"""Out-of-scope rows and abstention through a generated project (e2e): Banking77's first 14 intents, 4 of them
relabelled `out_of_scope` in every file (outlier exposure in training, out-of-scope rows in validation and test),
trained with `calibration.abstain.rule: confidence`. The run, `kerasls predict` on the export and `kerasls evaluate`
agree row by row; unreadable texts abstain."""

import json
import subprocess
import sys

import pandas as pd
import pytest
from conftest import SHARED_DATA, require, run_train

from kerasls import results
from kerasls.templates_index import render_template

UNREADABLE = ["", "🙂🙂🙂", "这是一个中文句子"]


@pytest.fixture(scope="module")
def out_of_scope_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("oos")
    intents = sorted(pd.read_csv(require(SHARED_DATA / "banking77" / "train.csv")).category.unique())[:14]
    files = {}
    for name in ("train", "test"):
        frame = pd.read_csv(SHARED_DATA / "banking77" / f"{name}.csv")
        frame = frame[frame.category.isin(intents)].copy()
        frame.loc[frame.category.isin(intents[10:]), "category"] = "out_of_scope"
        if name == "test":
            frame = pd.concat([frame, pd.DataFrame({"text": UNREADABLE, "category": "out_of_scope"})])
        files[name] = root / f"{name}.csv"
        frame.to_csv(files[name], index=False)
    project = render_template("tabular-intent", output_dir=root, extra_context={"project_slug": "oos",
                                                                                 "sample_data": "no"})
    result = run_train(project, f"data.train={files['train']}", f"data.test={files['test']}", "data.label=category",
                       "data.out_of_scope_label=out_of_scope", "calibration.abstain.rule=confidence",
                       "training.epochs=15", "training.verbose=0", "--run-name", "oos")
    assert result.returncode == 0, result.stderr[-3000:]
    run = project / "runs" / "oos"
    return {"run": run, "stdout": result.stdout, "test": files["test"], "root": root,
            "metrics": json.loads((run / "metrics.json").read_text())}


def test_out_of_scope_rows_are_no_class_and_the_rule_abstains_on_them(out_of_scope_run):
    metrics = out_of_scope_run["metrics"]
    decision = metrics["decision"]
    assert "out_of_scope" not in metrics["classes"] and len(metrics["classes"]) == 10
    assert metrics["out_of_scope_rows"] == decision["out_of_scope_rows"] > 100
    assert decision["validation_rows"]["out_of_scope"] > 50
    assert decision["chosen_by"] == "best accuracy over the K + 1 outcomes"
    assert decision["out_of_scope_recall"] > 0.8  # outlier exposure: uniform targets on the 4 intents' rows
    assert decision["in_scope_accuracy"] > 0.8 and decision["unreadable_rows"] == len(UNREADABLE)
    assert "decisions confidence" in out_of_scope_run["stdout"] and "out of scope)" in out_of_scope_run["stdout"]
    # metrics.json's in-scope numbers are those of the in-scope rows of predictions.csv
    recomputed = results.metrics_from_predictions(out_of_scope_run["run"])
    assert recomputed["n"] == metrics["n"] and recomputed["accuracy"] == pytest.approx(metrics["accuracy"])
    predictions = pd.read_csv(out_of_scope_run["run"] / "predictions.csv", keep_default_na=False)
    assert predictions["abstained"].tail(3).all() and predictions["unreadable"].tail(3).all()
    assert predictions["abstained"].mean() == pytest.approx(decision["abstain_rate"])
    report = (out_of_scope_run["run"] / "report.html").read_text()
    assert "<h2>Decisions</h2>" in report and (out_of_scope_run["run"] / "plots" / "decisions.png").is_file()


def test_predict_and_evaluate_decide_as_the_run_did(out_of_scope_run):
    run, test, root = out_of_scope_run["run"], out_of_scope_run["test"], out_of_scope_run["root"]
    served = root / "served.csv"
    for command in (["predict", str(run), str(test), "-o", str(served)],
                    ["evaluate", str(run), str(test), "-o", str(root / "evaluation")]):
        result = subprocess.run([sys.executable, "-m", "kerasls.cli", *command], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-2000:]
    predictions = pd.read_csv(run / "predictions.csv", keep_default_na=False)
    served_rows = pd.read_csv(served, keep_default_na=False)
    assert list(served_rows["decision"]) == list(predictions["decision"])
    assert list(served_rows["unreadable"]) == list(predictions["unreadable"])
    evaluated = json.loads((root / "evaluation" / "metrics.json").read_text())["decision"]
    expected = out_of_scope_run["metrics"]["decision"]
    for key in ("abstained_rows", "out_of_scope_rows", "unreadable_rows", "in_scope_accuracy", "out_of_scope_recall"):
        assert evaluated[key] == pytest.approx(expected[key]), key
