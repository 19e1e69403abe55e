"""Images in, checked files and probability targets out: class folders or CSV manifests -> tf.data.

Two ways to describe a labelled image set:

- a folder of class folders, `root/<class>/<image>`: the class names are the folder names;
- a CSV manifest with a path column (relative to the manifest's folder) and either a label column of class
  names, or one `prob_<class>` column per class (probabilities), or one `votes_<class>` column per class
  (annotator vote counts, turned into distributions with add-α smoothing).

Every check raises `KeraslsError` with the file, line or column it is about. `decode_image` is the one function
that turns encoded bytes into pixels: training pipelines and the exported serving graph share it.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kerasls import targets as soft_targets
from kerasls.data.epochs import epoch_permutation, epoch_shuffled_dataset, epoch_variable, parallel_calls
from kerasls.data.labels import check_out_of_scope_rows, label_strings
from kerasls.data.soft_labels import observed_from, soft_column_classes, table_targets
from kerasls.data.tabular import read_table, stratified_split
from kerasls.errors import KeraslsError
from kerasls.targets import OUT_OF_SCOPE

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


@dataclass
class ImageSet:
    """Image files with their targets: `targets[i]` is the class distribution of `paths[i]`."""

    paths: list[str]  # absolute
    labels: np.ndarray  # int64 [N], observed class: the label column, or argmax of targets without one
    targets: np.ndarray  # float32 [N, K], one-hot for hard labels or row distributions
    soft: bool  # True when the targets came from probability or vote columns
    source: str  # the folder or manifest they came from, for messages
    observed_class: str = "label"  # where `labels` came from: "label" (column or folder) or "argmax"

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices) -> "ImageSet":
        indices = np.asarray(indices, dtype=np.int64)
        return ImageSet([self.paths[i] for i in indices], self.labels[indices], self.targets[indices],
                        self.soft, self.source, self.observed_class)


# ---------------------------------------------------------------------------------------------------------------
# Class folders and manifests


def scan_class_folders(root) -> tuple[list[str], list[str]]:
    """`root/<class>/<image>` -> (absolute image paths, class name of each path); classes and images sorted.

    Hidden files and folders (names starting with ".") are ignored, and so are non-image files at the top level
    (a README). Inside a class folder every file must be an image.
    """
    root = Path(root)
    if not root.is_dir():
        raise KeraslsError(f"{root}: image folder not found; point data.train/val/test at a folder of class folders")
    entries = sorted(entry for entry in os.listdir(root) if not entry.startswith("."))
    loose = [entry for entry in entries if not (root / entry).is_dir() and entry.lower().endswith(IMAGE_SUFFIXES)]
    if loose:
        raise KeraslsError(f"{root / loose[0]}: image outside a class folder; move it into {root}/<class name>/")
    classes = [entry for entry in entries if (root / entry).is_dir()]
    if not classes:
        raise KeraslsError(f"{root}: no class subfolders; put the images of each class in {root}/<class name>/")
    paths, names = [], []
    for name in classes:
        folder = root / name
        files = sorted(entry for entry in os.listdir(folder) if not entry.startswith("."))
        for entry in files:
            path = folder / entry
            if path.is_dir():
                raise KeraslsError(f"{path}: a folder inside class folder {name!r}; class folders hold images only")
            if not entry.lower().endswith(IMAGE_SUFFIXES):
                raise KeraslsError(f"{path}: not an image file name; accepted suffixes are "
                                   f"{', '.join(IMAGE_SUFFIXES)} (move or rename the file)")
        if not files:
            raise KeraslsError(f"{folder}: class folder {name!r} has no images; add images or remove the folder")
        paths.extend(str((folder / entry).absolute()) for entry in files)
        names.extend([name] * len(files))
    return paths, names


def class_folder_labels(root, classes, kind="training class", fix="add it to the training data", out_of_scope=None):
    """(image paths, class indices into `classes`) of a class-folder tree, -1 for the folder `out_of_scope`; a
    folder that names no class of `classes` is one error naming the folder ("class 'x' is not a <kind> [...];
    remove the folder or <fix>")."""
    paths, names = scan_class_folders(root)
    index = {name: i for i, name in enumerate(classes)}
    if out_of_scope is not None:
        index[out_of_scope] = OUT_OF_SCOPE
    unseen = sorted(set(names) - set(index))
    if unseen:
        raise KeraslsError(f"{Path(root) / unseen[0]}: class {unseen[0]!r} is not a {kind} {list(classes)}; remove "
                           f"the folder or {fix}")
    return paths, np.array([index[name] for name in names], dtype=np.int64)


def read_manifest(path, path_column="path", label_column="label", role="train") -> pd.DataFrame:
    """Read a CSV manifest and resolve its image paths; returns the table with absolute paths in `path_column`.

    Paths are relative to the manifest's folder (absolute paths only inside it); one that resolves outside (via
    `..` or a symlink) is refused. Pass `label_column=None` when targets come from probability or vote columns.
    `role` ("train", "val", "test") only improves the error messages. Line numbers count the header as line 1.
    """
    return _resolve_manifest(read_table(path, role, literal=[path_column, label_column]), path, path_column,
                             label_column)


def _resolve_manifest(frame, path, path_column, label_column) -> pd.DataFrame:
    source = Path(path)
    for column, key in ((path_column, "path_column"), (label_column, "label_column")):
        if column is not None and column not in frame.columns:
            raise KeraslsError(f"{source}: column {column!r} not found; columns are {list(frame.columns)} "
                               f"(set data.{key})")
    folder = source.resolve().parent
    resolved = []
    for line, value in enumerate(frame[path_column], start=2):
        if pd.isna(value) or not str(value).strip():
            raise KeraslsError(f"{source}: line {line}: column {path_column!r} is empty; give an image path")
        image = (folder / str(value).strip()).resolve()
        if not image.is_relative_to(folder):
            raise KeraslsError(f"{source}: line {line}: image path {value!r} resolves outside the manifest's folder "
                               f"{folder}; keep images inside that folder and give paths relative to it")
        if not image.is_file():
            raise KeraslsError(f"{source}: line {line}: image file {value!r} not found (looked for {image})")
        resolved.append(str(image))
    frame = frame.reset_index(drop=True)
    frame[path_column] = resolved
    frame.attrs["path"] = str(source)
    return frame


# ---------------------------------------------------------------------------------------------------------------
# Whole splits


def _source(value, role):
    path = Path(value)
    if path.is_dir():
        return "folder"
    if path.is_file() and path.suffix.lower() == ".csv":
        return "manifest"
    if path.exists():
        raise KeraslsError(f"{path}: data.{role} must be a folder of class folders or a .csv manifest")
    raise KeraslsError(f"{path}: {role} images not found; set data.{role} to a folder of class folders or a .csv "
                       "manifest")


def _soft_columns(soft):
    """(kind, columns) of `targets.soft_labels` (a SoftLabelsConfig or None): probability or vote columns."""
    probability = soft.probabilities if soft is not None else None
    votes = soft.votes if soft is not None else None
    if probability and votes:
        raise KeraslsError("set only one of targets.soft_labels.probabilities and targets.soft_labels.votes")
    return ("probability", probability) if probability else ("vote", votes) if votes else (None, [])


def _load_set(value, role, config, soft, classes) -> tuple[ImageSet, list[str]]:
    """One folder or manifest -> ImageSet; `classes=None` (training) derives the classes from it. `config` is the
    `data` section (ImageDataConfig), `soft` the `targets.soft_labels` section or None."""
    kind, columns = _soft_columns(soft)
    if _source(value, role) == "folder":
        if kind and classes is None:
            raise KeraslsError(f"{value}: targets.soft_labels needs a .csv manifest as data.train, not a folder")
        if classes is None:
            classes = sorted(set(scan_class_folders(value)[1]) - {config.out_of_scope_label})
        paths, labels = class_folder_labels(value, classes, "training class", "add it to the training data",
                                            config.out_of_scope_label)
        return ImageSet(paths, labels, soft_targets.hard_targets(labels, len(classes)), False, str(value)), classes

    frame = read_table(value, role, literal=[config.path_column, config.label_column])
    header = set(frame.columns)
    named = set(columns.values()) if isinstance(columns, dict) else set(columns)
    if kind and classes is not None and not named & header and config.label_column in header:
        kind, columns = None, []  # a val/test manifest with hard labels only, for a model trained on soft targets
    label_column = None if kind and config.label_column not in header else config.label_column
    frame = _resolve_manifest(frame, value, config.path_column, label_column)
    if classes is None:
        classes = (sorted(soft_column_classes(columns, kind, value)) if kind
                   else sorted(set(label_strings(frame[config.label_column].dropna())) - {config.out_of_scope_label}))
    targets, labels, soft = table_targets(
        frame, classes, config.label_column,
        probability_columns=columns if kind == "probability" else None,
        vote_columns=columns if kind == "vote" else None,
        vote_smoothing=soft.vote_smoothing if soft is not None else 0.0, source=str(value),
        out_of_scope=config.out_of_scope_label)
    return ImageSet(list(frame[config.path_column]), labels, targets, soft, str(value),
                    observed_from(frame, config.label_column)), classes


def _readable(image_set: ImageSet, skip_corrupt: bool) -> ImageSet:
    keep = check_images(image_set.paths, skip_corrupt=skip_corrupt)
    if len(keep) == len(image_set):
        return image_set
    if not keep:
        raise KeraslsError(f"{image_set.source}: none of the {len(image_set)} images can be decoded")
    first = sorted(set(range(len(image_set))) - set(keep))[0]
    print(f"skipped {len(image_set) - len(keep)} unreadable image(s) in {image_set.source}, "
          f"e.g. {image_set.paths[first]}")
    return image_set.subset(keep)


def load_image_sets(data_config, soft=None, seed=0):
    """Read train/val/test (folders or manifests) -> (train, val, test or None, classes).

    Classes come from the training set: its folder names, its sorted label values, or the sorted class suffixes
    of the probability/vote columns. Without a val set, train is split per class (seeded, the rule of
    `kerasls.data.tabular.stratified_split`): per label, or per argmax of the distribution for soft targets.
    Every image is decoded once up front (`check_images`). A val/test manifest without the probability/vote
    columns but with a label column is read with hard labels.
    """
    skip = data_config.skip_corrupt
    train, classes = _load_set(data_config.train, "train", data_config, soft, None)
    if len(classes) < 2:
        raise KeraslsError(f"{data_config.train}: one class only ({classes}); a classifier needs two or more")
    train = _readable(train, skip)
    if data_config.val:
        val = _readable(_load_set(data_config.val, "val", data_config, soft, classes)[0], skip)
    else:
        # stratified by the argmax of the distributions for soft targets (as tables are), else by the label
        strata = train.targets.argmax(axis=1) if train.soft else train.labels
        names = pd.DataFrame({"class": np.asarray([*classes, "(out of scope)"], dtype=object)[strata]})  # -1: last
        train_rows, val_rows = stratified_split(names, "class", data_config.val_fraction, seed)
        train, val = train.subset(train_rows.index), train.subset(val_rows.index)
        if not len(val):
            raise KeraslsError(f"{data_config.train}: too few images per class to split off a validation set "
                               f"(val_fraction={data_config.val_fraction}); add images or set data.val")
    test = None
    if data_config.test:
        test = _readable(_load_set(data_config.test, "test", data_config, soft, classes)[0], skip)
    outside = sum(int((image_set.labels < 0).sum()) for image_set in (train, val, test) if image_set is not None)
    check_out_of_scope_rows(data_config.out_of_scope_label, outside, classes, data_config.train)
    return train, val, test, classes


# ---------------------------------------------------------------------------------------------------------------
# Decoding and tf.data


@contextlib.contextmanager
def _native_stderr_silenced():
    """libjpeg prints its own complaints ("Improper call to JPEG library ...") straight to file descriptor 2;
    silence it while decoding, so a corrupt file is reported by our one error line only."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def check_images(paths, skip_corrupt=False) -> list[int]:
    """Read and decode every file once (eagerly) -> indices of the readable ones.

    Catches zero-byte files, truncated JPEGs and non-images with an image suffix. A bad file raises
    `KeraslsError` naming it, unless `skip_corrupt`, in which case it is left out of the returned indices.
    """
    from concurrent.futures import ThreadPoolExecutor

    import tensorflow as tf

    def readable(path):
        try:
            tf.io.decode_image(tf.io.read_file(path), expand_animations=False)
            return None
        except (tf.errors.OpError, ValueError) as error:
            reason = re.sub(r"\{\{.*?\}\}|\[Op:.*$", "", getattr(error, "message", str(error))).strip()
            return (reason.splitlines() or [type(error).__name__])[0][:200]

    with _native_stderr_silenced(), ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) + 1)) as pool:
        problems = list(pool.map(readable, paths))
    keep = []
    for index, (path, problem) in enumerate(zip(paths, problems)):
        if problem is None:
            keep.append(index)
        elif not skip_corrupt:
            raise KeraslsError(f"{path}: cannot be decoded as an image ({problem}); fix or remove the file, or "
                               "pass data.skip_corrupt=true to skip unreadable images")
    return keep


def decode_image(encoded, image_size, channels):
    """Encoded JPEG/PNG/BMP/GIF bytes -> float32 [H, W, channels] in [0, 255]; a pure TF graph function.

    The first frame of a GIF is used; alpha is dropped. RGB -> grayscale (channels=1) uses
    `tf.image.rgb_to_grayscale` for every format (the BMP and GIF decoders refuse channels=1). The image is
    resized to `image_size` = (H, W) with antialiased bilinear interpolation. Antialiasing only changes anything
    when a side shrinks, so otherwise (same size, upscaling) the plain bilinear kernel computes the same values
    several times faster.
    """
    import tensorflow as tf

    size = (int(image_size[0]), int(image_size[1]))
    if channels == 3:
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    elif channels == 1:
        image = tf.io.decode_image(encoded, expand_animations=False)
        image = tf.cond(tf.shape(image)[-1] < 3, lambda: image[..., :1],
                        lambda: tf.image.rgb_to_grayscale(image[..., :3]))
    else:
        raise KeraslsError(f"image channels must be 1 or 3; got {channels}")
    shrinks = tf.reduce_any(tf.shape(image) > (size[0], size[1], channels))  # as few ops as possible: hot path
    image = tf.cond(shrinks, lambda: tf.image.resize(image, size, method="bilinear", antialias=True),
                    lambda: tf.image.resize(image, size, method="bilinear"))
    image.set_shape((size[0], size[1], channels))  # both resizes give exactly this shape
    return image


def make_image_dataset(image_set: ImageSet, image_size, channels, batch_size, shuffle=False, seed=0, cache=False,
                       augment=None, mix=None, drop_remainder=False, epoch=None):
    """ImageSet -> `tf.data.Dataset` of (images float32 [B, H, W, C] in 0..255, targets float32 [B, K]).

    Evaluation (no `shuffle`): read + `decode_image` (parallel, order kept) -> cache (optional) -> batch.
    Training (`shuffle`): the order of every epoch is a permutation that depends only on (seed, epoch), the epoch
    read from `epoch` (default `kerasls.data.epochs.epoch_variable()`), so a resumed run sees the batches an
    unbroken one saw. With `cache` the images are decoded once into memory and each epoch gathers its batches
    (`epoch_shuffled_dataset`, the in-memory table feed); without, each epoch reads and decodes its files in the
    permuted order. Then `augment(images, training=True)` (optional, e.g. a `keras.Sequential` of random layers)
    and `mix(images, targets)` (optional, MixUp/CutMix on the batch) -> prefetch. `drop_remainder` applies only
    when there is at least one full batch.
    """
    import tensorflow as tf

    count = len(image_set)
    targets = np.asarray(image_set.targets, dtype=np.float32)
    paths = np.asarray(image_set.paths, dtype=object)
    drop_remainder = bool(drop_remainder) and count >= batch_size

    def load(path, target):
        return decode_image(tf.io.read_file(path), image_size, channels), target

    if not shuffle:
        dataset = tf.data.Dataset.from_tensor_slices((paths, targets)).map(load, num_parallel_calls=parallel_calls())
        dataset = (dataset.cache() if cache else dataset).batch(batch_size, drop_remainder=drop_remainder)
    elif cache:
        decoded = make_image_dataset(image_set, image_size, channels, 256)
        pixels = np.concatenate([images.numpy() for images, _ in decoded], axis=0)
        dataset = epoch_shuffled_dataset(pixels, targets, batch_size, seed,
                                         epoch if epoch is not None else epoch_variable(), drop_remainder)
    else:
        epoch = epoch if epoch is not None else epoch_variable()
        order = tf.data.Dataset.from_tensors(0).flat_map(
            lambda _: tf.data.Dataset.from_tensor_slices(epoch_permutation(count, seed, epoch)))
        paths_tensor, targets_tensor = tf.constant(paths.astype(str)), tf.constant(targets)
        dataset = order.map(lambda index: load(tf.gather(paths_tensor, index), tf.gather(targets_tensor, index)),
                            num_parallel_calls=parallel_calls())
        dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    if augment is not None:
        dataset = dataset.map(lambda images, batch_targets: (_call_training(augment, images), batch_targets),
                              num_parallel_calls=parallel_calls())
    if mix is not None:
        dataset = dataset.map(mix, num_parallel_calls=parallel_calls())
    return dataset.prefetch(tf.data.AUTOTUNE)


def _call_training(function, images):
    """Call `function(images, training=True)` when it takes `training` (keras layers do), else `function(images)`."""
    import inspect

    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        parameters = {}
    takes_training = "training" in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    return function(images, training=True) if takes_training else function(images)
