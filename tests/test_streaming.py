"""`data.streaming: true`: chunked reading gives the in-memory preprocessing, every row once an epoch, clear errors."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from conftest import run_train
from test_end_to_end import SERVE_WITHOUT_KERAS

from kerasls.config import DataConfig, SoftLabelsConfig
from kerasls.data import streaming, tabular
from kerasls.errors import KeraslsError
from kerasls.preprocessing import TabularPreprocessor
from kerasls.templates_index import render_template

WORDS = "cheap shoes red running buy return refund where order size blue help price".split()


def make_table(rows: int, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "row_id": np.arange(rows, dtype=np.float64),
        "minutes": rng.gamma(2.0, 3.0, rows).round(2),
        "pages": rng.integers(1, 40, rows).astype(np.float64),
        "device": rng.choice(["mobile", "desktop", "tablet", "tv"], rows, p=[0.5, 0.3, 0.15, 0.05]),
        "query": [" ".join(rng.choice(WORDS, rng.integers(1, 6))) for _ in range(rows)],
        "intent": rng.choice(["browse", "purchase", "support"], rows),
    })
    frame.loc[rng.random(rows) < 0.1, "minutes"] = np.nan
    frame.loc[rng.random(rows) < 0.05, "device"] = np.nan
    return frame


def write(frame, path):
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_chunked_adapt_learns_the_in_memory_preprocessing(tmp_path, suffix):
    frame = make_table(1000)
    train = write(frame, tmp_path / f"train{suffix}")
    val = write(make_table(50, seed=1), tmp_path / f"val{suffix}")
    stream = streaming.TableStream(DataConfig(train=str(train), val=str(val), streaming=True, chunk_rows=97), seed=0)
    features = stream.features
    assert (features.numeric, features.categorical, features.text) == (["row_id", "minutes", "pages"], ["device"],
                                                                       ["query"])
    columns = tabular.column_arrays(tabular.read_table(train), features)
    in_memory = TabularPreprocessor(features.numeric, features.categorical, features.text).adapt(columns)
    chunked = stream.preprocessor
    np.testing.assert_allclose(chunked.numeric_median, in_memory.numeric_median)  # exact: fewer rows than the sample
    np.testing.assert_allclose(chunked.numeric_mean, in_memory.numeric_mean, rtol=1e-6)
    np.testing.assert_allclose(chunked.numeric_std, in_memory.numeric_std, rtol=1e-5)
    assert chunked.lookups["device"].get_vocabulary() == in_memory.lookups["device"].get_vocabulary()
    for kind in ("words", "chars"):
        assert chunked.vectorizers["query"].vocabulary(kind) == in_memory.vectorizers["query"].vocabulary(kind)
    np.testing.assert_allclose(chunked.encode_dense(columns), in_memory.encode_dense(columns), atol=1e-5)
    assert stream.rows == {"train": 1000, "val": 50, "test": 0}
    assert stream.classes == ["browse", "purchase", "support"]
    assert stream.class_counts.tolist() == [int((frame["intent"] == c).sum()) for c in stream.classes]


def rows_seen(dataset):
    """The (standardised) row_id feature of each batch row, in order; it identifies the row."""
    return np.concatenate([x["numeric"].numpy()[:, 0] for x, _ in dataset])


def test_every_training_row_once_an_epoch_in_an_order_fixed_by_seed_and_epoch(tmp_path):
    train = write(make_table(1000), tmp_path / "train.csv")
    stream = streaming.TableStream(DataConfig(train=str(train), streaming=True, chunk_rows=128), seed=3)
    assert stream.rows["train"] + stream.rows["val"] == 1000
    epoch = tf.Variable(0, dtype=tf.int64)
    dataset = stream.dataset("train", 64, shuffle=True, epoch=epoch)
    first = rows_seen(dataset)
    assert len(first) == stream.rows["train"] == len(np.unique(first))
    np.testing.assert_array_equal(rows_seen(dataset), first)  # same epoch: same order (exact resume)
    epoch.assign(1)
    second = rows_seen(dataset)
    assert not np.array_equal(second, first) and np.array_equal(np.sort(second), np.sort(first))
    assert not np.all(np.diff(first) > 0)  # shuffled within chunks

    val = rows_seen(stream.dataset("val", 64))
    assert len(val) == stream.rows["val"] and not set(val) & set(first)
    dropped = stream.dataset("train", 64, shuffle=True, epoch=epoch, drop_remainder=True)
    shapes = {int(x["numeric"].shape[0]) for x, _ in dropped}
    assert shapes == {64} and len(dropped) == stream.rows["train"] // 64


def test_the_validation_split_does_not_depend_on_the_chunk_size(tmp_path):
    train = write(make_table(2000), tmp_path / "train.csv")
    whole = streaming.val_rows(0, 2000, seed=5, fraction=0.2)
    pieces = np.concatenate([streaming.val_rows(start, 300, seed=5, fraction=0.2)[:min(300, 2000 - start)]
                             for start in range(0, 2000, 300)])
    np.testing.assert_array_equal(whole, pieces)
    assert 0.17 < whole.mean() < 0.23
    assert not np.array_equal(whole, streaming.val_rows(0, 2000, seed=6, fraction=0.2))
    small = streaming.TableStream(DataConfig(train=str(train), streaming=True, chunk_rows=77), seed=5)
    large = streaming.TableStream(DataConfig(train=str(train), streaming=True, chunk_rows=5000), seed=5)
    assert small.rows == large.rows == {"train": int((~whole).sum()), "val": int(whole.sum()), "test": 0}
    _, labels, _ = small.targets("val")
    expected = make_table(2000)["intent"][whole].map({"browse": 0, "purchase": 1, "support": 2}).to_numpy()
    np.testing.assert_array_equal(labels, expected)


def test_a_bad_value_in_a_later_chunk_names_its_file_line(tmp_path):
    frame = make_table(600).astype({"pages": object})
    frame.loc[450, "pages"] = "many"
    train = write(frame, tmp_path / "train.csv")
    with pytest.raises(KeraslsError, match=r"train.csv: line 452, numeric column 'pages' holds 'many'"):
        streaming.TableStream(DataConfig(train=str(train), streaming=True, chunk_rows=100,
                                         features={"numeric": ["pages"], "categorical": ["device"]}), seed=0)


def test_a_label_unseen_in_training_in_the_test_file_is_named(tmp_path):
    train = write(make_table(300), tmp_path / "train.csv")
    test_frame = make_table(300, seed=2)
    test_frame.loc[210, "intent"] = "complaint"
    test = write(test_frame, tmp_path / "test.csv")
    with pytest.raises(KeraslsError, match=r"test.csv: line 212: label 'complaint' in column 'intent' is not a "):
        streaming.TableStream(DataConfig(train=str(train), test=str(test), streaming=True, chunk_rows=64), seed=0)


def test_a_teacher_is_refused_with_streaming(tmp_path):
    train = write(make_table(100), tmp_path / "train.csv")
    with pytest.raises(KeraslsError, match="teacher is not supported with data.streaming: true"):
        streaming.TableStream(DataConfig(train=str(train), streaming=True),
                              seed=0, soft=SoftLabelsConfig(teacher="runs/x/export"))


def test_vote_columns_stream_as_distributions(tmp_path):
    frame = make_table(400)
    rng = np.random.default_rng(0)
    votes = rng.integers(0, 4, (400, 3))
    votes[votes.sum(1) == 0, 0] = 1
    for k, name in enumerate(["browse", "purchase", "support"]):
        frame[f"votes_{name}"] = votes[:, k]
    train = write(frame.drop(columns="intent"), tmp_path / "train.csv")
    soft = SoftLabelsConfig(votes=["votes_browse", "votes_purchase", "votes_support"])
    stream = streaming.TableStream(DataConfig(train=str(train), streaming=True, chunk_rows=90), seed=0, soft=soft)
    assert "votes_browse" not in stream.features.all_columns()
    targets, labels, is_soft = stream.targets("val")
    in_val = streaming.val_rows(0, 400, seed=0, fraction=0.2)
    np.testing.assert_allclose(targets, votes[in_val] / votes[in_val].sum(1, keepdims=True), rtol=1e-6)
    assert is_soft and labels.tolist() == targets.argmax(1).tolist()


@pytest.mark.slow
@pytest.mark.e2e
def test_a_streaming_project_trains_exports_and_serves(tmp_path):
    project = render_template("tabular-intent", output_dir=tmp_path, extra_context={"project_slug": "big"})
    result = run_train(project, "data.streaming=true", "data.chunk_rows=300", "training.epochs=3",
                       "training.verbose=2", "--run-name", "streamed")
    assert result.returncode == 0, result.stderr[-4000:]
    run = project / "runs" / "streamed"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["n"] == 500
    assert metrics["accuracy"] > 0.7  # the sample data's in-memory runs reach ~0.8
    history = pd.read_csv(run / "history.csv")
    assert list(history["epoch"]) == [0, 1, 2] and history["val_nll"].iloc[-1] < history["val_nll"].iloc[0]

    test_rows = project / "data" / "test.csv"
    served = subprocess.run([sys.executable, "-c", SERVE_WITHOUT_KERAS, metrics["export_path"], str(test_rows)],
                            capture_output=True, text=True, timeout=120)
    assert served.returncode == 0, served.stderr[-3000:]
    probabilities = np.array(json.loads(served.stdout.strip().splitlines()[-1])["probabilities"])
    predictions = pd.read_csv(run / "predictions.csv")
    expected = predictions[[f"calibrated_prob_{c}" for c in metrics["classes"]]].to_numpy()
    assert np.abs(probabilities - expected).max() < 1e-5
