"""kerasls: Keras 3 project templates for soft-target classification with label smoothing and calibration.

The public API is `__all__`: the names a generated project's `train.py`, `model.py` and tests use, as `kerasls.<name>`
or `from kerasls import <name>`. Generated projects outlive the kerasls version that made them, so these names stay
while the modules behind them move; anything else (`kerasls.<module>.<name>`) is internal.

Importing `kerasls` does not import TensorFlow: each name is loaded from its module on first use (PEP 562), so
`check_before_tensorflow` and the config classes run in a second, and the names that need TensorFlow import it
when they are first touched.
"""

import importlib
import os

# TensorFlow's C++ start-up chatter (CUDA probing, CPU feature notes) hides kerasls' own output; a user who wants
# it back sets TF_CPP_MIN_LOG_LEVEL=0.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

# public name -> (module, name in that module)
_PUBLIC = {
    # before TensorFlow: the command line, the config, one-line errors
    "check_before_tensorflow": ("kerasls.run", "check_before_tensorflow"),
    "quiet_tensorflow": ("kerasls.startup", "quiet_tensorflow"),
    "TabularConfig": ("kerasls.config", "TabularConfig"),
    "ImageConfig": ("kerasls.config", "ImageConfig"),
    "load_config": ("kerasls.config", "load_config"),
    "KeraslsError": ("kerasls.errors", "KeraslsError"),
    "run_with_clear_errors": ("kerasls.errors", "run_with_clear_errors"),
    # the run folder
    "read_command_line": ("kerasls.run", "read_command_line"),
    "start_run": ("kerasls.run", "start_run"),
    # data
    "TableFeed": ("kerasls.table_feed", "TableFeed"),
    "ImageFeed": ("kerasls.image_feed", "ImageFeed"),
    "ModelInputs": ("kerasls.preprocessing", "ModelInputs"),
    "build_augmenter": ("kerasls.augmentation", "build_augmenter"),
    "build_mixer": ("kerasls.augmentation", "build_mixer"),
    "warn_about_targets": ("kerasls.guardrails", "warn"),
    # model and recipe
    "image_backbone": ("kerasls.models", "image_backbone"),
    "set_seeds": ("kerasls.training", "set_seeds"),
    "configure_precision": ("kerasls.training", "configure_precision"),
    "distribution_strategy": ("kerasls.training", "distribution_strategy"),
    "describe_setup": ("kerasls.training", "describe_setup"),
    "uses_xla": ("kerasls.training", "uses_xla"),
    "steps_per_epoch": ("kerasls.training", "steps_per_epoch"),
    "make_optimizer": ("kerasls.training", "make_optimizer"),
    "make_loss": ("kerasls.training", "make_loss"),
    "make_metrics": ("kerasls.training", "make_metrics"),
    "validation_score": ("kerasls.training", "validation_score"),
    "standard_callbacks": ("kerasls.training", "standard_callbacks"),
    "fit": ("kerasls.training", "fit"),
    "epochs_done": ("kerasls.training", "epochs_done"),
    "describe_trainable": ("kerasls.training", "describe_trainable"),
    "save_keras_model": ("kerasls.training", "save_keras_model"),
    # calibration, prediction sets, decisions
    "check_validation_rows": ("kerasls.results", "check_validation_rows"),
    "calibrate": ("kerasls.results", "calibrate"),
    "SetPredictor": ("kerasls.conformal", "SetPredictor"),
    "DecisionRule": ("kerasls.decisions", "DecisionRule"),
    # export and report
    "export_classifier": ("kerasls.export", "export_classifier"),
    "KERAS_IMPORT_BLOCKER": ("kerasls.export", "KERAS_IMPORT_BLOCKER"),
    "report_run": ("kerasls.results", "report_run"),
    "headline": ("kerasls.results", "headline"),
    "metrics_from_predictions": ("kerasls.results", "metrics_from_predictions"),
}

__all__ = sorted(_PUBLIC)


def __getattr__(name):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'kerasls' has no attribute {name!r}")
    module, attribute = _PUBLIC[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # loaded once
    return value


def __dir__():
    return sorted([*globals(), *__all__])
