"""A tabular-intent project with a pretrained text encoder (`data.text.encoder`), trained through its train.py:
the export serves raw text without kerasls or KerasHub and equals predictions.csv, LoRA with the freeze-then-
fine-tune phases, crash resume, the loaded weights are the preset's, `kerasls predict` / `evaluate`, and an
encoder export as a distillation teacher. The presets are tiny BERTs made here (scripts/make_tiny_encoder.py).
"""

import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from conftest import KERAS_IMPORT_BLOCKER, run_train

from kerasls.templates_index import render_template

pytest.importorskip("keras_hub", reason="the encoders extra (keras-hub, tensorflow-text) is not installed here")
ROOT = Path(__file__).resolve().parents[1]
ENCODER = ["data.text.encoder.preset=encoder", "data.text.encoder.sequence_length=16"]
ODD_TEXTS = ["", "🙂🙂🙂", "我的卡在哪里", "refund " * 30]  # empty, emoji, another script, truncated

# Serving in a process that imports TensorFlow Text (its tokenizer ops; it imports keras, which runs nothing here)
# and may not import kerasls or keras_hub: the export tests' blocker with those two names.
SERVE = "import tensorflow_text  # noqa: F401\n" + KERAS_IMPORT_BLOCKER.replace(
    '("keras", "kerasls")', '("kerasls", "keras_hub")') + r"""
import pandas as pd
import tensorflow as tf
export, rows = sys.argv[1], pd.read_csv(sys.argv[2], dtype=str, keep_default_na=False)
serve = tf.saved_model.load(export).signatures["serving_default"]
specs = serve.structured_input_signature[1]
inputs = {name: tf.constant(pd.to_numeric(rows[name]).to_numpy("float32") if spec.dtype == tf.float32 else
                            rows[name].to_numpy(dtype=object).astype(str)) for name, spec in specs.items()}
out = serve(**inputs)
print(json.dumps({"probabilities": out["probabilities"].numpy().tolist(),
                  "class_name": [name.decode() for name in out["class_name"].numpy()]}))
"""


def make_tiny_preset(*args, **kwargs):
    spec = importlib.util.spec_from_file_location("make_tiny_encoder", ROOT / "scripts" / "make_tiny_encoder.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_tiny_preset(*args, **kwargs)


def last_run(project, result):
    assert result.returncode == 0, result.stderr[-4000:]
    return project / result.stdout.strip().splitlines()[-1].removeprefix("run: ")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """The sample project with a random-init tiny BERT preset in `encoder/`; test rows with odd texts."""
    root = tmp_path_factory.mktemp("encoder")
    project = render_template("tabular-intent", output_dir=root, extra_context={"project_slug": "tickets"})
    train = pd.read_csv(project / "data" / "train.csv", dtype=str, keep_default_na=False)
    make_tiny_preset(project / "encoder", train["search_query"].tolist(), layers=1, hidden=16, max_sequence_length=32)
    rows = pd.read_csv(project / "data" / "test.csv", dtype=str, keep_default_na=False).head(60)
    rows.loc[rows.index[:len(ODD_TEXTS)], "search_query"] = ODD_TEXTS
    rows.to_csv(project / "eval_rows.csv", index=False)
    return project


@pytest.fixture(scope="module")
def lora_run(project):
    """LoRA (rank 2) behind a frozen first epoch: head only, then the adapters at the fine-tuning rate."""
    result = run_train(project, *ENCODER, "data.text.encoder.lora_rank=2", "model.freeze_backbone=true",
                       "model.fine_tune_epochs=1", "model.fine_tune_learning_rate=0.001", "training.epochs=1",
                       "training.verbose=2", "data.test=eval_rows.csv", "--run-name", "lora")
    return last_run(project, result), result.stdout


def test_the_export_serves_raw_text_without_kerasls_or_keras_hub_as_the_run_evaluated(project, lora_run):
    run, stdout = lora_run
    assert "text_search_query [16 tokens" in stdout
    history = pd.read_csv(run / "history.csv")
    assert len(history) == 2  # one frozen epoch, one fine-tuning epoch
    served = subprocess.run([sys.executable, "-c", SERVE, str(run / "export" / "1"), str(project / "eval_rows.csv")],
                            capture_output=True, text=True, timeout=300)
    assert served.returncode == 0, served.stderr[-3000:]
    outputs = json.loads(served.stdout.strip().splitlines()[-1])
    predictions = pd.read_csv(run / "predictions.csv")
    classes = json.loads((run / "metrics.json").read_text())["classes"]
    np.testing.assert_allclose(np.array(outputs["probabilities"]),
                               predictions[[f"calibrated_prob_{c}" for c in classes]].to_numpy(), atol=1e-5)
    assert len(outputs["class_name"]) == 60 and set(outputs["class_name"]) <= set(classes)
    metadata = json.loads((run / "export" / "1" / "assets" / "kerasls.json").read_text())
    assert metadata["requires"] == ["tensorflow_text"]


def h5_arrays(path, prefix=""):
    arrays = {}
    with h5py.File(path) as weights:
        weights.visititems(lambda name, item: arrays.__setitem__(name.removeprefix(prefix), item[()])
                           if hasattr(item, "shape") and name.startswith(prefix) else None)
    return arrays


def test_lora_fine_tuning_changes_only_the_adapters(project, lora_run):
    """Keras saves a LoRA layer's kernel with its adapters merged in (W + A·B). After training, the backbone's
    weights equal the preset's but for the query and value projections, the layers LoRA adapted."""
    run, _ = lora_run
    trained = h5_arrays(run / "checkpoints" / "best.weights.h5", prefix="layers/bert_backbone/")
    preset = h5_arrays(project / "encoder" / "model.weights.h5")
    assert len(preset) > 20 and set(preset) <= set(trained)
    changed = sorted(name for name in preset if not np.array_equal(preset[name], trained[name]))
    attention = "layers/transformer_encoder/_self_attention_layer/"
    assert changed == [f"{attention}query_dense/vars/0", f"{attention}query_dense/vars/1",
                       f"{attention}value_dense/vars/0", f"{attention}value_dense/vars/1"]


def test_kerasls_predict_and_evaluate_take_the_encoder_export(project, lora_run, tmp_path):
    run, _ = lora_run
    out = tmp_path / "predicted.csv"
    predicted = subprocess.run([sys.executable, "-m", "kerasls.cli", "predict", str(run / "export"),
                                str(project / "eval_rows.csv"), "-o", str(out)], capture_output=True, text=True,
                               timeout=300)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    table = pd.read_csv(out, keep_default_na=False)
    assert len(table) == 60 and table.loc[0, "search_query"] == "" and table["predicted_class"].ne("").all()
    evaluated = subprocess.run([sys.executable, "-m", "kerasls.cli", "evaluate", str(run / "export"),
                                str(project / "eval_rows.csv"), "-o", str(tmp_path / "evaluation")],
                               capture_output=True, text=True, timeout=300)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    metrics = json.loads((tmp_path / "evaluation" / "metrics.json").read_text())
    expected = json.loads((run / "metrics.json").read_text())
    assert metrics["n"] == 60 and abs(metrics["accuracy"] - expected["accuracy"]) < 1e-9


def test_a_killed_encoder_run_resumes_to_the_unbroken_result(project):
    args = [*ENCODER, "training.epochs=2", "training.verbose=0", "training.early_stopping=0"]
    unbroken = last_run(project, run_train(project, *args, "--run-name", "unbroken"))
    env = {**os.environ, "KERASLS_FAULT": "batch:30"}  # epoch 2 of 25 batches, half done
    killed = subprocess.run([sys.executable, "train.py", *args, "--run-name", "killed"], cwd=project, env=env,
                            capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    resumed = last_run(project, run_train(project, *args, "--run-name", "killed"))
    np.testing.assert_allclose(pd.read_csv(resumed / "history.csv").to_numpy(),
                               pd.read_csv(unbroken / "history.csv").to_numpy(), atol=1e-5)
    np.testing.assert_allclose(pd.read_csv(resumed / "predictions.csv").filter(like="prob_").to_numpy(),
                               pd.read_csv(unbroken / "predictions.csv").filter(like="prob_").to_numpy(), atol=1e-5)


@pytest.mark.parametrize("student", [[], ENCODER + ["targets.prior=class_prior"]], ids=["tf_idf", "encoder"])
def test_an_encoder_export_teaches_a_student(project, lora_run, student):
    """Distillation both ways an encoder takes part: the teacher's logits come from the encoder export (TensorFlow
    Text imported for it), the student is a TF-IDF model or an encoder model smoothed toward the class prior."""
    run, _ = lora_run
    result = run_train(project, *student, f"targets.soft_labels.teacher={run / 'export'}",
                       "targets.soft_labels.temperature=2", "training.epochs=1", "training.verbose=2")
    trained = last_run(project, result)
    history = pd.read_csv(trained / "history.csv")
    assert {"nll", "accuracy", "val_nll"} <= set(history.columns)  # the hard part of the distillation targets
    assert json.loads((trained / "metrics.json").read_text())["n"] == 500
    assert ("text_search_query [16 tokens" in result.stdout) == bool(student)


def keyword_table(rows, rng, classes, keywords, noise):
    """Texts of one class keyword among four noise words: the class is in the text and nowhere else."""
    labels = rng.choice(classes, rows)
    texts = [" ".join(rng.permutation([rng.choice(keywords[label]), *rng.choice(noise, 4)])) for label in labels]
    return pd.DataFrame({"message": texts, "intent": labels})


def test_the_presets_trained_weights_are_loaded_not_reinitialised(tmp_path):
    """Ten intents, each named by one of its four keywords among noise words. A tiny BERT trained on the task
    (saved as a preset) and the same architecture at random initialisation, both frozen under a linear head:
    only the first can tell the intents apart."""
    rng = np.random.default_rng(0)
    syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "ze", "po", "qu", "fa", "de", "bo", "hi", "ju"]

    def word():
        return "".join(rng.choice(syllables, 3))

    classes = [f"intent{k}" for k in range(10)]
    keywords = {label: [word() for _ in range(4)] for label in classes}
    noise = [word() for _ in range(200)]
    project = render_template("tabular-intent", output_dir=tmp_path, extra_context={"project_slug": "keywords",
                                                                                    "sample_data": "no"})
    train = keyword_table(2000, rng, classes, keywords, noise)
    train.to_csv(project / "data" / "train.csv", index=False)
    keyword_table(500, rng, classes, keywords, noise).to_csv(project / "data" / "test.csv", index=False)
    texts, labels = train["message"].tolist(), train["intent"].tolist()
    make_tiny_preset(project / "trained", texts, labels, epochs=8, learning_rate=5e-3, layers=1, hidden=16,
                     max_sequence_length=16)
    make_tiny_preset(project / "random", texts, None, layers=1, hidden=16, max_sequence_length=16)
    accuracy = {}
    for preset in ("trained", "random"):
        result = run_train(project, f"data.text.encoder.preset={preset}", "data.text.encoder.sequence_length=16",
                           "data.text.encoder.trainable=false", "data.test=data/test.csv", "model.hidden_units=[]",
                           "training.epochs=5", "training.learning_rate=0.01", "training.verbose=0")
        assert "Trainable params: 170 " in result.stdout  # the linear head over 16 features: 16 x 10 + 10
        accuracy[preset] = json.loads((last_run(project, result) / "metrics.json").read_text())["accuracy"]
    assert accuracy["random"] < 0.2 < 0.5 < accuracy["trained"], accuracy  # chance is 0.1
