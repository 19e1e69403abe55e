"""new, train, export and predict run with every network connection refused (sitecustomize in PYTHONPATH)."""

import os
import subprocess
import sys
from pathlib import Path

GUARD = Path(__file__).resolve().parent / "no_network"


def test_train_export_predict_with_sockets_blocked(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(GUARD), os.environ.get("PYTHONPATH", "")])}
    probe = subprocess.run([sys.executable, "-c", "import urllib.request; urllib.request.urlopen('http://example.com')"],
                           env=env, capture_output=True, text=True)
    assert probe.returncode != 0 and "kerasls test: network access attempted" in probe.stderr  # the guard works

    def run(*args, cwd):
        result = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "network access attempted" not in result.stderr and "DNS lookup attempted" not in result.stderr
        return result

    run("-m", "kerasls.cli", "new", "tabular-intent", "--no-input", "project_slug=offline", cwd=tmp_path)
    project = tmp_path / "offline"
    trained = run("train.py", "training.epochs=1", "training.verbose=0", cwd=project)
    run_folder = Path(trained.stdout.strip().splitlines()[-1].removeprefix("run: "))
    predicted = run("-m", "kerasls.cli", "predict", str(run_folder / "export"), "data/test.csv", "-o",
                    str(tmp_path / "out.csv"), cwd=project)
    assert "a SavedModel is a program" in predicted.stderr
    assert (tmp_path / "out.csv").stat().st_size > 1000
