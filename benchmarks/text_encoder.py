"""A text encoder in kerasls against plain KerasHub: training rows/s, and the export against `predict`, in one run.

Both sides train the same tiny random-init BERT preset (made here from the texts by scripts/make_tiny_encoder.py,
nothing downloaded) with a linear head on its pooled output, on the same rows, batch size and optimizer:

- kerasls: a tabular-intent project's pipeline with `data.text.encoder` (the text column's tokens computed once,
  `feed.train_dataset`, the template's model.py with `model.hidden_units: []`, `model.fit`);
- the peer: `keras_hub.models.TextClassifier.from_preset(preset, num_classes=K)` with the preset's
  `TextClassifierPreprocessor` at the same sequence length, `fit` on the numpy texts and labels (KerasHub maps its
  preprocessor over each batch, every epoch).

Each side fits one warm-up epoch (tracing), then `--epochs` timed epochs; rows/s over those. Serving, timed on the
same rows alternately in one loop: (a) the kerasls export's `serving_default` (raw text in, calibrated outputs),
(b) the peer's `classifier.predict` (one row: `predict_on_batch`), (c) a bare traced function of the kerasls model on
already tokenized rows (the model alone), (d) the export's tokenization alone (`TabularPreprocessor` traced).

Targets: kerasls training rows/s >= 0.9x the peer's. CPU numbers of a tiny model: what the pipeline costs, not
what a GPU user sees (README says the settings for that). Usage::

    python benchmarks/text_encoder.py [--rows 4000] [--batch 32] [--sequence-length 64] [--epochs 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

BANKING77 = REPO.parent / "shared" / "data" / "banking77" / "train.csv"


def texts_and_labels(rows: int, seed: int) -> pd.DataFrame:
    """`rows` Banking77 training messages (a seeded sample), or generated ones when the shared data are absent."""
    if BANKING77.is_file():
        table = pd.read_csv(BANKING77).rename(columns={"category": "intent"})
        return table.sample(n=min(rows, len(table)), random_state=seed).reset_index(drop=True)
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(500)]
    labels = rng.integers(0, 20, rows)
    texts = [" ".join(rng.choice(words, rng.integers(4, 16))) + f" topic{label}" for label in labels]
    return pd.DataFrame({"text": texts, "intent": [f"intent{label}" for label in labels]})


def rows_per_second(fit, rows: int, epochs: int) -> float:
    fit(1)  # warm-up: tracing
    start = time.perf_counter()
    fit(epochs)
    return rows * epochs / (time.perf_counter() - start)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--sequence-length", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs after one warm-up epoch")
    parser.add_argument("--calls", type=int, default=200, help="one-row calls per method")
    parser.add_argument("--serve-batch", type=int, default=256)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)

    import keras
    import keras_hub
    import tensorflow as tf
    from make_tiny_encoder import make_tiny_preset

    from kerasls import results, training
    from kerasls.config import load_config
    from kerasls.export import export_classifier
    from kerasls.table_feed import TableFeed
    from kerasls.templates_index import render_template

    table = texts_and_labels(args.rows, args.seed)
    classes = sorted(table["intent"].unique())
    with tempfile.TemporaryDirectory() as temp:
        project = render_template("tabular-intent", Path(temp), {"project_slug": "encoder_bench", "sample_data": "no"})
        table.to_csv(project / "data" / "train.csv", index=False)
        preset = make_tiny_preset(Path(temp) / "preset", table["text"].tolist(), layers=2, hidden=64,
                                  max_sequence_length=max(64, args.sequence_length), seed=args.seed)
        # every row trains on both sides: a validation file of a few rows only satisfies the config
        table.head(64).to_csv(project / "data" / "val.csv", index=False)
        config = load_config(project / "config.yaml", [
            f"data.train={project / 'data' / 'train.csv'}", f"data.val={project / 'data' / 'val.csv'}",
            "data.label=intent", "data.features={numeric: [], categorical: [], text: [text]}",
            f"data.text.encoder.preset={preset}", f"data.text.encoder.sequence_length={args.sequence_length}",
            "model.hidden_units=[]", "model.dropout=0.1", "targets.label_smoothing=0.0",
            f"training.batch_size={args.batch}", "training.learning_rate=0.0001", "training.verbose=0",
            "training.deterministic=false", f"seed={args.seed}"])
        training.set_seeds(args.seed)
        import importlib.util

        spec = importlib.util.spec_from_file_location("bench_model", project / "model.py")
        model_module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(model_module)

        start = time.perf_counter()
        feed = TableFeed(config)
        tokenize_once = time.perf_counter() - start
        model = model_module.build_model(feed.model_inputs(), len(classes), config.model)
        training.compile_classifier(model, config.training, config.targets)
        train_data = feed.train_dataset(args.batch)
        kerasls_rate = rows_per_second(lambda epochs: model.fit(train_data, epochs=epochs, verbose=0),
                                       feed.rows["train"], args.epochs)

        keras.utils.set_random_seed(args.seed)
        packer = keras_hub.models.TextClassifierPreprocessor.from_preset(str(preset),
                                                                         sequence_length=args.sequence_length)
        peer = keras_hub.models.TextClassifier.from_preset(str(preset), num_classes=len(classes), preprocessor=packer)
        peer.compile(optimizer=keras.optimizers.AdamW(1e-4, weight_decay=1e-4),
                     loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=[])
        order = np.random.default_rng(args.seed).permutation(feed.rows["train"])  # KerasHub's fit does not shuffle
        train_rows = feed.raw_columns("train")["text"][order]
        train_labels = feed.targets("train").observed[order]
        peer_rate = rows_per_second(lambda epochs: peer.fit(train_rows, train_labels, batch_size=args.batch,
                                                            epochs=epochs, verbose=0), len(order), args.epochs)

        serving = feed.serving(model)
        export = export_classifier(project / "runs" / "bench" / "export", serving, tracked=feed.tracked(model),
                                   classes=classes, temperature=1.0)
        serve = tf.saved_model.load(str(export)).signatures["serving_default"]
        texts = table["text"].to_numpy(dtype=object).astype(str)
        batch = texts[:args.serve_batch]
        tokens, _ = feed.preprocessor.encoders["text"].tokenize(batch)
        tokenized = {"text_text": {key: tf.constant(value) for key, value in tokens.items()}}
        bare = tf.function(lambda inputs: model(inputs, training=False))
        tokenize = tf.function(feed.preprocessor.call, input_signature=[feed.preprocessor.input_signature()])
        one = {name: {key: value[:1] for key, value in block.items()} for name, block in tokenized.items()}
        methods = {
            "(a) kerasls export: serving_default on raw text": (
                lambda: serve(text=tf.constant(batch[:1])), lambda: serve(text=tf.constant(batch))),
            "(b) peer: KerasHub TextClassifier.predict": (
                lambda: peer.predict_on_batch(batch[:1]),
                lambda: peer.predict(batch, batch_size=len(batch), verbose=0)),
            "(c) bare model: tf.function on tokenized rows": (lambda: bare(one), lambda: bare(tokenized)),
            "(d) the export's tokenization alone": (
                lambda: tokenize({"text": tf.constant(batch[:1])}), lambda: tokenize({"text": tf.constant(batch)})),
        }
        reference = serve(text=tf.constant(batch))["logits"].numpy()
        evaluated = results.predict_logits(serving.evaluation_function(), {"text": batch})
        assert np.allclose(reference, evaluated, atol=1e-5), "the export's logits differ from the run's"
        one_row = {name: [] for name in methods}
        batch_seconds = {name: [] for name in methods}
        for single, whole in methods.values():  # warm-up: tracing
            single(), whole()
        for call in range(args.calls):
            for name, (single, _) in methods.items():
                start = time.perf_counter()
                single()
                one_row[name].append((time.perf_counter() - start) * 1e3)
            if call % 20 == 0:
                for name, (_, whole) in methods.items():
                    start = time.perf_counter()
                    whole()
                    batch_seconds[name].append(time.perf_counter() - start)

    print(f"\ntiny BERT (2 layers, hidden 64, random init), {feed.rows['train']} training rows of "
          f"{'Banking77' if BANKING77.is_file() else 'generated text'}, {len(classes)} classes, sequence length "
          f"{args.sequence_length}, batch {args.batch}; TF {tf.__version__}, Keras {keras.__version__}, KerasHub "
          f"{keras_hub.__version__}, {os.cpu_count()} CPUs")
    print(f"kerasls tokenizes the training texts once: {tokenize_once:.1f} s (TableFeed, with reading)\n")
    print("| training | rows/s | ratio to the peer |\n|---|---:|---:|")
    print(f"| kerasls: TableFeed + model.fit | {kerasls_rate:,.0f} | {kerasls_rate / peer_rate:.2f} |")
    print(f"| peer: KerasHub TextClassifier.fit on texts | {peer_rate:,.0f} | 1.00 |\n")
    export_p50 = statistics.median(one_row["(a) kerasls export: serving_default on raw text"])
    export_batch = statistics.median(batch_seconds["(a) kerasls export: serving_default on raw text"])
    print(f"| serving | one row p50 ms | ratio to (a) | batch {len(batch)} rows/s | batch time ratio to (a) |")
    print("|---|---:|---:|---:|---:|")
    for name in methods:
        p50, seconds = statistics.median(one_row[name]), statistics.median(batch_seconds[name])
        print(f"| {name} | {p50:.3f} | {p50 / export_p50:.2f} | {len(batch) / seconds:,.0f} | "
              f"{seconds / export_batch:.2f} |")
    ratio = kerasls_rate / peer_rate
    print(f"\nkerasls / KerasHub training rows/s = {ratio:.2f} (target >= 0.9): {'PASS' if ratio >= 0.9 else 'MISS'}")
    token_share = statistics.median(one_row["(d) the export's tokenization alone"]) / export_p50
    print(f"tokenization's share of the export's one-row p50: {token_share:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
