"""Shared fixtures: one rendered and trained tabular-intent project for the end-to-end tests."""

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from kerasls.templates_index import render_template

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Prepended to the serving scripts the tests run in a subprocess: importing keras or kerasls there fails, so a
# passing script proves the export serves with TensorFlow alone.
KERAS_IMPORT_BLOCKER = r"""
import builtins, json, sys
real_import = builtins.__import__
def guarded_import(name, *args, **kwargs):
    if name.split(".")[0] in ("keras", "kerasls"):
        raise ImportError("serving must not import " + name)
    return real_import(name, *args, **kwargs)
builtins.__import__ = guarded_import
"""


SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def require(path: Path) -> Path:
    """The shared data sets sit beside the checkout; without them the tests that use them cannot run, so they fail."""
    if not path.exists():
        pytest.fail(
            f"{path} not found: the tests need the shared data sets in {SHARED_DATA} "
            "(a folder `shared/data` beside the repository checkout, see shared/data/README.md)",
            pytrace=False,
        )
    return path


@dataclass
class TrainedProject:
    project: Path
    run: Path
    metrics: dict
    stdout: str
    eval_rows: Path


def run_train(project, *args, timeout=600):
    return subprocess.run([sys.executable, "train.py", *args], cwd=project, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="session")
def trained_project(tmp_path_factory):
    """new -> train 2 epochs; the test rows include an unseen category and out-of-vocabulary words."""
    root = tmp_path_factory.mktemp("e2e")
    project = render_template("tabular-intent", output_dir=root, extra_context={"project_slug": "shop"})
    test_rows = pd.read_csv(project / "data" / "test.csv").head(60)
    odd = test_rows.head(3).copy()
    odd["device"] = ["smart-fridge", "smart-fridge", "desktop"]
    odd["search_query"] = ["xyzzy plugh frobnicate", "", "buy zzzunknownzzz running shoes"]
    odd.loc[odd.index[2], "session_minutes"] = float("nan")
    eval_rows = root / "eval_rows.csv"
    pd.concat([test_rows, odd], ignore_index=True).to_csv(eval_rows, index=False)
    result = run_train(project, "training.epochs=2", "training.verbose=2", f"data.test={eval_rows}")
    assert result.returncode == 0, result.stderr[-4000:]
    last_line = result.stdout.strip().splitlines()[-1]
    assert last_line.startswith("run: "), last_line
    run = project / last_line.removeprefix("run: ")
    metrics = json.loads((run / "metrics.json").read_text())
    return TrainedProject(project, run, metrics, result.stdout, eval_rows)
