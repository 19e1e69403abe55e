"""Wall time of the `kerasls` command against plain cookiecutter and the bare interpreter, side by side.

Runs, as subprocesses of the venv this script runs in (its console scripts `kerasls` and `cookiecutter`):

  (a) `kerasls new tabular-intent --no-input -o TMP` (a fresh empty folder each time),
  (b) `cookiecutter --no-input -o TMP <repo>/templates/tabular-intent` (the same project),
  (c) `kerasls --help`, (d) `kerasls --version`, (e) `kerasls templates`,
  (f) `python -c pass`: the interpreter's own start-up, the floor of every row,
  (g) `python train.py training.epoch=3` in a generated project: the error path of a misspelled config key
      (exit status 2), checked before TensorFlow loads,
  (h) `python -c "import tensorflow"`: what that error path would cost if it came after TensorFlow's import.

`--runs` rounds, each running every command once in turn (the order rotated every round), so a background
load slows them alike; the table gives the median and the best wall time. Every generated project is checked
(train.py, model.py and config.yaml exist). Targets: kerasls new / cookiecutter <= 1.3 (medians),
`kerasls --help` < 0.5 s (median) and the misspelled-key error <= 1 s (median). `--importtime` also prints the
slowest imports of `kerasls --help` (`python -X importtime`), the first place to look when a target is missed.
About 70 s with the defaults (the TensorFlow import row dominates).
Usage::

    python benchmarks/cli_startup.py [--runs 10] [--importtime]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TEMPLATE = "tabular-intent"
PROJECT_FILES = ("train.py", "model.py", "config.yaml")


MISSPELLED = "(g) python train.py training.epoch=3 (error, exit 2)"


def commands(project: Path) -> dict:
    """Name -> (argv, makes a project: bool). `{out}` in argv is replaced by a fresh temporary folder; argv
    starting with "train.py" runs in `project`."""
    kerasls, cookiecutter = str(BIN / "kerasls"), str(BIN / "cookiecutter")
    return {
        f"(a) kerasls new {TEMPLATE} --no-input": ([kerasls, "new", TEMPLATE, "--no-input", "-o", "{out}"], True),
        f"(b) cookiecutter --no-input templates/{TEMPLATE}": (
            [cookiecutter, "--no-input", "-o", "{out}", str(REPO / "templates" / TEMPLATE)], True),
        "(c) kerasls --help": ([kerasls, "--help"], False),
        "(d) kerasls --version": ([kerasls, "--version"], False),
        "(e) kerasls templates": ([kerasls, "templates"], False),
        "(f) python -c pass": ([sys.executable, "-c", "pass"], False),
        MISSPELLED: ([sys.executable, str(project / "train.py"), "training.epoch=3"], False),
        "(h) python -c 'import tensorflow'": ([sys.executable, "-c", "import tensorflow"], False),
    }


def run_once(argv, makes_project: bool, scratch: Path) -> float:
    out = Path(tempfile.mkdtemp(dir=scratch))
    argv = [str(out) if item == "{out}" else item for item in argv]
    project_script = len(argv) > 1 and argv[1].endswith("train.py")
    start = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True,
                            cwd=Path(argv[1]).parent if project_script else scratch)
    seconds = time.perf_counter() - start
    if project_script:
        if result.returncode != 2 or not result.stderr.strip().splitlines()[-1].startswith("error: "):
            raise SystemExit(f"{' '.join(argv)}: expected one error line and exit 2, got {result.returncode}:\n"
                             f"{result.stderr[-2000:]}")
    elif result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stderr[-2000:]}")
    if makes_project:
        projects = [p for p in out.iterdir() if p.is_dir()]
        if len(projects) != 1 or not all((projects[0] / name).is_file() for name in PROJECT_FILES):
            raise SystemExit(f"{' '.join(argv)} did not make a project with {PROJECT_FILES} in {out}")
    return seconds


def slowest_imports(count=12) -> list[tuple[int, str]]:
    """(cumulative microseconds, module) of the slowest imports of `kerasls --help`."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "kerasls.cli", "--help"],
                            capture_output=True, text=True)
    rows = []
    for line in result.stderr.splitlines():
        if line.startswith("import time:") and "cumulative" not in line:
            _, cumulative, name = (part.strip() for part in line.removeprefix("import time:").split("|"))
            rows.append((int(cumulative), name.strip()))
    return sorted(rows, reverse=True)[:count]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="rounds; every command runs once per round")
    parser.add_argument("--importtime", action="store_true", help="also print the slowest imports of --help")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as temp:
        scratch = Path(temp)
        subprocess.run([str(BIN / "kerasls"), "new", TEMPLATE, "--no-input", "-o", str(scratch / "project"),
                        "project_slug=timed"], check=True, capture_output=True)
        table = commands(scratch / "project" / "timed")
        names = list(table)
        seconds = {name: [] for name in names}
        for name in names:  # warm-up: file system caches, .pyc files
            run_once(*table[name], scratch)
        for round_index in range(args.runs):
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                seconds[name].append(run_once(*table[name], scratch))

    median = {name: statistics.median(values) for name, values in seconds.items()}
    new, plain, help_, floor = names[0], names[1], names[2], names[5]
    print(f"\n{args.runs} runs each after 1 warm-up, interleaved; Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs\n")
    print("| command | median s | best s | median above python -c pass, s |")
    print("|---|---:|---:|---:|")
    for name in names:
        print(f"| {name} | {median[name]:.3f} | {min(seconds[name]):.3f} | {median[name] - median[floor]:.3f} |")
    ratio = median[new] / median[plain]
    print(f"\nkerasls new / cookiecutter = {ratio:.2f} (target <= 1.3): {'PASS' if ratio <= 1.3 else 'MISS'}")
    print(f"kerasls --help = {median[help_]:.3f} s (target < 0.5 s): {'PASS' if median[help_] < 0.5 else 'MISS'}")
    print(f"misspelled config key error = {median[MISSPELLED]:.3f} s (target <= 1 s): "
          f"{'PASS' if median[MISSPELLED] <= 1.0 else 'MISS'}")
    if args.importtime:
        print("\nslowest imports of `kerasls --help` (python -X importtime, cumulative):\n")
        print("| module | cumulative ms |")
        print("|---|---:|")
        for microseconds, module in slowest_imports():
            print(f"| {module} | {microseconds / 1000:.1f} |")


if __name__ == "__main__":
    sys.exit(main())
