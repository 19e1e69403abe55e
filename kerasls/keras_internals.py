"""Every Keras private attribute kerasls relies on, in one place (written against Keras 3.15).

Keras has no public way to move the first epoch of a running `fit` from a callback's `on_train_begin` (how
`resume.EpochState` resumes a run, and how the multi-worker loop learns the restored epoch):
`Model._initial_epoch`, which `fit` reads after `on_train_begin`. Nor to list a model's nested layers
(`_flatten_layers`) or to set one layer's `trainable` flag without setting its sublayers' and variables' (`_trainable`):
what restoring a LoRA-adapted encoder's flags after a frozen phase needs (`text_encoder`).
tests/test_keras_internals.py checks them against the installed Keras, so an upgrade that moves them fails there,
by name, instead of deep inside a training.
"""

from __future__ import annotations


def initial_epoch(model):
    """The first epoch `fit` will run, when a callback has set it (else None)."""
    return getattr(model, "_initial_epoch", None)


def set_initial_epoch(model, epoch) -> None:
    """Make a running `fit` start at `epoch`: call from `on_train_begin` (None clears it)."""
    model._initial_epoch = epoch


def nested_layers(model) -> list:
    """Every layer inside `model`, at any depth."""
    return list(model._flatten_layers(include_self=False))


def set_own_trainable(layer, trainable: bool) -> None:
    """Set `layer.trainable` without setting its sublayers' and variables' flags (the public setter sets them)."""
    layer._trainable = bool(trainable)
