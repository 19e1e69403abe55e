"""kerasls on a text-intent table against the five-line scikit-learn baseline, trained on the same files in one run.

The peer is what a scikit-learn user writes first for short-text intents::

    features = make_union(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
                          TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True))
    peer = make_pipeline(features, LogisticRegression(C=20, max_iter=1000)).fit(train.text, train.category)

fitted on the whole training file. kerasls is `python train.py --config CONFIG` of a tabular-intent project
rendered from the template (default config: `examples/banking77.yaml`), once per `--seeds` value: it trains on
the training file less its validation split (`data.val_fraction`, 10% in that config: early stopping,
temperature T, conformal thresholds), so it sees fewer training rows than the peer. Both are scored on the test file:

- accuracy and NLL (kerasls after T, as its export serves);
- training wall time: for the peer, fitting the vectorizers and the classifier; for kerasls, the whole
  `python train.py` command (TensorFlow import, reading, n-gram counting, training, calibration, export, report),
  and in brackets the sum of its epochs as Keras prints them;
- prediction: one-row p50 and rows/s on batches of 1,024 texts, the peer's `predict_proba` and the kerasls export's
  `serving_default` signature (loaded with `tf.saved_model.load`, no Keras), timed alternately in one loop.

Prediction sets (split conformal): the kerasls run's own (metrics.json, its validation rows calibrate, its
configured score plus the other scores' coverage), and MAPIE's `SplitConformalClassifier` on the same peer fitted
on 80% of the training file and conformalized on the other 20% (`--no-mapie` skips it).

Targets: mean kerasls accuracy >= the peer's, mean kerasls NLL <= the peer's, kerasls training wall time <= 2x the
peer's. About 3 minutes per seed on 2 CPU cores. Usage::

    python benchmarks/text_peer.py [--config examples/banking77.yaml] [--seeds 42 43 44] [key=value ...]
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ALPHAS = (0.1, 0.05)


def text_union():
    """The baseline's text features: word 1-2-grams and char_wb 2-5-grams, TF-IDF with sublinear tf."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_union

    return make_union(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
                      TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True))


def peer_pipeline(c=20.0):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    return make_pipeline(text_union(), LogisticRegression(C=c, max_iter=1000))


def nll(probabilities, labels):
    return float(-np.mean(np.log(np.clip(probabilities[np.arange(len(labels)), labels], 1e-12, None))))


def kerasls_run(project: Path, config: Path, seed: int, overrides) -> dict:
    command = [sys.executable, "train.py", "--config", str(config), "--run-name", f"seed{seed}", f"seed={seed}",
               "training.verbose=2", *overrides]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=project, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"kerasls run failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    run_folder = Path(result.stdout.strip().splitlines()[-1].removeprefix("run: "))
    metrics = json.loads((run_folder / "metrics.json").read_text())
    epochs = [int(seconds) for seconds in re.findall(r"^\d+/\d+ - (\d+)s - ", result.stdout, re.M)]
    return {"seed": seed, "wall": wall, "epoch_seconds": sum(epochs), "epochs": len(epochs),
            "metrics": metrics, "export": Path(metrics["export_path"])}


def conformal_rows(metrics: dict) -> list:
    """(score, alpha, coverage, mean set size, singleton share) of a run, its configured score and the others."""
    sets = metrics.get("conformal")
    if not sets:
        return []
    rows = [(sets["score"], row["alpha"], row["set_coverage"], row["mean_set_size"], row["singleton_share"])
            for row in sets["table"] if row.get("set_coverage") is not None]
    for score, table in sets.get("other_scores", {}).items():
        rows += [(score, row["alpha"], row["set_coverage"], row["mean_set_size"], None) for row in table
                 if row.get("set_coverage") is not None]
    return [row for row in rows if row[1] in ALPHAS]


def mapie_rows(train, test, seed=42) -> list:
    """MAPIE's split conformal sets on the peer fitted on 80% of train, conformalized on the other 20%."""
    from sklearn.model_selection import train_test_split

    fit_rows, calibration_rows = train_test_split(train, test_size=0.2, stratify=train.category, random_state=seed)
    peer = peer_pipeline().fit(fit_rows.text, fit_rows.category)
    return mapie_sets(peer, calibration_rows.text, calibration_rows.category, test.text, test.category)


def mapie_sets(peer, calibration_inputs, calibration_labels, test_inputs, test_labels, scores=("lac", "aps")) -> list:
    """(score, alpha, coverage, mean set size, singleton share) of MAPIE's `SplitConformalClassifier` around the
    fitted `peer` (prefit), conformalized on the calibration rows and judged on the test rows, at each of ALPHAS."""
    from mapie.classification import SplitConformalClassifier

    truth = test_labels.map({name: index for index, name in enumerate(peer.classes_)}).to_numpy()
    rows = []
    for score in scores:
        conformal = SplitConformalClassifier(estimator=peer, confidence_level=[1 - a for a in ALPHAS],
                                             conformity_score=score, prefit=True)
        conformal.conformalize(calibration_inputs, calibration_labels)
        _, sets = conformal.predict_set(test_inputs)
        for level, alpha in enumerate(ALPHAS):
            chosen = sets[:, :, level]
            sizes = chosen.sum(axis=1)
            rows.append((score, alpha, float(chosen[np.arange(len(truth)), truth].mean()), float(sizes.mean()),
                         float((sizes == 1).mean())))
    return rows


def timed_predictions(peer, serve, texts, rounds=200, batch=1024) -> dict:
    """One-row p50 (ms) and batch rows/s of the peer's predict_proba and the export, alternating call by call."""
    import tensorflow as tf

    one = {"peer": [], "kerasls": []}
    rows = texts[:batch]
    calls = {"peer": lambda row: peer.predict_proba(row), "kerasls": lambda row: serve(text=tf.constant(row))}
    for call in calls.values():  # warm-up
        call(rows[:1])
        call(rows)
    for index in range(rounds):
        for name, call in calls.items():
            row = rows[index % len(rows):index % len(rows) + 1]
            start = time.perf_counter()
            call(row)
            one[name].append((time.perf_counter() - start) * 1e3)
    throughput = {}
    for name, call in calls.items():
        best = min(timed_once(call, rows) for _ in range(10))
        throughput[name] = len(rows) / best
    return {name: (statistics.median(one[name]), throughput[name]) for name in calls}


def timed_once(call, rows):
    start = time.perf_counter()
    call(rows)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=REPO / "examples" / "banking77.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42])
    parser.add_argument("--no-mapie", action="store_true")
    parser.add_argument("overrides", nargs="*", help="key=value overrides for the kerasls runs")
    args = parser.parse_args()
    from kerasls.config import load_config

    config = load_config(args.config)
    train, test = pd.read_csv(config.data.train), pd.read_csv(config.data.test)
    text, label = config.data.features.text[0], config.data.label
    train, test = train.rename(columns={text: "text", label: "category"}), test.rename(
        columns={text: "text", label: "category"})

    start = time.perf_counter()
    peer = peer_pipeline().fit(train.text, train.category)
    peer_wall = time.perf_counter() - start
    truth = test.category.map({name: index for index, name in enumerate(peer.classes_)}).to_numpy()
    peer_probabilities = peer.predict_proba(test.text)
    peer_accuracy = float((peer_probabilities.argmax(1) == truth).mean())
    peer_nll = nll(peer_probabilities, truth)

    from kerasls.templates_index import render_template

    with tempfile.TemporaryDirectory() as folder:
        project = render_template("tabular-intent", output_dir=Path(folder), extra_context={"project_slug": "peer"})
        runs = [kerasls_run(project, args.config.resolve(), seed, args.overrides) for seed in args.seeds]
        from kerasls import startup

        startup.quiet_tensorflow()
        import tensorflow as tf

        serve = tf.saved_model.load(str(runs[0]["export"])).signatures["serving_default"]
        speed = timed_predictions(peer, serve, test.text.to_numpy(dtype=object))

    kept = 1 - config.data.val_fraction if not config.data.val else 1
    print(f"{args.config.name}: train {len(train)} rows (kerasls trains on {kept:.0%} of them), test {len(test)} rows; "
          f"kerasls seeds {args.seeds}; overrides {args.overrides or 'none'}\n")
    print("| system | accuracy | NLL | training wall time (s) | one-row p50 (ms) | batch-1024 rows/s |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| scikit-learn word 1-2 + char_wb 2-5 TF-IDF + LogisticRegression(C=20) | {peer_accuracy:.4f} | "
          f"{peer_nll:.4f} | {peer_wall:.1f} | {speed['peer'][0]:.3f} | {speed['peer'][1]:,.0f} |")
    for run in runs:
        metrics = run["metrics"]
        print(f"| kerasls `{args.config.name}` seed {run['seed']} (after T = {metrics['temperature']:.3f}) | "
              f"{metrics['accuracy']:.4f} | {metrics['nll_calibrated']:.4f} | {run['wall']:.1f} "
              f"(epochs: {run['epoch_seconds']} s, {run['epochs']}) | "
              + (f"{speed['kerasls'][0]:.3f} | {speed['kerasls'][1]:,.0f} |" if run is runs[0] else "| |"))
    accuracy = statistics.mean(run["metrics"]["accuracy"] for run in runs)
    loss = statistics.mean(run["metrics"]["nll_calibrated"] for run in runs)
    wall = statistics.mean(run["wall"] for run in runs)
    print(f"\nkerasls mean over {len(runs)} seed(s): accuracy {accuracy:.4f}, NLL {loss:.4f}, wall {wall:.1f} s")
    verdicts = [("accuracy >= peer", accuracy >= peer_accuracy, f"{accuracy:.4f} vs {peer_accuracy:.4f}"),
                ("NLL <= peer", loss <= peer_nll, f"{loss:.4f} vs {peer_nll:.4f}"),
                ("training wall time <= 2x peer", wall <= 2 * peer_wall, f"{wall / peer_wall:.2f}x")]
    for name, met, detail in verdicts:
        print(f"target {name}: {'met' if met else 'MISSED'} ({detail})")

    print("\n| prediction sets | score | α | coverage | mean set size | singletons |")
    print("|---|---|---:|---:|---:|---:|")
    for run in runs:
        for score, alpha, coverage, size, singletons in conformal_rows(run["metrics"]):
            shown = f"{singletons:.1%}" if singletons is not None else "–"
            print(f"| kerasls seed {run['seed']} | {score} | {alpha} | {coverage:.3f} | {size:.2f} | {shown} |")
    if not args.no_mapie:
        for score, alpha, coverage, size, singletons in mapie_rows(train, test):
            print(f"| MAPIE on the peer (80/20) | {score} | {alpha} | {coverage:.3f} | {size:.2f} | "
                  f"{singletons:.1%} |")


if __name__ == "__main__":
    main()
