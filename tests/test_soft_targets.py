"""Soft-target sources end to end on tables: probability and vote columns, teacher distillation, guardrails."""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from conftest import run_train

from kerasls import teacher
from kerasls.config import AugmentConfig, TargetsConfig
from kerasls.errors import KeraslsError
from kerasls.guardrails import target_warnings
from kerasls.losses import distillation_loss

CLASSES = ["browse", "purchase", "support"]


def log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


@pytest.mark.parametrize("alpha, temperature, epsilon", [(0.5, 4.0, 0.0), (0.3, 2.0, 0.1), (1.0, 3.0, 0.05)])
def test_distillation_loss_matches_hinton_closed_form(alpha, temperature, epsilon):
    rng = np.random.default_rng(0)
    logits, teacher_logits = rng.normal(size=(32, 5)) * 2, rng.normal(size=(32, 5)) * 3
    hard = np.eye(5)[rng.integers(0, 5, 32)]
    q = np.exp(log_softmax(teacher_logits / temperature))
    packed = np.concatenate([hard, q], axis=1).astype(np.float32)
    smoothed = hard * (1 - epsilon) + epsilon / 5
    expected = (alpha * -(smoothed * log_softmax(logits)).sum(1)
                + (1 - alpha) * temperature**2 * (q * (np.log(q) - log_softmax(logits / temperature))).sum(1))
    got = distillation_loss(packed, logits.astype(np.float32), alpha, temperature, epsilon)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-6)


def test_t_squared_keeps_the_soft_gradient_scale_across_temperatures():
    """Hinton et al. 2015: d/dz KL(q_T || p_T) shrinks like 1/T^2 at high T; the T^2 factor cancels it."""
    rng = np.random.default_rng(1)
    student, teacher_logits = rng.normal(size=(64, 4)), rng.normal(size=(64, 4))
    norms = {}
    for temperature in (4.0, 8.0, 16.0):
        q = np.exp(log_softmax(teacher_logits / temperature))
        packed = tf.constant(np.concatenate([np.eye(4)[np.zeros(64, int)], q], axis=1), tf.float32)
        z = tf.Variable(student, dtype=tf.float32)
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(distillation_loss(packed, z, alpha=0.0, temperature=temperature))
        norms[temperature] = float(tf.norm(tape.gradient(loss, z)))
    assert norms[16.0] / norms[4.0] == pytest.approx(1.0, abs=0.1)  # without T^2 this ratio would be ~1/16


def test_pack_is_hard_then_teacher_softmax():
    packed = teacher.pack(np.eye(2, dtype=np.float32), np.array([[2.0, 0.0], [0.0, 0.0]]), 2.0)
    np.testing.assert_allclose(packed[:, :2], np.eye(2))
    np.testing.assert_allclose(packed[0, 2:], [np.e / (np.e + 1), 1 / (np.e + 1)], rtol=1e-6)


def soft_table(source: Path, out: Path, kind="prob", rng_seed=0, vote_names=None):
    """The sample rows with per-row label distributions (or vote counts) derived from the hard label."""
    frame = pd.read_csv(source)
    rng = np.random.default_rng(rng_seed)
    hard = np.eye(3)[frame["intent"].map(CLASSES.index).to_numpy()]
    if kind == "prob":
        dist = 0.7 * hard + 0.3 * rng.dirichlet(np.ones(3), len(frame))
        for k, name in enumerate(CLASSES):
            frame[f"prob_{name}"] = dist[:, k].round(6)
        frame[f"prob_{CLASSES[0]}"] = 1.0 - frame[[f"prob_{c}" for c in CLASSES[1:]]].sum(axis=1)
    else:
        votes = rng.multinomial(1, [1 / 3] * 3, size=(len(frame), 2)).sum(1) + (hard * 3).astype(int)
        for k, name in enumerate(CLASSES):
            frame[(vote_names or {}).get(name, f"votes_{name}")] = votes[:, k]
    frame.to_csv(out, index=False)
    return frame


def last_run(result):
    assert result.returncode == 0, result.stderr[-3000:]
    return Path(result.stdout.strip().splitlines()[-1].removeprefix("run: "))


def test_probability_columns_train_and_report_soft_metrics(trained_project, tmp_path):
    data = trained_project.project / "data"
    soft_table(data / "train.csv", tmp_path / "train.csv")
    test = soft_table(data / "test.csv", tmp_path / "test.csv", rng_seed=1)
    result = run_train(trained_project.project, "training.epochs=2", "training.verbose=0", "data.features=null",
                       "targets.label_smoothing=0", f"data.train={tmp_path / 'train.csv'}",
                       f"data.test={tmp_path / 'test.csv'}",
                       "targets.soft_labels={probabilities: [prob_support, prob_browse, prob_purchase]}")
    run = last_run(result)
    metrics = json.loads((run / "metrics.json").read_text())
    predictions = pd.read_csv(run / "predictions.csv")
    probabilities = predictions[[f"prob_{c}" for c in CLASSES]].to_numpy()
    q = test[[f"prob_{c}" for c in CLASSES]].to_numpy()  # bound by name, whatever the listed order
    q = q / q.sum(axis=1, keepdims=True)
    assert metrics["soft_ce"] == pytest.approx(float(-(q * np.log(probabilities)).sum(1).mean()), rel=1e-4)
    assert metrics["soft_kl"] == pytest.approx(metrics["soft_ce"] + float((q * np.log(q)).sum(1).mean()),
                                               abs=1e-4)
    signature = json.loads((Path(metrics["export_path"]) / "assets" / "kerasls.json").read_text())
    import tensorflow as tf_  # the export's inputs: features only, never the probability columns
    inputs = tf_.saved_model.load(metrics["export_path"]).signatures["serving_default"].structured_input_signature[1]
    assert not any(name.startswith("prob_") for name in inputs) and "pages_viewed" in inputs
    assert signature["classes"] == CLASSES
    assert "warning: label_smoothing" not in result.stderr  # ε = 0: nothing compounds


def test_vote_counts_with_mapping_and_add_alpha_smoothing(trained_project, tmp_path):
    names = {"browse": "n_browse", "purchase": "n_buy", "support": "n_help"}
    data = trained_project.project / "data"
    soft_table(data / "train.csv", tmp_path / "train.csv", kind="votes", vote_names=names)
    test = soft_table(data / "test.csv", tmp_path / "test.csv", kind="votes", rng_seed=1, vote_names=names)
    result = run_train(trained_project.project, "training.epochs=2", "training.verbose=0",
                       f"data.train={tmp_path / 'train.csv'}", f"data.test={tmp_path / 'test.csv'}",
                       "targets.soft_labels={votes: {browse: n_browse, purchase: n_buy, support: n_help}, "
                       "vote_smoothing: 1.0}")
    run = last_run(result)
    assert "label_smoothing=0.1 on top of soft votes" in result.stderr  # the guardrail, once
    assert result.stderr.count("warning: label_smoothing") == 1
    metrics = json.loads((run / "metrics.json").read_text())
    counts = test[[names[c] for c in CLASSES]].to_numpy(float)
    q = (counts + 1.0) / (counts.sum(1, keepdims=True) + 3.0)
    probabilities = pd.read_csv(run / "predictions.csv")[[f"prob_{c}" for c in CLASSES]].to_numpy()
    assert metrics["soft_ce"] == pytest.approx(float(-(q * np.log(probabilities)).sum(1).mean()), rel=1e-4)


@pytest.mark.parametrize("edit, expected", [
    (lambda f: f.__setitem__("prob_browse", f["prob_browse"].where(f.index != 3, 0.5)),
     r"train.csv: line 5: columns \['prob_browse', 'prob_purchase', 'prob_support'\] sum to"),
    (lambda f: f.__setitem__("prob_support", f["prob_support"].where(f.index != 0, -0.2)),
     r"train.csv: line 2: column 'prob_support' is negative"),
    (lambda f: f.drop(columns=["prob_purchase"], inplace=True), r"column 'prob_purchase' not found"),
])
def test_bad_soft_rows_are_one_line_naming_line_and_column(trained_project, tmp_path, edit, expected):
    frame = soft_table(trained_project.project / "data" / "train.csv", tmp_path / "train.csv")
    edit(frame)
    frame.to_csv(tmp_path / "train.csv", index=False)
    result = run_train(trained_project.project, f"data.train={tmp_path / 'train.csv'}",
                       "targets.soft_labels={probabilities: [prob_browse, prob_purchase, prob_support]}")
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and re.search(expected, last), last
    assert "Traceback" not in result.stderr


def test_teacher_distillation_trains_a_student_and_caches_teacher_logits(trained_project):
    project = trained_project.project
    export = trained_project.run / "export"
    args = ["training.epochs=6", "training.verbose=0", "model.hidden_units=[16]",
            f"targets.soft_labels={{teacher: {export}, temperature: 2, alpha: 0.5}}"]
    first = last_run(run_train(project, *args))
    caches = list((project / ".kerasls_cache" / "teacher").glob("*.npz"))
    assert len(caches) >= 1
    stamps = {path: path.stat().st_mtime_ns for path in caches}
    metrics = json.loads((first / "metrics.json").read_text())
    # better than always answering the most frequent class of the evaluated rows (the project's test.csv)
    evaluated = pd.read_csv(project / "data" / "test.csv")["intent"]
    assert metrics["accuracy"] > evaluated.value_counts(normalize=True).max() + 0.02, metrics["accuracy"]
    assert metrics["nll"] < np.log(3)  # and better calibrated than a uniform guess
    history = pd.read_csv(first / "history.csv")
    assert {"loss", "nll", "accuracy", "val_nll"} <= set(history.columns)
    last_run(run_train(project, *args))
    assert {path: path.stat().st_mtime_ns for path in caches} == stamps  # computed once, reused


def test_teacher_with_other_classes_is_refused(trained_project):
    with pytest.raises(KeraslsError, match="the teacher's classes .* differ from the student's"):
        teacher.load_teacher(trained_project.run / "export", ["support", "purchase", "browse"])


def test_guardrails_name_what_compounds():
    assert target_warnings(TargetsConfig(label_smoothing=0.0, soft_labels={"votes": ["votes_a"]})) == []
    [message] = target_warnings(TargetsConfig(label_smoothing=0.1, soft_labels={"probabilities": ["prob_a"]}))
    assert "q(1-0.1) + 0.1/K" in message and "targets.label_smoothing=0" in message
    [mixing] = target_warnings(TargetsConfig(label_smoothing=0.1),
                               AugmentConfig(mixup={"alpha": 0.2, "probability": 0.5}))
    assert mixing.startswith("MixUp on top of label_smoothing=0.1")
    mixing = AugmentConfig(mixup={"alpha": 0.2, "probability": 0.5})
    assert target_warnings(TargetsConfig(label_smoothing=0.0), mixing) == []
