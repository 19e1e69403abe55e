"""The `kerasls` command.

    kerasls new TEMPLATE [-o DIR] [--no-input] [--force] [key=value ...]
    kerasls templates
    kerasls predict EXPORT INPUT [-o OUT.csv]
    kerasls evaluate EXPORT DATA [-o DIR] [--label COLUMN]
    kerasls sweep PROJECT --values 0,0.05,0.1,0.2 [--seeds N] [--config FILE] [key=value ...]

TensorFlow is imported only inside the commands that need it, so `kerasls new`, `--help` and `--version` start
in a fraction of a second.
"""

from __future__ import annotations

import argparse
import sys

from kerasls import __version__, startup
from kerasls.errors import KeraslsError, run_with_clear_errors
from kerasls.templates_index import available_templates, render_template


def _cmd_templates(args) -> int:
    for name, description in available_templates().items():
        print(f"{name:18} {description}")
    return 0


def _cmd_new(args) -> int:
    extra = {}
    for item in args.variables:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise KeraslsError(f"template variable {item!r} is not of the form key=value "
                               "(e.g. project_slug=my_intents)")
        extra[key] = value
    project = render_template(args.template, output_dir=args.output_dir, extra_context=extra,
                              no_input=args.no_input, force=args.force)
    print(f"created {project}")
    print(f"next: cd {project} && make train")
    return 0


TRUST_NOTE = ("note: a SavedModel is a program (a TensorFlow graph), not data: load only exports from sources "
              "you trust")


def _cmd_predict(args) -> int:
    startup.quiet_tensorflow()
    from kerasls.predict import predict_file  # imports TensorFlow

    frame = predict_file(args.export, args.inputs, batch_size=args.batch_size)
    print(TRUST_NOTE, file=sys.stderr)
    if args.output:
        from kerasls.fileio import atomic_write_text

        atomic_write_text(args.output, frame.to_csv(index=False))
        print(f"wrote {len(frame)} predictions to {args.output}", file=sys.stderr)
    else:
        frame.to_csv(sys.stdout, index=False)
    return 0


def _cmd_evaluate(args) -> int:
    startup.quiet_tensorflow()
    from kerasls.evaluate import evaluate_export  # imports TensorFlow
    from kerasls.results import headline

    metrics, out = evaluate_export(args.export, args.data, out=args.output, label=args.label, bins=args.bins,
                                   target_accuracy=args.target_accuracy)
    print(TRUST_NOTE, file=sys.stderr)
    print(headline(metrics))
    print(f"report: {out / 'report.html'}")
    return 0


def _cmd_sweep(args) -> int:
    from kerasls.sweep import parse_values, sweep

    if args.seeds < 1:
        raise KeraslsError(f"--seeds {args.seeds}: must be 1 or more")
    out = sweep(args.project, parse_values(args.values), seeds=args.seeds, base_seed=args.seed,
                overrides=args.variables, out=args.output, config=args.config)
    print(f"sweep: {out}")
    return 0


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage mistake as one `error: ...` line (via KeraslsError), like every other error."""

    def error(self, message):
        raise KeraslsError(f"{self.prog}: {message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="kerasls", description="Keras project templates for soft-target classification with label smoothing."
    )
    parser.add_argument("--version", action="version", version=f"kerasls {__version__}")
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)

    new = commands.add_parser("new", help="generate a project from a template")
    new.add_argument("template", help="template name (see `kerasls templates`) or a template folder")
    new.add_argument("-o", "--output-dir", default=".", help="folder the project folder is created in (default: .)")
    new.add_argument("--no-input", action="store_true", help="do not prompt; use defaults and key=value variables")
    new.add_argument("--force", action="store_true",
                     help="render into an existing non-empty project folder (files of the template are overwritten, "
                          "no other file is deleted)")
    new.add_argument("variables", nargs="*", metavar="key=value", help="template variables, e.g. project_slug=shop")
    new.set_defaults(handler=_cmd_new)

    templates = commands.add_parser("templates", help="list the templates")
    templates.set_defaults(handler=_cmd_templates)

    predict = commands.add_parser("predict", help="batch prediction from an export")
    predict.add_argument("export", help="export folder (runs/<run>/export/<version>, or export/ for the newest)")
    predict.add_argument("inputs", nargs="+", help="CSV/Parquet files of raw rows, or image files and folders")
    predict.add_argument("-o", "--output", help="CSV file to write (default: standard output)")
    predict.add_argument("--batch-size", type=int, default=1024)
    predict.set_defaults(handler=_cmd_predict)

    evaluate = commands.add_parser("evaluate", help="metrics and report for an export on labelled data")
    evaluate.add_argument("export", help="export folder (or export/ for the newest version)")
    evaluate.add_argument("data", help="labelled CSV or Parquet table (tabular export), or a folder of class "
                          "folders or a CSV manifest with path and label columns (image export)")
    evaluate.add_argument("-o", "--output", help="folder for metrics.json, predictions.csv, report.html "
                                                 "(default: evaluations/<data>-<run>-v<version>)")
    evaluate.add_argument("--label", help="label column (default: the one the export was trained on; images: label)")
    evaluate.add_argument("--bins", type=int, default=15, help="equal-width ECE bins (default: 15)")
    evaluate.add_argument("--target-accuracy", type=float, default=0.95,
                          help="the automation table's accuracy target: the confidence threshold that reaches it "
                               "(default: 0.95)")
    evaluate.set_defaults(handler=_cmd_evaluate)

    sweep = commands.add_parser("sweep", help="one run per label-smoothing value, then a summary")
    sweep.add_argument("project", help="a project folder made by `kerasls new`")
    sweep.add_argument("--values", default="0,0.05,0.1,0.2", help="comma-separated ε values (default: 0,0.05,0.1,0.2)")
    sweep.add_argument("--seeds", type=int, default=1, help="seeds per ε: mean ± std over seeds (default: 1)")
    sweep.add_argument("--seed", type=int, default=None, help="first seed (default: the project's config seed)")
    sweep.add_argument("--config", help="config file for every run (default: PROJECT/config.yaml)")
    sweep.add_argument("-o", "--output", help="sweep folder (default: PROJECT/sweep); finished runs in it are reused")
    sweep.add_argument("variables", nargs="*", metavar="key=value",
                       help="config overrides for every run, e.g. training.epochs=5 (paths relative to PROJECT)")
    sweep.set_defaults(handler=_cmd_sweep)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    argv = [item for item in (sys.argv[1:] if argv is None else argv) if item != "--debug"]  # handled outside
    # key=value variables may come before or after the flags: `kerasls new T --no-input project_slug=x`
    args, unparsed = parser.parse_known_args(argv)
    if unparsed:
        if getattr(args, "variables", None) is None or any(item.startswith("-") for item in unparsed):
            parser.error(f"unrecognized arguments: {' '.join(unparsed)}")
        args.variables = [*args.variables, *unparsed]
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0
    return args.handler(args)


def entry_point() -> None:
    raise SystemExit(run_with_clear_errors(main))


if __name__ == "__main__":
    entry_point()
