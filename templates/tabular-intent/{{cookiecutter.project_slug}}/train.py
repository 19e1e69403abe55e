"""{{ cookiecutter.project_name }}: an intent classifier trained with label smoothing, then calibrated.

    python train.py [--config config.yaml] [--run-name NAME] [key=value ...]

For example `python train.py training.epochs=5 targets.label_smoothing=0.05`. The script reads top to bottom:
configuration, data, targets, model, training, calibration, export, report. Every step writes into the run
folder `runs/<name>/`, whose path is the last line printed. This file is yours: edit it.
"""

import sys

from kerasls import guardrails, results, run, targets, teacher, training
from kerasls.data import streaming, tabular
from kerasls.errors import run_with_clear_errors
from kerasls.export import export_classifier, tabular_serving
from kerasls.preprocessing import TabularPreprocessor

from model import build_model


def main(argv):
    # ## Configuration
    # config.yaml, then key=value overrides, validated (an unknown key is an error).
    config, command_line = run.read_command_line(argv)
    training.set_seeds(config.seed, deterministic=config.training.deterministic)
    training.configure_precision(config.training)
    # The tf.distribute strategy of training.distribute (one device, all local GPUs, or the workers of
    # TF_CONFIG). It is made before any other TensorFlow work, as multi-worker training requires.
    strategy = training.distribution_strategy(config.training)

    # ## Data
    # The training table, and validation/test tables when given; without a validation file, a stratified
    # split of the training rows. Columns are checked here, before any training starts.
    epsilon, soft = config.targets.label_smoothing, config.targets.soft_labels
    batch_size, drop_remainder = config.training.batch_size, training.uses_xla(config.training)
    if config.data.streaming:
        # `data.streaming: true`, for tables larger than memory: the files are read in chunks, never whole. One
        # pass over the training file checks it and learns the preprocessing; every epoch reads it again, encodes
        # each chunk and shuffles rows within it (kerasls.data.streaming lists what else differs).
        stream = streaming.TableStream(config.data, seed=config.seed, soft=soft)
        classes, features, eval_split = stream.classes, stream.features, stream.eval_split
        print(f"classes: {classes}")
        print(f"rows: train={stream.rows['train']} val={stream.rows['val']} {eval_split}={stream.rows[eval_split]}")
        run_folder = run.start_run(config, command_line)
        preprocessor, prior = stream.preprocessor, stream.class_prior()
        train_data = stream.dataset(
            "train", batch_size, shuffle=True, drop_remainder=drop_remainder, epoch=training.epoch_variable()
        )
        val_data = stream.dataset("val", batch_size)
        # raw columns, as the export takes them: the run evaluates through the served graph (see Calibration)
        val_inputs, eval_inputs = (stream.dataset(split, batch_size, encode=False) for split in ("val", eval_split))
        t_val, y_val, val_is_soft = stream.targets("val")
        t_eval, y_eval, eval_is_soft = stream.targets(eval_split)
        observed_class = stream.observed_class(eval_split)
    else:
        splits = tabular.load_splits(config.data, seed=config.seed, soft=soft)
        classes, features, eval_split = splits.classes, splits.features, splits.eval_split
        print(f"classes: {classes}")
        print(f"rows: train={len(splits.train)} val={len(splits.val)} {eval_split}={len(splits.eval_frame)}")

        # The data checked out: make the run folder runs/<name>/ with the resolved config, so the run can be
        # repeated.
        run_folder = run.start_run(config, command_line)

        # Preprocessing (standardised numbers, one-hot categories, TF-IDF text) is learnt from training rows
        # only. It runs once over each table here; the same layer goes into the export, so serving takes raw
        # values.
        preprocessor = TabularPreprocessor(
            features.numeric, features.categorical, features.text, text_max_tokens=config.data.text_max_tokens
        )
        preprocessor.adapt(tabular.column_arrays(splits.train, features))

        def encode(frame):
            return preprocessor.encode(tabular.column_arrays(frame, features))

        x_train, x_val = encode(splits.train), encode(splits.val)
        # raw columns, as the export takes them: the run evaluates through the served graph (see Calibration)
        val_inputs, eval_inputs = (tabular.column_arrays(frame, features) for frame in (splits.val, splits.eval_frame))

        # ## Targets
        # The pipeline always yields probability vectors: one-hot rows for hard labels, or per-row distributions
        # from probability or vote columns (targets.soft_labels); y_* are the observed classes (the label column,
        # else the argmax of the distribution) that accuracy and calibration are measured against. Label
        # smoothing is applied by the loss, so metrics read the unsmoothed targets: y(1 - ε) + ε/K, or with
        # `prior: class_prior` y(1 - ε) + ε·π toward the training class frequencies π. With a teacher, the
        # targets are packed as [hard | softmax(z_teacher / T)] for the distillation loss (kerasls.losses).
        t_train, y_train, _ = splits.targets(splits.train)
        t_val, y_val, val_is_soft = splits.targets(splits.val)
        t_eval, y_eval, eval_is_soft = splits.targets(splits.eval_frame)
        observed_class, prior = splits.observed_class(splits.eval_frame), targets.class_prior(y_train, len(classes))
        val_packed = t_val
        if soft is not None and soft.source == "teacher":
            t_train, val_packed = (
                teacher.pack(t, teacher.table_teacher_logits(soft.teacher, classes, frame), soft.temperature)
                for t, frame in ((t_train, splits.train), (t_val, splits.val))
            )
        train_data = training.make_dataset(
            x_train, t_train, batch_size, shuffle=True, seed=config.seed, drop_remainder=drop_remainder
        )
        val_data = training.make_dataset(x_val, val_packed, batch_size)
    print(f"features: numeric={features.numeric} categorical={features.categorical} text={features.text}")
    guardrails.warn(config.targets)

    # ## Model
    # The head from model.py, compiled with CategoricalCrossentropy(label_smoothing=ε, from_logits=True) and
    # metrics on the unsmoothed targets: `nll` and `accuracy` for hard labels, `soft_ce` (cross-entropy to the
    # label distributions) and `argmax_agreement` for probability or vote columns (kerasls.training).
    with strategy.scope():
        model = build_model(preprocessor.output_dim, len(classes), config.model)
        training.compile_classifier(model, config.training, config.targets, prior=prior)
    model.summary()

    # ## Training
    # Progress bar, history.csv, TensorBoard, best checkpoint and early stopping on the validation score
    # (`val_nll`, or `val_soft_ce` for label distributions), and per-epoch crash-safe state (kerasls.resume):
    # rerun with the same --run-name after a crash to resume from the last finished epoch.
    epoch_score = training.validation_score(config.targets)
    training.fit(model, train_data, val_data, config.training, run_folder, monitor=epoch_score)

    # ## Calibration
    # The graph the export will serve (raw columns -> preprocessing -> model -> logits), traced once. Validation
    # and test logits come from it, so the temperature and the metrics describe exactly what is served, also
    # under mixed precision. One temperature T divides the logits; it never changes the predicted class. T
    # minimises the NLL of the validation rows' observed classes (Guo et al. 2017), or, when they carry label
    # distributions, the soft cross-entropy to them (calibration.fit_on). Metrics use the observed classes of
    # the test split (or validation), unsmoothed.
    serving = tabular_serving(model, preprocessor)
    val_logits = training.predict_logits(serving.evaluation_function(), val_inputs)
    fit_on = results.temperature_objective(config.calibration.fit_on, val_is_soft)
    temperature = results.fit_temperature(val_logits, y_val, enabled=config.calibration.temperature_scaling,
                                          soft_targets=t_val if fit_on == "soft" else None)
    eval_logits = training.predict_logits(serving.evaluation_function(), eval_inputs)

    # ## Export
    # A SavedModel that takes the raw columns by name and returns calibrated probabilities and class names:
    # preprocessing, model and temperature in one graph, loadable by TF Serving without Keras.
    export_path = None
    if config.export.enabled:
        export_path = export_classifier(
            run_folder.export_root,
            serving,
            tracked=[preprocessor, model],
            classes=classes,
            temperature=temperature,
            metadata={"label": config.data.label, "label_smoothing": epsilon},
        )
        print(f"export: {export_path}")

    # ## Report
    # metrics.json, predictions.csv, report.html (metrics, curves, reliability diagram, automation rate), plus
    # validation NLL before and after T, which `kerasls sweep` ranks label-smoothing values by.
    metrics = results.write_results(
        run_folder, classes=classes, labels=y_eval, logits=eval_logits, temperature=temperature,
        split=eval_split, label_smoothing=epsilon, bins=config.calibration.bins,
        target_accuracy=config.calibration.target_accuracy, export_path=export_path,
        validation=(val_logits, y_val, t_val if val_is_soft else None),
        temperature_scaling=config.calibration.temperature_scaling, temperature_fit_on=fit_on,
        soft_targets=t_eval if eval_is_soft else None, observed_class=observed_class, epoch_score=epoch_score,
        title="{{ cookiecutter.project_name }}",
    )
    print(results.headline(metrics))
    print(f"run: {run_folder.path}")


if __name__ == "__main__":
    run_with_clear_errors(main, sys.argv[1:])
