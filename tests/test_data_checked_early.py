"""Tables of ordinary size are read and checked whole before TensorFlow loads: a bad value or an unknown label is
the same one-line error as after it, in a fresh interpreter that never imported TensorFlow."""

import json
import subprocess
import sys

import pytest

SCRIPT = """
import json, sys
from kerasls import run
from kerasls.config import TabularConfig
try:
    run.check_before_tensorflow(sys.argv[1:], TabularConfig)
    outcome = {"exit": 0}
except SystemExit as stop:
    outcome = {"exit": stop.code}
outcome["tensorflow"] = "tensorflow" in sys.modules
print(json.dumps(outcome))
"""


def check(tmp_path, *overrides):
    (tmp_path / "config.yaml").write_text("data:\n  train: train.csv\n")
    result = subprocess.run([sys.executable, "-c", SCRIPT, "--config", str(tmp_path / "config.yaml"), *overrides],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr


@pytest.fixture
def tables(tmp_path):
    rows = "".join(f"{i},{'mobile' if i % 2 else 'desktop'},{'buy' if i % 3 else 'browse'}\n" for i in range(30))
    (tmp_path / "train.csv").write_text("minutes,device,intent\n" + rows)
    (tmp_path / "test.csv").write_text("minutes,device,intent\n3,mobile,buy\n4,desktop,refund\n")
    return tmp_path


def test_an_unknown_label_in_the_test_file_is_reported_before_tensorflow(tables):
    outcome, stderr = check(tables, f"data.test={tables / 'test.csv'}")
    assert outcome == {"exit": 2, "tensorflow": False}
    assert stderr.strip() == (f"error: {tables / 'test.csv'}: line 3: label 'refund' in column 'intent' is not a "
                              "training class ['browse', 'buy']; remove the row or add examples of that class to the "
                              "training data")


def test_a_word_among_inferred_numbers_is_reported_before_tensorflow(tables):
    text = (tables / "train.csv").read_text().replace("\n7,", "\nabc,", 1)
    (tables / "train.csv").write_text(text)
    outcome, stderr = check(tables)
    assert outcome == {"exit": 2, "tensorflow": False}
    assert "line 9, column 'minutes' holds 'abc' among numbers" in stderr


def test_good_tables_pass_without_tensorflow(tables):
    assert check(tables)[0] == {"exit": 0, "tensorflow": False}
