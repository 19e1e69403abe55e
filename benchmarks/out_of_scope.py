"""Out-of-scope decisions on Banking77: kerasls' two abstention rules against the scikit-learn baseline, in one run.

Ten of the 77 intents (drawn with `--holdout-seed`) are held out of training and become out-of-scope queries,
as in the out-of-scope protocol of Larson et al. 2019 ("An evaluation dataset for intent classification and
out-of-scope prediction"): their rows (from both files) are split at random, `--val-share` (20%) into the
validation file, `--oe-share` (30%) set aside for outlier exposure, and the rest into the test file. The other 67
intents are in scope: a stratified 10% of their training rows is the validation split, the rest trains, and their
official test rows are the in-scope test rows. Both methods train on the same rows.

Two protocols:
- held out (the target): no out-of-scope query in training; the set-aside rows are not used.
- outlier exposure (the paper's "oos-train"): the set-aside rows join the training rows labelled out_of_scope.
  kerasls trains them toward the uniform distribution (`data.out_of_scope_label`, Hendrycks et al. 2019); the
  baseline learns them as one more class, and abstains when that class wins or its confidence is below the
  threshold chosen the same way.

- kerasls: `python train.py --config examples/banking77.yaml` of a tabular-intent project with
  `data.out_of_scope_label: out_of_scope` and `calibration.abstain.rule` set to `confidence` (threshold on the
  calibrated confidence with the best accuracy over the K + 1 outcomes on the validation rows, out-of-scope ones
  included) or `conformal` (abstain when the LAC prediction set at alpha = 0.1, fitted on the in-scope validation
  rows, is empty: no out-of-scope row needed). One training per rule, same seed; "no abstention" is the argmax.
- baseline: the five-line scikit-learn pipeline of benchmarks/text_peer.py (TF-IDF word 1-2-grams and char_wb
  2-5-grams, LogisticRegression C=20) fitted on the same training rows, with the same two rules computed by
  kerasls.decisions on its `predict_proba` (its validation rows choose the threshold or fit q̂).

Measured on the test rows: in-scope accuracy (an abstained in-scope row counts as wrong, as the paper counts it),
out-of-scope recall (share of out-of-scope rows abstained), the share abstained and the accuracy over the K + 1
outcomes. Target: for each rule, kerasls' in-scope accuracy and out-of-scope recall both >= the baseline's.
About 4 minutes on 2 CPU cores. Usage::

    python benchmarks/out_of_scope.py [--seed 42] [--holdout-seed 0] [--val-share 0.2] [--oe-share 0.3]
                                      [key=value ...]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from text_peer import peer_pipeline  # noqa: E402

from kerasls import conformal, decisions  # noqa: E402
from kerasls.config import AbstainConfig  # noqa: E402
from kerasls.data.tabular import stratified_split  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "banking77"
OUT = "out_of_scope"
ALPHA = 0.1


def split_files(folder: Path, holdout_seed: int, val_share: float, oe_share: float, seed: int) -> dict:
    """train/val/test CSVs of the protocol (module docstring) in `folder`; returns their paths and the held-out
    intents."""
    train, test = pd.read_csv(DATA / "train.csv"), pd.read_csv(DATA / "test.csv")
    intents = sorted(train.category.unique())
    held_out = sorted(np.random.default_rng(holdout_seed).choice(intents, 10, replace=False).tolist())
    outside = pd.concat([train[train.category.isin(held_out)], test[test.category.isin(held_out)]])
    outside = outside.sample(frac=1.0, random_state=holdout_seed).assign(category=OUT)
    cut, exposed = int(round(len(outside) * val_share)), int(round(len(outside) * (val_share + oe_share)))
    fit_rows, val_rows = stratified_split(train[~train.category.isin(held_out)].reset_index(drop=True), "category",
                                          0.1, seed)
    files = {"train": fit_rows, "train_oe": pd.concat([fit_rows, outside[cut:exposed]]),
             "val": pd.concat([val_rows, outside[:cut]]),
             "test": pd.concat([test[~test.category.isin(held_out)], outside[exposed:]])}
    paths = {}
    for name, frame in files.items():
        paths[name] = folder / f"{name}.csv"
        frame[["text", "category"]].to_csv(paths[name], index=False)
    return {"paths": paths, "held_out": held_out, "frames": files}


def kerasls_runs(project: Path, paths: dict, seed: int, overrides) -> dict:
    """{run: metrics.json} of one training per rule, and one with outlier exposure (confidence rule)."""
    runs = {}
    for name, rule, train in (("confidence", "confidence", "train"), ("conformal", "conformal", "train"),
                              ("exposure", "confidence", "train_oe")):
        command = [sys.executable, "train.py", "--config", str(REPO / "examples" / "banking77.yaml"),
                   "--run-name", name, f"seed={seed}", f"data.train={paths[train]}", f"data.val={paths['val']}",
                   f"data.test={paths['test']}", f"data.out_of_scope_label={OUT}",
                   f"calibration.abstain.rule={rule}", f"calibration.conformal.alpha={ALPHA}", *overrides]
        start = time.perf_counter()
        result = subprocess.run(command, cwd=project, capture_output=True, text=True)
        if result.returncode != 0:
            sys.exit(f"kerasls run failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        run_folder = Path(result.stdout.strip().splitlines()[-1].removeprefix("run: "))
        runs[name] = json.loads((run_folder / "metrics.json").read_text())
        print(f"kerasls {name}: {time.perf_counter() - start:.0f} s, {run_folder}", flush=True)
    return runs


def baseline_rows(frames: dict) -> dict:
    """{rule: decisions.report(...)} of the scikit-learn pipeline under the same rules, and its argmax accuracy."""
    train, val, test = frames["train"], frames["val"], frames["test"]
    peer = peer_pipeline().fit(train.text, train.category)
    classes = list(peer.classes_)

    def observed(frame):
        return frame.category.map({name: k for k, name in enumerate(classes)}).fillna(-1).astype(np.int64).to_numpy()

    val_probs, test_probs = peer.predict_proba(val.text), peer.predict_proba(test.text)
    val_observed, test_observed = observed(val), observed(test)
    scoped = val_observed >= 0
    predictor = conformal.fit(val_probs[scoped], val_observed[scoped], "lac", ALPHA)
    rows = {}
    for rule in ("confidence", "conformal"):
        fitted = decisions.fit(AbstainConfig(rule=rule, label=OUT), val_probs, val_observed, set_predictor=predictor)
        rows[rule] = decisions.report(fitted, test_probs, test_observed)
    in_scope = test_observed >= 0
    rows["argmax accuracy"] = float((test_probs.argmax(axis=1) == test_observed)[in_scope].mean())
    rows["exposure"] = out_of_scope_class(frames)
    return rows


def out_of_scope_class(frames: dict) -> dict:
    """The baseline under outlier exposure: out_of_scope learnt as one more class; a row abstains when that class
    wins, or when its top in-scope confidence is below the threshold with the best accuracy over the K + 1 outcomes
    on the validation rows (`decisions.threshold_by_cost`), reported as `decisions.report` does."""
    train, val, test = frames["train_oe"], frames["val"], frames["test"]
    peer = peer_pipeline().fit(train.text, train.category)
    classes = [name for name in peer.classes_ if name != OUT]
    index = list(peer.classes_).index(OUT)

    def scored(frame):
        probs = peer.predict_proba(frame.text)
        confidence = np.where(probs.argmax(axis=1) == index, -1.0, probs.max(axis=1))  # the class wins: abstain
        in_scope = np.delete(probs, index, axis=1)
        observed = frame.category.map({name: k for k, name in enumerate(classes)}).fillna(-1).astype(np.int64)
        return confidence, in_scope.argmax(axis=1), observed.to_numpy()

    confidence, predicted, observed = scored(val)
    threshold = decisions.threshold_by_cost(confidence, (predicted == observed) & (observed >= 0), observed < 0)
    confidence, predicted, observed = scored(test)
    abstained, out = confidence < threshold, observed < 0
    right = (predicted == observed) & ~out & ~abstained
    return {"in_scope_accuracy": float(right[~out].mean()), "out_of_scope_recall": float(abstained[out].mean()),
            "abstain_rate": float(abstained.mean()), "confidence_threshold": float(threshold),
            "k_plus_1_accuracy": float((right.sum() + (abstained & out).sum()) / len(observed))}


def table(runs: dict, baseline: dict) -> list:
    lines = ["| method | rule | in-scope accuracy | out-of-scope recall | abstained | K+1 accuracy | threshold |",
             "|---|---|---|---|---|---|---|"]
    any_run = next(iter(runs.values()))
    lines.append(f"| kerasls | none (argmax) | {any_run['accuracy']:.3f} | 0.000 | 0.0% | | |")
    lines.append(f"| scikit-learn | none (argmax) | {baseline['argmax accuracy']:.3f} | 0.000 | 0.0% | | |")
    for name, rule in (("confidence", "confidence"), ("conformal", "conformal"),
                       ("exposure", "confidence, outlier exposure")):
        for method, row in (("kerasls", runs[name]["decision"]), ("scikit-learn", baseline[name])):
            threshold = row["confidence_threshold"]
            lines.append(f"| {method} | {rule} | {row['in_scope_accuracy']:.3f} | {row['out_of_scope_recall']:.3f} | "
                         f"{row['abstain_rate']:.1%} | {row['k_plus_1_accuracy']:.3f} | {threshold:.3f} |")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--holdout-seed", type=int, default=0)
    parser.add_argument("--val-share", type=float, default=0.2)
    parser.add_argument("--oe-share", type=float, default=0.3)
    parser.add_argument("overrides", nargs="*", help="config overrides for the kerasls runs")
    args = parser.parse_args(argv)
    if not (DATA / "train.csv").is_file():
        sys.exit(f"{DATA}: Banking77 not found (shared/data beside the checkout, see shared/data/README.md)")
    from kerasls.templates_index import render_template

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        split = split_files(folder, args.holdout_seed, args.val_share, args.oe_share, args.seed)
        frames = split["frames"]
        print(f"held-out intents: {', '.join(split['held_out'])}")
        print(f"rows: train {len(frames['train'])} (+{len(frames['train_oe']) - len(frames['train'])} for outlier "
              f"exposure), val {len(frames['val'])} "
              f"({int((frames['val'].category == OUT).sum())} out of scope), test {len(frames['test'])} "
              f"({int((frames['test'].category == OUT).sum())} out of scope)", flush=True)
        project = render_template("tabular-intent", output_dir=folder,
                                  extra_context={"project_slug": "bench", "sample_data": "no"})
        runs = kerasls_runs(project, split["paths"], args.seed, args.overrides)
        baseline = baseline_rows(frames)
    print()
    print("\n".join(table(runs, baseline)))
    print()
    for name in ("confidence", "conformal", "exposure"):
        ours, theirs = runs[name]["decision"], baseline[name]
        met = (ours["in_scope_accuracy"] >= theirs["in_scope_accuracy"]
               and ours["out_of_scope_recall"] >= theirs["out_of_scope_recall"])
        print(f"target {name} (kerasls in-scope accuracy and out-of-scope recall >= the baseline's): "
              f"{'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
