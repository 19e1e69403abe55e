"""The same raw values in training and serving: categorical and text columns are read as the file's own strings
("TRUE" stays "TRUE", "007" stays "007", an empty cell is ""), by every feed, so the vocabulary holds what a
client of the export sends, and `kerasls predict` on the file equals a client sending the file's strings.
"""

import csv
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from kerasls import training
from kerasls.config import DataConfig, FeatureColumns, TextConfig
from kerasls.data import streaming, tabular
from kerasls.export import export_classifier, tabular_serving
from kerasls.predict import predict_file
from kerasls.preprocessing import TabularPreprocessor

CSV_TEXT = """clicks,weekend,store_code,region,note,intent
3,TRUE,007,north,late delivery,buy
1,FALSE,7,NA,,browse
,TRUE,012,south,refund please,buy
5,false,007,,NA,browse
2,FALSE,012,north,late,buy
4,TRUE,7,south,,browse
NA,FALSE,007,north,refund,buy
6,TRUE,012,NA,delivery,browse
"""
FEATURES = FeatureColumns(numeric=["clicks"], categorical=["weekend", "store_code", "region"], text=["note"])


@pytest.fixture()
def table(tmp_path) -> Path:
    path = tmp_path / "sessions.csv"
    path.write_text(CSV_TEXT, encoding="utf-8")
    return path


def file_strings(path: Path) -> dict:
    """What a client sends: the file's cells as they are, read without pandas."""
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return {name: [row[name] for row in rows] for name in rows[0]}


def test_read_table_keeps_the_files_strings_in_literal_columns_and_types_numbers(table):
    frame = tabular.read_table(table, "train", literal=["weekend", "store_code", "region", "note", "intent"])
    assert list(frame["weekend"]) == ["TRUE", "FALSE", "TRUE", "false", "FALSE", "TRUE", "FALSE", "TRUE"]
    assert list(frame["store_code"]) == ["007", "7", "012", "007", "012", "7", "007", "012"]
    assert frame["region"].tolist()[:2] == ["north", "NA"]  # "NA" is a value of a string column, not missing
    assert frame["region"].isna().tolist() == [False, False, False, True, False, False, False, False]
    assert pd.api.types.is_numeric_dtype(frame["clicks"])
    assert np.isnan(frame["clicks"][2]) and np.isnan(frame["clicks"][6])  # empty and "NA" are missing numbers
    arrays = tabular.column_arrays(frame, FEATURES)
    assert list(arrays["note"][:2]) == ["late delivery", ""]  # an empty cell is the empty string, as served


def test_inferred_features_read_as_text_too(table):
    """Without data.features: a TRUE/FALSE column is categorical with the file's spellings; an all-number column
    (store codes without listing them) is numeric, as pandas would read it."""
    frame = tabular.read_table(table, "train", literal=["intent"])
    features = tabular.infer_features(frame, "intent")
    assert "weekend" in features.categorical and "store_code" in features.numeric
    assert set(frame["weekend"]) == {"TRUE", "FALSE", "false"}


def test_in_memory_and_streaming_learn_the_vocabulary_a_client_sends(table):
    config = DataConfig(train=str(table), label="intent", features=FEATURES, val_fraction=0.25)
    splits = tabular.load_splits(config, seed=0)
    memory = TabularPreprocessor(FEATURES.numeric, FEATURES.categorical, FEATURES.text,
                                 text_settings=TextConfig(max_tokens=20))
    memory.adapt(tabular.column_arrays(splits.train, FEATURES))
    stream = streaming.TableStream(config.model_copy(update={"streaming": True, "chunk_rows": 3}), seed=0)
    sent = file_strings(table)
    for preprocessor in (memory, stream.preprocessor):
        vocabulary = set(preprocessor.lookups["store_code"].get_vocabulary())
        assert {"007", "012"} <= vocabulary and "7.0" not in vocabulary
        weekend = set(preprocessor.lookups["weekend"].get_vocabulary())
        assert "True" not in weekend and "False" not in weekend and {"TRUE", "FALSE"} <= weekend
    # every value the client sends in the rows seen by the streaming pass is in its vocabulary
    stream_vocabulary = set(stream.preprocessor.lookups["weekend"].get_vocabulary())
    assert set(sent["weekend"]) - {"false"} <= stream_vocabulary


def test_predict_on_the_file_equals_a_client_sending_the_files_strings(table, tmp_path):
    config = DataConfig(train=str(table), label="intent", features=FEATURES, val_fraction=0.25)
    splits = tabular.load_splits(config, seed=0)
    preprocessor = TabularPreprocessor(FEATURES.numeric, FEATURES.categorical, FEATURES.text,
                                       text_settings=TextConfig(max_tokens=20))
    preprocessor.adapt(tabular.column_arrays(splits.train, FEATURES))
    preprocessor.encode(tabular.column_arrays(splits.train, FEATURES))  # as train.py does: builds the layer
    training.set_seeds(3)
    from importlib.util import module_from_spec, spec_from_file_location

    spec = spec_from_file_location("tabular_model_raw", Path(__file__).resolve().parents[1] / "templates" /
                                   "tabular-intent" / "{{cookiecutter.project_slug}}" / "model.py")
    module = module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.build_model(preprocessor.model_inputs(), 2, SimpleNamespace(hidden_units=[16], dropout=0.0))
    for variable in model.trainable_variables:  # large weights: a category in the OOV slot moves the output
        variable.assign(variable * 5.0)
    export = export_classifier(tmp_path / "export", tabular_serving(model, preprocessor),
                               tracked=[preprocessor, model], classes=splits.classes, temperature=1.0)

    predicted = predict_file(export, [table])
    serve = tf.saved_model.load(str(export)).signatures["serving_default"]
    sent = file_strings(table)
    clicks = np.array([float(v) if v not in ("", "NA") else np.nan for v in sent["clicks"]], np.float32)
    client = serve(clicks=tf.constant(clicks), **{name: tf.constant(sent[name]) for name in
                                                  FEATURES.categorical + FEATURES.text})["probabilities"].numpy()
    columns = [f"prob_{name}" for name in splits.classes]
    np.testing.assert_allclose(predicted[columns].to_numpy(), client, atol=1e-6)

    # the parsed spellings pandas would give are other values: the OOV slot, other probabilities
    parsed = dict(sent, weekend=[{"TRUE": "True", "FALSE": "False"}.get(v, v) for v in sent["weekend"]],
                  store_code=[str(int(v)) for v in sent["store_code"]])
    pandas_like = serve(clicks=tf.constant(clicks), **{name: tf.constant(parsed[name]) for name in
                                                       FEATURES.categorical + FEATURES.text})["probabilities"]
    assert np.abs(pandas_like.numpy() - client).max() > 1e-3
