"""Streaming tables (`data.streaming: true`) at 100k, 1M and 5M rows: rows/s and peak memory, side by side.

Generates purchase-intent-like CSVs (6 numeric columns with 5% missing values, 2 categorical columns, a short
free-text column, 3 classes) of each size in a temporary folder, plus fixed 20k-row val and test files, then for
each size starts a fresh Python process that does what a generated project's train.py does with
`data.streaming: true`:

  1. `TableStream`: the one pass over the training file (checks, classes, preprocessing adapted chunk by chunk),
  2. one epoch of `model.fit` on `stream.dataset("train", shuffle=True)` (the template's MLP [128, 64],
     `compile_classifier` with label smoothing 0.1), validating on the 20k val rows,
  3. logits of the val and test rows (what calibration and the report read),

and reports the time of each step, rows/s, and the process's peak resident memory (ru_maxrss). Targets: time
linear in rows (rows/s at the largest size within 20% of the 1M-row rate; the smallest size pays fixed costs such
as tracing), and peak RSS at 5M rows ≤ 1.2× peak RSS at 100k rows. Usage::

    python benchmarks/scale.py [--sizes 100000,1000000,5000000] [--batch-size 1024] [--keep DIR]

Takes about 5 minutes on 2 CPU cores with the defaults (most of it the 5M-row epoch and writing the CSVs).

`--in-memory 10000,100000,1000000` measures tables held in memory instead (`data.streaming: false`, the default):
for each size, one `python train.py training.epochs=1` of a tabular-intent project on an open-vocabulary table of
short queries (150 intents; a vocabulary of 500k generated words drawn Zipf-like, so most rows bring words no
other row has; the template's default text settings: 10,000 word and 10,000 character n-grams), in its own
process; it reports the run's wall time, training rows/s and peak RSS. Targets: peak RSS at 100k rows <= 2.5 GB
and <= 1.5x the 10k-row run's; 1M rows train.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

WORDS = [f"w{i}" for i in range(300)]
CLASSES = np.array(["browse", "purchase", "support"])
HELD_OUT_ROWS = 20_000


def make_table(path: Path, rows: int, seed: int, block=250_000) -> None:
    """Write `rows` generated rows to `path` in blocks, never holding the table."""
    rng = np.random.default_rng(seed)
    words = np.array(WORDS)
    with path.open("w") as handle:
        for start in range(0, rows, block):
            n = min(block, rows - start)
            numeric = rng.normal(size=(n, 6))
            region = rng.integers(0, 10, n)
            source = rng.integers(0, 50, n)
            score = numeric[:, 0] + 0.5 * numeric[:, 1] + (region % 3 == 0) - 0.3 * (source % 5)
            label = np.where(score > 0.8, 1, np.where(score < -1.0, 2, 0))
            label = np.where(rng.random(n) < 0.1, rng.integers(0, 3, n), label)  # 10% noise
            topic = rng.integers(0, 300, (n, 4))
            topic[:, 0] = label * 100 + rng.integers(0, 100, n)  # the first word hints the class
            numeric[rng.random((n, 6)) < 0.05] = np.nan
            frame = pd.DataFrame(numeric, columns=[f"x{i}" for i in range(6)])
            frame["region"] = [f"r{v}" for v in region]
            frame["source"] = [f"s{v}" for v in source]
            frame["note"] = [" ".join(row) for row in words[topic]]
            frame["intent"] = CLASSES[label]
            frame.to_csv(handle, header=start == 0, index=False, float_format="%.5g")


def open_vocabulary_table(path: Path, rows: int, seed: int, intents=150, vocabulary=500_000) -> None:
    """Short queries of 3-8 words: one of the intent's 20 cue words among words drawn Zipf-like from `vocabulary`
    generated words (rank r with weight 1/r), so the rarer words are new to most rows."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = np.array(["".join(rng.choice(letters, rng.integers(3, 9))) for _ in range(vocabulary)])
    weights = 1.0 / np.arange(1, vocabulary + 1)
    weights /= weights.sum()
    cues = rng.choice(vocabulary, (intents, 20), replace=False)
    labels = rng.integers(0, intents, rows)
    lengths = rng.integers(2, 8, rows)
    drawn = rng.choice(vocabulary, (rows, 7), p=weights)
    drawn[:, 0] = cues[labels, rng.integers(0, 20, rows)]
    texts = [" ".join(words[row[:length + 1]]) for row, length in zip(drawn, lengths)]
    pd.DataFrame({"query": texts, "intent": [f"intent{label:03d}" for label in labels]}).to_csv(path, index=False)


def in_memory_child(project: str, train: str) -> None:
    """`python train.py training.epochs=1` in this process; its peak RSS on standard error at exit."""
    import atexit
    import runpy

    os.chdir(project)
    sys.path.insert(0, project)
    atexit.register(lambda: print(json.dumps({"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}),
                                  file=sys.stderr))
    sys.argv = ["train.py", f"data.train={train}", "data.test=null", "data.label=intent", "training.epochs=1",
                "training.verbose=2", "training.early_stopping=0", "training.batch_size=256",
                "data.features={numeric: [], categorical: [], text: [query]}", "--run-name", Path(train).stem]
    runpy.run_path("train.py", run_name="__main__")


def in_memory(sizes, folder: Path) -> None:
    from kerasls.templates_index import render_template

    project = folder / "in_memory"
    if not project.exists():
        render_template("tabular-intent", folder, {"project_slug": "in_memory", "sample_data": "no"})
    measured = []
    for size in sizes:
        train = folder / f"open-{size}.csv"
        if not train.exists():
            open_vocabulary_table(train, size, seed=size)
        start = time.perf_counter()
        result = subprocess.run([sys.executable, __file__, "--in-memory-child", str(project), str(train)],
                                capture_output=True, text=True)
        wall = time.perf_counter() - start
        if result.returncode != 0:
            print(f"{size} rows: exit {result.returncode}: {result.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
            measured.append({"rows": size, "wall_s": wall, "peak_mb": float("nan"), "epoch_s": float("nan"),
                             "exit": result.returncode})
            continue
        peak = json.loads(result.stderr.strip().splitlines()[-1])["peak_mb"]
        epoch = [line for line in result.stdout.splitlines() if " - " in line and "ms/step" in line][0]
        measured.append({"rows": size, "wall_s": wall, "peak_mb": peak, "epoch_s": float(epoch.split(" - ")[1][:-1]),
                         "exit": 0, "train_rows": int(round(size * 0.8))})
        print(f"{size} rows: {measured[-1]}", file=sys.stderr)
    base = measured[0]
    print("\nIn-memory training (data.streaming: false), open-vocabulary queries, 150 intents, default text "
          "settings, 1 epoch, batch 256\n")
    print("| rows | exit | train.py wall s | epoch s | training rows/s | peak RSS MiB | RSS / smallest |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in measured:
        rate = r.get("train_rows", 0) / r["epoch_s"] if r["exit"] == 0 and r["epoch_s"] else float("nan")
        print(f"| {r['rows']:,} | {r['exit']} | {r['wall_s']:.0f} | {r['epoch_s']:.0f} | {rate:,.0f} | "
              f"{r['peak_mb']:,.0f} | {r['peak_mb'] / base['peak_mb']:.2f} |")
    at = {r["rows"]: r for r in measured}
    if 10_000 in at and 100_000 in at:
        ratio = at[100_000]["peak_mb"] / at[10_000]["peak_mb"]
        fits = at[100_000]["peak_mb"] <= 2.5 * 1024
        print(f"\npeak RSS at 100,000 rows = {at[100_000]['peak_mb']:,.0f} MiB (target <= 2,560) "
              f"{'PASS' if fits else 'MISS'}; / at 10,000 rows = {ratio:.2f} (target <= 1.5) "
              f"{'PASS' if ratio <= 1.5 else 'MISS'}")


def child(train: str, val: str, test: str, batch_size: int) -> dict:
    """One size, in its own process: the streaming part of train.py, timed; returns the measurements."""
    import keras

    from kerasls import results, training
    from kerasls.config import DataConfig, TabularModelConfig, TargetsConfig, TrainingConfig
    from kerasls.data import streaming

    data = DataConfig(train=train, val=val, test=test, label="intent", streaming=True)
    start = time.perf_counter()
    stream = streaming.TableStream(data, seed=0)
    scan = time.perf_counter() - start

    model_config = TabularModelConfig()
    model_inputs = stream.preprocessor.model_inputs()  # the template's model.py: the named inputs side by side
    x = keras.layers.Concatenate()(list(model_inputs.features.values()))
    for units in model_config.hidden_units:
        x = keras.layers.Dropout(model_config.dropout)(keras.layers.Dense(units, activation="relu")(x))
    model = keras.Model(model_inputs.inputs, keras.layers.Dense(len(stream.classes), dtype="float32")(x))
    training_config = TrainingConfig(epochs=1, batch_size=batch_size, verbose=0)
    training.compile_classifier(model, training_config, TargetsConfig(label_smoothing=0.1))

    train_data = stream.dataset("train", batch_size, shuffle=True, drop_remainder=True,
                                epoch=training.epoch_variable())
    val_data = stream.dataset("val", batch_size)
    start = time.perf_counter()
    model.fit(train_data, validation_data=val_data, epochs=1, verbose=0)
    fit = time.perf_counter() - start

    start = time.perf_counter()
    logits = [results.predict_logits(model, stream.dataset(split, batch_size)) for split in ("val", "test")]
    predict = time.perf_counter() - start
    assert sum(len(part) for part in logits) == 2 * HELD_OUT_ROWS
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"rows": stream.rows["train"], "scan_s": scan, "fit_s": fit, "predict_s": predict, "peak_mb": peak,
            "vocabulary": stream.preprocessor.dense_width}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000,5000000")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--keep", help="folder for the generated CSVs (reused when present)")
    parser.add_argument("--in-memory", help="sizes of in-memory runs instead, e.g. 10000,100000,1000000")
    parser.add_argument("--child", nargs=3, metavar=("TRAIN", "VAL", "TEST"), help=argparse.SUPPRESS)
    parser.add_argument("--in-memory-child", nargs=2, metavar=("PROJECT", "TRAIN"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child, args.batch_size)))
        return
    if args.in_memory_child:
        in_memory_child(*args.in_memory_child)
        return
    if args.in_memory:
        folder = Path(args.keep or tempfile.mkdtemp(prefix="kerasls-scale-"))
        folder.mkdir(parents=True, exist_ok=True)
        in_memory([int(size) for size in args.in_memory.split(",")], folder)
        return

    sizes = [int(size) for size in args.sizes.split(",")]
    folder = Path(args.keep or tempfile.mkdtemp(prefix="kerasls-scale-"))
    folder.mkdir(parents=True, exist_ok=True)
    held_out = {}
    for name, seed in (("val", 1), ("test", 2)):
        held_out[name] = folder / f"{name}.csv"
        if not held_out[name].exists():
            make_table(held_out[name], HELD_OUT_ROWS, seed)
    results = []
    for size in sizes:
        train = folder / f"train-{size}.csv"
        if not train.exists():
            start = time.perf_counter()
            make_table(train, size, seed=size)
            print(f"wrote {train} ({train.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - start:.0f} s",
                  file=sys.stderr)
        command = [sys.executable, __file__, "--batch-size", str(args.batch_size),
                   "--child", str(train), str(held_out["val"]), str(held_out["test"])]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        result = json.loads(output.strip().splitlines()[-1])
        result["file_mb"] = train.stat().st_size / 2**20
        results.append(result)
        print(f"{size} rows done: {result}", file=sys.stderr)

    base = results[0]
    print(f"\nStreaming CSV training, batch {args.batch_size}, chunks of 65536 rows, 1 epoch "
          f"(val/test fixed at {HELD_OUT_ROWS} rows)\n")
    print("| train rows | CSV MiB | first pass s | first pass rows/s | epoch s | epoch rows/s | peak RSS MiB "
          "| RSS / smallest |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['rows']:,} | {r['file_mb']:.0f} | {r['scan_s']:.1f} | {r['rows'] / r['scan_s']:,.0f} "
              f"| {r['fit_s']:.1f} | {r['rows'] / r['fit_s']:,.0f} | {r['peak_mb']:.0f} "
              f"| {r['peak_mb'] / base['peak_mb']:.2f} |")
    if len(results) >= 2:
        reference = results[1] if len(results) >= 3 else results[0]
        largest = results[-1]
        linear = (largest["rows"] / largest["fit_s"]) / (reference["rows"] / reference["fit_s"])
        memory = largest["peak_mb"] / base["peak_mb"]
        print(f"\nepoch rows/s at {largest['rows']:,} / at {reference['rows']:,} rows = {linear:.2f} "
              f"(linear time: >= 0.8) {'PASS' if linear >= 0.8 else 'MISS'}")
        print(f"peak RSS at {largest['rows']:,} / at {base['rows']:,} rows = {memory:.2f} (target <= 1.2) "
              f"{'PASS' if memory <= 1.2 else 'MISS'}")


if __name__ == "__main__":
    main()
