"""Image folders, manifests, soft targets, corrupt files, decoding and tf.data: each bad input is one clear message."""

import filecmp
import importlib.util
import io
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from kerasls.data import images
from kerasls.data.soft_labels import table_targets
from kerasls.errors import KeraslsError

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DIR = ROOT / "templates" / "image-classifier" / "{{cookiecutter.project_slug}}" / "data"
SAMPLE_SCRIPT = ROOT / "scripts" / "make_sample_images.py"


def write_image(path, mode="RGB", size=(8, 8), value=None, fmt=None):
    """A small image (width, height) = size; random pixels unless `value` is given."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = {"L": (), "RGB": (3,), "RGBA": (4,)}[mode]
    shape = (size[1], size[0]) + channels
    rng = np.random.default_rng(len(str(path)))
    pixels = np.full(shape, value, np.uint8) if value is not None else rng.integers(0, 256, shape, dtype=np.uint8)
    Image.fromarray(pixels, mode).save(path, format=fmt)
    return path


def encoded(mode, size, fmt="PNG", value=None):
    buffer = io.BytesIO()
    channels = {"L": (), "RGB": (3,), "RGBA": (4,)}[mode]
    shape = (size[1], size[0]) + channels
    pixels = np.full(shape, value, np.uint8) if value is not None else np.random.default_rng(0).integers(
        0, 256, shape, dtype=np.uint8)
    Image.fromarray(pixels, mode).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture
def folders(tmp_path):
    """train/<cat|dog>/ with PNG and JPEG, RGB and grayscale, one RGBA PNG and a hidden file."""
    root = tmp_path / "train"
    write_image(root / "dog" / "b.png", "L", (12, 10))
    write_image(root / "dog" / "a.jpg", "RGB", (8, 8))
    write_image(root / "cat" / "x.png", "RGBA", (8, 8))
    write_image(root / "cat" / "y.jpeg", "L", (12, 10))
    write_image(root / "cat" / "z.png", "RGB", (12, 10))
    (root / "cat" / ".DS_Store").write_text("junk")
    (root / "README.md").write_text("top-level notes are ignored")
    return root


def config(train, probability_columns=None, vote_columns=None, vote_smoothing=0.0, **changes):
    """(data section, soft_labels section or None), as `load_image_sets(*config(...), seed=...)` takes them."""
    values = dict(train=str(train), val=None, test=None, val_fraction=0.2, path_column="path",
                  label_column="label", skip_corrupt=False, out_of_scope_label=None)
    values.update(changes)
    soft = None
    if probability_columns or vote_columns:
        soft = SimpleNamespace(probabilities=probability_columns, votes=vote_columns, vote_smoothing=vote_smoothing)
    return SimpleNamespace(**values), soft


def manifest(tmp_path, text, name="manifest.csv"):
    """A manifest next to images a.png, b.png, c.png in tmp_path/img/."""
    for stem in "abc":
        write_image(tmp_path / "img" / f"{stem}.png")
    path = tmp_path / name
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------------------------------------------
# Class folders


def test_scan_class_folders_sorted_absolute_hidden_ignored(folders):
    paths, names = images.scan_class_folders(folders)
    assert names == ["cat", "cat", "cat", "dog", "dog"]
    assert [Path(p).name for p in paths] == ["x.png", "y.jpeg", "z.png", "a.jpg", "b.png"]
    assert all(os.path.isabs(p) for p in paths)


def test_scan_errors(tmp_path, folders):
    with pytest.raises(KeraslsError, match="image folder not found"):
        images.scan_class_folders(tmp_path / "nowhere")
    (tmp_path / "flat").mkdir()
    with pytest.raises(KeraslsError, match="no class subfolders"):
        images.scan_class_folders(tmp_path / "flat")
    (folders / "bird").mkdir()
    with pytest.raises(KeraslsError, match="class folder 'bird' has no images"):
        images.scan_class_folders(folders)
    (folders / "bird").rmdir()
    (folders / "dog" / "notes.txt").write_text("hi")
    with pytest.raises(KeraslsError, match=r"notes\.txt: not an image file name; accepted suffixes are \.jpg, "):
        images.scan_class_folders(folders)


# ---------------------------------------------------------------------------------------------------------------
# Manifests


def test_manifest_relative_and_inside_absolute_paths(tmp_path):
    path = manifest(tmp_path, f"path,label\nimg/a.png,cat\n./img/../img/b.png,dog\n{tmp_path / 'img' / 'c.png'},cat\n")
    frame = images.read_manifest(path)
    assert list(frame["path"]) == [str((tmp_path / "img" / f"{s}.png").resolve()) for s in "abc"]


def test_manifest_path_outside_its_folder_is_refused(tmp_path):
    write_image(tmp_path / "outside.png")
    inner = tmp_path / "inner"
    write_image(inner / "ok.png")
    (inner / "m.csv").write_text("path,label\nok.png,cat\n../outside.png,dog\n")
    with pytest.raises(KeraslsError, match=r"m\.csv: line 3: image path '\.\./outside\.png' resolves outside"):
        images.read_manifest(inner / "m.csv")
    (inner / "link.png").symlink_to(tmp_path / "outside.png")
    (inner / "m.csv").write_text("path,label\nlink.png,cat\n")
    with pytest.raises(KeraslsError, match="line 2: image path 'link.png' resolves outside"):
        images.read_manifest(inner / "m.csv")
    (inner / "m.csv").write_text(f"path,label\n{tmp_path / 'outside.png'},cat\n")
    with pytest.raises(KeraslsError, match="line 2: .* resolves outside"):
        images.read_manifest(inner / "m.csv")


def test_manifest_missing_file_and_columns(tmp_path):
    path = manifest(tmp_path, "path,label\nimg/a.png,cat\nimg/gone.png,dog\n")
    with pytest.raises(KeraslsError, match=r"line 3: image file 'img/gone\.png' not found"):
        images.read_manifest(path)
    path.write_text("file,label\nimg/a.png,cat\n")
    with pytest.raises(KeraslsError, match=r"column 'path' not found.*data\.path_column"):
        images.read_manifest(path)
    path.write_text("path,class\nimg/a.png,cat\n")
    with pytest.raises(KeraslsError, match=r"column 'label' not found.*data\.label_column"):
        images.read_manifest(path)
    assert len(images.read_manifest(path, label_column=None)) == 1


def test_unknown_label_names_line_label_and_classes(tmp_path):
    frame = images.read_manifest(manifest(tmp_path, "path,label\nimg/a.png,cat\nimg/b.png,cow\n"))
    with pytest.raises(KeraslsError,
                       match=r"m\.csv: line 3: label 'cow' in column 'label' is not a training class \['cat', 'dog'\]"):
        table_targets(frame, ["cat", "dog"], "label", source="m.csv")
    targets, labels, soft = table_targets(frame.head(1), ["cat", "dog"], "label")
    assert targets.tolist() == [[1.0, 0.0]] and labels.tolist() == [0] and soft is False


def test_probability_columns_are_bound_by_name(tmp_path):
    text = "path,prob_dog,prob_bird,prob_cat\nimg/a.png,0.7,0.1,0.2\nimg/b.png,0.0,0.5,0.5\nimg/c.png,0.2,0.8,0\n"
    frame = images.read_manifest(manifest(tmp_path, text), label_column=None)
    columns = ["prob_cat", "prob_bird", "prob_dog"]  # yet another order
    targets, labels, soft = table_targets(frame, ["bird", "cat", "dog"], None, probability_columns=columns)
    np.testing.assert_allclose(targets, [[0.1, 0.2, 0.7], [0.5, 0.5, 0.0], [0.8, 0.0, 0.2]])
    assert targets.dtype == np.float32 and labels.tolist() == [2, 0, 0] and soft is True
    train, val, _, classes = images.load_image_sets(
        *config(tmp_path / "manifest.csv", probability_columns=columns, val=str(tmp_path / "manifest.csv")), seed=0)
    assert classes == ["bird", "cat", "dog"] and train.soft
    np.testing.assert_allclose(train.targets, targets)


def test_votes_with_add_alpha_smoothing(tmp_path):
    text = "path,votes_cat,votes_dog\nimg/a.png,3,1\nimg/b.png,0,2\n"
    frame = images.read_manifest(manifest(tmp_path, text), label_column=None)
    alpha = 0.5
    targets, labels, soft = table_targets(frame, ["cat", "dog"], None,
                                                    vote_columns=["votes_dog", "votes_cat"], vote_smoothing=alpha)
    expected = [[(3 + alpha) / (4 + 2 * alpha), (1 + alpha) / (4 + 2 * alpha)],
                [alpha / (2 + 2 * alpha), (2 + alpha) / (2 + 2 * alpha)]]
    np.testing.assert_allclose(targets, expected, rtol=1e-6)
    assert labels.tolist() == [0, 1] and soft


@pytest.mark.parametrize("kind,rows,message", [
    ("prob", "0.5,0.5\n-0.1,1.1", r"line 3: column 'prob_cat' is negative"),
    ("prob", "0.5,0.5\n,1.0", r"line 3: column 'prob_cat' is empty"),
    ("prob", "0.5,0.5\nabc,1.0", r"line 3: column 'prob_cat' holds 'abc', not a number"),
    ("prob", "0,0\n0.5,0.5", r"line 2: columns \['prob_cat', 'prob_dog'\] are all 0"),
    ("prob", "0.5,0.5\n0.5,0.49", r"line 3: columns \['prob_cat', 'prob_dog'\] sum to 0.99, not 1"),
    ("votes", "1,2\n1.5,2", r"line 3: column 'votes_cat' holds 1.5; vote counts must be whole numbers"),
    ("votes", "1,2\n0,0", r"line 3: columns \['votes_cat', 'votes_dog'\] are all 0"),
    ("votes", "1,2\n-1,3", r"line 3: column 'votes_cat' is negative"),
])
def test_invalid_soft_rows_name_line_and_column(tmp_path, kind, rows, message):
    text = f"path,{kind}_cat,{kind}_dog\n" + "\n".join(f"img/{s}.png,{r}" for s, r in zip("ab", rows.split("\n")))
    frame = images.read_manifest(manifest(tmp_path, text + "\n"), label_column=None)
    columns = {f"{'probability' if kind == 'prob' else 'vote'}_columns": [f"{kind}_cat", f"{kind}_dog"]}
    with pytest.raises(KeraslsError, match=message):
        table_targets(frame, ["cat", "dog"], None, **columns)


def test_soft_columns_must_match_the_classes(tmp_path):
    frame = images.read_manifest(manifest(tmp_path, "path,prob_cat,p_dog\nimg/a.png,0.5,0.5\n"), label_column=None)
    with pytest.raises(KeraslsError, match=r"no column 'prob_dog' for class 'dog'"):
        table_targets(frame, ["cat", "dog"], None, probability_columns=["prob_cat"])
    with pytest.raises(KeraslsError,
                       match=r"column 'p_dog' in targets.soft_labels.probabilities must be named prob_<class>"):
        table_targets(frame, ["cat", "dog"], None, probability_columns=["prob_cat", "p_dog"])
    with pytest.raises(KeraslsError, match=r"column 'prob_cow' names class 'cow', which is not a training class"):
        table_targets(frame, ["cat", "dog"], None, probability_columns=["prob_cat", "prob_cow"])


# ---------------------------------------------------------------------------------------------------------------
# Whole splits and corrupt files


def test_stratified_split_shares_and_determinism(tmp_path):
    root = tmp_path / "train"
    for index in range(30):
        write_image(root / ("a" if index < 20 else "b") / f"{index:02d}.png", value=index)
    train, val, test, classes = images.load_image_sets(*config(root, val_fraction=0.25), seed=3)
    assert classes == ["a", "b"] and test is None
    assert np.bincount(val.labels).tolist() == [5, 2] and np.bincount(train.labels).tolist() == [15, 8]
    assert not set(train.paths) & set(val.paths) and val.targets.shape == (7, 2)
    assert images.load_image_sets(*config(root, val_fraction=0.25), seed=3)[1].paths == val.paths
    assert images.load_image_sets(*config(root, val_fraction=0.25), seed=4)[1].paths != val.paths


def test_val_and_test_sets_use_training_classes(tmp_path, folders):
    test_root = tmp_path / "test"
    write_image(test_root / "dog" / "1.png")
    train, val, test, classes = images.load_image_sets(*config(folders, val=str(folders), test=str(test_root)), seed=0)
    assert test.labels.tolist() == [1] and test.targets.tolist() == [[0.0, 1.0]]
    write_image(test_root / "fox" / "1.png")
    with pytest.raises(KeraslsError, match=r"test/fox: class 'fox' is not a training class \['cat', 'dog'\]"):
        images.load_image_sets(*config(folders, test=str(test_root)), seed=0)
    hard = manifest(tmp_path, "path,label\nimg/a.png,dog\n", name="hard.csv")
    soft = tmp_path / "soft.csv"
    soft.write_text("path,prob_cat,prob_dog\nimg/a.png,0.3,0.7\nimg/b.png,0.6,0.4\nimg/c.png,1,0\n")
    train, _, test, _ = images.load_image_sets(
        *config(soft, test=str(hard), probability_columns=["prob_cat", "prob_dog"], val_fraction=0.3), seed=0)
    assert train.soft and not test.soft and test.labels.tolist() == [1]
    with pytest.raises(KeraslsError, match=r"targets.soft_labels needs a .csv manifest as data.train, not a folder"):
        images.load_image_sets(*config(folders, vote_columns=["votes_cat", "votes_dog"]), seed=0)
    with pytest.raises(KeraslsError, match=r"images not found; set data.val"):
        images.load_image_sets(*config(folders, val=str(tmp_path / "none")), seed=0)


@pytest.mark.parametrize("bad", ["zero-byte", "truncated", "text"])
def test_corrupt_image_is_named_unless_skipped(tmp_path, folders, capsys, bad):
    broken = folders / "dog" / ("c.jpg" if bad == "truncated" else "c.png")
    if bad == "zero-byte":
        broken.write_bytes(b"")
    elif bad == "truncated":
        broken.write_bytes((folders / "dog" / "a.jpg").read_bytes()[:30])
    else:
        broken.write_text("this is not an image")
    message = rf"{broken.name}: cannot be decoded .*pass data\.skip_corrupt=true"
    with pytest.raises(KeraslsError, match=message) as error:
        images.load_image_sets(*config(folders, val=str(folders)), seed=0)
    assert "function_node" not in str(error.value) and "\n" not in str(error.value)
    train, val, _, _ = images.load_image_sets(*config(folders, val=str(folders), skip_corrupt=True), seed=0)
    assert len(train) == 5 and str(broken) not in train.paths
    out = capsys.readouterr().out
    assert out.count(f"skipped 1 unreadable image(s) in {folders}, e.g. {broken}") == 2  # train and val


def test_check_images_returns_readable_indices(tmp_path):
    good = write_image(tmp_path / "a.gif", fmt="GIF")
    (tmp_path / "b.png").write_bytes(b"")
    assert images.check_images([str(good), str(tmp_path / "b.png"), str(good)], skip_corrupt=True) == [0, 2]


# ---------------------------------------------------------------------------------------------------------------
# Decoding and tf.data


@pytest.mark.parametrize("mode,fmt,channels", [
    ("L", "PNG", 3), ("L", "JPEG", 3), ("RGB", "PNG", 1), ("RGB", "JPEG", 1), ("RGBA", "PNG", 3),
    ("RGB", "BMP", 1), ("RGB", "GIF", 1), ("L", "GIF", 3),
])
def test_decode_image_channels_size_and_range(mode, fmt, channels):
    image = images.decode_image(tf.constant(encoded(mode, (12, 10), fmt)), (6, 6), channels)
    assert image.shape == (6, 6, channels) and image.dtype == tf.float32
    assert 0.0 <= float(tf.reduce_min(image)) and float(tf.reduce_max(image)) <= 255.0


def test_decode_image_values_and_graph_use():
    gray = images.decode_image(tf.constant(encoded("L", (8, 8), value=200)), (8, 8), 3)
    np.testing.assert_array_equal(gray.numpy(), np.full((8, 8, 3), 200.0))
    white = images.decode_image(tf.constant(encoded("RGB", (12, 10), value=255)), (6, 6), 1)
    np.testing.assert_allclose(white.numpy(), 255.0, atol=0.5)
    data = encoded("RGB", (12, 10))
    pixels = tf.io.decode_image(data, channels=3)
    for size in [(6, 6), (20, 24), (5, 30), (10, 12)]:  # shrink, grow, mixed, same: antialiased bilinear
        expected = tf.image.resize(pixels, size, method="bilinear", antialias=True)
        np.testing.assert_allclose(images.decode_image(tf.constant(data), size, 3), expected, atol=1e-3)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def serve(batch):  # as in the exported serving graph
        return tf.map_fn(lambda e: images.decode_image(e, (6, 6), 3), batch, fn_output_signature=tf.float32)

    batch = serve(tf.constant([encoded("RGB", (12, 10)), encoded("L", (6, 6), "JPEG")]))
    assert batch.shape == (2, 6, 6, 3)


def image_set(tmp_path, count=10):
    paths = [str(write_image(tmp_path / "d" / f"{i}.png", value=20 * i)) for i in range(count)]
    labels = np.arange(count, dtype=np.int64) % 3
    return images.ImageSet(paths, labels, np.eye(3, dtype=np.float32)[labels], False, str(tmp_path / "d"))


def test_dataset_batches_and_targets(tmp_path):
    data = image_set(tmp_path)
    batches = list(images.make_image_dataset(data, (4, 4), 3, batch_size=4))
    assert [b[0].shape for b in batches] == [(4, 4, 4, 3), (4, 4, 4, 3), (2, 4, 4, 3)]
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), data.targets)
    pixel = np.concatenate([b[0][:, 0, 0, 0] for b in batches])
    np.testing.assert_allclose(pixel, 20.0 * np.arange(10), atol=1e-3)
    dropped = list(images.make_image_dataset(data, (4, 4), 3, batch_size=4, drop_remainder=True))
    assert [b[0].shape[0] for b in dropped] == [4, 4]
    small = list(images.make_image_dataset(data, (4, 4), 3, batch_size=16, drop_remainder=True))
    assert [b[0].shape[0] for b in small] == [10]


def test_dataset_order_depends_only_on_seed_and_epoch_cached_or_not(tmp_path):
    """An epoch's order is a permutation fixed by (seed, epoch), read from the epoch variable when the epoch's
    iterator starts: the same epoch twice gives the same order (a resumed run sees the unbroken run's batches),
    another epoch or seed another order; decoded-once (cache) and read-every-epoch pipelines agree."""
    import tensorflow as tf

    data = image_set(tmp_path)
    epoch = tf.Variable(0, dtype=tf.int64)

    def order(dataset):
        return [round(v) for images_, _ in dataset for v in images_[:, 0, 0, 0].numpy() / 20]

    read = images.make_image_dataset(data, (4, 4), 3, batch_size=4, shuffle=True, seed=7, epoch=epoch)
    cached = images.make_image_dataset(data, (4, 4), 3, batch_size=4, shuffle=True, seed=7, cache=True, epoch=epoch)
    first = order(read)
    assert sorted(first) == list(range(10))
    assert order(read) == first and order(cached) == first  # epoch 0 again, and the cached pipeline
    epoch.assign(1)
    second = order(read)
    assert sorted(second) == list(range(10)) and second != first and order(cached) == second
    epoch.assign(0)
    other_seed = images.make_image_dataset(data, (4, 4), 3, batch_size=4, shuffle=True, seed=8, epoch=epoch)
    assert order(other_seed) != first
    evaluation = images.make_image_dataset(data, (4, 4), 3, batch_size=4, cache=True)
    one, two = [np.concatenate([b[0] for b in evaluation]) for _ in range(2)]
    np.testing.assert_array_equal(one, two)
    assert order(evaluation) == list(range(10))  # evaluation keeps the file order


def test_dataset_augment_and_mix_hooks(tmp_path):
    data = image_set(tmp_path, count=4)
    seen = {}

    def augment(batch, training=False):
        seen["training"] = training
        return 255.0 - batch

    def mix(batch, targets):
        return batch, tf.reverse(targets, axis=[0])

    images_, targets = next(iter(images.make_image_dataset(data, (4, 4), 3, 4, augment=augment, mix=mix)))
    assert seen["training"] is True
    np.testing.assert_allclose(images_[:, 0, 0, 0], 255.0 - 20.0 * np.arange(4), atol=1e-3)
    np.testing.assert_array_equal(targets, data.targets[::-1])


# ---------------------------------------------------------------------------------------------------------------
# Embedded sample data


def test_sample_images_exist_and_regenerate_byte_identical(tmp_path):
    for split, count in (("train", 200), ("test", 40)):
        assert sorted(p.name for p in (SAMPLE_DIR / split).iterdir()) == ["circle", "square", "triangle"]
        for name in ("circle", "square", "triangle"):
            assert len(list((SAMPLE_DIR / split / name).glob("*.png"))) == count
    spec = importlib.util.spec_from_file_location("make_sample_images", SAMPLE_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.generate(tmp_path)
    embedded = sorted(p.relative_to(SAMPLE_DIR) for p in SAMPLE_DIR.glob("*/*/*.png"))
    assert embedded == sorted(p.relative_to(tmp_path) for p in tmp_path.glob("*/*/*.png"))
    assert all(filecmp.cmp(SAMPLE_DIR / p, tmp_path / p, shallow=False) for p in embedded)
    assert sum((SAMPLE_DIR / p).stat().st_size for p in embedded) < 800_000  # keep the wheel small
    with Image.open(SAMPLE_DIR / embedded[0]) as first:
        assert first.size == (32, 32) and first.mode == "RGB"


def test_dataset_with_keras_random_layers(tmp_path):
    import keras

    augment = keras.Sequential([keras.layers.RandomFlip("horizontal", seed=1),
                                keras.layers.RandomRotation(0.2, seed=2)])
    paths = [str(write_image(tmp_path / f"{i}.png", size=(8, 8))) for i in range(4)]  # random pixels
    data = images.ImageSet(paths, np.zeros(4, np.int64), np.ones((4, 1), np.float32), False, str(tmp_path))
    dataset = images.make_image_dataset(data, (8, 8), 3, 4, cache=True, augment=augment)
    first, second = [next(iter(dataset))[0].numpy() for _ in range(2)]
    assert first.shape == (4, 8, 8, 3) and not np.array_equal(first, second)  # fresh randomness every epoch
