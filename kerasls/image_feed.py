"""The image-classifier data feed: class folders or CSV manifests, answering the calls `TableFeed` answers.

    feed = ImageFeed(config)                         # scans and decodes every image once (bad files named)
    feed.train_dataset(batch_size, augment=..., mix=...)   # epoch order = f(seed, epoch): exact crash resume
    feed.dataset("val", batch_size)                  # validation batches for `model.fit`
    feed.evaluation_inputs("val")                    # decoded images, what the served model function takes
    feed.targets("test"), feed.class_prior(), feed.serving(model), feed.input_shape, feed.row_ids("test")

With a teacher (`targets.soft_labels.teacher`), training and validation targets are packed
[hard | softmax(z_teacher / T)] for the distillation loss; `targets()` keeps the unpacked ones.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from kerasls import targets as soft_targets
from kerasls import teacher
from kerasls.data import images
from kerasls.data.labels import check_decision_label, out_of_scope_line
from kerasls.export import Serving, image_serving
from kerasls.targets import SplitTargets


class ImageFeed:
    def __init__(self, config):
        data, self.soft, self.seed = config.data, config.targets.soft_labels, config.seed
        self.image_size, self.channels, self.cache = tuple(data.image_size), data.channels, data.cache
        self.out_of_scope_label = data.out_of_scope_label
        self.abstains = config.calibration.abstain is not None
        train, val, test, self.classes = images.load_image_sets(data, self.soft, seed=config.seed)
        check_decision_label(config.calibration, self.classes)
        self.eval_split = "test" if test is not None else "val"
        self.sets = {"train": train, "val": val, "test": test}
        self.rows = {split: len(self.sets[split]) for split in ("train", "val", self.eval_split)}
        self._training_targets: dict = {}
        self._datasets: dict = {}  # split -> the evaluation-order dataset, decoded (and cached) once

    def summary(self) -> str:
        counts = " ".join(f"{split}={count}" for split, count in self.rows.items())
        lines = [f"classes: {self.classes}", f"images: {counts}"]
        outside = {split: int((self.sets[split].labels < 0).sum()) for split in self.rows}
        if any(outside.values()):
            lines.append(out_of_scope_line(self.out_of_scope_label, outside, self.abstains))
        return "\n".join(lines)

    def in_scope_rows(self, split: str) -> int:
        """Images of `split` that belong to a class (not `data.out_of_scope_label`)."""
        return int((self.sets[split].labels >= 0).sum())

    @property
    def input_shape(self) -> tuple:
        """(height, width, channels): what model.py's input takes."""
        return (*self.image_size, self.channels)

    def targets(self, split: str) -> SplitTargets:
        image_set = self.sets[split]
        return SplitTargets(image_set.targets, image_set.labels, image_set.soft, image_set.observed_class)

    def class_prior(self) -> np.ndarray:
        return soft_targets.class_prior(self.sets["train"].labels, len(self.classes))

    def _with_training_targets(self, split: str) -> images.ImageSet:
        """The images of `split` with the targets the loss reads (packed with the teacher's for distillation)."""
        image_set = self.sets[split]
        if self.soft is None or self.soft.source != "teacher":
            return image_set
        if split not in self._training_targets:
            logits = teacher.image_teacher_logits(self.soft.teacher, self.classes, image_set)
            self._training_targets[split] = teacher.pack(image_set.targets, logits, self.soft.temperature)
        return images.ImageSet(image_set.paths, image_set.labels, self._training_targets[split], image_set.soft,
                               image_set.source, image_set.observed_class)

    def train_dataset(self, batch_size: int, drop_remainder=False, augment=None, mix=None) -> tf.data.Dataset:
        """Training batches, then `augment` (random layers) and `mix` (MixUp/CutMix) on each batch."""
        return images.make_image_dataset(self._with_training_targets("train"), self.image_size, self.channels,
                                         batch_size, shuffle=True, seed=self.seed, cache=self.cache,
                                         augment=augment, mix=mix, drop_remainder=drop_remainder)

    def dataset(self, split: str, batch_size: int) -> tf.data.Dataset:
        """(images, training targets) batches of `split` in order, never augmented or mixed: the images of
        `data.out_of_scope_label` left out, so early stopping judges the classes alone (they choose the decision
        threshold after training)."""
        image_set = self._with_training_targets(split)
        in_scope = np.flatnonzero(image_set.labels >= 0)
        if len(in_scope) < len(image_set):
            return images.make_image_dataset(image_set.subset(in_scope), self.image_size, self.channels, batch_size,
                                             cache=self.cache)
        self._datasets[split] = images.make_image_dataset(image_set, self.image_size, self.channels, batch_size,
                                                          cache=self.cache)
        return self._datasets[split]

    def evaluation_inputs(self, split: str, batch_size=64) -> tf.data.Dataset:
        """Decoded images of `split` (as `serving_default` decodes them), for the served model function: the
        validation dataset `fit` already read (its cache holds the decoded images; its targets are not read), or
        a new one in file order."""
        if split not in self._datasets:
            self._datasets[split] = images.make_image_dataset(self.sets[split], self.image_size, self.channels,
                                                              batch_size, cache=self.cache)
        return self._datasets[split]

    def row_ids(self, split: str):
        return self.sets[split].paths

    def serving(self, model) -> Serving:
        """The export's graph: encoded image bytes -> decode and resize -> `model` -> logits."""
        return image_serving(model, self.image_size, self.channels)

    def tracked(self, model) -> list:
        return [model]
