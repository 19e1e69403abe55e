"""The run folder (`runs/<name>/`) and the command line of a generated `train.py`.

    python train.py [--config FILE] [--run-name NAME] [key=value ...]

The run folder holds everything one training produced (README "Runs" lists its files). A new name is made from
the time; `--run-name` picks one, and rerunning with the same name resumes an interrupted training from its
`checkpoints/<phase>/` (`kerasls.resume.EpochState`).

With `training.distribute: multi_worker` every worker of TF_CONFIG runs the same `train.py`. Only the chief (task
type `chief`, or worker 0 when the cluster has no chief) writes the run folder `runs/<name>/`; every other worker
writes the same files (checkpoints, history, export, report) into its own `runs/<name>/<type>-<index>/`, e.g.
`runs/baseline/worker-1/`, with its own `.lock`. So two workers on one machine can share a project folder and a
`--run-name`; give every worker the same `--run-name`, as the time-made name can differ between machines. A
worker's folder is its local copy of the run: its weights equal the chief's, and a rerun resumes from it.
"""

from __future__ import annotations

import argparse
import atexit
import datetime
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from kerasls import config as config_module
from kerasls import console_log
from kerasls.cluster import cluster_task
from kerasls.data import tabular
from kerasls.encoder_settings import check_encoders_available
from kerasls.errors import KeraslsError, run_with_clear_errors, set_interrupt_hint
from kerasls.fileio import atomic_write_text


@dataclass(frozen=True)
class RunFolder:
    path: Path

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def history(self) -> Path:
        return self.path / "history.csv"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.json"

    @property
    def predictions(self) -> Path:
        return self.path / "predictions.csv"

    @property
    def report(self) -> Path:
        return self.path / "report.html"

    @property
    def log(self) -> Path:
        return self.path / "train.log"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tensorboard"

    @property
    def export_root(self) -> Path:
        return self.path / "export"

    @property
    def plots(self) -> Path:
        return self.path / "plots"


def new_run_name() -> str:
    return datetime.datetime.now().strftime("%Y%m%d-%H%M%S")


def create_run_folder(runs_dir, name=None, worker=None) -> RunFolder:
    """`runs_dir/<name>/`, or `runs_dir/<name>/<worker>/` for a non-chief worker of a multi-worker run."""
    runs_dir = Path(runs_dir).resolve()
    if name is not None:
        check_run_name(name)
    base = name or new_run_name()
    path = runs_dir / base
    if name is None:
        suffix = 1
        while path.exists():
            suffix += 1
            path = runs_dir / f"{base}-{suffix}"
    if worker is not None:
        path = path / worker
    if name is not None:
        refuse_finished_run(path)
    path.mkdir(parents=True, exist_ok=name is not None)
    return RunFolder(path)


def check_run_name(name: str) -> None:
    if not name or "/" in name or name in (".", ".."):
        raise KeraslsError(f"--run-name {name!r}: use a plain folder name such as 'baseline'")


def refuse_finished_run(path) -> None:
    """A `--run-name` folder may hold an interrupted run (it resumes), not a finished one."""
    if (Path(path) / "metrics.json").exists():
        raise KeraslsError(
            f"{path} already holds a finished run (metrics.json); choose another --run-name or delete that folder"
        )


def worker_folder_name(config):
    """None for the process that writes `runs/<name>/` itself; else the subfolder of a non-chief worker."""
    if getattr(config.training, "distribute", None) != "multi_worker":
        return None
    task = cluster_task()
    return None if task.is_chief else task.folder_name


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message):
        raise KeraslsError(f"train.py: {message}; settings are key=value overrides (e.g. training.epochs=3); usage: "
                           "python train.py [--config FILE] [--run-name NAME] [--runs-dir DIR] [key=value ...]")


def parse_train_args(argv, description="Train a classifier"):
    parser = _OneLineParser(description=description)
    parser.add_argument("--config", default="config.yaml", help="YAML config file (default: config.yaml)")
    parser.add_argument("--run-name", default=None, help="run folder name under runs/ (rerun the same name to resume)")
    parser.add_argument("--runs-dir", default="runs", help="where run folders go (default: runs)")
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. training.epochs=3")
    return parser.parse_intermixed_args(argv)


def check_before_tensorflow(argv, schema=config_module.TabularConfig) -> None:
    """What `python train.py` checks before TensorFlow loads (which takes seconds): the command line, the config
    (an unknown key or a bad value), that `--run-name` is not a finished run and, for tables, that the data files
    exist and name the configured columns, and for tables up to `READ_BEFORE_TENSORFLOW` every value and label. A
    mistake is one `error:` line and exit status 2 (`--debug`: the traceback), as later errors are."""
    def check(argv):
        args = parse_train_args(argv)
        config = config_module.load_config(args.config, args.overrides, schema)
        if args.run_name is not None:
            check_run_name(args.run_name)
            refuse_finished_run(Path(args.runs_dir).resolve() / args.run_name / (worker_folder_name(config) or ""))
        if isinstance(config, config_module.TabularConfig):
            tabular.check_files_and_columns(config.data, config.targets.soft_labels)
            check_encoders_available(encoders_in(config.data))
            if not config.data.streaming and tabular_bytes(config.data) <= READ_BEFORE_TENSORFLOW:
                tabular.load_splits(config.data, seed=config.seed, soft=config.targets.soft_labels)
        elif not Path(config.data.train).exists():
            raise KeraslsError(f"{config.data.train}: train images not found; set data.train to a folder of class "
                               "folders or a .csv manifest")

    run_with_clear_errors(check, argv)


# Tables up to this size (all files together) are read and checked whole before TensorFlow loads: a bad value,
# an unknown label or a stray string then costs a second instead of TensorFlow's start-up (~6 s), and the data are
# read twice (Banking77's 1.5 MB: ~0.1 s). Larger tables get the header checks only before it.
READ_BEFORE_TENSORFLOW = 64 << 20


def tabular_bytes(data) -> int:
    """The size of the data section's files together."""
    return sum(Path(path).stat().st_size for path in (data.train, data.val, data.test) if path and Path(path).is_file())


def encoders_in(data) -> dict:
    """{text column: EncoderSettings} the config asks for; with inferred features (`data.features: null`), the
    text columns are known only from the data, so the default encoder stands for them."""
    columns = data.features.text if data.features else [*data.text.columns, "(inferred text columns)"]
    return data.text.encoders(columns)


def read_command_line(argv=None, schema=config_module.TabularConfig):
    """Parse `train.py`'s command line and validate the config; nothing is written yet. From here on the console is
    kept, for `train.log` in the run folder (`kerasls.console_log`)."""
    console_log.capture()
    args = parse_train_args(sys.argv[1:] if argv is None else argv)
    config = config_module.load_config(args.config, args.overrides, schema)
    soft = config.targets.soft_labels
    if soft is not None and soft.source == "teacher":
        from kerasls.export import resolve_export

        resolve_export(soft.teacher)  # a missing teacher is an error before any folder is made
    return config, args


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lock_run_folder(run: RunFolder) -> Path:
    """Claim the run folder for this process (`.lock` holds the pid); a second training on it is refused.

    A lock left by a process that no longer exists (killed) is stale and taken over, so a rerun resumes.
    The lock is removed when this process exits normally.
    """
    lock = run.path / ".lock"
    while True:
        try:
            handle = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                owner = int(lock.read_text().strip() or 0)
            except (OSError, ValueError):
                owner = 0
            if owner and owner != os.getpid() and _pid_alive(owner):
                raise KeraslsError(
                    f"{run.path} is in use by another training (pid {owner}); wait for it to finish or choose "
                    "another --run-name"
                ) from None
            lock.unlink(missing_ok=True)  # stale: its owner is gone
            continue
        with os.fdopen(handle, "w") as file:
            file.write(str(os.getpid()))
        atexit.register(lambda: lock.unlink(missing_ok=True))
        return lock


# Keys whose change does not change what a resumed run computes
RESUMABLE_CHANGES = {"training.verbose"}


def changed_keys(saved: dict, current: dict, prefix="") -> list[str]:
    """Dotted keys whose values differ between two resolved configs (nested dicts compared key by key)."""
    keys = []
    for key in sorted(set(saved) | set(current)):
        name = f"{prefix}{key}"
        before, after = saved.get(key), current.get(key)
        if isinstance(before, dict) and isinstance(after, dict):
            keys.extend(changed_keys(before, after, f"{name}."))
        elif before != after:
            keys.append(name)
    return keys


def check_resume_config(run: RunFolder, config) -> None:
    """A rerun of an interrupted run resumes it only with the settings it started with: the saved state was
    trained with those, and config.yaml would otherwise claim every epoch used the new values."""
    if not run.config.is_file() or not (run.checkpoints).is_dir():
        return
    saved = yaml.safe_load(run.config.read_text(encoding="utf-8")) or {}
    current = config.model_dump(mode="json")
    changed = [key for key in changed_keys(saved, current) if key not in RESUMABLE_CHANGES]
    if changed:
        def value(config, key):
            for part in key.split("."):
                config = config.get(part) if isinstance(config, dict) else None
            return config

        details = ", ".join(f"{key}: {value(saved, key)!r} -> {value(current, key)!r}" for key in changed)
        raise KeraslsError(
            f"{run.path}: this run started with other settings ({details}); rerun with the same settings to resume "
            "it, or pass a new --run-name to start another run")


def start_run(config, args) -> RunFolder:
    """Make and lock the run folder (once the data checked out), write the resolved config into it and start
    `train.log` (the console so far, then everything printed after); a non-chief
    worker of a multi-worker run gets its own subfolder (see the module docstring). Resuming a run with other
    settings is refused (`check_resume_config`)."""
    worker = worker_folder_name(config)
    run = create_run_folder(args.runs_dir, args.run_name, worker=worker)
    lock_run_folder(run)
    check_resume_config(run, config)
    atomic_write_text(run.config, config_module.dump_config(config))
    console_log.attach(run.log)
    name = run.path.parent.name if worker else run.path.name  # a worker's folder is runs/<name>/<worker>/
    set_interrupt_hint(f"to resume from the last finished epoch, run: {resume_command(args, name)}")
    return run


def resume_command(args, run_name: str) -> str:
    """The command line that resumes run `run_name`: the same config and overrides."""
    parts = ["python", "train.py"]
    if args.config != "config.yaml":
        parts += ["--config", args.config]
    if args.runs_dir != "runs":
        parts += ["--runs-dir", args.runs_dir]
    return shlex.join([*parts, *args.overrides, "--run-name", run_name])
