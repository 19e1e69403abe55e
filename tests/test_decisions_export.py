"""Decisions in the export: `decision`, `abstained` and `unreadable` served by the graph equal the decisions the run
computes in process (confidence to 1e-5, identical decisions), for both rules; rows whose text holds no known word
or n-gram are flagged and abstain whatever their confidence. No training: seeded initial weights."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf
from conftest import tabular_build_model
from test_export_parity import raw_columns, scale_weights

from kerasls import calibration, conformal, decisions, results, training
from kerasls.config import AbstainConfig, TextConfig
from kerasls.export import METADATA_FILE, export_classifier, tabular_serving
from kerasls.predict import predict_frame
from kerasls.preprocessing import TabularPreprocessor

TEMPERATURE = 1.3
pytestmark = pytest.mark.usefixtures("float32_policy")


def served_model(rows=700, seed=5, text=("message",)):
    training.set_seeds(seed)
    columns = raw_columns(rows=rows, seed=seed)
    preprocessor = TabularPreprocessor(["amount", "minutes"], ["device"], list(text),
                                       text_settings=TextConfig(max_tokens=50))
    preprocessor.adapt({name: values[:200] for name, values in columns.items()})
    model = tabular_build_model()(preprocessor.model_inputs(), 4, SimpleNamespace(hidden_units=[32], dropout=0.0))
    scale_weights(model, 2.0)
    return columns, preprocessor, model


@pytest.mark.parametrize("rule", ["confidence", "conformal"])
def test_export_decides_as_the_run_does(rule, tmp_path):
    columns, preprocessor, model = served_model()
    columns["message"][600:610] = ["", "🙂🙂🙂", "这是一个中文句子", "   ", "qqq zzz", "?!", "日本語", "\t", "xx", "🙂"]
    serving = tabular_serving(model, preprocessor)
    logits, unreadable = results.predict_outputs(serving.evaluation_function(),
                                                 {name: values[200:] for name, values in columns.items()})
    probabilities = calibration.softmax(logits, TEMPERATURE)
    labels = np.random.default_rng(1).integers(0, 4, len(logits))
    labels[:60] = decisions.OUT_OF_SCOPE
    predictor = conformal.fit(probabilities[60:250], labels[60:250], "lac", alpha=0.3)
    rule_fitted = decisions.fit(AbstainConfig(rule=rule, label="out_of_scope"), probabilities[:250], labels[:250],
                                target_accuracy=0.4, set_predictor=predictor)
    path = export_classifier(tmp_path / "export", serving, tracked=[preprocessor, model], classes=list("abcd"),
                             temperature=TEMPERATURE, set_predictor=predictor, decision_rule=rule_fitted)
    served = tf.saved_model.load(str(path)).signatures["serving_default"](
        **{name: tf.constant(values[450:]) for name, values in columns.items()})
    served = {name: value.numpy() for name, value in served.items()}

    expected_abstained = rule_fitted.abstains(probabilities[250:], unreadable[250:])
    expected = rule_fitted.decisions(probabilities[250:], list("abcd"), unreadable[250:])
    np.testing.assert_allclose(served["confidence"], probabilities[250:].max(axis=1), atol=1e-5, rtol=0)
    np.testing.assert_array_equal(served["unreadable"], unreadable[250:])
    np.testing.assert_array_equal(served["abstained"], expected_abstained)
    assert [d.decode() for d in served["decision"]] == list(expected)
    assert 0 < expected_abstained.sum() < len(expected_abstained)  # the rule splits the rows
    # the foreign, empty and unknown texts (rows 600-609) hold no known n-gram: flagged, abstained
    assert served["unreadable"][150:160].all() and served["abstained"][150:160].all()
    assert not served["unreadable"][:150].all()
    if rule == "conformal":
        np.testing.assert_array_equal(served["abstained"] & ~served["unreadable"], served["set_size"] == 0)
    stored = json.loads((path / "assets" / METADATA_FILE).read_text())["decision"]
    assert decisions.DecisionRule.from_json(stored) == rule_fitted

    frame = __import__("pandas").DataFrame({name: values[450:] for name, values in columns.items()})
    function = tf.saved_model.load(str(path)).signatures["serving_default"]
    _, specs = function.structured_input_signature
    table = predict_frame(function, specs, list("abcd"), frame)
    assert list(table["decision"]) == list(expected)
    np.testing.assert_array_equal(table["abstained"].to_numpy(), expected_abstained)


def test_a_row_is_unreadable_only_when_every_text_column_lacks_known_words():
    training.set_seeds(4)
    columns = raw_columns(rows=300, seed=4)
    columns["subject"] = np.array(["card payment"] * 300, dtype=object)
    preprocessor = TabularPreprocessor(["amount"], [], ["message", "subject"], text_settings=TextConfig(max_tokens=50))
    preprocessor.adapt({name: values[:200] for name, values in columns.items()})
    held_out = {name: values[200:210].copy() for name, values in columns.items()}
    held_out["message"][:] = ["refund card", "", "🙂", "refund", "", "日本語", "top up", "", "zzz", "card"]
    held_out["subject"][:] = ["", "", "", "card", "payment", "🙂", "", "???", "", "zzz"]
    _, unreadable = preprocessor.call_with_flags({name: tf.constant(values) for name, values in held_out.items()})
    assert unreadable.numpy().tolist() == [False, True, True, False, False, True, False, True, True, False]


def test_a_table_without_text_columns_has_no_unreadable_output(tmp_path):
    training.set_seeds(2)
    columns = {name: values for name, values in raw_columns(rows=120).items() if name != "message"}
    preprocessor = TabularPreprocessor(["amount", "minutes"], ["device"], [])
    preprocessor.adapt(columns)
    model = tabular_build_model()(preprocessor.model_inputs(), 3, SimpleNamespace(hidden_units=[8], dropout=0.0))
    serving = tabular_serving(model, preprocessor)
    rule = decisions.DecisionRule("confidence", 0.5, "none")
    path = export_classifier(tmp_path / "export", serving, tracked=[preprocessor, model], classes=list("abc"),
                             decision_rule=rule)
    served = tf.saved_model.load(str(path)).signatures["serving_default"](
        **{name: tf.constant(values) for name, values in columns.items()})
    assert "unreadable" not in served
    np.testing.assert_array_equal(served["abstained"].numpy(), served["confidence"].numpy() < 0.5)
