"""Every Keras private attribute kerasls relies on, in one place (written against Keras 3.15).

Keras has no public way to move the first epoch of a running `fit` from a callback's `on_train_begin` (how
`resume.EpochState` resumes a run, and how the multi-worker loop learns the restored epoch):
`Model._initial_epoch`, which `fit` reads after `on_train_begin`. tests/test_keras_internals.py checks it against
the installed Keras, so an upgrade that moves it fails there, by name, instead of deep inside a training.
"""

from __future__ import annotations


def initial_epoch(model):
    """The first epoch `fit` will run, when a callback has set it (else None)."""
    return getattr(model, "_initial_epoch", None)


def set_initial_epoch(model, epoch) -> None:
    """Make a running `fit` start at `epoch`: call from `on_train_begin` (None clears it)."""
    model._initial_epoch = epoch
