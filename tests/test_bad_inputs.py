"""The bad-input corpus: every case of tests/bad_inputs/cases.yaml fails cleanly.

The contract: a bad input gives exit status 2, one line on standard error that starts with `error: ` and names
the file/line/column/key and the fix, no Python traceback (unless `--debug`), and no file created or changed
(these inputs are all rejected before training, so not even a run folder).

Speed: one tabular-intent and one image-classifier project are rendered once, their `train.py` is imported once
and its `main` is run in-process through `kerasls.errors.run_with_clear_errors`, as the script's own
`if __name__ == "__main__"` does; `kerasls` commands run in-process through `kerasls.cli.main` the same way. A few
cases run again as real subprocesses (all at once) to prove that the real exit path prints no traceback either.
"""

from __future__ import annotations

import importlib.util
import io
import os
import re
import shutil
import subprocess
import sys
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from kerasls.errors import KeraslsError, run_with_clear_errors
from kerasls.templates_index import render_template

BAD_INPUTS = Path(__file__).resolve().parent / "bad_inputs"
CASES = yaml.safe_load((BAD_INPUTS / "cases.yaml").read_text(encoding="utf-8"))["cases"]
GROUPS = ("config", "tabular", "images", "templates", "commands")
COMMANDS = ("tabular", "image", "kerasls")

# Warnings a plain `python train.py` shows on standard error (the others are hidden by Python's default filters).
HIDDEN_WARNINGS = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)


def corpus_params(cases=CASES, in_process=True):
    for case in cases:
        if in_process and case.get("only") == "subprocess":
            continue
        reason = case.get("xfail") or (None if in_process else case.get("xfail_subprocess"))
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        yield pytest.param(case, id=case["id"], marks=marks)


def case_by_id(case_id):
    return next(case for case in CASES if case["id"] == case_id)


# ---------------------------------------------------------------------------------------------------------------
# Fixtures: two rendered projects (train.py imported once each) and a tiny tabular export


@dataclass
class Projects:
    root: Path  # every file a case may touch lives below it: projects, export, per-case work folders
    tabular: Path
    image: Path
    mains: dict  # "tabular" / "image" -> that project's train.main
    launched: dict  # the real processes, started early (see launch_real_processes), by case id


def import_train_script(project: Path, module_name: str):
    """Import `project/train.py` as a module; both templates have a `model` module, so never keep one cached."""
    sys.modules.pop("model", None)
    sys.path.insert(0, str(project))
    try:
        spec = importlib.util.spec_from_file_location(module_name, project / "train.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(project))
        sys.modules.pop("model", None)
    return module


@pytest.fixture(scope="session")
def projects(tmp_path_factory, request) -> Projects:
    root = tmp_path_factory.mktemp("bad_inputs")
    rendered = root / "projects"
    tabular = render_template("tabular-intent", output_dir=rendered, extra_context={"project_slug": "bad_tabular"})
    image = render_template("image-classifier", output_dir=rendered, extra_context={"project_slug": "bad_image"})
    projects = Projects(root, tabular, image, {}, {})
    if any(item.originalname in REAL_PROCESS_TESTS for item in request.session.items):
        # Their TensorFlow imports (the slow part) overlap with this process's own and with the in-process corpus.
        projects.launched = launch_real_processes(projects, request, tmp_path_factory.mktemp("real_process_output"))
    projects.mains["tabular"] = import_train_script(tabular, "bad_inputs_tabular_train").main
    projects.mains["image"] = import_train_script(image, "bad_inputs_image_train").main
    yield projects
    for item in projects.launched.values():
        if item.process.poll() is None:
            item.process.kill()
            item.process.wait()


@pytest.fixture(scope="session")
def tiny_export(projects) -> Path:
    """A real kerasls export (export_classifier) with inputs clicks (float32) and device (string), label intent."""
    import keras
    import tensorflow as tf

    from kerasls.export import Serving, export_classifier

    dense = keras.layers.Dense(2)
    dense.build((None, 2))

    def logits(inputs):
        device = tf.cast(tf.strings.length(inputs["device"]), tf.float32)
        return dense(tf.stack([inputs["clicks"], device], axis=-1))

    export_root = projects.root / "export"
    signature = {"clicks": tf.TensorSpec([None], tf.float32, name="clicks"),
                 "device": tf.TensorSpec([None], tf.string, name="device")}
    export_classifier(
        export_root, Serving(logits_fn=logits, input_signature=signature), tracked=[dense],
        classes=["browse", "purchase"], temperature=1.0, metadata={"label": "intent", "label_smoothing": 0.1},
    )
    return export_root


# ---------------------------------------------------------------------------------------------------------------
# Building a case's inputs


def image_bytes(kind: str) -> bytes:
    import numpy as np
    from PIL import Image

    pixels = (np.random.default_rng(len(kind)).random((16, 16, 3)) * 255).astype("uint8")
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG" if "jpg" in kind else "PNG")
    data = buffer.getvalue()
    return data[: len(data) // 2] if kind.startswith("truncated") else data


def make_tree(work: Path, tree: dict) -> None:
    for relative, kind in (tree or {}).items():
        path = work / relative
        if kind == "dir":
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind in ("png", "jpg", "truncated_jpg", "truncated_png"):
            path.write_bytes(image_bytes(kind))
        elif kind == "empty":
            path.write_bytes(b"")
        elif kind.startswith("file:"):
            shutil.copyfile(BAD_INPUTS / kind.removeprefix("file:"), path)
        else:
            path.write_text(kind, encoding="utf-8")


def prepare(case, projects: Projects, request) -> tuple[Path, list[str]]:
    """Make the case's work folder and files; -> (work folder, argv with placeholders filled in)."""
    work = projects.root / "cases" / case["id"]
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    make_tree(work, case.get("tree"))
    values = {"work": str(work), "tabular": str(projects.tabular), "image": str(projects.image)}
    if case.get("bad"):
        values["bad"] = str(shutil.copyfile(BAD_INPUTS / case["bad"], work / case["bad"]))
    if any("{export}" in arg for arg in case["args"]):
        values["export"] = str(request.getfixturevalue("tiny_export"))
    argv = []
    for arg in case["args"]:
        arg = str(arg)
        for name, value in values.items():
            arg = arg.replace("{" + name + "}", value)
        argv.append(arg)
    if case["command"] in ("tabular", "image"):
        argv += ["--runs-dir", str(work / "runs")]  # a wrongly made run folder lands in the work folder
    return work, argv


def snapshot(root: Path, skip_real_process_cases=True) -> dict:
    """Every path below `root` (but __pycache__) -> size and mtime for files, "dir" for folders.

    The work folders of the real-process cases (cases/subprocess_*), which run alongside, are left out unless asked.
    """
    state = {}
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [name for name in subfolders if name != "__pycache__"
                         and not (skip_real_process_cases and name.startswith("subprocess_"))]
        for name in subfolders:
            state[os.path.join(folder, name)] = "dir"
        for name in files:
            stat = os.lstat(os.path.join(folder, name))
            state[os.path.join(folder, name)] = (stat.st_size, stat.st_mtime_ns)
    return state


def file_changes(before: dict, after: dict, within=None) -> list[str]:
    keep = (lambda path: any(path.startswith(str(place)) for place in within)) if within else (lambda path: True)
    created = sorted(p for p in after if p not in before and keep(p))
    removed = sorted(p for p in before if p not in after and keep(p))
    changed = sorted(p for p in after if p in before and after[p] != before[p] and keep(p))
    return [f"created {p}" for p in created] + [f"deleted {p}" for p in removed] + [f"changed {p}" for p in changed]


def remove_created(before: dict, after: dict, work: Path) -> None:
    """Undo what a buggy case left outside its work folder, so later cases see clean projects."""
    for path in sorted((p for p in after if p not in before), key=len):
        if not path.startswith(str(work)) and os.path.lexists(path):
            shutil.rmtree(path) if os.path.isdir(path) else os.unlink(path)


def contract_problems(case, code, stderr: str, changes: list[str]) -> list[str]:
    problems = []
    if code != 2:
        problems.append(f"exit status {code!r}, expected 2")
    if "Traceback" in stderr:
        problems.append("a Python traceback on standard error")
    lines = [line for line in stderr.splitlines() if line.strip()]
    if len(lines) != 1:
        problems.append(f"{len(lines)} non-empty lines on standard error, expected 1")
    if lines and not lines[0].startswith("error: "):
        problems.append(f"the first line does not start with 'error: ': {lines[0]!r}")
    line = next((text for text in lines if text.startswith("error: ")), lines[0] if lines else "")
    missing = [text for text in case["expect"] if text not in line]
    if missing:
        problems.append(f"the error line lacks {missing}")
    wrong = [text for text in case.get("reject", ()) if text in line]
    if wrong:
        problems.append(f"the error line holds {wrong}")
    problems.extend(f"file system: {change}" for change in changes)
    return problems


# ---------------------------------------------------------------------------------------------------------------
# The corpus, in-process


def test_corpus_is_well_formed():
    ids = [case["id"] for case in CASES]
    assert len(ids) == len(set(ids)), "duplicate case ids"
    for case in CASES:
        assert case["group"] in GROUPS and case["command"] in COMMANDS, case["id"]
        assert case["expect"] and all(isinstance(text, str) for text in case["expect"]), case["id"]
        if case.get("bad"):
            assert (BAD_INPUTS / case["bad"]).is_file(), case["id"]
    assert len(CASES) >= 40


@pytest.mark.parametrize("case", corpus_params())
def test_bad_input(case, projects, request, capsys, monkeypatch):
    work, argv = prepare(case, projects, request)
    if case["command"] == "kerasls":
        from kerasls.cli import main

        monkeypatch.chdir(work)
    else:
        main = projects.mains[case["command"]]
        monkeypatch.chdir(projects.tabular if case["command"] == "tabular" else projects.image)
    capsys.readouterr()
    before = snapshot(projects.root)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                run_with_clear_errors(main, argv)
                code = 0
            except SystemExit as exit_:
                code = exit_.code
            except Exception as error:  # noqa: BLE001 - what the user would get as a traceback
                code = "traceback"
                crash = "".join(traceback.format_exception_only(type(error), error)).strip()
                print(f"Traceback (in-process): {crash}", file=sys.stderr)
    finally:
        after = snapshot(projects.root)
        remove_created(before, after, work)
    stderr = capsys.readouterr().err
    shown = [w for w in caught if not issubclass(w.category, HIDDEN_WARNINGS)]
    stderr += "".join(f"{w.filename}:{w.lineno}: {w.category.__name__}: {w.message}\n" for w in shown)
    print(stderr)  # shown with `pytest -rP`: the corpus's error lines, for review
    problems = contract_problems(case, code, stderr, file_changes(before, after))
    assert not problems, "\n".join([*problems, f"argv: {argv}", "stderr:", stderr])


# ---------------------------------------------------------------------------------------------------------------
# The real exit path: a few cases as subprocesses, all started at once (each train.py pays a TensorFlow import)

SUBPROCESS_CASES = [
    "config_unknown_key_override",  # tabular train.py
    "images_truncated_jpeg",  # image train.py: libjpeg's own messages would show here, not in-process
    "new_slug_with_slash",  # kerasls new (no TensorFlow)
    "new_without_no_input_on_closed_stdin",  # only: subprocess (pytest's stdin is not a user's closed stdin)
]
DEBUG_CASE = {"id": "debug_sweep_bad_config", "command": "kerasls", "bad": "yaml_syntax.yaml",
              "args": ["--debug", "sweep", "{tabular}", "--values", "0", "--config", "{bad}", "-o", "{work}/sweep"],
              "expect": []}

# What TensorFlow itself prints on standard error in a CPU-only process, whatever TF_CPP_MIN_LOG_LEVEL says
# (TF 2.21): absl's pre-initialisation notice and C++ log lines such as
# "I0000 00:00:1795425528.525837   10661 cudart_stub.cc:31] Could not find cuda drivers on your machine, ..." or
# "E0000 00:00:1795425638.335973   11520 cuda_platform.cc:52] failed call to cuInit: ...". They are checked
# separately (test_train_py_error_is_the_only_stderr_output); the corpus checks what kerasls prints.
TENSORFLOW_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IWEF]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] .*)$"
)


def without_tensorflow_noise(stderr: str) -> str:
    return "".join(line for line in stderr.splitlines(keepends=True)
                   if not TENSORFLOW_NOISE.match(line.rstrip("\n")))


def user_environment() -> dict:
    environment = dict(os.environ)
    environment.pop("TF_CPP_MIN_LOG_LEVEL", None)  # as in a user's shell: kerasls sets its own default
    return environment


def command_line(command, argv) -> list[str]:
    if command == "kerasls":
        return [sys.executable, "-m", "kerasls.cli", *argv]
    return [sys.executable, "train.py", *argv]


@dataclass
class Launched:
    case: dict
    process: subprocess.Popen
    work: Path
    cwd: Path
    before: dict
    outputs: tuple  # (stdout file, stderr file)
    result: tuple = None


REAL_PROCESS_TESTS = {"test_bad_input_in_a_real_process", "test_train_py_error_is_the_only_stderr_output",
                      "test_debug_shows_the_traceback_in_a_real_process"}


def launch_real_processes(projects: Projects, request, output_folder: Path) -> dict:
    """Start every subprocess case and the --debug run at once; each test waits for its own (`finish`).

    Standard output and error go to files outside the projects' root, so a chatty process never blocks on a pipe.
    """
    started = {}
    for case in [*(case_by_id(case_id) for case_id in SUBPROCESS_CASES), DEBUG_CASE]:
        case = {**case, "id": f"subprocess_{case['id']}"}
        work, argv = prepare(case, projects, request)
        cwd = work if case["command"] == "kerasls" else getattr(projects, case["command"])
        before = snapshot(projects.root, skip_real_process_cases=False)
        stdout = open(output_folder / f"{case['id']}.out", "w+", encoding="utf-8")  # noqa: SIM115 - closed in finish
        stderr = open(output_folder / f"{case['id']}.err", "w+", encoding="utf-8")  # noqa: SIM115
        process = subprocess.Popen(command_line(case["command"], argv), cwd=cwd, env=user_environment(),
                                   stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, text=True)
        started[case["id"].removeprefix("subprocess_")] = Launched(case, process, work, cwd, before, (stdout, stderr))
    return started


@pytest.fixture(scope="session")
def launched(projects) -> dict:
    assert projects.launched, "the real processes start in the `projects` fixture when their tests are selected"
    return projects.launched


def finish(item: Launched, projects: Projects):
    """-> (exit status, raw standard error, file-system changes in the case's work folder and cwd)."""
    if item.result is None:
        item.process.wait(timeout=300)
        for output in item.outputs:
            output.close()
        stderr = Path(item.outputs[1].name).read_text(encoding="utf-8")
        after = snapshot(projects.root, skip_real_process_cases=False)
        changes = file_changes(item.before, after, within=[item.work, item.cwd])
        item.result = (item.process.returncode, stderr, changes)
    return item.result


@pytest.mark.parametrize("case", corpus_params([case_by_id(i) for i in SUBPROCESS_CASES], in_process=False))
def test_bad_input_in_a_real_process(case, launched, projects):
    code, stderr, changes = finish(launched[case["id"]], projects)
    problems = contract_problems(case, code, without_tensorflow_noise(stderr), changes)
    assert not problems, "\n".join([*problems, "stderr:", stderr])


# `import tensorflow` itself prints absl/CUDA start-up lines on standard error (TF_CPP_MIN_LOG_LEVEL does not
# silence them in TF 2.21); the real-process test above filters exactly those lines and checks the rest.


# ---------------------------------------------------------------------------------------------------------------
# --debug shows the traceback instead


def test_debug_shows_the_traceback_in_a_real_process(launched, projects):
    code, stderr, changes = finish(launched[DEBUG_CASE["id"]], projects)
    assert code == 1, stderr
    assert "Traceback (most recent call last)" in stderr
    assert "kerasls.errors.KeraslsError" in stderr and "yaml_syntax.yaml" in stderr and "invalid YAML" in stderr
    assert not changes


def test_debug_train_py_bad_config_raises(projects, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(projects.tabular)
    with pytest.raises(KeraslsError, match="unknown config key 'training.epoch'"):
        run_with_clear_errors(projects.mains["tabular"],
                              ["--debug", "training.epoch=3", "--runs-dir", str(tmp_path / "runs")])
    assert not any(tmp_path.iterdir())
    assert "error: " not in capsys.readouterr().err


def test_debug_before_the_subcommand_raises(tmp_path, monkeypatch):
    from kerasls.cli import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(KeraslsError, match="project_slug='a/b'"):
        run_with_clear_errors(main, ["--debug", "new", "tabular-intent", "--no-input", "project_slug=a/b"])
    assert not any(tmp_path.iterdir())


def test_debug_after_the_subcommand_raises(tmp_path, monkeypatch):
    from kerasls.cli import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(KeraslsError, match="project_slug='a/b'"):
        run_with_clear_errors(main, ["new", "tabular-intent", "--no-input", "project_slug=a/b", "--debug"])
