"""{{ cookiecutter.project_name }}: an intent classifier trained with label smoothing, then calibrated.

    python train.py [--config config.yaml] [--run-name NAME] [key=value ...]

For example `python train.py training.epochs=5 targets.label_smoothing=0.05`. The script reads top to bottom:
configuration, data, model and recipe, training (and fine-tuning), calibration, export, report. Every step writes
into the run folder `runs/<name>/`, whose path is the last line printed. This file is yours: edit it.
"""

import sys

import kerasls
from kerasls import TabularConfig

if __name__ == "__main__":  # a mistyped key, a missing file or column: one line in a second, before TensorFlow loads
    kerasls.check_before_tensorflow(sys.argv[1:], TabularConfig)
kerasls.quiet_tensorflow()  # import TensorFlow without its start-up lines (--debug shows them)

from kerasls import TableFeed, export_classifier, run_with_clear_errors

from model import build_model


def main(argv):
    # ## Configuration
    # config.yaml, then key=value overrides, validated (an unknown key is an error).
    config, command_line = kerasls.read_command_line(argv, schema=TabularConfig)
    kerasls.set_seeds(config.seed, deterministic=config.training.deterministic)
    kerasls.configure_precision(config.training)
    # The tf.distribute strategy of training.distribute (one device, all local GPUs, or the workers of
    # TF_CONFIG). It is made before any other TensorFlow work, as multi-worker training requires.
    strategy = kerasls.distribution_strategy(config.training)
    print(kerasls.describe_setup(strategy, config.training))

    # ## Data
    # The training table, and validation/test tables when given; without a validation file, a stratified
    # split of the training rows. Columns are checked before anything trains. The preprocessing (standardised
    # numbers, one-hot categories, TF-IDF text, or a pretrained encoder's tokenizer with data.text.encoder) is
    # learnt from training rows only and goes into the export, so serving takes raw values. Targets are
    # probability vectors: one-hot rows for hard labels, or per-row
    # distributions from probability or vote columns (targets.soft_labels). With `data.streaming: true` the
    # files are read in chunks, never whole (kerasls.data.streaming says what else differs).
    feed = TableFeed(config)
    print(feed.summary())
    kerasls.check_validation_rows(config.calibration, feed.in_scope_rows("val"))  # enough rows for conformal.alpha
    kerasls.warn_about_targets(config.targets)
    batch_size, drop_remainder = config.training.batch_size, kerasls.uses_xla(config.training)
    train_data = feed.train_dataset(batch_size, drop_remainder)  # each epoch's order depends on (seed, epoch)
    val_data = feed.dataset("val", batch_size)

    # ## Model and recipe
    # model.py builds on the named inputs: "numeric", "categorical" and a "text_<column>" per text column (TF-IDF,
    # or a KerasHub encoder loaded from its preset, with LoRA adapters when data.text.encoder.lora_rank is set).
    # It returns logits. The loss is CategoricalCrossentropy(label_smoothing=ε,
    # from_logits=True): the targets become y(1 - ε) + ε/K inside the loss, or y(1 - ε) + ε·π toward the
    # training class frequencies with `targets.prior: class_prior`; with a teacher, the distillation loss. The
    # metrics read the unsmoothed targets: `nll` and `accuracy`, or `soft_ce` and `argmax_agreement` for label
    # distributions. AdamW by default; `training.lr_schedule: cosine` adds cosine decay with warm-up.
    steps = kerasls.steps_per_epoch(feed.rows["train"], batch_size, drop_remainder)

    def compile_model(model, training_config):
        model.compile(optimizer=kerasls.make_optimizer(training_config, steps),
                      loss=kerasls.make_loss(config.targets, prior=feed.class_prior()),
                      metrics=kerasls.make_metrics(config.targets, len(feed.classes)),
                      jit_compile=training_config.jit_compile)

    with strategy.scope():
        model_inputs = feed.model_inputs()
        model = build_model(model_inputs, len(feed.classes), config.model)
        if config.model.freeze_backbone:  # the text encoders wait for the fine-tuning phase
            model_inputs.freeze_encoders()
        compile_model(model, config.training)
    model.summary()

    run_folder = kerasls.start_run(config, command_line)  # data and model checked out: runs/<name>/, the config

    # ## Training
    # TensorBoard, the best checkpoint and early stopping on the validation score (`val_nll`, or `val_soft_ce`
    # for label distributions), and per-epoch crash-safe state (kerasls.resume): rerun with the same --run-name
    # after a crash to resume from the last finished epoch. With `model.freeze_backbone`, a second phase unfreezes
    # the text encoders (all weights, or their LoRA adapters) at `model.fine_tune_learning_rate`. Put callbacks
    # of your own before these.
    epoch_score = kerasls.validation_score(config.targets)
    callbacks = kerasls.standard_callbacks(run_folder, config.training, monitor=epoch_score)
    kerasls.fit(model, train_data, val_data, config.training, callbacks)
    if config.model.freeze_backbone and config.model.fine_tune_epochs:
        model_inputs.unfreeze_encoders()
        fine_tuning = config.training.model_copy(update={"learning_rate": config.model.fine_tune_learning_rate})
        with strategy.scope():
            compile_model(model, fine_tuning)
        print(f"fine-tuning the text encoders: {kerasls.describe_trainable(model)}, learning rate "
              f"{fine_tuning.learning_rate:g}")
        done = kerasls.epochs_done(run_folder, phase="train")
        callbacks = kerasls.standard_callbacks(run_folder, fine_tuning, phase="fine_tune", monitor=epoch_score)
        kerasls.fit(model, train_data, val_data, fine_tuning, callbacks,
                     epochs=done + config.model.fine_tune_epochs, initial_epoch=done)

    # ## Calibration
    # The graph the export will serve (raw columns -> preprocessing -> model -> logits), traced once; the
    # validation and test logits come from it, so the temperature and the metrics describe exactly what is
    # served, also under mixed precision. One temperature T divides the logits (it never changes the predicted
    # class): it minimises the NLL of the validation rows' observed classes (Guo et al. 2017), or the soft
    # cross-entropy to their distributions when they carry them (calibration.fit_on). Then the prediction sets
    # (calibration.conformal): a threshold on the validation rows' calibrated probabilities such that a row's set
    # of intents holds its true intent for at least 1 - alpha of new rows (split conformal prediction). With
    # calibration.abstain, the rule that decides when the export answers "none of these" instead of an intent,
    # chosen on the validation rows (with rows of data.out_of_scope_label among them, the threshold that best
    # separates them from the intents).
    serving = feed.serving(model)
    calibrated = kerasls.calibrate(serving, feed, config.calibration, seed=config.seed)

    # ## Export
    # A SavedModel that takes the raw columns by name and returns calibrated probabilities, class names, the
    # prediction set and the decision (an intent, or calibration.abstain.label; a row whose text holds no known
    # word always abstains): preprocessing (an encoder's tokenizer too), model, temperature and set threshold in one
    # graph, loadable by TF Serving without Keras (with a text encoder, its tokenizer ops need TensorFlow Text).
    export_path = None
    if config.export.enabled:
        export_path = export_classifier(
            run_folder.export_root, serving, tracked=feed.tracked(model), classes=feed.classes,
            temperature=calibrated.temperature, set_predictor=calibrated.set_predictor,
            decision_rule=calibrated.decision_rule,
            metadata={"label": config.data.label, "label_smoothing": config.targets.label_smoothing,
                      "out_of_scope_label": config.data.out_of_scope_label},
        )
        print(f"export: {export_path}")
    kerasls.save_keras_model(model, run_folder)  # model.keras, for keras.models.load_model (encoded inputs)

    # ## Report
    # metrics.json, predictions.csv, report.html (metrics, curves, reliability diagram, automation rate,
    # prediction sets), all against the observed classes of the test split (or validation); `kerasls sweep` ranks
    # ε by the validation score after T.
    metrics = kerasls.report_run(run_folder, feed, calibrated, config, export_path, epoch_score,
                                 title="{{ cookiecutter.project_name }}")
    print(kerasls.headline(metrics))
    print(f"curves: tensorboard --logdir {run_folder.tensorboard}")
    print(f"run: {run_folder.path}")


if __name__ == "__main__":
    run_with_clear_errors(main, sys.argv[1:])
