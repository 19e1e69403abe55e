"""What a run tells its user: where early stopping stopped and which epoch it kept (also on the report's curves)."""

import keras
import numpy as np
import pandas as pd

from kerasls import report
from kerasls.resume import EpochState


def test_early_stopping_says_where_it_stopped_and_which_epoch_it_kept(tmp_path, capsys):
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")  # learning rate 0: val_loss never improves
    stopping = keras.callbacks.EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    state = EpochState(tmp_path / "checkpoints" / "train", tmp_path / "history.csv", early_stopping=stopping,
                       monitor="val_loss")
    x, y = np.ones((8, 2)), np.ones((8, 1))
    model.fit(x, y, validation_data=(x, y), epochs=10, verbose=0, callbacks=[stopping, state])
    out = capsys.readouterr().out
    assert "early stopping: stopped after epoch 3 of 10; restored the weights of epoch 1 (best val_loss" in out


def test_the_report_marks_the_epoch_whose_weights_the_run_kept(tmp_path):
    history = pd.DataFrame({"epoch": [0, 1, 2, 3], "loss": [1.0, 0.8, 0.7, 0.65],
                            "val_nll": [0.9, 0.7, 0.75, 0.8]})
    assert report._kept_epoch(history, {"epoch_score": "val_nll"}) == 2
    assert report._kept_epoch(history, {"epoch_score": "val_soft_ce"}) is None
    marked = report.plot_history(history, tmp_path / "marked.png", best_epoch=2).read_bytes()
    plain = report.plot_history(history, tmp_path / "plain.png").read_bytes()
    assert marked != plain
