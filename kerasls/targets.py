"""Soft-target math: pure numpy functions that turn labels into probability vectors.

Every target source ends as an [N, K] float32 array whose rows are distributions; the loss is always
`keras.losses.CategoricalCrossentropy(label_smoothing=ε, from_logits=True)`, which replaces a target y by

    y_ls = y · (1 − ε) + ε / K

(Szegedy et al. 2016). `smooth` is that closed form, and `class_prior_smooth` the one that spreads the mass ε by
the training class frequencies π instead of uniformly (Pereyra et al. 2017):

    y_cp = y · (1 − ε) + ε · π

Training never calls them: the Keras loss smooths uniformly, and `targets.prior: class_prior` smooths toward π
inside the loss (`kerasls.losses.PriorSmoothedCrossentropy`), so the metrics read the unsmoothed targets. They are
the closed forms the tests check those losses against, and the math a reader can run.
"""

from dataclasses import dataclass

import numpy as np


def _check_epsilon(epsilon):
    if not 0.0 <= epsilon < 1.0:
        raise ValueError(f"`label_smoothing` must be in [0, 1). Received: label_smoothing={epsilon}")


def one_hot(indices, num_classes) -> np.ndarray:
    """Hard class indices [N] -> one-hot float32 [N, K]."""
    indices = np.asarray(indices)
    if indices.ndim != 1:
        raise ValueError(f"`indices` must be rank 1. Received: shape={indices.shape}")
    if indices.size and (indices.min() < 0 or indices.max() >= num_classes):
        raise ValueError(
            f"class indices must be in [0, {num_classes}). Received: min={indices.min()}, max={indices.max()}"
        )
    return np.eye(num_classes, dtype=np.float32)[indices]


OUT_OF_SCOPE = -1  # the class index of a row labelled `data.out_of_scope_label`: it belongs to no class


def hard_targets(indices, num_classes) -> np.ndarray:
    """Class indices [N] -> targets float32 [N, K]: one-hot rows, and the uniform distribution 1/K for an index of
    `OUT_OF_SCOPE` (a row labelled `data.out_of_scope_label`): outlier exposure (Hendrycks et al. 2019, "Deep
    anomaly detection with outlier exposure") trains the model toward the uniform distribution on rows that belong
    to no class, through the same pipeline and loss. Label smoothing leaves a uniform row uniform."""
    indices = np.asarray(indices)
    out = indices == OUT_OF_SCOPE
    targets = one_hot(np.where(out, 0, indices), num_classes)
    targets[out] = 1.0 / num_classes
    return targets


def smooth(targets, epsilon) -> np.ndarray:
    """Uniform label smoothing: y(1 − ε) + ε/K, exactly what the Keras loss applies."""
    _check_epsilon(epsilon)
    targets = np.asarray(targets, dtype=np.float32)
    num_classes = targets.shape[-1]
    return targets * (1.0 - epsilon) + epsilon / num_classes


def class_prior(indices, num_classes) -> np.ndarray:
    """Training class frequencies π, the prior for `class_prior_smooth` (out-of-scope rows, -1, not counted)."""
    indices = np.asarray(indices)
    counts = np.bincount(indices[indices >= 0], minlength=num_classes).astype(np.float64)
    return (counts / counts.sum()).astype(np.float32)


def class_prior_smooth(targets, epsilon, prior) -> np.ndarray:
    """Label smoothing toward the class prior π: y(1 − ε) + ε·π (Pereyra et al. 2017)."""
    _check_epsilon(epsilon)
    targets = np.asarray(targets, dtype=np.float32)
    prior = np.asarray(prior, dtype=np.float32)
    if prior.shape != (targets.shape[-1],) or not np.isclose(prior.sum(), 1.0, atol=1e-5):
        raise ValueError(f"`prior` must be a distribution over {targets.shape[-1]} classes. Received: {prior}")
    return targets * (1.0 - epsilon) + epsilon * prior


def from_votes(counts, alpha=0.0) -> np.ndarray:
    """Annotator vote counts [N, K] -> distributions, with add-α smoothing: (c + α) / (Σc + Kα)."""
    counts = np.asarray(counts, dtype=np.float64)
    if alpha < 0:
        raise ValueError(f"`vote_smoothing` must be >= 0. Received: {alpha}")
    smoothed = counts + alpha
    totals = smoothed.sum(axis=1, keepdims=True)
    if np.any(totals <= 0):
        raise ValueError(f"vote rows must not sum to 0. Received zero rows at {np.flatnonzero(totals[:, 0] <= 0)[:5]}")
    return (smoothed / totals).astype(np.float32)


def from_teacher(logits, temperature=1.0) -> np.ndarray:
    """Teacher logits z_t -> softmax(z_t / T), the soft targets of Hinton et al. 2015."""
    if temperature <= 0:
        raise ValueError(f"`temperature` must be > 0. Received: {temperature}")
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


def invalid_distribution_rows(targets, atol=1e-3) -> np.ndarray:
    """Indices of rows that are not distributions: NaN, negative, or not summing to 1 within `atol`."""
    targets = np.asarray(targets, dtype=np.float64)
    bad = np.isnan(targets).any(axis=1) | (targets < 0).any(axis=1)
    bad |= ~np.isclose(np.nan_to_num(targets).sum(axis=1), 1.0, atol=atol)
    return np.flatnonzero(bad)


@dataclass(frozen=True)
class SplitTargets:
    """The targets of one split, as a feed (`TableFeed`, `ImageFeed`) gives them.

    `distributions` float32 [N, K]: one-hot rows for hard labels, or the rows' distributions; `observed` int64 [N]:
    each row's observed class, which accuracy and calibration are measured against (the label column, or the
    argmax of the distribution when the table has none); `soft`: the rows carry distributions; `observed_class`:
    "label" or "argmax", where `observed` came from.
    """

    distributions: np.ndarray
    observed: np.ndarray
    soft: bool
    observed_class: str = "label"

    @property
    def out_of_scope(self) -> np.ndarray:
        """bool [N]: rows labelled `data.out_of_scope_label` (observed class -1), which belong to no class."""
        return np.asarray(self.observed) == OUT_OF_SCOPE

    def in_scope(self) -> "SplitTargets":
        """These targets without the out-of-scope rows (what accuracy, calibration and T are computed on)."""
        keep = ~self.out_of_scope
        if keep.all():
            return self
        return SplitTargets(self.distributions[keep], np.asarray(self.observed)[keep], self.soft, self.observed_class)

    def soft_or_none(self):
        """The distributions when the rows carry them, else None (for soft metrics and the soft temperature)."""
        return self.distributions if self.soft else None
