"""Refuse variables that would make a broken or unsafe project before anything is written."""
import re
import sys

slug = "{{ cookiecutter.project_slug }}"
if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", slug):
    print(f"error: project_slug={slug!r} must be a Python identifier (letters, digits, '_'), e.g. shop_intents",
          file=sys.stderr)
    sys.exit(1)

smoothing = "{{ cookiecutter.label_smoothing }}"
try:
    value = float(smoothing)
except ValueError:
    value = -1.0
if not 0.0 <= value < 1.0:
    print(f"error: label_smoothing={smoothing!r} must be a number in [0, 1), e.g. 0.1", file=sys.stderr)
    sys.exit(1)
