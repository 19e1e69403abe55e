"""`runs/<name>/train.log`: what `train.py` printed, kept with the run.

The headline, the notes ("temperature scaling did not help ..."), the model summary and an error line would
otherwise be lost with the terminal. `capture()` starts copying standard output and standard error into memory as
soon as `train.py` reads its command line; `attach(path)` writes what was printed so far into the log and appends
everything after it (a resumed run appends to the same log, after a line that says so). Progress bars redraw one
line with carriage returns: the log keeps each line as it last stood, not every redraw. The terminal gets every
byte as before.
"""

from __future__ import annotations

import datetime
import sys
from pathlib import Path


class _Tee:
    """A text stream that writes to `stream` and to the shared `_Log`."""

    def __init__(self, stream, log: "_Log"):
        self.stream, self.log = stream, log

    def write(self, text):
        self.stream.write(text)
        self.log.write(text)
        return len(text)

    def flush(self):
        self.stream.flush()
        self.log.flush()

    def __getattr__(self, name):  # isatty, fileno, encoding, ...: the real stream's
        return getattr(self.stream, name)


class _Log:
    """Finished lines go to the file (or, before `attach`, to memory); the line being written waits until its newline,
    and a carriage return starts it over."""

    def __init__(self):
        self.lines: list[str] = []
        self.current = ""
        self.file = None

    def write(self, text: str) -> None:
        *finished, self.current = (self.current + text).split("\n")
        for line in finished:
            self._emit(line.rsplit("\r", 1)[-1])
        self.current = self.current.rsplit("\r", 1)[-1] if "\r" in self.current.rstrip("\r") else self.current

    def _emit(self, line: str) -> None:
        if self.file is None:
            self.lines.append(line)
        else:
            self.file.write(line + "\n")

    def flush(self) -> None:
        if self.file is not None:
            self.file.flush()

    def attach(self, path: Path) -> None:
        resumed = path.is_file() and path.stat().st_size > 0
        self.file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (open for the life of the process)
        if resumed:
            self.file.write(f"--- rerun {datetime.datetime.now():%Y-%m-%d %H:%M:%S} ---\n")
        for line in self.lines:
            self.file.write(line + "\n")
        self.lines = []
        self.file.flush()


_LOG = _Log()


def capture() -> None:
    """Copy standard output and standard error into the log from now on (once per process)."""
    if not isinstance(sys.stdout, _Tee):
        sys.stdout = _Tee(sys.stdout, _LOG)
    if not isinstance(sys.stderr, _Tee):
        sys.stderr = _Tee(sys.stderr, _LOG)


def attach(path) -> None:
    """Write what was captured so far to `path` and append everything printed after it."""
    _LOG.attach(Path(path))
