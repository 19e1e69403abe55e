"""The one exception type for mistakes a user can fix.

A `KeraslsError` carries a single line that names the file, row, column or key and says how to fix it. The
command-line entry points print it as `error: <message>` on standard error and exit with status 2, without a
traceback (unless `--debug`). It subclasses `ValueError` so library callers can catch it the usual way.
"""


class KeraslsError(ValueError):
    """Bad input: a config key, a data file, a column, a template variable."""


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none), to quote in a one-line error."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# What to tell a user who pressed Ctrl-C; a started run sets the command that resumes it.
_NOTHING_WRITTEN = "nothing was written"
_INTERRUPTED = {"hint": _NOTHING_WRITTEN}


def set_interrupt_hint(hint: str) -> None:
    _INTERRUPTED["hint"] = hint


def run_with_clear_errors(main, argv=None):
    """Run `main(argv)`; a `KeraslsError` becomes one `error: ...` line on stderr and exit status 2.

    `--debug` anywhere on the command line shows the traceback instead.
    """
    import sys

    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    try:
        return main(argv)
    except KeraslsError as error:
        if debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except OSError as error:
        if debug or error.errno != 28:  # ENOSPC: the disk filled while writing
            raise
        then = "" if _INTERRUPTED["hint"] == _NOTHING_WRITTEN else f", then {_INTERRUPTED['hint']}"
        print(f"error: {error.filename or 'a file'}: no space left on the device; free some space (or pass "
              f"--runs-dir on a larger disk){then}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print(f"error: interrupted; {_INTERRUPTED['hint']}", file=sys.stderr)
        raise SystemExit(130) from None
