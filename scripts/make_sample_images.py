"""Generate the embedded sample image data set of the ``image-classifier`` template.

Generative story
----------------
Each image is a 32×32 RGB picture of one shape, ``circle``, ``square`` or ``triangle``, drawn with
``PIL.ImageDraw`` on a flat background. Per image: a background colour, a shape colour at least a fixed
contrast away from it, a size (radius 7-14 px), a centre that keeps most of the shape inside the frame and, for
squares and triangles, a tilt of up to 15° from upright. Shapes are drawn at 4× and downsampled (antialiased
edges), then mild luminance noise (the same value on the three channels, so the PNGs stay small) is added.

About 8% of the images are deliberately hard: the shape is tiny (radius 2-3 px) or its colour is within a few
levels of the background (low contrast), so a good model still gets some of them wrong and its confidence on
them should be low: what the calibration report is about.

Everything comes from ``numpy.random.default_rng(20261123)`` (train, then test, class by class) and the PNGs
are written with fixed settings (no metadata, compress level 9), so re-running gives byte-identical files.
Usage::

    python scripts/make_sample_images.py [--out DIR] [--train N] [--test N]
"""

import argparse
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SEED = 20261123
DEFAULT_OUT = (Path(__file__).resolve().parents[1] / "templates" / "image-classifier"
               / "{{cookiecutter.project_slug}}" / "data")
CLASSES = ["circle", "square", "triangle"]
SIZE = 32
SCALE = 4  # supersampling factor for antialiased edges
HARD_SHARE = 0.08
NOISE_LEVELS = np.array([-6, -3, 0, 0, 0, 3, 6])  # luminance noise, few distinct values: small PNGs


def _colour(rng):
    return rng.integers(0, 256, size=3)


def _contrasting(rng, background, minimum):
    """A colour whose mean absolute channel difference from `background` is at least `minimum`."""
    while True:
        colour = _colour(rng)
        if np.abs(colour - background).mean() >= minimum:
            return colour


def _polygon(kind, cx, cy, radius, angle):
    corners = 4 if kind == "square" else 3
    return [(cx + radius * math.cos(angle + 2 * math.pi * i / corners),
             cy + radius * math.sin(angle + 2 * math.pi * i / corners)) for i in range(corners)]


def draw(kind, rng) -> Image.Image:
    """One image of shape `kind`; about HARD_SHARE of them tiny or low-contrast."""
    background = _colour(rng)
    hard = rng.random() < HARD_SHARE
    tiny = hard and rng.random() < 0.5
    radius = rng.uniform(2.0, 3.5) if tiny else rng.uniform(7.0, 14.0)
    if hard and not tiny:
        colour = np.clip(background + rng.choice([-1, 1], size=3) * rng.integers(6, 14, size=3), 0, 255)
    else:
        colour = _contrasting(rng, background, 60)
    margin = radius * 0.6
    cx, cy = rng.uniform(margin, SIZE - margin, size=2)
    upright = {"square": math.pi / 4, "triangle": -math.pi / 2}.get(kind, 0.0)  # axis-aligned, pointing up
    angle = upright + rng.uniform(-1.0, 1.0) * math.radians(15)
    big = Image.new("RGB", (SIZE * SCALE, SIZE * SCALE), tuple(int(v) for v in background))
    pen = ImageDraw.Draw(big)
    fill = tuple(int(v) for v in colour)
    s = SCALE
    if kind == "circle":
        pen.ellipse([(cx - radius) * s, (cy - radius) * s, (cx + radius) * s, (cy + radius) * s], fill=fill)
    else:
        pen.polygon([(x * s, y * s) for x, y in _polygon(kind, cx, cy, radius, angle)], fill=fill)
    pixels = np.asarray(big.resize((SIZE, SIZE), Image.Resampling.BOX), dtype=np.int16)
    noise = rng.choice(NOISE_LEVELS, size=(SIZE, SIZE, 1))
    return Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8), "RGB")


def generate(out, train=200, test=40):
    rng = np.random.default_rng(SEED)
    out = Path(out)
    for split, count in (("train", train), ("test", test)):
        for kind in CLASSES:
            folder = out / split / kind
            folder.mkdir(parents=True, exist_ok=True)
            for number in range(count):
                draw(kind, rng).save(folder / f"{number:03d}.png", format="PNG", optimize=False, compress_level=9)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="output folder (default: the template's data/)")
    parser.add_argument("--train", type=int, default=200, help="training images per class")
    parser.add_argument("--test", type=int, default=40, help="test images per class")
    args = parser.parse_args(argv)
    out = generate(args.out, args.train, args.test)
    files = sorted(out.glob("*/*/*.png"))
    print(f"wrote {len(files)} images, {sum(f.stat().st_size for f in files) / 1024:.0f} KiB, to {out}")


if __name__ == "__main__":
    main()
