"""Pieces every report section uses: figures as PNG bytes (their own Agg canvas, never pyplot's global state),
embedded images, and numbers as report text."""

import base64
import html
import io
import math

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg

from kerasls.fileio import atomic_write_bytes


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
