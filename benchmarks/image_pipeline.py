"""Images/s of the kerasls image pipeline against keras' `image_dataset_from_directory`, side by side.

Builds N 64×64 JPEG files in 10 class folders in a temporary folder, then times, in one process:

  (a) `kerasls.data.images.make_image_dataset` (no cache, batch 64, shuffled),
  (b) `keras.utils.image_dataset_from_directory(..., image_size=(64, 64), batch_size=64)` (shuffled, one-hot
      labels so both yield the same (images, targets) batches),
  (c) (a) with `cache=True`.

Each pipeline is iterated once as warm-up, then 3 full epochs; the epochs of the three pipelines are
interleaved so a background load slows them alike. The up-front `check_images` pass of `load_image_sets` is
timed too. Prints a markdown table; the target is kerasls / keras >= 1.0. Usage::

    python benchmarks/image_pipeline.py [--images 2000] [--epochs 3]
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

SIZE, CLASSES, BATCH = 64, 10, 64


def make_images(root: Path, count: int) -> None:
    """Smooth random colour fields plus noise: JPEGs of a realistic size (~2-3 KB at 64×64)."""
    rng = np.random.default_rng(0)
    grid = np.linspace(0, 1, SIZE)
    for index in range(count):
        folder = root / f"class_{index % CLASSES}"
        folder.mkdir(parents=True, exist_ok=True)
        a, b, c = rng.uniform(0, 255, size=(3, 3))
        field = a[None, None] + np.outer(grid, np.ones(SIZE))[..., None] * (b - a) + np.outer(np.ones(SIZE), grid)[
            ..., None] * (c - a) / 2
        pixels = np.clip(field + rng.normal(0, 12, size=(SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels, "RGB").save(folder / f"{index:05d}.jpg", quality=90)


def epoch_seconds(dataset) -> tuple[float, int]:
    start, seen = time.perf_counter(), 0
    for images, _ in dataset:
        seen += int(images.shape[0])
    return time.perf_counter() - start, seen


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args(argv)

    import keras
    import tensorflow as tf

    from kerasls.data import images as kimages

    with tempfile.TemporaryDirectory() as temp:
        root = Path(temp) / "train"
        start = time.perf_counter()
        make_images(root, args.images)
        print(f"wrote {args.images} JPEGs in {time.perf_counter() - start:.1f} s "
              f"({sum(p.stat().st_size for p in root.glob('*/*.jpg')) / args.images / 1024:.1f} KiB each)")

        paths, names = kimages.scan_class_folders(root)
        classes = sorted(set(names))
        labels = np.array([classes.index(name) for name in names], dtype=np.int64)
        image_set = kimages.ImageSet(paths, labels, np.eye(len(classes), dtype=np.float32)[labels], False, str(root))
        start = time.perf_counter()
        assert len(kimages.check_images(paths)) == len(paths)
        check_seconds = time.perf_counter() - start

        pipelines = {
            "kerasls make_image_dataset": kimages.make_image_dataset(
                image_set, (SIZE, SIZE), 3, BATCH, shuffle=True, seed=0),
            "keras image_dataset_from_directory": keras.utils.image_dataset_from_directory(
                root, image_size=(SIZE, SIZE), batch_size=BATCH, label_mode="categorical", shuffle=True, seed=0,
                verbose=False),
            "kerasls make_image_dataset, cache=True": kimages.make_image_dataset(
                image_set, (SIZE, SIZE), 3, BATCH, shuffle=True, seed=0, cache=True),
        }
        for dataset in pipelines.values():  # warm-up epoch (fills the cache for (c))
            epoch_seconds(dataset)
        seconds = dict.fromkeys(pipelines, 0.0)
        counts = dict.fromkeys(pipelines, 0)
        for _ in range(args.epochs):
            for name, dataset in pipelines.items():
                elapsed, seen = epoch_seconds(dataset)
                seconds[name] += elapsed
                counts[name] += seen

    rate = {name: counts[name] / seconds[name] for name in pipelines}
    keras_rate = rate["keras image_dataset_from_directory"]
    print(f"\n{args.images} images {SIZE}x{SIZE} JPEG, batch {BATCH}, {args.epochs} epochs after 1 warm-up, "
          f"TF {tf.__version__}, Keras {keras.__version__}, {os.cpu_count()} CPUs\n")
    print("| pipeline | images/s | ratio to keras |")
    print("|---|---:|---:|")
    for name in pipelines:
        print(f"| {name} | {rate[name]:,.0f} | {rate[name] / keras_rate:.2f} |")
    print(f"| check_images (decode every file once, up front) | {len(paths) / check_seconds:,.0f} | |")
    print(f"\nkerasls / keras (no cache) = {rate['kerasls make_image_dataset'] / keras_rate:.2f} (target >= 1.0)")


if __name__ == "__main__":
    main()
