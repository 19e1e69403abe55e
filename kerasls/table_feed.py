"""The tabular-intent data feed: one protocol over tables held in memory and tables streamed in chunks.

    feed = TableFeed(config)              # reads and checks the files, learns the preprocessing
    feed.train_dataset(batch_size)        # (named inputs, targets) batches; epoch order = f(seed, epoch)
    feed.dataset("val", batch_size)       # validation batches for `model.fit`
    feed.evaluation_inputs("val")         # raw columns, as the export takes them
    feed.targets("test")                  # SplitTargets: distributions, observed classes, soft?, where from
    feed.class_prior(), feed.serving(model)
    feed.model_inputs()                   # the named inputs model.py builds on (kerasls.preprocessing.ModelInputs)

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
from kerasls.data.epochs import epoch_shuffled_dataset, epoch_variable, table_tensors, without_static_rewrites
from kerasls.data.labels import check_decision_label, out_of_scope_line
from kerasls.errors import KeraslsError
from kerasls.export import Serving, tabular_serving
from kerasls.memory import check_fits
from kerasls.preprocessing import TabularPreprocessor
from kerasls.targets import SplitTargets


class TableFeed:
    def __init__(self, config):
        data, self.soft, self.seed = config.data, config.targets.soft_labels, config.seed
        self.abstains = config.calibration.abstain is not None
        self.streaming, self.out_of_scope_label = data.streaming, data.out_of_scope_label
        self._targets: dict = {}
        self.truncated: dict = {}  # encoder column -> training texts cut to its sequence_length (in memory)
        self._encoded: dict = {}
        if self.streaming:
            self.stream = streaming.TableStream(data, seed=config.seed, soft=self.soft)
            self.classes, self.features, self.eval_split = self.stream.classes, self.stream.features, \
                self.stream.eval_split
            self.rows = {split: self.stream.rows[split] for split in ("train", "val", self.eval_split)}
            check_decision_label(config.calibration, self.classes)
            self.preprocessor = self.stream.preprocessor
        else:
            self.splits = tabular.load_splits(data, seed=config.seed, soft=self.soft)
            self.classes, self.features, self.eval_split = self.splits.classes, self.splits.features, \
                self.splits.eval_split
            self.frames = {"train": self.splits.train, "val": self.splits.val, "test": self.splits.test}
            self.rows = {split: len(self.frames[split]) for split in ("train", "val", self.eval_split)}
            check_decision_label(config.calibration, self.classes)
            self.preprocessor = TabularPreprocessor(self.features.numeric, self.features.categorical,
                                                    self.features.text, text_settings=data.text)
            train_columns = self.raw_columns("train")
            self.preprocessor.adapt(train_columns)
            self.check_memory(train_columns)
            self._encoded["train"] = self.preprocessor.encode(train_columns)  # the same columns, converted once
            self.truncated = dict(self.preprocessor.truncated)  # training texts cut to an encoder's sequence_length

    # -- what the data are ----------------------------------------------------------------------------------
    def summary(self) -> str:
        counts = " ".join(f"{split}={count}" for split, count in self.rows.items())
        features = self.features
        lines = [f"classes: {self.classes}", f"rows: {counts}",
                 f"features: numeric={features.numeric} categorical={features.categorical} text={features.text}"]
        inputs = [f"{name} [{width}]" for name, width in self.preprocessor.block_widths().items()]
        inputs += [f"text_{name} [{encoder.sequence_length} tokens, {encoder.settings.preset}]"
                   for name, encoder in self.preprocessor.encoders.items()]
        held = ""
        if not self.streaming:  # say what holding the encoded rows costs (streaming does not hold them)
            size = sum(array.nbytes for array in tf.nest.flatten(self._encoded["train"]))
            held = f"; training rows held encoded: {size / 2**20:,.1f} MB"
        lines.append(f"model inputs: {', '.join(inputs)}{held}")
        outside = self.out_of_scope_rows()
        if any(outside.values()):
            lines.append(out_of_scope_line(self.out_of_scope_label, outside, self.abstains))
        for name, count in self.truncated.items():
            if count:
                lines.append(f"note: {count} of {self.rows['train']} training texts of {name!r} are longer than "
                             f"{self.preprocessor.encoders[name].sequence_length} tokens and were truncated "
                             "(data.text.encoder.sequence_length)")
        return "\n".join(lines)

    def in_scope_rows(self, split: str) -> int:
        """Rows of `split` that belong to a class (not `data.out_of_scope_label`)."""
        return self.rows[split] - self.out_of_scope_rows().get(split, 0)

    def out_of_scope_rows(self) -> dict:
        """{split: rows labelled `data.out_of_scope_label`}."""
        if self.out_of_scope_label is None:
            return {}
        if self.streaming:
            return {split: self.stream.out_of_scope_rows[split] for split in self.rows}
        return {split: int(self.targets(split).out_of_scope.sum()) for split in self.rows}

    def check_memory(self, train_columns, sample_rows=2000) -> None:
        """Before encoding: the memory the encoded training and validation rows will take, from the entries of a
        random sample of rows (`encode` holds 8 bytes an entry and 8 a row, and an encoder column's tokens), against
        what the machine has; too much is one error naming both and the fixes."""
        count = len(train_columns[self.features.all_columns()[0]])
        picked = np.random.default_rng(self.seed).choice(count, min(sample_rows, count), replace=False)
        sampled = self.preprocessor.encode_sparse({name: values[picked] for name, values in train_columns.items()})
        entries = len(sampled.columns) / max(len(sampled), 1)
        tokens = sum(encoder.sequence_length * 9 for encoder in self.preprocessor.encoders.values())  # ids, mask
        rows = self.rows["train"] + self.rows["val"]
        needed = int(rows * (entries * 8 + 8 + tokens) * 2)  # 2: the chunks and the arrays they are joined into
        check_fits(needed, f"{self.splits.train.attrs.get('path', 'the table')}: holding {rows:,} encoded rows in "
                           f"memory ({entries:,.0f} nonzero features a row)",
                   "set data.streaming: true (reads the files in chunks), or lower data.text.max_tokens")

    def model_inputs(self):
        """The named inputs model.py builds on (`kerasls.preprocessing.ModelInputs`); loads an encoder column's
        backbone from its preset, so call it inside the strategy's scope."""
        return self.preprocessor.model_inputs()

    @property
    def input_dim(self):
        raise KeraslsError("feed.input_dim is gone: model.py now receives the named inputs, feed.model_inputs(); "
                           "see the tabular-intent template's train.py and model.py (kerasls new tabular-intent)")

    def raw_columns(self, split: str) -> dict:
        """In memory only: the raw columns of `split`, as the serving signature takes them."""
        return tabular.column_arrays(self.frames[split], self.features)

    def encoded(self, split: str) -> dict:
        """In memory only: the rows of `split` after the preprocessing, as `TabularPreprocessor.encode` gives
        them ("entries": the nonzero entries of the dense blocks, `SparseRows`; an encoder column's tokens)."""
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
        return epoch_shuffled_dataset(self.encoded_tensors("train"), self.training_targets("train"), batch_size,
                                      self.seed, epoch_variable(), drop_remainder, named=self.preprocessor.named)

    def encoded_tensors(self, split: str) -> dict:
        """`encoded(split)` as tf.data takes it: the sparse rows as RaggedTensors, over the same memory."""
        return {name: value.tensors() if name == "entries" else value for name, value in self.encoded(split).items()}

    def dataset(self, split: str, batch_size: int) -> tf.data.Dataset:
        """(named inputs, training targets) batches of `split` in file order, for validation during `fit`: rows of
        `data.out_of_scope_label` are left out, so early stopping and the kept epoch judge the classes alone (those
        rows choose the decision threshold after training)."""
        if self.streaming:
            return self.stream.dataset(split, batch_size, in_scope_only=True)
        features = table_tensors(self.encoded_tensors(split))
        targets = shared_tensor(self.training_targets(split))

        def batch(indices):
            rows = tf.nest.map_structure(lambda array: tf.gather(array, indices), features)
            return self.preprocessor.named(rows), tf.gather(targets, indices)

        in_scope = np.flatnonzero(~self.targets(split).out_of_scope)
        dataset = tf.data.Dataset.from_tensor_slices(in_scope).batch(batch_size).map(batch)
        return dataset.prefetch(tf.data.AUTOTUNE).with_options(without_static_rewrites())

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
