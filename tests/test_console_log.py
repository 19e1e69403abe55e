"""train.log keeps the console: lines as they were printed, progress-bar redraws as their last state, a rerun
appended after a marker line."""

import subprocess
import sys


def run(script, log):
    code = ("import sys\nfrom kerasls import console_log\nconsole_log.capture()\n" + script
            + f"\nconsole_log.attach({str(log)!r})\nprint('after attach')\nprint('an error line', file=sys.stderr)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)  # bytes: keep "\r"
    return result.returncode, result.stdout.decode(), result.stderr.decode()


def test_the_log_holds_what_was_printed_before_and_after_attach(tmp_path):
    log = tmp_path / "train.log"
    returncode, stdout, stderr = run("print('setup line')\nsys.stdout.write('1/3\\r2/3\\r3/3 done\\n')\n"
                                     "print('no newline', end='')", log)
    assert returncode == 0, stderr
    assert stdout.startswith("setup line\n1/3\r2/3\r3/3 done\n")  # the terminal gets every byte
    assert log.read_text() == "setup line\n3/3 done\nno newlineafter attach\nan error line\n"
    run("print('second run')", log)
    lines = log.read_text().splitlines()
    assert lines[4].startswith("--- rerun ") and lines[5:] == ["second run", "after attach", "an error line"]
