"""{{ cookiecutter.project_name }}: an image classifier trained with label smoothing, then calibrated.

    python train.py [--config config.yaml] [--run-name NAME] [key=value ...]

For example `python train.py training.epochs=5 augment.mixup.probability=0.5`. The script reads top to bottom:
configuration, data, model and recipe, training (and fine-tuning), calibration, export, report. Every step
writes into the run folder `runs/<name>/`, whose path is the last line printed. This file is yours: edit it.
"""

import sys

import kerasls
from kerasls import ImageConfig

if __name__ == "__main__":  # a mistyped key or a missing folder: one line in a second, before TensorFlow loads
    kerasls.check_before_tensorflow(sys.argv[1:], ImageConfig)
kerasls.quiet_tensorflow()  # import TensorFlow without its start-up lines (--debug shows them)

from kerasls import ImageFeed, export_classifier, run_with_clear_errors

from model import build_model


def main(argv):
    # ## Configuration
    # config.yaml, then key=value overrides, validated (an unknown key is an error).
    config, command_line = kerasls.read_command_line(argv, schema=ImageConfig)
    kerasls.set_seeds(config.seed, deterministic=config.training.deterministic)
    kerasls.configure_precision(config.training)
    # The tf.distribute strategy of training.distribute (one device, all local GPUs, or the workers of
    # TF_CONFIG). It is made before any other TensorFlow work, as multi-worker training requires.
    strategy = kerasls.distribution_strategy(config.training)
    print(kerasls.describe_setup(strategy, config.training))

    # ## Data
    # Class folders or a CSV manifest; every image is decoded once here, so a corrupt file is reported by name
    # before training starts. Without a validation set, a stratified split of the training images. Targets are
    # probability vectors: one-hot rows for hard labels, or the manifest's distributions (probability or vote
    # columns). Training batches get random flips/rotations/zoom, then MixUp/CutMix; validation and test images
    # are never augmented or mixed.
    feed = ImageFeed(config)
    print(feed.summary())
    kerasls.check_validation_rows(config.calibration, feed.in_scope_rows("val"))  # enough rows for conformal.alpha
    kerasls.warn_about_targets(config.targets, config.augment)
    batch_size, drop_remainder = config.training.batch_size, kerasls.uses_xla(config.training)
    train_data = feed.train_dataset(  # each epoch's order depends on (seed, epoch): exact crash resume
        batch_size, drop_remainder, augment=kerasls.build_augmenter(config.augment, seed=config.seed),
        mix=kerasls.build_mixer(config.augment, seed=config.seed))
    val_data = feed.dataset("val", batch_size)

    # ## Model and recipe
    # model.py's backbone and head (logits out). CategoricalCrossentropy(label_smoothing=ε, from_logits=True)
    # smooths after MixUp/CutMix; smoothing is affine, so that equals timm's "smooth, then mix". The metrics
    # read the unsmoothed targets: `nll` and `accuracy`, or `soft_ce` and `argmax_agreement` for label
    # distributions. AdamW by default; `training.lr_schedule: cosine` adds cosine decay with warm-up.
    steps = kerasls.steps_per_epoch(feed.rows["train"], batch_size, drop_remainder)

    def compile_model(model, training_config):
        model.compile(optimizer=kerasls.make_optimizer(training_config, steps),
                      loss=kerasls.make_loss(config.targets, prior=feed.class_prior()),
                      metrics=kerasls.make_metrics(config.targets, len(feed.classes)),
                      jit_compile=training_config.jit_compile)

    with strategy.scope():
        model = build_model(feed.input_shape, len(feed.classes), config.model)
        compile_model(model, config.training)
    model.summary()

    run_folder = kerasls.start_run(config, command_line)  # data and model checked out: runs/<name>/, the config

    # ## Training
    # TensorBoard, the best checkpoint and early stopping on the validation score (`val_nll`, or `val_soft_ce`
    # for label distributions), and per-epoch crash-safe state (kerasls.resume). With a frozen backbone, a
    # second phase unfreezes it at a lower learning rate; it starts after the epochs the first phase committed,
    # so a run killed during either phase resumes where it stopped. Put callbacks of your own before these.
    epoch_score = kerasls.validation_score(config.targets)
    callbacks = kerasls.standard_callbacks(run_folder, config.training, monitor=epoch_score)
    kerasls.fit(model, train_data, val_data, config.training, callbacks)
    if config.model.freeze_backbone and config.model.fine_tune_epochs:
        for layer in model.layers:
            layer.trainable = True
        fine_tuning = config.training.model_copy(update={"learning_rate": config.model.fine_tune_learning_rate})
        with strategy.scope():
            compile_model(model, fine_tuning)
        done = kerasls.epochs_done(run_folder, phase="train")
        callbacks = kerasls.standard_callbacks(run_folder, fine_tuning, phase="fine_tune", monitor=epoch_score)
        kerasls.fit(model, train_data, val_data, fine_tuning, callbacks,
                     epochs=done + config.model.fine_tune_epochs, initial_epoch=done)

    # ## Calibration
    # The graph the export will serve, traced once; validation and test logits come from it, so the temperature
    # and the metrics describe exactly what is served, also under mixed precision. One temperature T minimises
    # the NLL of the validation images' observed classes, or the soft cross-entropy to their distributions when
    # they carry them (calibration.fit_on). Then the prediction sets (calibration.conformal): a threshold on the
    # validation images' calibrated probabilities such that an image's set of classes holds its true class for at
    # least 1 - alpha of new images (split conformal prediction). With calibration.abstain, the rule that decides
    # when the export answers "none of these" instead of a class, chosen on the validation images (with images of
    # data.out_of_scope_label among them, the threshold that best separates them from the classes).
    serving = feed.serving(model)
    calibrated = kerasls.calibrate(serving, feed, config.calibration, seed=config.seed)

    # ## Export
    # A SavedModel whose `serving_default` takes encoded image bytes (decoded and resized in the graph, as in
    # training) and returns calibrated probabilities, class names, the prediction set and the decision (a class,
    # or calibration.abstain.label); `serving_tensor` takes float images.
    export_path = None
    if config.export.enabled:
        export_path = export_classifier(run_folder.export_root, serving, tracked=feed.tracked(model),
                                        classes=feed.classes, temperature=calibrated.temperature,
                                        set_predictor=calibrated.set_predictor,
                                        decision_rule=calibrated.decision_rule,
                                        metadata={"label_smoothing": config.targets.label_smoothing,
                                                  "out_of_scope_label": config.data.out_of_scope_label})
        print(f"export: {export_path}")
    kerasls.save_keras_model(model, run_folder)  # model.keras, for keras.models.load_model (decoded images in)

    # ## Report
    # metrics.json, predictions.csv (one row per image, with its path), report.html (with the prediction sets).
    metrics = kerasls.report_run(run_folder, feed, calibrated, config, export_path, epoch_score,
                                 title="{{ cookiecutter.project_name }}")
    print(kerasls.headline(metrics))
    print(f"curves: tensorboard --logdir {run_folder.tensorboard}")
    print(f"run: {run_folder.path}")


if __name__ == "__main__":
    run_with_clear_errors(main, sys.argv[1:])
