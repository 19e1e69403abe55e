"""Images/s of the kerasls image pipeline against keras' `image_dataset_from_directory`, side by side.

Builds N 64×64 JPEG files in 10 class folders in a temporary folder, then times, in one process:

  (a) `kerasls.data.images.make_image_dataset` (no cache, batch 64, shuffled),
  (b) `keras.utils.image_dataset_from_directory(..., image_size=(64, 64), batch_size=64)` (shuffled, one-hot
      labels so both yield the same (images, targets) batches),
  (c) (a) with `cache=True`.

Each pipeline is iterated once as warm-up, then 3 full epochs; the epochs of the three pipelines are
interleaved so a background load slows them alike. The up-front `check_images` pass of `load_image_sets` is
timed too. Prints a markdown table; the target is kerasls / keras >= 1.0.

A second table measures training throughput (images/s inside `model.fit`) on the same images (a seeded random
`--fit-images` of them, default 512: the CNN trains at only ~50-60 images/s on 2 busy CPU cores): the small CNN of
`kerasls.models.small_cnn` plus a Dense head, compiled by `kerasls.training.compile_classifier` with the default
`TrainingConfig()` and `TargetsConfig()` (CCE with label smoothing 0.1, from logits), fed by
`make_image_dataset(..., cache=True, drop_remainder=True)` with `mix=None` against `mix=build_mixer(...)`
(MixUp α=0.2 on half the batches, CutMix α=1.0 on the other half). One model per pipeline, one warm-up epoch
each (tracing and compilation), then `--fit-epochs` timed epochs each, alternating. The target is
mixup-on / mixup-off >= 0.9. The whole script takes about 100 s with the defaults on 2 CPU cores. Usage::

    python benchmarks/image_pipeline.py [--images 2000] [--epochs 3] [--fit-images 512] [--fit-epochs 3]
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


def fit_throughput(image_set, epochs: int) -> dict:
    """Seconds and images inside `model.fit`, without and with MixUp/CutMix in the pipeline (module docstring)."""
    import keras

    from kerasls.augmentation import build_mixer
    from kerasls.config import AugmentConfig, TargetsConfig, TrainingConfig
    from kerasls.data import images as kimages
    from kerasls.models import small_cnn
    from kerasls.training import compile_classifier

    mixer = build_mixer(AugmentConfig(mixup={"alpha": 0.2, "probability": 0.5},
                                      cutmix={"alpha": 1.0, "probability": 0.5}), seed=0)
    mixes = {"mixup off (mix=None)": None, "mixup/cutmix on (p=0.5 each)": mixer}
    classes = image_set.targets.shape[1]
    runs = {}
    for name, mix in mixes.items():
        keras.utils.set_random_seed(0)
        inputs = keras.Input(shape=(SIZE, SIZE, 3))
        logits = keras.layers.Dense(classes, dtype="float32")(small_cnn((SIZE, SIZE, 3))(inputs))
        model = compile_classifier(keras.Model(inputs, logits), TrainingConfig(), TargetsConfig())
        dataset = kimages.make_image_dataset(image_set, (SIZE, SIZE), 3, BATCH, shuffle=True, seed=0, cache=True,
                                             mix=mix, drop_remainder=True)
        start = time.perf_counter()
        model.fit(dataset, epochs=1, shuffle=False, verbose=0)  # warm-up: tracing, compilation, fills the cache
        runs[name] = {"model": model, "dataset": dataset, "warmup": time.perf_counter() - start,
                      "seconds": 0.0, "images": 0}
    steps = len(image_set) // BATCH
    for _ in range(epochs):
        for run in runs.values():
            start = time.perf_counter()
            run["model"].fit(run["dataset"], epochs=1, shuffle=False, verbose=0)
            run["seconds"] += time.perf_counter() - start
            run["images"] += steps * BATCH
    return runs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--fit-images", type=int, default=512, help="images (of --images) for the model.fit table")
    parser.add_argument("--fit-epochs", type=int, default=3, help="timed model.fit epochs per pipeline")
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

        fit_count = min(args.fit_images, len(image_set))
        fit_set = image_set.subset(np.sort(np.random.default_rng(0).permutation(len(image_set))[:fit_count]))
        fits = fit_throughput(fit_set, args.fit_epochs)

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

    fit_rate = {name: run["images"] / run["seconds"] for name, run in fits.items()}
    off, on = fit_rate.values()
    print(f"\nmodel.fit throughput: small_cnn (32, 64, 128) + Dense({len(classes)}), compile_classifier defaults "
          f"(AdamW lr 1e-3, CCE label_smoothing 0.1, jit_compile auto), {fit_count} of the {SIZE}x{SIZE} JPEGs, "
          f"batch {BATCH}, cache=True, drop_remainder=True, {args.fit_epochs} epochs each after 1 warm-up, "
          "alternating\n")
    print("| pipeline | warm-up epoch s | images/s in fit | ratio to mixup off |")
    print("|---|---:|---:|---:|")
    for name, run in fits.items():
        print(f"| {name} | {run['warmup']:.1f} | {fit_rate[name]:,.0f} | {fit_rate[name] / off:.2f} |")
    print(f"\nmixup-on / mixup-off = {on / off:.2f} (target >= 0.9)")


if __name__ == "__main__":
    main()
