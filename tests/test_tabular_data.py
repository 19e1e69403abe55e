"""Reading, checking, inferring and splitting tables: each bad input is one clear message."""

import numpy as np
import pandas as pd
import pytest

from kerasls.config import DataConfig, FeatureColumns
from kerasls.data import tabular
from kerasls.errors import KeraslsError


def frame(rows=40):
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "minutes": rng.normal(size=rows),
        "device": rng.choice(["mobile", "desktop"], size=rows),
        "query": [f"word{i} word{i + 1} buy shoes now" for i in range(rows)],
        "flag": rng.choice([True, False], size=rows),
        "intent": rng.choice(["buy", "browse", "support"], size=rows, p=[0.5, 0.3, 0.2]),
    })


def test_infer_features():
    features = tabular.infer_features(frame(), "intent")
    assert features.numeric == ["minutes"]
    assert features.categorical == ["device", "flag"]
    assert features.text == ["query"]


def test_stratified_split_keeps_class_shares_and_is_seeded():
    data = pd.DataFrame({"x": range(1000), "y": ["a"] * 700 + ["b"] * 250 + ["c"] * 50})
    train, val = tabular.stratified_split(data, "y", 0.2, seed=1)
    assert len(val) == 200 and len(train) == 800
    assert val["y"].value_counts().to_dict() == {"a": 140, "b": 50, "c": 10}
    again, _ = tabular.stratified_split(data, "y", 0.2, seed=1)
    assert train.index.equals(again.index)
    other, _ = tabular.stratified_split(data, "y", 0.2, seed=2)
    assert not train.index.equals(other.index)


def test_booleans_become_class_names():
    assert list(tabular.label_strings(pd.Series([True, False]))) == ["True", "False"]
    assert list(tabular.label_strings(pd.Series([1.0, 2.0]))) == ["1", "2"]


def test_column_arrays_types_and_missing_values():
    data = pd.DataFrame({"n": [1, None], "c": ["a", None]})
    arrays = tabular.column_arrays(data, FeatureColumns(numeric=["n"], categorical=["c"]))
    assert arrays["n"].dtype == np.float32 and np.isnan(arrays["n"][1])
    assert list(arrays["c"]) == ["a", ""]


def load(tmp_path, train_text, test_text=None, **config):
    train = tmp_path / "train.csv"
    train.write_bytes(train_text if isinstance(train_text, bytes) else train_text.encode())
    if test_text is not None:
        (tmp_path / "test.csv").write_text(test_text)
        config["test"] = str(tmp_path / "test.csv")
    return tabular.load_splits(DataConfig(train=str(train), **config), seed=0)


GOOD = "x,c,intent\n" + "".join(f"{i},{'ab'[i % 2]},{'yn'[i % 2]}\n" for i in range(20))


def test_load_splits_happy_path(tmp_path):
    splits = load(tmp_path, GOOD, "x,c,intent\n1,a,y\n", label="intent")
    assert splits.classes == ["n", "y"] and splits.eval_split == "test"
    assert len(splits.train) + len(splits.val) == 20


@pytest.mark.parametrize(
    "train_text, test_text, config, expected",
    [
        ("", None, {}, r"train.csv: the file is empty"),
        ("x,intent\n", None, {}, r"train.csv: has a header but no data rows"),
        (GOOD, None, {"label": "target"}, r"train.csv: label column 'target' not found.*fix data.label"),
        ("x,intent\n1,\n2,\n", None, {}, r"train.csv: label column 'intent' is empty .* fill in the class names"),
        ("x,intent\n1,a\n2,a\n", None, {}, r"label column 'intent' has one class only"),
        ("x,intent\n1,a\nabc,b\n", None, {"features": {"numeric": ["x"]}},
         r"train.csv: line 3, numeric column 'x' holds 'abc'"),
        (b"x,intent\n1,a\n\xff\xfe,b\n", None, {}, r"train.csv: line 3: byte b'\\xff' is not UTF-8 text"),
        ("x,x,intent\n1,2,a\n3,4,b\n", None, {}, r"duplicate column name\(s\) \['x'\]"),
        (GOOD, "x,c,intent\n1,a,maybe\n", {},
         r"test.csv: line 2: label 'maybe' in column 'intent' is not a training class"),
        ("x,intent\n1,a\n2,\n3,b\n", None, {}, r"train.csv: line 3: label column 'intent' is missing a value"),
        (GOOD, None, {"features": {"numeric": ["x", "nope"]}}, r"feature column 'nope' not found"),
        ("my col,intent\n1,a\n2,b\n", None, {}, r"column name 'my col' cannot name a serving input"),
    ],
)
def test_bad_tables_give_one_clear_message(tmp_path, train_text, test_text, config, expected):
    with pytest.raises(KeraslsError, match=expected):
        load(tmp_path, train_text, test_text, **config)


def test_missing_file_names_the_config_key(tmp_path):
    with pytest.raises(KeraslsError, match=r"train file not found; set data.train"):
        tabular.load_splits(DataConfig(train=str(tmp_path / "none.csv")), seed=0)


def test_parquet_is_read(tmp_path):
    data = pd.DataFrame({"x": np.arange(10.0), "intent": ["a", "b"] * 5})
    data.to_parquet(tmp_path / "t.parquet")
    splits = tabular.load_splits(DataConfig(train=str(tmp_path / "t.parquet")), seed=0)
    assert splits.features.numeric == ["x"] and splits.classes == ["a", "b"]


def test_a_table_too_large_for_memory_is_refused_before_encoding(monkeypatch, tmp_path):
    """The run estimates the memory its encoded rows take and stops with one line naming the estimate, the machine's
    memory and the fixes, instead of being killed by the OOM killer mid-way."""
    from kerasls import memory
    from kerasls.config import load_config
    from kerasls.preprocessing import TabularPreprocessor
    from kerasls.table_feed import TableFeed
    from kerasls.templates_index import render_template

    project = render_template("tabular-intent", output_dir=tmp_path, extra_context={"project_slug": "big"})
    config = load_config(project / "config.yaml")
    monkeypatch.setattr(memory, "available_bytes", lambda: 2 * 2**20)  # a 2 MB machine
    monkeypatch.setattr(TabularPreprocessor, "encode", lambda *args: pytest.fail("encoded before the check"))
    with pytest.raises(KeraslsError, match=r"train.csv: holding 2,000 encoded rows in memory \(\d+ nonzero features "
                                           r"a row\) needs about \d+ MB, more than the 2 MB of memory available on "
                                           r"this machine; set data.streaming: true .* or lower data.text.max_tokens"):
        TableFeed(config)
    monkeypatch.undo()
    assert len(TableFeed(config).encoded("train")["entries"]) == 1600


def test_a_typo_in_an_inferred_numeric_column_is_named_not_made_categorical(tmp_path):
    """With data.features: null, one `abc` among numbers made the column categorical without a word."""
    rows = ["minutes,device,intent"] + [f"{i % 7 + 0.5},mobile,{'buy' if i % 2 else 'browse'}" for i in range(40)]
    rows[13] = "abc,mobile,buy"
    path = tmp_path / "train.csv"
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(KeraslsError, match=rf"{path}: line 14, column 'minutes' holds 'abc' among numbers; fix the "
                                           r"value .* or list the column under data.features"):
        tabular.load_splits(DataConfig(train=str(path)), seed=0)
    rows[13] = "NA,mobile,buy"  # a missing-value spelling is a missing number
    path.write_text("\n".join(rows) + "\n")
    assert tabular.load_splits(DataConfig(train=str(path)), seed=0).features.numeric == ["minutes"]
