"""The benchmark scripts run end to end on tiny sizes and print their tables (timings are never asserted)."""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run_script(name, *args, timeout=300):
    result = subprocess.run([sys.executable, str(BENCHMARKS / name), *args], capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


def table_rows(stdout):
    """First cells of the markdown table rows (header and separator excluded), in order."""
    rows = []
    for line in stdout.splitlines():
        if line.startswith("| ") and not line.startswith("|---"):
            rows.append(line.split("|")[1].strip())
    return rows


def verdicts(stdout):
    return re.findall(r": (PASS|MISS)\b", stdout)


def test_cli_startup_prints_every_command_and_both_targets():
    stdout = run_script("cli_startup.py", "--runs", "1")
    rows = table_rows(stdout)
    for command in ("(a) kerasls new tabular-intent --no-input", "(b) cookiecutter --no-input templates/tabular-intent",
                    "(c) kerasls --help", "(f) python -c pass", "(g) python train.py training.epoch=3 (error, exit 2)"):
        assert command in rows, rows
    assert len(verdicts(stdout)) == 3, stdout


@pytest.mark.slow
def test_tabular_pipeline_prints_every_pipeline_and_the_one_off_steps():
    stdout = run_script("tabular_pipeline.py", "--rows", "2000", "--val-rows", "200", "--epochs", "1",
                        "--eps-rounds", "0")
    rows = " ".join(table_rows(stdout))
    for pipeline in ("(a) kerasls: train.py pipeline", "(b1) in-memory: model.fit(tensors, shuffle=True)",
                     "(b2) in-memory: cached batches", "(c1) peer: TabularPreprocessor in dataset.map",
                     "(c2) peer: keras FeatureSpace in dataset.map", "(d) kerasls, ε=0.0", "(limit)",
                     "TableFeed(config): read + check the table, adapt", "TabularPreprocessor.encode (once)"):
        assert pipeline in rows, rows
    assert "per round, kerasls / cached batches (same round): median" in stdout
    assert len(verdicts(stdout)) == 3, stdout


@pytest.mark.slow
def test_serving_prints_every_method_and_the_three_targets():
    stdout = run_script("serving.py", "--rows", "1000", "--rounds", "3", "--calls", "2", "--batch", "64",
                        "--batch-rounds", "2")
    rows = " ".join(table_rows(stdout))
    for method in ("(a) export: serving_default on raw columns", "(b) bare model: tf.function on encoded rows",
                   "(c) model.predict on encoded rows", "(d) call floor of (a)", "(e) call floor of (b)",
                   "(f) peer: keras FeatureSpace", "(a2) export with the peer's text features",
                   "(g) the export's preprocessing alone",
                   "(h) the same preprocessing with n-grams off"):
        assert method in rows, rows
    assert len(verdicts(stdout)) == 7, stdout
    assert "preprocessing share of the export's time" in stdout


def test_text_encoder_prints_training_and_serving_against_keras_hub():
    pytest.importorskip("keras_hub", reason="the encoders extra (keras-hub, tensorflow-text) is not installed here")
    stdout = run_script("text_encoder.py", "--rows", "300", "--epochs", "1", "--calls", "3", "--serve-batch", "32")
    rows = table_rows(stdout)
    for method in ("kerasls: TableFeed + model.fit", "peer: KerasHub TextClassifier.fit on texts",
                   "(a) kerasls export: serving_default on raw text", "(b) peer: KerasHub TextClassifier.predict",
                   "(c) bare model: tf.function on tokenized rows", "(d) the export's tokenization alone"):
        assert method in rows, rows
    assert len(verdicts(stdout)) == 1 and "tokenization's share" in stdout, stdout


@pytest.mark.slow
def test_text_peer_trains_both_systems_and_prints_accuracy_time_and_sets(tmp_path):
    """A tiny text-intent table (3 intents, keyword-bearing messages), 2 epochs: the tables, not the numbers."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    words = {"refund": ["refund", "money back", "return"], "card": ["card", "lost card", "pin"],
             "transfer": ["transfer", "send money", "wire"]}
    filler = ["please", "my", "the", "why", "help", "today", "now", "is"]

    def table(rows):
        intents = rng.choice(list(words), rows)
        text = [" ".join([*rng.choice(filler, 3), rng.choice(words[intent])]) for intent in intents]
        return pd.DataFrame({"text": text, "category": intents})

    table(400).to_csv(tmp_path / "train.csv", index=False)
    table(150).to_csv(tmp_path / "test.csv", index=False)
    (tmp_path / "config.yaml").write_text(
        "data: {train: train.csv, test: test.csv, label: category, features: {text: [text]}, "
        "text: {max_tokens: 500}}\ntraining: {epochs: 2, batch_size: 64}\n")
    stdout = run_script("text_peer.py", "--config", str(tmp_path / "config.yaml"), "--seeds", "1")
    rows = [row for row in table_rows(stdout) if row not in ("system", "prediction sets")]
    assert rows[0].startswith("scikit-learn word 1-2 + char_wb 2-5") and rows[1].startswith("kerasls `config.yaml`")
    assert len(re.findall(r"^target .*: (met|MISSED)", stdout, re.M)) == 3, stdout
    assert any(row.startswith("kerasls seed 1") for row in rows) and any(row.startswith("MAPIE") for row in rows)


def test_serving_banking77_text_puts_banking77_messages_in_the_text_column(tmp_path):
    """`serving.py --text banking77`: the bench tables' text column holds Banking77 messages (training messages in
    the training table, test messages in the validation table), its empty rows stay empty, nothing else changes."""
    import importlib.util

    import pandas as pd

    from kerasls.config import load_config

    spec = importlib.util.spec_from_file_location("serving_benchmark", BENCHMARKS / "serving.py")
    serving = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(serving)
    project, _ = serving.render_project(tmp_path, 300, 100)
    before = {table: pd.read_csv(project / "data" / table, keep_default_na=False)
              for table in ("bench_train.csv", "bench_val.csv")}

    serving.use_banking77_text(project)

    data = load_config(BENCHMARKS.parent / "examples" / "banking77.yaml").data
    for (table, frame), source in zip(before.items(), (data.train, data.test)):
        after = pd.read_csv(project / "data" / table, keep_default_na=False)
        messages = set(pd.read_csv(source)[data.features.text[0]].astype(str))
        empty = frame["search_query"] == ""
        assert 0 < empty.sum() < len(frame)
        assert (after["search_query"][empty] == "").all()
        assert after["search_query"][~empty].isin(messages).all()
        assert not after["search_query"][~empty].isin(frame["search_query"]).any()
        pd.testing.assert_frame_equal(after.drop(columns="search_query"), frame.drop(columns="search_query"))


def test_scale_in_memory_trains_open_vocabulary_tables_and_prints_memory(tmp_path):
    import pandas as pd

    stdout = run_script("scale.py", "--in-memory", "1500,3000", "--keep", str(tmp_path), timeout=600)
    assert table_rows(stdout)[-2:] == ["1,500", "3,000"], stdout
    assert "| 0 |" in stdout and "peak RSS" in stdout
    table = pd.read_csv(tmp_path / "open-1500.csv")
    assert table["intent"].nunique() > 100 and table["query"].str.split().str.len().between(3, 8).all()


def test_sparse_first_layer_times_the_three_first_layers():
    stdout = run_script("sparse_first_layer.py", "--batch", "16", "--width", "500", "--nonzero", "10", "--hidden", "8",
                        "--classes", "3", "--rounds", "2")
    assert table_rows(stdout)[1:] == ["(a) dense: the batch made dense, tf.matmul",
                                      "(b) sparse: tf.sparse.sparse_dense_matmul",
                                      "(c) embedding bag: gather + unsorted_segment_sum"], stdout


def test_out_of_scope_split_keeps_held_out_intents_out_of_training(tmp_path):
    """benchmarks/out_of_scope.py's protocol: ten intents' rows only in validation, the outlier-exposure rows and
    test, all labelled out_of_scope; no row in two files; the in-scope validation rows a stratified tenth."""
    spec = importlib.util.spec_from_file_location("out_of_scope_benchmark", BENCHMARKS / "out_of_scope.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    split = module.split_files(tmp_path, holdout_seed=0, val_share=0.2, oe_share=0.3, seed=42)
    frames, held_out = split["frames"], split["held_out"]
    assert len(held_out) == 10 and not frames["train"].category.isin(held_out + [module.OUT]).any()
    extra = frames["train_oe"].iloc[len(frames["train"]):]
    assert (extra.category == module.OUT).all() and len(extra) == 479
    assert (frames["val"].category == module.OUT).sum() == 319 and (frames["test"].category == module.OUT).sum() == 797
    assert not set(frames["val"].text) & set(frames["train"].text)
    assert abs(len(frames["val"]) - 319 - 0.1 * (len(frames["train"]) + len(frames["val"]) - 319)) < 67
    assert all(path.is_file() for path in split["paths"].values())
