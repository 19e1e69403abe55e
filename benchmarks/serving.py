"""Latency of the exported tabular-intent SavedModel against the bare model and `model.predict`, side by side.

Renders a tabular-intent project in a temporary folder, writes `--rows` synthetic rows (the generator of
`tabular_pipeline.py`), and builds and trains the model for `--train-epochs` epochs as the generated `train.py`
does (`TableFeed`, the project's `model.py`, `training.compile_classifier`; the weights do not
matter for latency). It exports with `kerasls.export.export_classifier` exactly as train.py does (raw columns
in; preprocessing, model, temperature and class names in one graph), loads the export with
`tf.saved_model.load`, and times, in one process:

  (a) export: the `serving_default` signature on raw columns (numbers and strings; returns probabilities,
      class id and name, confidence, logits);
  (b) bare model: `tf.function(lambda x: model(x, training=False))` on rows already encoded by the
      preprocessor (the model alone, the lower bound of (a));
  (c) `model.predict(row, verbose=0)` on the same encoded rows;
  (d), (e) the call floors of (a) and (b): a SavedModel signature with the same 11 named inputs, and a
      `tf.function` of the model's named input blocks (numeric, categorical, text), that only return
      zeros. Calling a function costs per input tensor, so
      (d) - (e) is what the export pays for taking raw columns by name; (a) - (d) is its graph work;
  (f) the peer export a keras-io reader builds: keras `FeatureSpace` (float_normalized, string_categorical
      one-hot, TF-IDF `TextVectorization` reshaped for keras#22522, as in `tabular_pipeline.py`) + an MLP of the
      same shape, saved with `tf.saved_model.save` as a signature on the same raw columns (probabilities out);
  (a2) the same export built with the peer's text features (`data.text: {ngrams: 1, char_ngrams: null}`), so the
      comparison with (f) is like for like; (a) - (a2) is what the template's n-grams cost;
  (g), (h) the export's preprocessing alone, a `tf.function` of `TabularPreprocessor` on the raw columns: with the
      template's text settings (word 1-2-grams and char_wb 2-5-grams) and with word unigrams only, so the share of
      string work in (a) shows with the n-grams on and off.

Single-row latency: `--rounds` rounds, each `--calls` calls of (a), (b), (d), (e) in turn (the order rotated
call by call), then one call of (c); every call is timed on its own (p50 and p99 over all calls; outputs are
fetched as numpy). Batch throughput: `--batch-rounds` rounds of one call each on `--batch` rows; the
like-for-like batch target ((a2) against (f), timed one right after the other in every round) is the median over
rounds of the ratio within a round (a run's ratio of the two medians moved by ±4% from run to run with the
machine's state); the other ratios are of medians. Garbage
collection is off while timing (as `timeit` does). Targets: export <= 1.5x the bare model (one-row p50, and
the time of a batch), model.predict p50 >= 100x export p50 (one row), and against the peer (f): export one-row
p50 <= the peer's and batch rows/s >= the peer's. About 1.5 minutes with the defaults on
2 CPU cores. Usage::

    python benchmarks/serving.py [--rows 5000] [--rounds 200] [--calls 20] [--batch 1024] [--batch-rounds 300]
                                 [--text synthetic|banking77]

`--text banking77` fills the text column with Banking77 messages (a vocabulary of ~2,300 words instead of the
generator's ~140), where the TF-IDF weighting, not the per-call floor, decides the batch time.
"""

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from tabular_pipeline import feature_space, flat_inputs, project_config, render_project  # noqa: E402

PEER = "(f) peer: keras FeatureSpace + the same MLP, a SavedModel on raw columns"
EXPORT_UNIGRAMS = "(a2) export with the peer's text features (data.text: word unigrams, no char n-grams)"
PREPROCESS = "(g) the export's preprocessing alone (text: word 1-2 + char_wb 2-5 n-grams, the default)"
PREPROCESS_UNIGRAMS = "(h) the same preprocessing with n-grams off (text: word unigrams)"


def use_banking77_text(project: Path) -> None:
    """Replace the text column of the project's bench tables by Banking77 messages (training messages in the
    training table, test messages in the validation table, cycled), keeping their share of empty text. The files
    are those of `examples/banking77.yaml`, as in `text_peer.py`."""
    import pandas as pd

    from kerasls.config import load_config

    data = load_config(Path(__file__).resolve().parents[1] / "examples" / "banking77.yaml").data
    for table, source in (("bench_train.csv", data.train), ("bench_val.csv", data.test)):
        frame = pd.read_csv(project / "data" / table, keep_default_na=False)
        messages = pd.read_csv(source)[data.features.text[0]].astype(str).to_numpy()
        filled = frame["search_query"] != ""
        frame.loc[filled, "search_query"] = np.resize(messages, int(filled.sum()))
        frame.to_csv(project / "data" / table, index=False)


def timed(function):
    start = time.perf_counter_ns()
    function()
    return (time.perf_counter_ns() - start) / 1e6  # milliseconds


def percentile(values, q):
    return float(np.percentile(np.asarray(values), q))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5000, help="training rows of the model that is exported")
    parser.add_argument("--train-epochs", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=200, help="single-row rounds (one model.predict each)")
    parser.add_argument("--calls", type=int, default=20, help="calls of the export and the bare model per round")
    parser.add_argument("--batch", type=int, default=1024, help="rows per call for the throughput table")
    parser.add_argument("--batch-rounds", type=int, default=300)
    parser.add_argument("--text", choices=["synthetic", "banking77"], default="synthetic",
                        help="the text column: the generator's queries (a vocabulary of about 140 words) or "
                             "Banking77 messages (../shared/data; about 2,300 words), for a realistic vocabulary")
    args = parser.parse_args(argv)

    import keras
    import tensorflow as tf

    from kerasls import training
    from kerasls.config import TextConfig
    from kerasls.export import export_classifier, tabular_serving
    from kerasls.preprocessing import TabularPreprocessor
    from kerasls.table_feed import TableFeed

    with tempfile.TemporaryDirectory() as temp:
        project, model_module = render_project(Path(temp), args.rows, max(args.batch, 200))
        if args.text == "banking77":
            use_banking77_text(project)
        config = project_config(project, batch_size=min(256, args.rows))
        training.set_seeds(config.seed)
        feed = TableFeed(config)
        features, classes, preprocessor = feed.features, feed.classes, feed.preprocessor
        model = model_module.build_model(feed.model_inputs(), len(classes), config.model)
        training.compile_classifier(model, config.training, config.targets)
        model.fit(feed.train_dataset(config.training.batch_size, config.training.jit_compile is not False),
                  epochs=args.train_epochs, shuffle=False, verbose=0)
        start = time.perf_counter()
        export_path = export_classifier(
            project / "runs" / "bench" / "export",
            feed.serving(model),
            tracked=[preprocessor, model],
            classes=classes,
            temperature=1.3,
            metadata={"label": config.data.label, "label_smoothing": config.targets.label_smoothing},
        )
        export_seconds = time.perf_counter() - start
        start = time.perf_counter()
        serve = tf.saved_model.load(str(export_path)).signatures["serving_default"]
        load_seconds = time.perf_counter() - start

        raw = {name: values[:args.batch] for name, values in feed.raw_columns("val").items()}
        specs = preprocessor.input_signature()

        def raw_tensors(stop):
            return {name: tf.constant(np.asarray(raw[name][:stop]), dtype=specs[name].dtype) for name in raw}

        encoded = {name: block.numpy() for name, block in preprocessor.named(
            {"dense": tf.constant(preprocessor.encode_dense(raw))}).items()}  # the model's named inputs
        # The export's preprocessing alone (raw columns -> encoded rows), with the text settings of the template
        # (word 1-2-grams + char_wb 2-5-grams) and with n-grams off (word unigrams): its share of the export's time.
        unigram_preprocessor = TabularPreprocessor(features.numeric, features.categorical, features.text,
                                                   text_settings=TextConfig(ngrams=1, char_ngrams=None))
        unigram_preprocessor.adapt(feed.raw_columns("train"))
        preprocess = tf.function(lambda inputs: preprocessor.dense(inputs),
                                 input_signature=[preprocessor.input_signature()])
        preprocess_unigrams = tf.function(lambda inputs: unigram_preprocessor.dense(inputs),
                                          input_signature=[preprocessor.input_signature()])
        # The same export with the peer's text features (word unigrams): the export's own cost against the peer,
        # apart from what the n-grams add (weights untrained: latency only).
        unigram_model = model_module.build_model(unigram_preprocessor.model_inputs(), len(classes), config.model)
        unigram_path = export_classifier(project / "runs" / "bench_unigrams" / "export",
                                         tabular_serving(unigram_model, unigram_preprocessor),
                                         tracked=[unigram_preprocessor, unigram_model], classes=classes,
                                         temperature=1.3)
        serve_unigrams = tf.saved_model.load(str(unigram_path)).signatures["serving_default"]
        bare = tf.function(lambda x: model(x, training=False), input_signature=[
            {name: tf.TensorSpec([None, width], tf.float32) for name, width in preprocessor.block_widths().items()}])
        one_raw, batch_raw = raw_tensors(1), raw_tensors(args.batch)
        one_numpy = {name: block[:1] for name, block in encoded.items()}
        batch_numpy = encoded
        one_encoded, batch_encoded = (tf.nest.map_structure(tf.constant, one_numpy),
                                      tf.nest.map_structure(tf.constant, batch_numpy))
        reference = model.predict(batch_numpy, batch_size=args.batch, verbose=0)
        served = serve(**batch_raw)["logits"].numpy()
        assert np.allclose(served, reference, atol=1e-4), "the export's logits differ from the model's"

        # The peer a keras-io reader builds instead: keras FeatureSpace over the same raw columns (numeric NaN
        # filled with the training median first: FeatureSpace's normalization does not fill it), then an MLP of the
        # same shape, saved as a SavedModel that takes the raw columns; only its speed is compared.
        train_raw = feed.raw_columns("train")
        filled = {name: (np.where(np.isnan(train_raw[name]), np.nanmedian(train_raw[name]), train_raw[name])
                         if name in features.numeric else train_raw[name]) for name in train_raw}
        space = feature_space(filled, features.numeric, features.categorical, features.text,
                              config.data.text.max_tokens)
        space_dim = int(space({name: values[:2] for name, values in filled.items()}).shape[-1])
        peer_model = model_module.build_model(flat_inputs(space_dim), len(classes), config.model)
        peer_module = tf.Module()
        peer_module.space, peer_module.model = space, peer_model
        peer_module.serve = tf.function(
            lambda inputs: {"probabilities": tf.nn.softmax(peer_model(space(inputs), training=False) / 1.3)},
            input_signature=[specs])
        peer_folder = Path(temp) / "peer"
        tf.saved_model.save(peer_module, str(peer_folder),
                            signatures={"serving_default": peer_module.serve.get_concrete_function()})
        peer = tf.saved_model.load(str(peer_folder)).signatures["serving_default"]

        # Call floors: signatures that do no work, to tell the cost of calling with 11 named inputs (a) or one
        # tensor (b) from the cost of the graph itself.
        floor_folder = Path(temp) / "floor"
        floor_module = tf.Module()
        first = next(iter(specs))
        floor_module.raw = tf.function(lambda inputs: {"probabilities": tf.zeros([tf.size(inputs[first]),
                                                                                  len(classes)])},
                                       input_signature=[specs])
        floor_module.encoded = tf.function(lambda x: tf.zeros([tf.shape(next(iter(x.values())))[0], len(classes)]),
                                           input_signature=[bare.input_signature[0]])
        tf.saved_model.save(floor_module, str(floor_folder),
                            signatures={"serving_default": floor_module.raw.get_concrete_function()})
        raw_floor = tf.saved_model.load(str(floor_folder)).signatures["serving_default"]

        single = {
            "(a) export: serving_default on raw columns": lambda: serve(**one_raw)["probabilities"].numpy(),
            "(b) bare model: tf.function on encoded rows": lambda: bare(one_encoded).numpy(),
            "(c) model.predict on encoded rows": lambda: model.predict(one_numpy, verbose=0),
            "(d) call floor of (a): a loaded signature with the same inputs that returns zeros":
                lambda: raw_floor(**one_raw)["probabilities"].numpy(),
            "(e) call floor of (b): a tf.function of the named blocks that returns zeros":
                lambda: floor_module.encoded(one_encoded).numpy(),
            PEER: lambda: peer(**one_raw)["probabilities"].numpy(),
            EXPORT_UNIGRAMS: lambda: serve_unigrams(**one_raw)["probabilities"].numpy(),
            PREPROCESS: lambda: preprocess(one_raw).numpy(),
            PREPROCESS_UNIGRAMS: lambda: preprocess_unigrams(one_raw).numpy(),
        }
        batched = {
            "(a) export: serving_default on raw columns": lambda: serve(**batch_raw)["probabilities"].numpy(),
            "(b) bare model: tf.function on encoded rows": lambda: bare(batch_encoded).numpy(),
            "(c) model.predict on encoded rows": lambda: model.predict(batch_numpy, batch_size=args.batch,
                                                                       verbose=0),
            "(d) call floor of (a): a loaded signature with the same inputs that returns zeros":
                lambda: raw_floor(**batch_raw)["probabilities"].numpy(),
            "(e) call floor of (b): a tf.function of the named blocks that returns zeros":
                lambda: floor_module.encoded(batch_encoded).numpy(),
            PEER: lambda: peer(**batch_raw)["probabilities"].numpy(),
            EXPORT_UNIGRAMS: lambda: serve_unigrams(**batch_raw)["probabilities"].numpy(),
            PREPROCESS: lambda: preprocess(batch_raw).numpy(),
            PREPROCESS_UNIGRAMS: lambda: preprocess_unigrams(batch_raw).numpy(),
        }
        for function in [*single.values(), *batched.values()]:  # warm-up: tracing, predict_function
            for _ in range(5):
                function()

        names = list(single)
        export_name, bare_name, predict_name = names[:3]
        fast = [name for name in names if name != predict_name]  # timed `--calls` times per round
        latency = {name: [] for name in names}
        throughput = {name: [] for name in names}
        gc.collect()
        gc.disable()
        try:
            for round_index in range(args.rounds):
                for call in range(args.calls):
                    shift = (round_index + call) % len(fast)
                    for name in fast[shift:] + fast[:shift]:
                        latency[name].append(timed(single[name]))
                latency[predict_name].append(timed(single[predict_name]))
            others = [name for name in names if name not in (EXPORT_UNIGRAMS, PEER)]
            for round_index in range(args.batch_rounds):
                # the order rotates, but (a2) and the peer stay side by side, first one then the other
                shift = round_index % len(others)
                pair = [EXPORT_UNIGRAMS, PEER][::1 if round_index % 2 else -1]
                place = round_index % (len(others) + 1)
                order = others[shift:] + others[:shift]
                for name in order[:place] + pair + order[place:]:
                    throughput[name].append(timed(batched[name]))
        finally:
            gc.enable()

    p50 = {name: percentile(values, 50) for name, values in latency.items()}
    p99 = {name: percentile(values, 99) for name, values in latency.items()}
    rows_per_second = {name: args.batch / (statistics.median(values) / 1e3) for name, values in throughput.items()}
    print(f"\n{len(classes)} classes, {preprocessor.dense_width} encoded features ({len(features.numeric)} numeric, "
          f"{len(features.categorical)} categorical, {len(features.text)} text), model.py MLP "
          f"{config.model.hidden_units}; export written in {export_seconds:.1f} s, loaded in {load_seconds:.1f} s; "
          f"TF {tf.__version__}, Keras {keras.__version__}, {os.cpu_count()} CPUs\n")
    print(f"| method | calls | one row p50 ms | one row p99 ms | p50 ratio to export | "
          f"batch {args.batch} rows/s | batch time ratio to export |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in names:
        print(f"| {name} | {len(latency[name])} | {p50[name]:.3f} | {p99[name]:.3f} | "
              f"{p50[name] / p50[export_name]:.2f} | {rows_per_second[name]:,.0f} | "
              f"{rows_per_second[export_name] / rows_per_second[name]:.2f} |")

    over_bare = p50[export_name] / p50[bare_name]
    over_bare_batch = rows_per_second[bare_name] / rows_per_second[export_name]
    speedup = p50[predict_name] / p50[export_name]
    floor_raw, floor_encoded = names[3:5]
    work = (p50[export_name] - p50[floor_raw]) / max(p50[bare_name] - p50[floor_encoded], 1e-9)
    print(f"\nabove their call floors, one row p50: export {p50[export_name] - p50[floor_raw]:.3f} ms, bare model "
          f"{p50[bare_name] - p50[floor_encoded]:.3f} ms (ratio {work:.2f}); the export's extra work is the "
          "preprocessing (string lookups, TF-IDF) and the outputs (softmax(z/T), class name)")
    print(f"preprocessing share of the export's time, (g) of (a) with n-grams and (h) of (a2) with word unigrams: "
          f"one-row p50 {p50[PREPROCESS] / p50[export_name]:.0%} and "
          f"{p50[PREPROCESS_UNIGRAMS] / p50[EXPORT_UNIGRAMS]:.0%}; "
          f"batch {args.batch} {rows_per_second[export_name] / rows_per_second[PREPROCESS]:.0%} and "
          f"{rows_per_second[EXPORT_UNIGRAMS] / rows_per_second[PREPROCESS_UNIGRAMS]:.0%}")
    print(f"export / bare model, one row p50 = {over_bare:.2f} (target <= 1.5): "
          f"{'PASS' if over_bare <= 1.5 else 'MISS'}")
    print(f"export / bare model, batch {args.batch} time = {over_bare_batch:.2f} (target <= 1.5): "
          f"{'PASS' if over_bare_batch <= 1.5 else 'MISS'}")
    print(f"model.predict / export, one row p50 = {speedup:.0f}x (target >= 100): "
          f"{'PASS' if speedup >= 100 else 'MISS'}")
    like_for_like = p50[EXPORT_UNIGRAMS] <= p50[PEER]
    # batch: each round times (a2) and the peer back to back, so the ratio per round is free of the machine's drift
    paired = np.asarray(throughput[PEER]) / np.asarray(throughput[EXPORT_UNIGRAMS])
    batch_ratio = float(np.median(paired))
    print(f"export with the peer's text features (a2) / peer: one row p50 "
          f"{p50[EXPORT_UNIGRAMS] / p50[PEER]:.2f} (target <= 1): {'PASS' if like_for_like else 'MISS'}; "
          f"batch rows/s {batch_ratio:.2f} (median of {len(paired)} rounds' ratios, quartiles "
          f"{np.percentile(paired, 25):.2f}-{np.percentile(paired, 75):.2f}; ratio of the medians "
          f"{rows_per_second[EXPORT_UNIGRAMS] / rows_per_second[PEER]:.2f}) (target >= 1): "
          f"{'PASS' if batch_ratio >= 1 else 'MISS'}")
    print(f"export / keras FeatureSpace peer export, one row p50 = {p50[export_name] / p50[PEER]:.2f} (target <= 1): "
          f"{'PASS' if p50[export_name] <= p50[PEER] else 'MISS'}")
    print(f"export / peer, batch {args.batch} rows/s = {rows_per_second[export_name] / rows_per_second[PEER]:.2f} "
          f"(target >= 1): {'PASS' if rows_per_second[export_name] >= rows_per_second[PEER] else 'MISS'}")


if __name__ == "__main__":
    sys.exit(main())
