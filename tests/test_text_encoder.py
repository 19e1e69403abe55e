"""`data.text.encoder`: the config checks before TensorFlow, the tokenizer as a preprocessing layer, the named
inputs, LoRA and freezing, and the export serving the logits the run evaluates (float32 and mixed_bfloat16).

Every preset is a tiny BERT made here from the template's sample data (scripts/make_tiny_encoder.py): nothing is
downloaded.
"""

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from conftest import tabular_build_model
from recipe import compile_classifier

from kerasls import encoder_settings, results, training
from kerasls.config import TabularConfig, TextConfig, build_config, load_config
from kerasls.encoder_settings import KERAS_HUB_TEXT_PRESETS, check_encoders_available
from kerasls.errors import KeraslsError
from kerasls.export import export_classifier, tabular_serving
from kerasls.preprocessing import TabularPreprocessor

pytest.importorskip("keras_hub", reason="the encoders extra (keras-hub, tensorflow-text) is not installed here")
ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "templates" / "tabular-intent" / "{{cookiecutter.project_slug}}" / "data" / \
    "{% if cookiecutter.sample_data == 'yes' %}train.csv{% endif %}"


def tiny_encoder_module():
    spec = importlib.util.spec_from_file_location("make_tiny_encoder", ROOT / "scripts" / "make_tiny_encoder.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def sample():
    table = pd.read_csv(SAMPLE, dtype=str, keep_default_na=False)
    assert len(table) > 1000 and table["search_query"].str.len().gt(0).mean() > 0.5
    return table


@pytest.fixture(scope="module")
def preset(tmp_path_factory, sample):
    """A random-init 1-layer BERT (hidden 16) over the sample queries' words, 32 positions."""
    folder = tmp_path_factory.mktemp("preset") / "tiny_bert"
    return tiny_encoder_module().make_tiny_preset(folder, sample["search_query"].tolist(), layers=1, hidden=16,
                                                  max_sequence_length=32)


def columns_of(table, rows):
    part = table.head(rows)
    return {"minutes": pd.to_numeric(part["session_minutes"]).to_numpy(dtype=np.float32),
            "device": part["device"].to_numpy(dtype=object),
            "query": part["search_query"].to_numpy(dtype=object)}


def encoder_preprocessor(preset, **encoder):
    text = TextConfig(encoder={"preset": str(preset), "sequence_length": 16, **encoder})
    return TabularPreprocessor(["minutes"], ["device"], ["query"], text_settings=text)


# -- config, before TensorFlow ------------------------------------------------------------------------------------


def test_the_preset_list_is_keras_hubs_text_classifier_presets():
    import keras_hub

    assert sorted(KERAS_HUB_TEXT_PRESETS) == sorted(keras_hub.models.TextClassifier.presets)


def test_a_misspelt_preset_is_refused_with_the_closest_name():
    with pytest.raises(KeraslsError, match=r"data.text.encoder.preset.*did you mean 'bert_small_en_uncased'\?.*"
                                           r"Received: 'bert_smal_en_uncased'"):
        load_config(None, ["data.text.encoder.preset=bert_smal_en_uncased"])


def test_names_handles_and_folders_are_accepted(preset, tmp_path):
    for value in ("bert_tiny_en_uncased", "hf://google-bert/bert-base-uncased", str(preset)):
        config = load_config(None, [f"data.text.encoder.preset={value}"])
        assert config.data.text.encoder.preset == value
        assert config.data.text.encoder.sequence_length == 128 and config.data.text.encoder.trainable
    (tmp_path / "not_a_preset").mkdir()
    with pytest.raises(KeraslsError, match="without config.json is not a KerasHub preset"):
        load_config(None, [f"data.text.encoder.preset={tmp_path / 'not_a_preset'}"])


def test_a_preset_folder_beside_the_config_file_is_found_from_anywhere(preset, tmp_path, monkeypatch):
    config_file = preset.parent / "config.yaml"
    config_file.write_text(f"data:\n  text:\n    encoder: {{preset: {preset.name}}}\n")
    monkeypatch.chdir(tmp_path)
    assert load_config(config_file).data.text.encoder.preset == str(preset.resolve())


def test_per_column_encoders_merge_with_the_defaults(preset):
    text = build_config({"data": {"text": {"encoder": {"preset": str(preset), "lora_rank": 4},
                                           "columns": {"subject": {"encoder": None},
                                                       "body": {"encoder": {"sequence_length": 32}}}}}},
                        TabularConfig).data.text
    encoders = text.encoders(["subject", "body", "other"])
    assert sorted(encoders) == ["body", "other"]
    assert (encoders["body"].sequence_length, encoders["body"].lora_rank) == (32, 4)
    assert encoders["other"].sequence_length == 128


def test_without_the_extra_one_line_says_how_to_install_it(monkeypatch, preset):
    monkeypatch.setattr(encoder_settings, "encoders_installed", lambda: False)
    settings = load_config(None, [f"data.text.encoder.preset={preset}"]).data.text.encoder
    with pytest.raises(KeraslsError, match=r"column\(s\) query\) needs KerasHub.*pip install \"kerasls\[encoders\]\""):
        check_encoders_available({"query": settings})


def test_a_sequence_longer_than_the_folder_presets_positions_is_refused_before_tensorflow(preset):
    settings = load_config(None, [f"data.text.encoder.preset={preset}",
                                  "data.text.encoder.sequence_length=64"]).data.text.encoder
    with pytest.raises(KeraslsError, match="sequence_length=64 .* longer than the 32 positions"):
        check_encoders_available({"query": settings})


def test_a_preset_kerashub_cannot_classify_text_with_is_one_clear_error(tmp_path):
    import keras_hub

    folder = tmp_path / "gpt2"
    keras_hub.models.GPT2Backbone(vocabulary_size=4, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16,
                                  max_sequence_length=16).save_to_preset(str(folder))
    keras_hub.models.GPT2Tokenizer(vocabulary={"<|endoftext|>": 0, "a": 1, "Ġ": 2, "Ġa": 3},
                                   merges=["Ġ a"]).save_to_preset(str(folder))
    with pytest.raises(KeraslsError, match=r"column 'query'\): KerasHub cannot load it as a text classifier's "
                                           r"preprocessor \(Unable to find .* GPT2Backbone"):
        TabularPreprocessor([], [], ["query"], text_settings=TextConfig(encoder={"preset": str(folder)}))


# -- the tokenizer in the preprocessing, the named inputs ---------------------------------------------------------


def test_encode_keeps_the_tokens_the_layer_computes_and_counts_truncated_texts(preset, sample):
    import keras_hub

    preprocessor = encoder_preprocessor(preset)
    columns = columns_of(sample, 300)
    columns["query"][:3] = ["", "buy " * 40, "日本語 🙂"]
    preprocessor.adapt(columns)
    encoded = preprocessor.encode(columns)
    assert sorted(encoded) == ["entries", "text_query"]
    assert preprocessor.dense_width == 1 + preprocessor.category_sizes["device"]  # no TF-IDF block
    assert sorted(encoded["text_query"]) == ["padding_mask", "segment_ids", "token_ids"]
    served = tf.function(preprocessor.call, input_signature=[preprocessor.input_signature()])(
        {"minutes": tf.constant(columns["minutes"]), "device": tf.constant(columns["device"].astype(str)),
         "query": tf.constant(columns["query"].astype(str))})
    assert sorted(served) == ["categorical", "numeric", "text_query"]
    for key, tokens in encoded["text_query"].items():
        np.testing.assert_array_equal(served["text_query"][key].numpy(), tokens)
    np.testing.assert_allclose(np.concatenate([served["numeric"], served["categorical"]], axis=1),
                               preprocessor.encode_dense(columns))
    tokenizer = keras_hub.models.BertTokenizer.from_preset(str(preset))
    lengths = [len(np.asarray(tokenizer(str(text)))) for text in columns["query"]]
    assert preprocessor.truncated["query"] == sum(length > 16 - 2 for length in lengths) >= 1  # [CLS] and [SEP]
    assert encoded["text_query"]["padding_mask"][0].sum() == 2  # an empty text: [CLS] [SEP]


def test_lora_trains_only_the_adapters_and_the_head_and_the_phases_switch_between(preset, sample, float32_policy):
    preprocessor = encoder_preprocessor(preset, lora_rank=2).adapt(columns_of(sample, 200))
    model_inputs = preprocessor.model_inputs()
    model = tabular_build_model()(model_inputs, 3, SimpleNamespace(hidden_units=[8], dropout=0.0))
    encoder = model_inputs.encoders["query"].backbone
    trainable = [v.path for v in model.trainable_variables]
    adapters = [path for path in trainable if "lora_kernel" in path]
    # rank-2 A and B for the query and value projections of the one layer; KerasHub leaves their biases trainable
    assert len(adapters) == 4 and all(v.shape[-1] == 2 or v.shape[0] == 2 for v in encoder.trainable_variables
                                      if "lora_kernel" in v.path)
    in_encoder = {v.path for v in encoder.weights}
    assert sorted(set(trainable) & in_encoder) == sorted(
        adapters + [p for p in in_encoder if p.endswith(("query/bias", "value/bias"))])
    head = [path for path in trainable if path not in in_encoder]
    assert len(head) == 4  # two Dense layers: kernel and bias each
    assert len(encoder.weights) > 20
    model_inputs.freeze_encoders()
    assert [v.path for v in model.trainable_variables] == head
    model_inputs.unfreeze_encoders()
    assert [v.path for v in model.trainable_variables] == trainable


@pytest.mark.parametrize("trainable, expected", [(False, 0), (True, None)])
def test_a_frozen_encoder_leaves_only_the_head(preset, sample, float32_policy, trainable, expected):
    preprocessor = encoder_preprocessor(preset, trainable=trainable).adapt(columns_of(sample, 200))
    model_inputs = preprocessor.model_inputs()
    model = tabular_build_model()(model_inputs, 3, SimpleNamespace(hidden_units=[8], dropout=0.0))
    encoder = model_inputs.encoders["query"].backbone
    in_encoder = [v for v in model.trainable_variables if any(v is w for w in encoder.weights)]
    assert len(in_encoder) == (len(encoder.weights) if expected is None else expected)
    model_inputs.freeze_encoders()
    model_inputs.unfreeze_encoders()  # back to the configured state
    assert len([v for v in model.trainable_variables if any(v is w for w in encoder.weights)]) == len(in_encoder)


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_the_encoder_export_serves_the_logits_the_run_evaluated(preset, sample, tmp_path, policy, float32_policy):
    keras.mixed_precision.set_global_policy(policy)
    training.set_seeds(5)
    preprocessor = encoder_preprocessor(preset).adapt(columns_of(sample, 200))
    model = tabular_build_model()(preprocessor.model_inputs(), 3, SimpleNamespace(hidden_units=[16], dropout=0.0))
    for variable in model.trainable_variables:
        variable.assign(variable * 3.0)
    serving = tabular_serving(model, preprocessor)
    held_out = columns_of(sample, 400)
    held_out = {name: values[200:] for name, values in held_out.items()}
    held_out["query"][:3] = ["", "🙂🙂🙂", "我的卡在哪里"]
    evaluated = results.predict_logits(serving.evaluation_function(), held_out, batch_size=64)
    path = export_classifier(tmp_path / "export", serving, tracked=[preprocessor, model], classes=["a", "b", "c"],
                             temperature=1.5)
    assert json.loads((path / "assets" / "kerasls.json").read_text())["requires"] == ["tensorflow_text"]
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    outputs = serve(minutes=tf.constant(held_out["minutes"]), device=tf.constant(held_out["device"].astype(str)),
                    query=tf.constant(held_out["query"].astype(str)))
    assert np.abs(evaluated).max() > 1.0
    np.testing.assert_allclose(outputs["logits"].numpy(), evaluated, atol=1e-5, rtol=0)
    np.testing.assert_allclose(outputs["probabilities"].numpy(), tf.nn.softmax(evaluated / 1.5).numpy(), atol=1e-5)


@pytest.mark.e2e  # trains (in-process)
def test_the_custom_loop_of_several_workers_trains_an_encoder_model_as_model_fit(preset, sample, float32_policy):
    """`fit_multi_worker` (multi_worker's custom loop) on the named, nested inputs = `model.fit`; and a model built
    in a MirroredStrategy's scope (one CPU here) trains on the same batches."""
    from kerasls.config import TargetsConfig, TrainingConfig
    from kerasls.distributed import fit_multi_worker

    columns = columns_of(sample, 96)
    preprocessor = encoder_preprocessor(preset).adapt(columns)
    encoded = {"dense": preprocessor.encode_dense(columns), **preprocessor.encode(columns)}
    del encoded["entries"]
    targets = np.eye(3, dtype="float32")[np.random.default_rng(0).integers(0, 3, 96)]
    dataset = tf.data.Dataset.from_tensor_slices((encoded, targets)).batch(32).map(
        lambda rows, y: (preprocessor.named(rows), y))
    config = TrainingConfig(jit_compile=False, learning_rate=0.01)

    def compiled_model():
        keras.utils.set_random_seed(1)
        model = tabular_build_model()(preprocessor.model_inputs(), 3, SimpleNamespace(hidden_units=[8], dropout=0.0))
        return compile_classifier(model, config, TargetsConfig(label_smoothing=0.1))

    expected_model, model = compiled_model(), compiled_model()
    expected = expected_model.fit(dataset, validation_data=dataset, epochs=2, shuffle=False, verbose=0)
    history = fit_multi_worker(model, dataset, dataset, epochs=2, verbose=0)
    for key, values in expected.history.items():
        np.testing.assert_allclose(history.history[key], values, atol=1e-5, err_msg=key)
    for actual, wanted in zip(model.get_weights(), expected_model.get_weights()):
        np.testing.assert_allclose(actual, wanted, atol=1e-5)

    with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():
        mirrored = compiled_model()
    before = [weight.copy() for weight in mirrored.get_weights()]
    mirrored.fit(dataset, epochs=1, verbose=0)
    assert any(not np.array_equal(a, b) for a, b in zip(before, mirrored.get_weights()))


def test_lora_with_a_frozen_encoder_and_phases_without_an_encoder_are_refused(preset):
    with pytest.raises(KeraslsError, match="lora_rank=4 trains adapters, trainable: false trains nothing"):
        load_config(None, [f"data.text.encoder.preset={preset}", "data.text.encoder.lora_rank=4",
                           "data.text.encoder.trainable=false"])
    with pytest.raises(KeraslsError, match="model.freeze_backbone freezes a text encoder, and no column has one"):
        load_config(None, ["model.freeze_backbone=true"])
    assert load_config(None, ["model.freeze_backbone=true", f"data.text.encoder.preset={preset}"]).model.freeze_backbone


def test_a_packer_without_a_padding_mask_counts_truncated_texts_by_its_padding_id(tmp_path):
    """ESM's packer gives token ids only (FNet's drops the mask too): truncation is counted from the padding id."""
    import keras_hub

    from kerasls.text_encoder import TextEncoder

    folder = tmp_path / "esm"
    vocabulary = ["<pad>", "<unk>", "<cls>", "<eos>", "<mask>", "A", "C", "D", "E"]
    keras_hub.models.ESMBackbone(vocabulary_size=len(vocabulary), num_layers=1, num_heads=2, hidden_dim=8,
                                 intermediate_dim=16, max_sequence_length=16).save_to_preset(str(folder))
    keras_hub.models.ESMTokenizer(vocabulary=vocabulary).save_to_preset(str(folder))
    encoder = TextEncoder(load_config(None, [f"data.text.encoder.preset={folder}",
                                             "data.text.encoder.sequence_length=6"]).data.text.encoder, "protein")
    assert "padding_mask" not in encoder.input_keys
    tokens, truncated = encoder.tokenize(np.array(["A C", "A C D E", "A C D E A C D", ""], dtype=object))
    assert truncated == 1 and tokens["token_ids"].shape == (4, 6)


@pytest.mark.parametrize("value, expected", [
    ("gpt2_base_en", "'gpt2_base_en' looks like a decoder-only language model preset; KerasHub 0.32 has no text"),
    ("gemma2_2b_en", "looks like a decoder-only language model preset"),
    ("./no_such_preset", "preset folder './no_such_preset' not found"),
])
def test_decoder_only_names_and_missing_folders_are_named_as_such(value, expected):
    with pytest.raises(KeraslsError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        load_config(None, [f"data.text.encoder.preset={value}"])


def test_a_preset_that_cannot_be_downloaded_says_so_not_that_the_name_is_wrong(monkeypatch):
    """Offline, a valid preset name fails in KerasHub's downloader: the line says it could not be downloaded and
    how to work offline."""
    import keras_hub

    from kerasls.text_encoder import load_text_preprocessor

    class ConnectionError(OSError):  # what requests raises, by name
        pass

    def offline(*args, **kwargs):
        raise ConnectionError("HTTPSConnectionPool(host='api.kaggle.com', port=443): Max retries exceeded")

    monkeypatch.setattr(keras_hub.models.TextClassifierPreprocessor, "from_preset", offline)
    settings = load_config(None, ["data.text.encoder.preset=bert_tiny_en_uncased"]).data.text.encoder
    with pytest.raises(KeraslsError, match=r"KerasHub could not download it \(HTTPSConnectionPool.*\); it downloads a "
                                           r"preset once and caches it, so run once with network, or offline give a "
                                           r"local preset folder"):
        load_text_preprocessor(settings, "query")
