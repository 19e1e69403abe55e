"""Shared fixtures: one rendered and trained tabular-intent project for the end-to-end tests; the test tiers.

Tiers (as lightning-hydra-template marks its slow tests): a test that trains a model through a generated
project's `train.py` (a subprocess or in-process), runs a `kerasls`/`python` subprocess that imports TensorFlow,
or builds a wheel is `e2e`; the shared-data trainings of minutes are also `slow`. `make test-fast` runs the rest
(`-m "not e2e and not slow"`), `make test` runs everything. Whole modules are marked here (E2E_MODULES), and any
test that uses a fixture which trains (E2E_FIXTURES); single tests carry `@pytest.mark.e2e` themselves.
"""

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from kerasls.export import KERAS_IMPORT_BLOCKER  # noqa: F401  (the tests import it from here)
from kerasls.templates_index import render_template

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

E2E_MODULES = {"test_crash_resume", "test_distributed", "test_end_to_end", "test_examples", "test_image_template",
               "test_no_network", "test_replica_split", "test_soft_examples", "test_soft_truth", "test_benchmarks",
               "test_encoder_training", "test_out_of_scope"}
E2E_FIXTURES = {"trained_project", "launched"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1]
        if module in E2E_MODULES or E2E_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)


SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TABULAR_MODEL = Path(__file__).resolve().parents[1] / "templates" / "tabular-intent" / "{{cookiecutter.project_slug}}" \
    / "model.py"


def tabular_build_model():
    """`build_model` of the tabular-intent template's model.py, as a generated project has it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("tabular_template_model", TABULAR_MODEL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_model


def flat_model_inputs(width):
    """Model inputs of one float32 vector of `width` per row, for tests that feed the template's model.py arrays
    (a generated project's model receives `feed.model_inputs()`)."""
    import keras

    from kerasls.preprocessing import ModelInputs

    inputs = keras.Input(shape=(width,), name="features")
    return ModelInputs(inputs=inputs, features={"features": inputs})


@pytest.fixture()
def float32_policy():
    """The test starts and ends under the float32 Keras policy, whatever it sets or fails with."""
    import keras

    keras.mixed_precision.set_global_policy("float32")
    yield
    keras.mixed_precision.set_global_policy("float32")


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
