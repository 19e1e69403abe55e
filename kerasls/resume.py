"""Crash-safe training state: resume after a kill at the next epoch, with the same result as an unbroken run.

Keras' `BackupAndRestore` restores weights and the epoch number, but (Keras 3.15) not the dropout seed
generators, not the shuffle order of the next epochs, not the early-stopping and best-checkpoint counters, and it
writes weights and epoch number as two separate files, so a kill between them resumes from a mismatched state.
`EpochState` keeps all of it in one atomic commit per epoch:

    checkpoints/<phase>/state-<epoch>.npz   every model and optimizer variable (seed generators included)
    checkpoints/<phase>/state.json          {"epoch": e, "arrays": "state-<e>.npz", "history": [...],
                                             "finished": bool, "architecture": [...]}  -- written last, by
                                             rename: the commit point

and writes `history.csv` from the committed rows, so the history never holds an epoch twice or a half epoch.
The shuffle order of epoch e is a pure function of (seed, e) (`kerasls.data.epochs`), so a resumed epoch
sees the same batches. With `training.deterministic: true` a resumed run reaches the same weights as an
unbroken one (tested to 1e-5 with kills mid-epoch, between epochs, during the checkpoint write and during the
export). After training ends the state is kept with `finished: true`, so a run killed later (during export)
reruns without training again. A rerun whose model differs from the saved one is refused (`architecture`): the
saved variables would load into another computation (model.py edited, or a kerasls upgrade that adds a layer
without weights, such as a backbone's input preprocessing).

`KERASLS_FAULT=<point>:<n>` (test hook) kills the process with SIGKILL at a named point (`kerasls.faults`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from kerasls import keras_internals
from kerasls.errors import KeraslsError
from kerasls.faults import fault_point
from kerasls.fileio import atomic_write_text
from kerasls.memory import check_free_space

# Settings that may differ between a run and its resumption without changing what the model computes: a frozen
# backbone is unfrozen for fine-tuning, and auto-generated layer names count the models built in a process.
_NOT_ARCHITECTURE = ("name", "trainable")


def architecture(model) -> list[dict]:
    """What the model computes, one entry per layer in order (nested models' layers included): its class, name and
    settings (`get_config()` as JSON, without the name and the trainable flag). `EpochState` adds the shape of every
    variable it saves. Two models whose entries agree but for the names run the same computation."""
    entries = []

    def visit(layer):
        entry = {"class": type(layer).__name__, "name": layer.name}
        children = getattr(layer, "layers", None)
        if children is None:
            try:
                settings = {key: value for key, value in layer.get_config().items() if key not in _NOT_ARCHITECTURE}
                entry["settings"] = json.loads(json.dumps(settings, sort_keys=True, default=repr))
            except NotImplementedError:  # a custom layer without get_config: its class stands for it
                pass
        entries.append(entry)
        for child in children or ():  # a nested model: its layers say what it computes
            visit(child)

    for layer in model.layers:
        visit(layer)
    return entries


def without_name(entry: dict) -> dict:
    """An `architecture` entry without the layer name: what must agree for a state to resume."""
    return {key: value for key, value in entry.items() if key != "name"}


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def describe_change(saved: list[dict], current: list[dict]) -> str:
    """The first difference between two `architecture` lists, in words: the layer by name and what changed."""
    for before, after in zip(saved, current):
        if without_name(before) == without_name(after):
            continue
        if "shape" in before or "shape" in after:
            return f"a variable of shape {before.get('shape')} is now {after.get('shape')}"
        if before["class"] != after["class"]:
            return f"layer {before['name']!r} ({before['class']}) is now {after['name']!r} ({after['class']})"
        old, new = before.get("settings") or {}, after.get("settings") or {}
        changed = [key for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]
        details = ", ".join(f"{key} {_short(old.get(key))} -> {_short(new.get(key))}" for key in changed[:3])
        return f"layer {after['name']!r} ({after['class']}): {details}"
    return f"the saved model has {len(saved)} layers and variables, this one {len(current)}"


class EpochState(keras.callbacks.Callback):
    """Atomic per-epoch training state, history.csv, and exact resume (see the module docstring).

    `epoch_variable` (optional) is set to the epoch number at the start of each epoch, for
    `epoch_shuffled_dataset`. `early_stopping` and `checkpoint` get their counters back on resume.
    """

    def __init__(self, folder, history_path, epoch_variable=None, early_stopping=None, checkpoint=None,
                 monitor="val_nll"):
        super().__init__()
        self.folder, self.history_path = Path(folder), Path(history_path)
        self.epoch_variable, self.early_stopping, self.checkpoint = epoch_variable, early_stopping, checkpoint
        self.monitor = monitor
        self.rows: list[dict] = []

    # -- reading and writing --------------------------------------------------------------------------------
    def _variables(self):
        return list(self.model.variables) + list(self.model.optimizer.variables)

    def _architecture(self) -> list[dict]:
        return architecture(self.model) + [{"shape": list(v.shape)} for v in self._variables()]

    def _state(self):
        path = self.folder / "state.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def _commit(self, epoch: int, finished: bool) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"state-{epoch}{'-final' if finished else ''}.npz"
        temp = self.folder / f".{name}.tmp.npz"
        np.savez(temp, *[np.asarray(v.numpy()) for v in self._variables()])
        os.replace(temp, self.folder / name)
        fault_point("checkpoint_write")  # arrays written, state.json not yet: the old state must still hold
        atomic_write_text(self.folder / "state.json", json.dumps(
            {"epoch": epoch, "arrays": name, "history": self.rows, "finished": finished,
             "architecture": self._architecture()}))
        for old in self.folder.glob("state-*.npz"):
            if old.name != name:
                old.unlink()
        if self.rows:
            atomic_write_text(self.history_path, pd.DataFrame(self.rows).to_csv(index=False))

    def _restore(self, state) -> None:
        if not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self._check_architecture(state)
        self.rows = list(state["history"])
        self._restore_counters()  # first: it loads the best checkpoint, optimizer state included
        with np.load(self.folder / state["arrays"]) as arrays:
            values = [arrays[f"arr_{i}"] for i in range(len(arrays.files))]
        variables = self._variables()
        if len(values) != len(variables):  # a state saved before `architecture` was recorded
            raise KeraslsError(f"{self.folder}: the saved state has {len(values)} arrays, the model "
                               f"{len(variables)}: the model changed since this run started; use a new --run-name")
        for variable, value in zip(variables, values):
            variable.assign(value)
        keras_internals.set_initial_epoch(self.model, state["epoch"])

    def _check_architecture(self, state) -> None:
        saved, current = state.get("architecture"), self._architecture()
        if saved is None:  # written by a kerasls before the check
            print(f"note: {self.folder.parent.parent.name}: its saved state does not record the model it was trained "
                  "with, so resuming cannot check that model.py and kerasls still build the same one")
        elif [without_name(entry) for entry in saved] != [without_name(entry) for entry in current]:
            raise KeraslsError(
                f"{self.folder.parent.parent}: the model is not the one this run was trained with "
                f"({describe_change(saved, current)}; model.py edited, or another kerasls version); its saved "
                "state cannot resume it: restore model.py, or pass a new --run-name to start another run")

    def _restore_counters(self):
        scores = [row[self.monitor] for row in self.rows if self.monitor in row]
        if not scores:
            return
        best_epoch = int(np.argmin(scores))
        if self.checkpoint is not None:
            self.checkpoint.best = float(scores[best_epoch])
        if self.early_stopping is not None:
            stopping = self.early_stopping
            stopping.best, stopping.best_epoch = float(scores[best_epoch]), best_epoch
            stopping.wait = len(scores) - 1 - best_epoch
            saved = self.checkpoint is not None and Path(self.checkpoint.filepath).is_file()
            if stopping.restore_best_weights and saved:
                self.model.load_weights(self.checkpoint.filepath)  # overwritten by the saved state right after
                stopping.best_weights = self.model.get_weights()

    # -- callback hooks --------------------------------------------------------------------------------------
    def on_train_begin(self, logs=None):
        state = self._state()
        if state is None and self.history_path.is_file():
            # a later phase (fine-tuning) continues the history of the phases before it
            self.rows = pd.read_csv(self.history_path).to_dict("records")
        if state is not None:
            self._restore(state)
            if not state["finished"]:
                print(f"resuming {self.folder.parent.parent.name}: {state['epoch']} epoch(s) of this phase were "
                      f"committed before the interruption; training continues with epoch {state['epoch'] + 1}")
            if state["finished"]:
                keras_internals.set_initial_epoch(self.model, self.params["epochs"])  # trained already

    def on_epoch_begin(self, epoch, logs=None):
        if self.epoch_variable is not None:
            self.epoch_variable.assign(epoch)
        # this epoch ends with the best checkpoint, the state's arrays and their temporary copy on disk
        weights = sum(int(np.prod(variable.shape)) * np.dtype(variable.dtype).itemsize
                      for variable in self._variables())
        check_free_space(self.folder.parent, int(3 * weights) + (16 << 20), "saving an epoch's checkpoints")

    def on_train_batch_end(self, batch, logs=None):
        fault_point("batch")

    def on_epoch_end(self, epoch, logs=None):
        self.rows.append({"epoch": epoch, **{key: float(value) for key, value in (logs or {}).items()}})
        fault_point("epoch_end")  # the epoch ran but is not committed: a rerun repeats it
        self._commit(epoch + 1, finished=False)
        fault_point("after_commit")

    def on_train_end(self, logs=None):
        state = self._state()
        if state is None or not state["finished"]:
            self._commit(self.params["epochs"], finished=True)
            stopping = self.early_stopping
            if stopping is not None and stopping.stopped_epoch > 0:
                print(f"early stopping: stopped after epoch {stopping.stopped_epoch + 1} of {self.params['epochs']}; "
                      f"restored the weights of epoch {stopping.best_epoch + 1} (best {self.monitor} "
                      f"{stopping.best:.4f})")
