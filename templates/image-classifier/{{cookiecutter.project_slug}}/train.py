"""{{ cookiecutter.project_name }}: an image classifier trained with label smoothing, then calibrated.

    python train.py [--config config.yaml] [--run-name NAME] [key=value ...]

For example `python train.py training.epochs=5 augment.mixup.probability=0.5`. The script reads top to bottom:
configuration, data, targets, pipeline, model, training, calibration, export, report. Every step writes into
the run folder `runs/<name>/`, whose path is the last line printed. This file is yours: edit it.
"""

import sys

from kerasls import augmentation, guardrails, results, run, targets, teacher, training
from kerasls.config import ImageConfig
from kerasls.data import images
from kerasls.errors import run_with_clear_errors
from kerasls.export import export_classifier, image_serving

from model import build_model


def main(argv):
    # ## Configuration
    # config.yaml, then key=value overrides, validated (an unknown key is an error).
    config, command_line = run.read_command_line(argv, schema=ImageConfig)
    training.set_seeds(config.seed, deterministic=config.training.deterministic)
    training.configure_precision(config.training)
    # The tf.distribute strategy of training.distribute (one device, all local GPUs, or the workers of
    # TF_CONFIG). It is made before any other TensorFlow work, as multi-worker training requires.
    strategy = training.distribution_strategy(config.training)

    # ## Data
    # Class folders or a CSV manifest. Every image is decoded once here, so a corrupt file is reported by name
    # before training starts. Without a validation set, a stratified split of the training images.
    train_set, val_set, test_set, classes = images.load_image_sets(config.data_view(), seed=config.seed)
    eval_set, eval_split = (test_set, "test") if test_set is not None else (val_set, "val")
    print(f"classes: {classes}")
    print(f"images: train={len(train_set.paths)} val={len(val_set.paths)} {eval_split}={len(eval_set.paths)}")

    # The data checked out: make the run folder runs/<name>/ with the resolved config, so the run can be repeated.
    run_folder = run.start_run(config, command_line)

    # ## Targets
    # Probability vectors: one-hot rows for hard labels, or the manifest's distributions (probability or vote
    # columns); `labels` are the observed classes (the label column, else the argmax of the distribution) that
    # accuracy and calibration are measured against. Label smoothing is applied by the loss, after MixUp/CutMix,
    # so metrics read the unsmoothed targets: y(1 - ε) + ε/K, or y(1 - ε) + ε·π toward the training class
    # frequencies π with `prior: class_prior`. Smoothing is affine, so smoothing after mixing equals timm's
    # "smooth, then mix". With a teacher, targets are packed as [hard | softmax(z_teacher / T)] for the
    # distillation loss.
    epsilon, soft = config.targets.label_smoothing, config.targets.soft_labels
    prior = targets.class_prior(train_set.labels, len(classes))
    val_distributions = val_set.targets if val_set.soft else None
    if soft is not None and soft.source == "teacher":
        for image_set in (train_set, val_set):
            logits = teacher.image_teacher_logits(soft.teacher, classes, image_set)
            image_set.targets = teacher.pack(image_set.targets, logits, soft.temperature)
    guardrails.warn(config.targets, config.augment)

    # ## Pipeline
    # tf.data: parallel decode and resize, in-memory cache, then (training only) random flips/rotations/zoom
    # and MixUp/CutMix on whole batches. Validation and test data are never augmented or mixed.
    image_size, channels = tuple(config.data.image_size), config.data.channels
    train_data = images.make_image_dataset(
        train_set, image_size, channels, config.training.batch_size, shuffle=True, seed=config.seed,
        cache=config.data.cache, augment=augmentation.build_augmenter(config.augment, seed=config.seed),
        mix=augmentation.build_mixer(config.augment, seed=config.seed),
        drop_remainder=training.uses_xla(config.training),
    )

    def evaluation_data(image_set):
        return images.make_image_dataset(image_set, image_size, channels, config.training.batch_size,
                                         cache=config.data.cache)

    val_data, eval_data = evaluation_data(val_set), evaluation_data(eval_set)

    # ## Model
    # model.py's backbone and head, compiled with CategoricalCrossentropy(label_smoothing=ε, from_logits=True)
    # and metrics on the unsmoothed targets: `nll` and `accuracy` for hard labels, `soft_ce` and
    # `argmax_agreement` for probability or vote columns (kerasls.training).
    with strategy.scope():
        model = build_model((*image_size, channels), len(classes), config.model)
        training.compile_classifier(model, config.training, config.targets, prior=prior)
    model.summary()

    # ## Training
    # Progress bar, history.csv, TensorBoard, best checkpoint and early stopping on the validation score
    # (`val_nll`, or `val_soft_ce` for label distributions), and per-epoch crash-safe state (kerasls.resume).
    # With a frozen backbone, a second phase unfreezes it at a lower learning rate.
    epoch_score = training.validation_score(config.targets)
    history = training.fit(model, train_data, val_data, config.training, run_folder, monitor=epoch_score)
    if config.model.freeze_backbone and config.model.fine_tune_epochs:
        for layer in model.layers:
            layer.trainable = True
        fine_tuning = config.training.model_copy(update={"learning_rate": config.model.fine_tune_learning_rate})
        with strategy.scope():
            training.compile_classifier(model, fine_tuning, config.targets, prior=prior)
        done = len(history.epoch)
        training.fit(model, train_data, val_data, fine_tuning, run_folder,
                     epochs=done + config.model.fine_tune_epochs, initial_epoch=done, phase="fine_tune",
                     monitor=epoch_score)

    # ## Calibration
    # The graph the export will serve, traced once; validation and test logits come from it, so the temperature
    # and the metrics describe exactly what is served, also under mixed precision. One temperature T fitted on
    # the NLL of the validation images' observed classes, or the soft cross-entropy to their distributions when
    # they carry them (calibration.fit_on); metrics on the unsmoothed observed classes of test (or validation).
    serving = image_serving(model, image_size, channels)
    val_logits = training.predict_logits(serving.evaluation_function(), val_data)
    fit_on = results.temperature_objective(config.calibration.fit_on, val_distributions is not None)
    temperature = results.fit_temperature(val_logits, val_set.labels, enabled=config.calibration.temperature_scaling,
                                          soft_targets=val_distributions if fit_on == "soft" else None)
    eval_logits = training.predict_logits(serving.evaluation_function(), eval_data)

    # ## Export
    # A SavedModel whose `serving_default` takes encoded image bytes (decoded and resized in the graph, as in
    # training) and returns calibrated probabilities and class names; `serving_tensor` takes float images.
    export_path = None
    if config.export.enabled:
        export_path = export_classifier(
            run_folder.export_root, serving, tracked=[model],
            classes=classes, temperature=temperature, metadata={"label_smoothing": epsilon},
        )
        print(f"export: {export_path}")

    # ## Report
    # metrics.json, predictions.csv (one row per image, with its path), report.html.
    metrics = results.write_results(
        run_folder, classes=classes, labels=eval_set.labels, logits=eval_logits, temperature=temperature,
        split=eval_split, label_smoothing=epsilon, bins=config.calibration.bins,
        target_accuracy=config.calibration.target_accuracy, export_path=export_path,
        validation=(val_logits, val_set.labels, val_distributions),
        temperature_scaling=config.calibration.temperature_scaling, temperature_fit_on=fit_on,
        row_ids=eval_set.paths, soft_targets=eval_set.targets if eval_set.soft else None,
        observed_class=eval_set.observed_class, epoch_score=epoch_score, title="{{ cookiecutter.project_name }}",
    )
    print(results.headline(metrics))
    print(f"run: {run_folder.path}")


if __name__ == "__main__":
    run_with_clear_errors(main, sys.argv[1:])
