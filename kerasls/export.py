"""SavedModel exports for serving: raw inputs in, calibrated probabilities and class names out.

An export is a numbered folder `export/<version>/` as TF Serving expects. It is written to a hidden temporary
folder and renamed to the next free version number when complete, so a serving system watching the folder
never sees a half-written model, and an existing version is never overwritten.

Signature `serving_default` (the contract users and TF Serving rely on; README "Serving"):
    inputs:  the raw columns by name (rank-1 float32 or string) or `image_bytes`
    outputs: probabilities [N, K] float32 (softmax(logits / T)), class_id int64, class_name string,
             confidence float32, and logits [N, K] float32 (before temperature, for recalibration); with
             prediction sets (calibration.conformal), prediction_set [N, K] bool and set_size [N] int32; for a
             table with text columns, unreadable [N] bool (no known word or n-gram in any of them); with a
             decision rule (calibration.abstain), decision string (the class name, or the rule's label) and
             abstained [N] bool
The export needs only TensorFlow to load: `tf.saved_model.load(path).signatures["serving_default"]`; one with a text
encoder also TensorFlow Text's ops (`import tensorflow_text` first; "requires" in `assets/kerasls.json`).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from kerasls import conformal
from kerasls.data.images import decode_image
from kerasls.errors import KeraslsError
from kerasls.faults import fault_point
from kerasls.memory import check_free_space

# Prepended to a serving script run in a subprocess (tests, a generated project's own test): importing keras or
# kerasls there fails, so a script that passes proves the export serves with TensorFlow alone.
KERAS_IMPORT_BLOCKER = r"""
import builtins, json, sys
real_import = builtins.__import__
def guarded_import(name, *args, **kwargs):
    if name.split(".")[0] in ("keras", "kerasls"):
        raise ImportError("serving must not import " + name)
    return real_import(name, *args, **kwargs)
builtins.__import__ = guarded_import
"""

LABELS_FILE = "labels.txt"
# temperature, classes, label column, label smoothing, prediction-set thresholds: read by `kerasls evaluate`
METADATA_FILE = "kerasls.json"


@dataclass(frozen=True)
class Serving:
    """What an export serves, as graph functions traced once, and the one the run evaluates with.

    `logits_fn(inputs) -> logits` is `serving_default` before temperature (or a dict {"logits", "unreadable"}
    when the inputs can be unreadable, see `model_outputs`); `extra_signatures` maps a name to
    (logits function, input signature) for more endpoints with the same outputs; `evaluate` (default
    `logits_fn`) is the traced function the run's validation and test batches go through. Evaluating through
    the served graph instead of calling the model eagerly matters under mixed precision: op by op, bfloat16 or
    float16 intermediates are rounded differently from the traced graph, where oneDNN (CPU) or cuDNN (GPU)
    fuse ops (measured: probabilities 4e-3 apart on a CPU with native bfloat16). The temperature, the metrics
    and predictions.csv then describe the computation that is served, to float32 rounding.
    """

    logits_fn: Callable
    input_signature: dict
    extra_signatures: dict = field(default_factory=dict)
    evaluate: Optional[Callable] = None
    # Python packages whose ops the graph uses, to import before loading it (a text encoder's tokenizer: TensorFlow
    # Text); `assets/kerasls.json` lists them as "requires"
    requires: tuple = ()

    def evaluation_function(self) -> Callable:
        return self.evaluate or self.logits_fn


def traced(function, input_spec):
    """`function` as one graph function of `input_spec` (a `tf.TensorSpec` or a dict of them), traced once."""
    return tf.function(function, input_signature=[input_spec], autograph=False)  # Keras layers need no autograph


def model_outputs(result) -> dict:
    """A serving function's result as {"logits"[, "unreadable"]}: a tensor is the logits."""
    return result if isinstance(result, dict) else {"logits": result}


def tabular_serving(model, preprocessor) -> Serving:
    """`serving_default` of a table model: raw columns by name -> preprocessing layer -> model -> logits, and for a
    table with text columns the rows none of whose text the preprocessing knows (`unreadable`)."""
    signature = preprocessor.input_signature()

    def outputs(inputs):
        named, unreadable = preprocessor.call_with_flags(inputs)
        logits = model(named, training=False)
        return {"logits": logits, "unreadable": unreadable} if preprocessor.text else logits

    logits = traced(outputs, signature)
    return Serving(logits_fn=logits, input_signature=signature,
                   requires=("tensorflow_text",) if preprocessor.encoders else ())


def next_version(export_root) -> int:
    export_root = Path(export_root)
    if not export_root.exists():
        return 1
    versions = [int(p.name) for p in export_root.iterdir() if p.is_dir() and p.name.isdigit()]
    return max(versions, default=0) + 1


# Up to this many classes the export computes softmax as exp(log_softmax): on x86 CPUs TensorFlow runs Softmax
# through oneDNN (its default), whose kernel costs a fixed 110-210 us per 1,024 rows whatever the number of classes,
# against 25-55 us for exp(log_softmax) with 2-20 classes (and more than Softmax from 40 classes up). One row costs
# the same either way; the two agree to float32 rounding.
FEW_CLASSES = 20


def calibrated_probabilities(logits, temperature):
    """softmax(logits / T) over the last axis (see FEW_CLASSES)."""
    scaled = logits / temperature
    if scaled.shape[-1] is not None and scaled.shape[-1] <= FEW_CLASSES:
        return tf.exp(tf.nn.log_softmax(scaled, axis=-1))
    return tf.nn.softmax(scaled, axis=-1)


def classifier_outputs(logits, temperature, class_names, set_predictor=None, decision_rule=None, unreadable=None):
    """The serving outputs from logits: the one place temperature, class names, prediction sets and decisions are
    applied. `unreadable` (bool [N], or None) is an output as given, and makes a row abstain."""
    logits = tf.cast(logits, tf.float32)
    probabilities = calibrated_probabilities(logits, temperature)
    class_id = tf.argmax(probabilities, axis=-1, output_type=tf.int64)
    outputs = {
        "probabilities": probabilities,
        "class_id": class_id,
        "class_name": tf.gather(class_names, class_id),
        "confidence": tf.reduce_max(probabilities, axis=-1),
        "logits": logits,
    }
    if set_predictor is not None:
        outputs.update(set_outputs(probabilities, set_predictor, num_classes=class_names.shape[0]))
    if unreadable is not None:
        outputs["unreadable"] = unreadable
    if decision_rule is not None:
        outputs.update(decision_outputs(outputs, decision_rule, unreadable))
    return outputs


def decision_outputs(outputs, rule, unreadable=None):
    """`abstained` bool [N] and `decision` string [N] (the class name, or the rule's label) of `rule`
    (kerasls.decisions.DecisionRule): confidence below the threshold, or an empty LAC set (computed as
    `set_outputs` computes it, so `abstained` equals `set_size == 0`); an unreadable row always abstains."""
    threshold = tf.constant(rule.threshold, tf.float32)
    if rule.rule == "conformal":
        abstained = tf.logical_not(tf.reduce_any(1.0 - outputs["probabilities"] <= threshold, axis=-1))
    else:
        abstained = outputs["confidence"] < threshold
    if unreadable is not None:
        abstained |= unreadable
    return {"abstained": abstained, "decision": tf.where(abstained, tf.constant(rule.label), outputs["class_name"])}


def set_outputs(probabilities, set_predictor, num_classes):
    """`prediction_set` bool [N, K] and `set_size` int32 [N]: `conformal.prediction_sets` of the calibrated
    probabilities at the stored threshold, in the graph (float32, so a row whose score is within float32 rounding of
    the threshold can differ from the run's float64 sets)."""
    threshold = tf.constant(set_predictor.threshold, tf.float32)
    if set_predictor.score == "lac":
        in_set = 1.0 - probabilities <= threshold
    else:
        ordered = tf.sort(probabilities, axis=-1, direction="DESCENDING")
        penalty = conformal.penalties(num_classes, set_predictor.score, set_predictor.raps_lambda,
                                      set_predictor.raps_k_reg)
        by_place = tf.cumsum(ordered, axis=-1, exclusive=True) + tf.constant(penalty, tf.float32)
        places = tf.maximum(tf.reduce_sum(tf.cast(by_place <= threshold, tf.int32), axis=-1), 1)
        in_set = probabilities >= tf.gather(ordered, places - 1, axis=-1, batch_dims=1)[:, tf.newaxis]
    return {"prediction_set": in_set, "set_size": tf.reduce_sum(tf.cast(in_set, tf.int32), axis=-1)}


def export_classifier(export_root, serving: Serving, *, tracked, classes, temperature=1.0, set_predictor=None,
                      metadata=None, decision_rule=None) -> Path:
    """Write a new version folder serving `serving` (its `input_signature` is a dict of `tf.TensorSpec`, one per
    raw input); `tracked`: the layers and models its functions use; `set_predictor` (a conformal.SetPredictor):
    add its prediction sets to the outputs and its thresholds to `assets/kerasls.json`; `decision_rule`
    (kerasls.decisions.DecisionRule): add `decision` and `abstained`, and the rule to `assets/kerasls.json`."""
    import keras  # only the writer needs keras; the written export does not

    export_root = Path(export_root)
    export_root.mkdir(parents=True, exist_ok=True)
    class_names = tf.constant([str(c) for c in classes])
    temperature_tensor = tf.constant(float(temperature), tf.float32)

    def endpoint(function):
        def outputs(inputs):
            result = model_outputs(function(inputs))
            return classifier_outputs(result["logits"], temperature_tensor, class_names, set_predictor,
                                      decision_rule, result.get("unreadable"))
        return outputs

    archive = keras.export.ExportArchive()
    for resource in tracked:
        archive.track(resource)
    archive.add_endpoint("serving_default", endpoint(serving.logits_fn), input_signature=[serving.input_signature])
    for name, (function, signature) in serving.extra_signatures.items():
        archive.add_endpoint(name, endpoint(function), input_signature=[signature])

    remove_abandoned_temp_dirs(export_root)
    weights = sum(int(np.prod(variable.shape)) * tf.as_dtype(variable.dtype).size for resource in tracked
                  for variable in getattr(resource, "variables", []))
    check_free_space(export_root, 2 * weights + (32 << 20), "writing the export")  # variables, graph, assets
    temp_dir = export_root / f".tmp-{os.getpid()}-{uuid.uuid4().hex}"
    try:
        archive.write_out(str(temp_dir), verbose=False)
        (temp_dir / "assets").mkdir(exist_ok=True)
        (temp_dir / "assets" / LABELS_FILE).write_text("".join(f"{c}\n" for c in classes), encoding="utf-8")
        description = {"classes": [str(c) for c in classes], "temperature": float(temperature), **(metadata or {})}
        if serving.requires:
            description["requires"] = list(serving.requires)
        if set_predictor is not None:
            description["conformal"] = set_predictor.to_json()
        if decision_rule is not None:
            description["decision"] = decision_rule.to_json()
        (temp_dir / "assets" / METADATA_FILE).write_text(json.dumps(description, indent=2), encoding="utf-8")
        fault_point("export")  # written but not yet renamed: no numbered version may appear
        while True:
            version_dir = export_root / str(next_version(export_root))
            try:
                os.rename(temp_dir, version_dir)  # fails if the version appeared meanwhile: never overwrite
                break
            except OSError:
                if not version_dir.exists():
                    raise
    finally:
        if temp_dir.exists():
            shutil.rmtree(temp_dir, ignore_errors=True)
    return version_dir


def remove_abandoned_temp_dirs(export_root: Path) -> None:
    """Delete `.tmp-<pid>-*` folders of exports whose writing process died (killed mid-export)."""
    for folder in export_root.glob(".tmp-*"):
        pid = folder.name.split("-")[1]
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                shutil.rmtree(folder, ignore_errors=True)
            except PermissionError:
                pass


def resolve_export(path) -> Path:
    """An export folder, an export root holding numbered versions (the newest is taken), or a run folder (its
    export root)."""
    path = Path(path)
    if (path / "saved_model.pb").is_file():
        return path
    for root in (path, path / "export"):
        if root.is_dir():
            versions = sorted(int(p.name) for p in root.iterdir()
                              if p.name.isdigit() and (p / "saved_model.pb").is_file())
            if versions:
                return root / str(versions[-1])
    raise KeraslsError(f"{path}: not a SavedModel export (no saved_model.pb); pass a run folder runs/<run>, its "
                       "export/ or export/<version>")


def import_required_ops(export_dir: Path) -> None:
    """Import the packages an export's graph needs ops from (`requires` in `assets/kerasls.json`: TensorFlow Text
    for a text encoder's tokenizer), or one line saying how to install them."""
    metadata_path = export_dir / "assets" / METADATA_FILE
    if not metadata_path.is_file():
        return
    for package in json.loads(metadata_path.read_text(encoding="utf-8")).get("requires", []):
        try:
            __import__(package)
        except ImportError:
            raise KeraslsError(f"{export_dir}: this export's tokenizer needs the {package} package's ops; install "
                               f"it (pip install {package.replace('_', '-')}) in the process that loads it") from None


def load_serving_function(path):
    """(serving function, {input name: tf.TensorSpec}, class names, the loaded object) of an export."""
    export_dir = resolve_export(path)
    import_required_ops(export_dir)
    loaded = tf.saved_model.load(str(export_dir))
    function = loaded.signatures["serving_default"]
    _, input_specs = function.structured_input_signature
    labels_path = export_dir / "assets" / LABELS_FILE
    classes = labels_path.read_text(encoding="utf-8").splitlines() if labels_path.is_file() else None
    return function, dict(input_specs), classes, loaded


def image_serving(model, image_size, channels) -> Serving:
    """`serving_default` of an image model takes `image_bytes` (a batch of encoded JPEG/PNG/BMP/GIF strings),
    decoded and resized in the graph exactly as training did; `serving_tensor` takes `images`, float32
    [N, H, W, C] in [0, 255]. Both run one traced model function, which is also what the run evaluates with
    (its datasets hold decoded images)."""
    height, width = image_size
    images_spec = tf.TensorSpec([None, height, width, channels], tf.float32, name="images")
    model_logits = traced(lambda images: model(images, training=False), images_spec)

    def from_bytes(inputs):
        images = tf.map_fn(lambda encoded: decode_image(encoded, image_size, channels), inputs["image_bytes"],
                           fn_output_signature=tf.TensorSpec([height, width, channels], tf.float32))
        return model_logits(images)

    return Serving(
        logits_fn=from_bytes,
        input_signature={"image_bytes": tf.TensorSpec([None], tf.string, name="image_bytes")},
        extra_signatures={"serving_tensor": (lambda inputs: model_logits(inputs["images"]), {"images": images_spec})},
        evaluate=model_logits,
    )
