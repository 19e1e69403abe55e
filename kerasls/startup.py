"""`startup.quiet_tensorflow()`: TensorFlow is imported with its start-up lines kept off the terminal.

`import tensorflow` (TF 2.21) writes absl's pre-initialisation notice, oneDNN and CPU-feature notices and "Could
not find cuda drivers" to file descriptor 2 from C++, and the first device query adds "failed call to cuInit" on a
machine without a GPU; `TF_CPP_MIN_LOG_LEVEL` does not silence all of them. Here both happen once with file
descriptor 2 pointing at a temporary file; afterwards the lines that are start-up noise are dropped and anything
else is written to standard error as it came. `--debug` on the command line or `KERASLS_DEBUG=1` shows
everything.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile

# Lines TensorFlow prints at import and at the first device query of a process that has no use for them.
STARTUP_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IWE]\d{4} [\d:. ]+\d+ (port|cudart_stub|cpu_feature_guard|cuda_platform|cuda_executor|cuda_diagnostics"
    r"|gpu_device|util)\.cc:\d+\].*"
    r"|To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags\.)$"
)


def showing_everything() -> bool:
    return "--debug" in sys.argv[1:] or os.environ.get("KERASLS_DEBUG", "") not in ("", "0")


def without_noise(text: str) -> str:
    return "".join(line for line in text.splitlines(keepends=True) if not STARTUP_NOISE.match(line.rstrip("\n")))


def quiet_tensorflow() -> None:
    """Import TensorFlow (once per process) with its start-up noise dropped; everything with `--debug`."""
    if "tensorflow" in sys.modules or showing_everything():
        return
    # C++ log lines during training too (tf.data notices; oneDNN's "supports DT_INT64 only on platforms with
    # AVX-512", an error-level line at a text encoder's first tokenizer call): level 3 unless the user chose 0 or 1
    # (importing kerasls sets 2 where nothing was set)
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2") == "2":
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices("GPU")  # the CUDA probe, once, while captured
        except KeyboardInterrupt:
            os.dup2(saved, 2)
            print("error: interrupted while starting; nothing was written", file=sys.stderr)
            raise SystemExit(130) from None
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        rest = without_noise(captured.read().decode("utf-8", "replace"))
    if rest:
        sys.stderr.write(rest)
