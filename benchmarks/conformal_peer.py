"""Prediction sets of a kerasls run against MAPIE on a scikit-learn model of the same table, on the same test rows.

For a config without a test file (e.g. `examples/online_shoppers.yaml`) the training file is split once,
stratified (`--test-fraction`, seed 0), into a training and a test file in a temporary folder, so that the sets are
judged on rows that neither model nor threshold saw. Then:

- kerasls: `python train.py --config CONFIG data.train=... data.test=...` of a tabular-intent project rendered
  from the template; its validation split (`data.val_fraction` of the training file) fits T and the thresholds;
  metrics.json gives coverage and mean set size of its configured score and of the other scores on the test rows;
- peer: scikit-learn `LogisticRegression` on standardised numeric (median-filled) and one-hot categorical columns
  (text columns: the word 1-2 + char_wb 2-5 TF-IDF of `benchmarks/text_peer.py`), fitted on 80% of the same
  training file, conformalized by MAPIE's `SplitConformalClassifier` (prefit) on the other 20%.

Target (from the issue): kerasls reaches coverage ≥ 1 − α with a mean set size no larger than the peer's at the same
α and score. MAPIE's "aps" draws a random number at calibration and always includes the class that crosses the
threshold, so it is more conservative than kerasls' deterministic aps (see `kerasls/conformal.py`). Usage::

    python benchmarks/conformal_peer.py [--config examples/online_shoppers.yaml] [--test-fraction 0.2] [key=value ...]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import pandas as pd  # noqa: E402
from text_peer import conformal_rows, mapie_sets, text_union  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def peer_model(features):
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    parts = []
    if features.numeric:
        parts.append(("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), features.numeric))
    if features.categorical:
        parts.append(("categorical", OneHotEncoder(handle_unknown="ignore"), features.categorical))
    for name in features.text:
        parts.append((name, text_union(), name))
    return make_pipeline(ColumnTransformer(parts), LogisticRegression(C=20 if features.text else 1.0, max_iter=2000))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=REPO / "examples" / "online_shoppers.yaml")
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    from sklearn.model_selection import train_test_split

    from kerasls.config import load_config
    from kerasls.data import tabular
    from kerasls.templates_index import render_template

    config = load_config(args.config)
    label, features = config.data.label, config.data.features
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        read = tabular.read_csv_text  # the file's strings, as kerasls reads them
        if config.data.test:
            train, test = read(config.data.train), read(config.data.test)
            train_path, test_path = Path(config.data.train), Path(config.data.test)
        else:
            whole = read(config.data.train)
            train, test = train_test_split(whole, test_size=args.test_fraction, stratify=whole[label], random_state=0)
            train_path, test_path = folder / "train.csv", folder / "test.csv"
            train.to_csv(train_path, index=False)
            test.to_csv(test_path, index=False)
        project = render_template("tabular-intent", output_dir=folder, extra_context={"project_slug": "sets"})
        result = subprocess.run(
            [sys.executable, "train.py", "--config", str(args.config.resolve()), "--run-name", "sets",
             f"data.train={train_path}", f"data.test={test_path}", *args.overrides],
            cwd=project, capture_output=True, text=True)
        if result.returncode != 0:
            sys.exit(f"kerasls run failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        metrics = json.loads((project / "runs" / "sets" / "metrics.json").read_text())

    columns = features.all_columns()
    for frame in (train, test):
        for name in features.numeric:
            frame[name] = pd.to_numeric(frame[name], errors="coerce")
    fit_rows, calibration_rows = train_test_split(train, test_size=0.2, stratify=train[label], random_state=0)
    peer = peer_model(features).fit(fit_rows[columns], fit_rows[label])
    print(f"{args.config.name}: kerasls trained on {len(train)} rows (its validation split inside), peer on "
          f"{len(fit_rows)} + {len(calibration_rows)} calibration rows; sets judged on {len(test)} test rows\n")
    print("| system | score | α | coverage | mean set size | singletons |")
    print("|---|---|---:|---:|---:|---:|")
    for score, alpha, coverage, size, singletons in conformal_rows(metrics):
        shown = f"{singletons:.1%}" if singletons is not None else "–"
        print(f"| kerasls | {score} | {alpha} | {coverage:.3f} | {size:.2f} | {shown} |")
    binary = len(peer.classes_) == 2  # MAPIE accepts only lac for a binary target
    for score, alpha, coverage, size, singletons in mapie_sets(
            peer, calibration_rows[columns], calibration_rows[label], test[columns], test[label],
            scores=("lac",) if binary else ("lac", "aps")):
        print(f"| MAPIE on scikit-learn LogisticRegression | {score} | {alpha} | {coverage:.3f} | {size:.2f} | "
              f"{singletons:.1%} |")
    if binary:
        print("| MAPIE on scikit-learn LogisticRegression | aps | | (MAPIE: only lac for two classes) | | |")
    print(f"\nkerasls accuracy {metrics['accuracy']:.4f} (T = {metrics['temperature']:.3f}); peer accuracy "
          f"{(peer.predict(test[columns]) == test[label]).mean():.4f}")


if __name__ == "__main__":
    main()
