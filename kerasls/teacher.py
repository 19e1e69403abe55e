"""Teacher predictions for knowledge distillation: computed once, cached, packed with the hard labels.

`targets.soft_labels: {teacher: EXPORT, temperature: T, alpha: a}` names a kerasls export (any earlier run,
usually a bigger model). Its uncalibrated `logits` output is computed over the training and validation rows in
batches, through the export's own serving signature (raw columns or image bytes), and cached in
`.kerasls_cache/teacher/` keyed by the export and the data file and, inside the file, by row id (the table's
row index or the image path), so a sweep or a rerun does not recompute them. The student's targets are packed
as [hard one-hot | softmax(z_t / T)] for `kerasls.losses.DistillationLoss`.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from kerasls import targets as soft_targets
from kerasls.errors import KeraslsError
from kerasls.export import load_serving_function, resolve_export
from kerasls.predict import serving_inputs

CACHE_DIR = Path(".kerasls_cache") / "teacher"


def _fingerprint(*paths) -> str:
    digest = hashlib.sha1()
    for path in map(Path, paths):
        stat = path.stat()
        digest.update(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def _load_cache(path: Path) -> dict:
    if not path.is_file():
        return {}
    stored = np.load(path, allow_pickle=False)
    return dict(zip(stored["row_ids"].tolist(), stored["logits"]))


def _save_cache(path: Path, cache: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_suffix(f".tmp{os.getpid()}.npz")
    ids = sorted(cache)
    np.savez(temp, row_ids=np.array(ids, dtype=str), logits=np.stack([cache[i] for i in ids]))
    os.replace(temp, path)


def load_teacher(export, classes):
    """The teacher's serving function and input specs; its classes must be the student's, in the same order."""
    export_dir = resolve_export(export)
    function, specs, teacher_classes, _ = load_serving_function(export_dir)
    if teacher_classes != list(classes):
        raise KeraslsError(f"{export_dir}: the teacher's classes {teacher_classes} differ from the student's "
                           f"{list(classes)}; distil from a model trained on the same classes")
    return export_dir, function, specs


def teacher_logits(export, classes, data_file, row_ids, batch_inputs, batch_size=512):
    """Teacher logits [N, K] for rows `row_ids` of `data_file`; `batch_inputs(rows) -> dict of tensors`."""
    export_dir, function, specs = load_teacher(export, classes)
    cache_path = CACHE_DIR / f"{_fingerprint(export_dir / 'saved_model.pb', data_file)}.npz"
    cache = _load_cache(cache_path)
    row_ids = [str(r) for r in row_ids]
    missing = [index for index, row in enumerate(row_ids) if row not in cache]
    for start in range(0, len(missing), batch_size):
        chunk = missing[start:start + batch_size]
        logits = function(**batch_inputs(chunk, specs))["logits"].numpy()
        cache.update({row_ids[i]: row for i, row in zip(chunk, logits)})
    if missing:
        _save_cache(cache_path, cache)
    return np.stack([cache[row] for row in row_ids]).astype(np.float32)


def table_teacher_logits(export, classes, frame):
    """Teacher logits for a table's rows (row id = the row's index in its file)."""
    source = frame.attrs.get("path", "table")
    return teacher_logits(export, classes, source, frame.index,
                          lambda rows, specs: serving_inputs(frame.iloc[rows], specs, source))


def image_teacher_logits(export, classes, image_set):
    """Teacher logits for an ImageSet's images (row id = the image path)."""
    import tensorflow as tf

    def batch_inputs(rows, specs):
        if "image_bytes" not in specs:
            raise KeraslsError(f"{export}: the teacher is not an image export (no image_bytes input)")
        return {"image_bytes": tf.constant([Path(image_set.paths[i]).read_bytes() for i in rows])}

    return teacher_logits(export, classes, image_set.source, image_set.paths, batch_inputs)


def pack(hard_targets, logits, temperature) -> np.ndarray:
    """[hard (K) | softmax(z_t / T) (K)]: the targets `DistillationLoss` reads."""
    return np.concatenate([np.asarray(hard_targets, np.float32), soft_targets.from_teacher(logits, temperature)],
                          axis=1)
