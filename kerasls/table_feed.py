"""The tabular-intent data feed: one protocol over tables held in memory and tables streamed in chunks.

    feed = TableFeed(config)              # reads and checks the files, learns the preprocessing
    feed.train_dataset(batch_size)        # (encoded rows, targets) batches; epoch order = f(seed, epoch)
    feed.dataset("val", batch_size)       # validation batches for `model.fit`
    feed.evaluation_inputs("val")         # raw columns, as the export takes them
    feed.targets("test")                  # SplitTargets: distributions, observed classes, soft?, where from
    feed.class_prior(), feed.serving(model), feed.input_dim

The image feed (`kerasls.image_feed.ImageFeed`) answers the same calls, so both templates' `train.py` read
alike. With `data.streaming: true` the files are read in chunks, never whole (`kerasls.data.streaming`); else
they are read whole, split stratified and encoded once (`kerasls.data.tabular`). With a teacher
(`targets.soft_labels.teacher`), training and validation targets are packed [hard | softmax(z_teacher / T)] for
the distillation loss; `targets()` keeps the unpacked ones.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from kerasls import targets as soft_targets
from kerasls import teacher
from kerasls.arrays import shared_tensor
from kerasls.data import streaming, tabular
from kerasls.data.epochs import epoch_shuffled_dataset, epoch_variable, without_static_rewrites
from kerasls.export import Serving, tabular_serving
from kerasls.preprocessing import TabularPreprocessor
from kerasls.targets import SplitTargets


class TableFeed:
    def __init__(self, config):
        data, self.soft, self.seed = config.data, config.targets.soft_labels, config.seed
        self.streaming = data.streaming
        self._targets: dict = {}
        self._encoded: dict = {}
        if self.streaming:
            self.stream = streaming.TableStream(data, seed=config.seed, soft=self.soft)
            self.classes, self.features, self.eval_split = self.stream.classes, self.stream.features, \
                self.stream.eval_split
            self.rows = {split: self.stream.rows[split] for split in ("train", "val", self.eval_split)}
            self.preprocessor = self.stream.preprocessor
        else:
            self.splits = tabular.load_splits(data, seed=config.seed, soft=self.soft)
            self.classes, self.features, self.eval_split = self.splits.classes, self.splits.features, \
                self.splits.eval_split
            self.frames = {"train": self.splits.train, "val": self.splits.val, "test": self.splits.test}
            self.rows = {split: len(self.frames[split]) for split in ("train", "val", self.eval_split)}
            self.preprocessor = TabularPreprocessor(self.features.numeric, self.features.categorical,
                                                    self.features.text, text_settings=data.text)
            train_columns = self.raw_columns("train")
            self.preprocessor.adapt(train_columns)
            self._encoded["train"] = self.preprocessor.encode(train_columns)  # the same columns, converted once

    # -- what the data are ----------------------------------------------------------------------------------
    def summary(self) -> str:
        counts = " ".join(f"{split}={count}" for split, count in self.rows.items())
        features = self.features
        width = f"encoded width {self.input_dim}"
        if not self.streaming:  # text n-grams make wide rows: say what holding them costs (streaming does not)
            width += f", training rows held encoded: {self.rows['train'] * self.input_dim * 4 / 2**20:,.0f} MB"
        return (f"classes: {self.classes}\nrows: {counts}\nfeatures: numeric={features.numeric} "
                f"categorical={features.categorical} text={features.text} ({width})")

    @property
    def input_dim(self) -> int:
        """Width of an encoded row: what model.py's first layer takes."""
        return self.preprocessor.output_dim

    def raw_columns(self, split: str) -> dict:
        """In memory only: the raw columns of `split`, as the serving signature takes them."""
        return tabular.column_arrays(self.frames[split], self.features)

    def encoded(self, split: str) -> np.ndarray:
        """In memory only: the rows of `split` after the preprocessing (float32 [N, input_dim])."""
        if split not in self._encoded:
            self._encoded[split] = self.preprocessor.encode(self.raw_columns(split))
        return self._encoded[split]

    def targets(self, split: str) -> SplitTargets:
        """Distributions (one-hot for hard labels), observed classes and where they came from, of `split`."""
        if split not in self._targets:
            if self.streaming:
                distributions, observed, soft = self.stream.targets(split)
                where = self.stream.observed_class(split)
            else:
                distributions, observed, soft = self.splits.targets(self.frames[split])
                where = self.splits.observed_class(self.frames[split])
            self._targets[split] = SplitTargets(distributions, observed, soft, where)
        return self._targets[split]

    def class_prior(self) -> np.ndarray:
        """Training class frequencies π (of the observed classes), for `targets.prior: class_prior`."""
        if self.streaming:
            return self.stream.class_prior()
        return soft_targets.class_prior(self.targets("train").observed, len(self.classes))

    # -- what training reads --------------------------------------------------------------------------------
    def training_targets(self, split: str) -> np.ndarray:
        """The targets the loss reads: the distributions, packed with the teacher's for distillation."""
        distributions = self.targets(split).distributions
        if self.soft is None or self.soft.source != "teacher":
            return distributions
        logits = teacher.table_teacher_logits(self.soft.teacher, self.classes, self.frames[split])
        return teacher.pack(distributions, logits, self.soft.temperature)

    def train_dataset(self, batch_size: int, drop_remainder=False) -> tf.data.Dataset:
        """Training batches; each epoch a permutation fixed by (seed, epoch), so crash resume is exact."""
        if self.streaming:
            return self.stream.dataset("train", batch_size, shuffle=True, drop_remainder=drop_remainder,
                                       epoch=epoch_variable())
        return epoch_shuffled_dataset(self.encoded("train"), self.training_targets("train"), batch_size, self.seed,
                                      epoch_variable(), drop_remainder)

    def dataset(self, split: str, batch_size: int) -> tf.data.Dataset:
        """(encoded rows, training targets) batches of `split` in file order, for validation during `fit`."""
        if self.streaming:
            return self.stream.dataset(split, batch_size)
        dataset = tf.data.Dataset.from_tensor_slices((shared_tensor(self.encoded(split)),
                                                      shared_tensor(self.training_targets(split))))
        return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE).with_options(without_static_rewrites())

    # -- what evaluation and serving read -------------------------------------------------------------------
    def evaluation_inputs(self, split: str, batch_size=1024):
        """Raw columns of `split` as the export takes them (evaluation runs the served graph on them)."""
        if self.streaming:
            return self.stream.dataset(split, batch_size, encode=False)
        return self.raw_columns(split)

    def row_ids(self, split: str):
        return None  # rows are identified by their order in predictions.csv

    def serving(self, model) -> Serving:
        """The export's graph: raw columns -> this feed's preprocessing -> `model` -> logits."""
        return tabular_serving(model, self.preprocessor)

    def tracked(self, model) -> list:
        """What the export must track besides the functions: the preprocessing layer's lookup tables."""
        return [self.preprocessor, model]
