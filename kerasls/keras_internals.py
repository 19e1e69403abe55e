"""Every Keras private attribute kerasls relies on, in one place (written against Keras 3.15).

Keras has no public way to do these two things:
- move the first epoch of a running `fit` from a callback's `on_train_begin` (how `resume.EpochState` resumes a
  run, and how the multi-worker loop learns the restored epoch): `Model._initial_epoch`, which `fit` reads after
  `on_train_begin`;
- update a TF-IDF `TextVectorization`'s document counts with traced ops (100k rows: 0.8 s instead of minutes;
  `preprocessing.text_update_function`): its `_lookup_layer` (the IndexLookup whose tables adapt() fills) and
  `_preprocess` (standardise and split exactly as the layer does).
tests/test_keras_internals.py checks each of them against the installed Keras, so an upgrade that moves one fails
there, by name, instead of deep inside a training.
"""

from __future__ import annotations


def initial_epoch(model):
    """The first epoch `fit` will run, when a callback has set it (else None)."""
    return getattr(model, "_initial_epoch", None)


def set_initial_epoch(model, epoch) -> None:
    """Make a running `fit` start at `epoch`: call from `on_train_begin` (None clears it)."""
    model._initial_epoch = epoch


def text_lookup_layer(vectorizer):
    """The IndexLookup inside a `TextVectorization` (its `token_counts`, `token_document_counts`,
    `num_documents` tables are what `adapt` fills for TF-IDF)."""
    return vectorizer._lookup_layer


def text_tokens(vectorizer, strings):
    """`strings` [N, 1] standardised and split exactly as `vectorizer` does: a ragged [N, None] string tensor."""
    return vectorizer._preprocess(strings)
