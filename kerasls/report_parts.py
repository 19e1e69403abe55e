"""Pieces every report section uses: figures as PNG bytes (their own Agg canvas, never pyplot's global state),
embedded images, and numbers as report text."""

import base64
import html
import io
import math

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg

from kerasls.fileio import atomic_write_bytes

# The style of every kerasls page (run reports, evaluations, sweeps): inline, so a page is one file.
CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.6em 0; }
th, td { border: 1px solid #ddd; padding: 0.3em 0.8em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f3f3f3; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
.note { color: #555; font-size: 0.95em; }
.warning { color: #8a4b00; background: #fff4e0; padding: 0.4em 0.6em; border-left: 3px solid #d98c00; }
code { background: #f3f3f3; padding: 0 0.25em; }
"""


def png_bytes(figure):
    """Render a Figure through its own Agg canvas and return the PNG bytes."""
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def save(figure, path):
    return atomic_write_bytes(path, png_bytes(figure))


def format_value(value, digits=4):
    """A metric as text: floats with `digits` decimals, None or a missing value as an em dash."""
    if value is None:
        return "—"
    if isinstance(value, (float, np.floating)):
        return "nan" if math.isnan(value) else f"{float(value):.{digits}f}"
    return html.escape(str(value))


def percent(value):
    return "—" if value is None else f"{100.0 * float(value):.1f}%"


def image(png, alt):
    encoded = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{encoded}">'
