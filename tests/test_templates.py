"""Every template renders cleanly for every choice, with kerasls and with plain cookiecutter."""

import itertools
import json
import os
import py_compile
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kerasls.config import ImageConfig, TabularConfig, load_config
from kerasls.errors import KeraslsError
from kerasls.templates_index import available_templates, render_template, templates_root

REPO = Path(__file__).resolve().parents[1]
KERASLS = [sys.executable, "-m", "kerasls.cli"]


def choice_combinations(template):
    spec = json.loads((templates_root() / template / "cookiecutter.json").read_text())
    choices = {key: value for key, value in spec.items() if isinstance(value, list)}
    for values in itertools.product(*choices.values()):
        yield dict(zip(choices, values))


SCHEMAS = {"tabular-intent": TabularConfig, "image-classifier": ImageConfig}

CASES = [(name, combo) for name in available_templates() for combo in choice_combinations(name)]


def tree(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("template, choices", CASES, ids=[f"{n}-{'-'.join(c.values())}" for n, c in CASES])
def test_every_choice_renders_without_leftover_jinja(tmp_path, template, choices):
    project = render_template(template, output_dir=tmp_path, extra_context={**choices, "project_slug": "p"})
    files = tree(project)
    assert "train.py" in files and "config.yaml" in files and "model.py" in files
    for name, content in files.items():
        if name.endswith((".png", ".jpg")):
            continue
        text = content.decode("utf-8")
        for marker in ("{{", "}}", "{%", "%}"):
            assert marker not in text, f"{name} keeps {marker!r}"
        if name.endswith(".py"):
            py_compile.compile(str(project / name), doraise=True)
    config = load_config(project / "config.yaml", schema=SCHEMAS[template])  # the rendered config passes the schema
    if "backbone" in choices:
        assert config.model.backbone == choices["backbone"]
    if choices.get("sample_data") == "yes":
        assert (project / "data" / "train.csv").is_file() and Path(config.data.test).is_file()
    if choices.get("sample_data") == "no":
        assert not (project / "data" / "train.csv").exists() and config.data.test is None


@pytest.mark.parametrize("template", sorted(available_templates()))
@pytest.mark.parametrize("epsilon", ["0", "0.050000000000001"])
def test_label_smoothing_of_any_length_reads_back_with_its_comments_aligned(tmp_path, template, epsilon):
    """The config's comments are padded into one column; a long value must still end before its comment."""
    project = render_template(template, output_dir=tmp_path, extra_context={"project_slug": "p",
                                                                           "label_smoothing": epsilon})
    config = load_config(project / "config.yaml", schema=SCHEMAS[template])
    assert config.targets.label_smoothing == float(epsilon)
    line = next(line for line in (project / "config.yaml").read_text().splitlines() if "label_smoothing:" in line)
    assert line.index(" # ") >= 32


@pytest.mark.parametrize("template", sorted(available_templates()))
def test_plain_cookiecutter_gives_the_same_project(tmp_path, template):
    subprocess.run([str(Path(sys.executable).parent / "cookiecutter"), str(templates_root() / template), "--no-input",
                    "-o", str(tmp_path / "plain")], check=True, capture_output=True)
    ours = render_template(template, output_dir=tmp_path / "ours")
    plain = tmp_path / "plain" / ours.name
    assert tree(plain) == tree(ours)


def test_refuses_a_non_empty_target_and_force_keeps_other_files(tmp_path):
    target = tmp_path / "shop"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    result = subprocess.run([*KERASLS, "new", "tabular-intent", "-o", str(tmp_path), "--no-input",
                             "project_slug=shop"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "exists and is not empty" in result.stderr and "--force" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in target.iterdir()) == ["notes.txt"]
    forced = subprocess.run([*KERASLS, "new", "tabular-intent", "-o", str(tmp_path), "--no-input", "--force",
                             "project_slug=shop"], capture_output=True, text=True)
    assert forced.returncode == 0, forced.stderr
    assert (target / "notes.txt").read_text() == "mine" and (target / "train.py").is_file()


def test_empty_existing_folder_is_fine(tmp_path):
    (tmp_path / "shop").mkdir()
    assert (render_template("tabular-intent", tmp_path, {"project_slug": "shop"}) / "train.py").is_file()


@pytest.mark.parametrize("slug", ["../escape", "a/b", "has space", "1starts_with_digit", ".."])
def test_unsafe_slugs_are_refused_and_nothing_is_written(tmp_path, slug):
    work = tmp_path / "work"
    work.mkdir()
    result = subprocess.run([*KERASLS, "new", "tabular-intent", "--no-input", f"project_slug={slug}"],
                            cwd=work, capture_output=True, text=True)
    assert result.returncode == 2 and "is not a Python identifier" in result.stderr
    assert list(work.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["work"]


def test_unknown_template_and_variable(tmp_path):
    with pytest.raises(KeraslsError, match="unknown template 'nope'"):
        render_template("nope", tmp_path)
    with pytest.raises(KeraslsError, match=r"unknown template variable\(s\) \['colour'\]"):
        render_template("tabular-intent", tmp_path, {"colour": "red"})


def test_bad_label_smoothing_variable_is_refused_by_the_hook(tmp_path):
    with pytest.raises(KeraslsError, match="label_smoothing='1.5' must be a number in"):
        render_template("tabular-intent", tmp_path, {"label_smoothing": "1.5"})
    assert list(tmp_path.iterdir()) == []
    plain = subprocess.run([str(Path(sys.executable).parent / "cookiecutter"), str(templates_root() / "tabular-intent"),
                            "--no-input", "label_smoothing=abc", "-o", str(tmp_path)], capture_output=True, text=True)
    assert plain.returncode != 0 and "label_smoothing='abc' must be a number" in plain.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["templates"], ["new", "tabular-intent", "--no-input"]])
def test_cli_does_not_import_tensorflow(tmp_path, args):
    code = (
        "import sys\nfrom kerasls.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'imported TensorFlow'\n"
    )
    result = subprocess.run([sys.executable, "-c", code, *args], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.e2e
def test_templates_ship_inside_a_non_editable_install(tmp_path):
    """Build the wheel, install it without dependencies into a folder, render from another folder."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "wheel"), str(REPO)], check=True, capture_output=True)
    wheel = next((tmp_path / "wheel").glob("kerasls-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(tmp_path / "site"),
                    str(wheel)], check=True, capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = (
        "import kerasls, sys; from kerasls.templates_index import render_template, templates_root\n"
        "assert str(templates_root()).startswith(sys.argv[1]), templates_root()\n"
        "print(render_template('tabular-intent', '.', {'project_slug': 'installed'}))\n"
        "print(render_template('image-classifier', '.', {'project_slug': 'installed_images'}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "site")], cwd=elsewhere, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    rendered = elsewhere / "installed"
    assert (rendered / "data" / "train.csv").stat().st_size > 100_000
    assert tree(rendered) == tree(render_template("tabular-intent", tmp_path / "ref", {"project_slug": "installed"}))
    images = elsewhere / "installed_images"
    assert len(list((images / "data" / "train").glob("*/*.png"))) == 600
    reference = render_template("image-classifier", tmp_path / "ref", {"project_slug": "installed_images"})
    assert tree(images) == tree(reference)


@pytest.mark.e2e
@pytest.mark.parametrize("template", ["tabular-intent", "image-classifier"])
def test_the_generated_projects_own_make_test_passes(tmp_path, template):
    """What a user runs first in a new project: its Makefile's `test` target (its own tests/ folder)."""
    project = render_template(template, tmp_path, {"project_slug": "own_tests"})
    result = subprocess.run(["make", "test", f"PYTHON={sys.executable}"], cwd=project, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert re.search(r"\b1 passed\b", result.stdout), result.stdout[-2000:]


@pytest.mark.parametrize("template", ["tabular-intent", "image-classifier"])
def test_generated_makefile_finds_a_python_with_kerasls_or_says_what_to_do(tmp_path, template):
    project = render_template(template, tmp_path, {"project_slug": "make_python"})
    without = {**os.environ, "PATH": "/usr/bin:/bin"}  # the system Python, which has no kerasls
    probe = subprocess.run(["python3", "-c", "import kerasls"], env=without, cwd=project, capture_output=True)
    if probe.returncode == 0:
        pytest.fail("the system python3 imports kerasls: this check needs a PATH without it")
    refused = subprocess.run(["make", "train"], cwd=project, env=without, capture_output=True, text=True)
    assert refused.returncode != 0
    assert refused.stderr.strip().splitlines()[0].startswith("error: no python on PATH can import kerasls"), \
        refused.stderr
    venv = {**os.environ, "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
    planned = subprocess.run(["make", "-n", "train"], cwd=project, env=venv, capture_output=True, text=True)
    assert planned.returncode == 0 and "python train.py" in planned.stdout, planned.stdout + planned.stderr


TENSORFLOW_BLOCKER = r"""
import runpy, sys
class RefuseTensorFlow:  # first on the finder list: every way of importing a module passes here first
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "keras"):
            raise SystemExit("imported " + name + " before the check")
sys.meta_path.insert(0, RefuseTensorFlow())
sys.argv = ["train.py", *sys.argv[1:]]
runpy.run_path("train.py", run_name="__main__")
"""


EARLY_MISTAKES = {
    "misspelt_key": (["training.epoch=3"], "training.epoch"),
    "finished_run": (["--run-name", "done"], "already holds a finished run"),
    "bad_run_name": (["--run-name", "a/b"], "plain folder name"),
}


@pytest.mark.parametrize("template, args, expected", [
    *[pytest.param(template, *case, id=f"{template}-{name}") for template in ("tabular-intent", "image-classifier")
      for name, case in EARLY_MISTAKES.items()],
    pytest.param("image-classifier", ["model.backbone=ResNet5O"], "did you mean 'ResNet50'?",
                 id="image-classifier-misspelt_backbone"),
    pytest.param("tabular-intent", ["data.text.encoder.preset=bert_tiny_en_uncase"],
                 "did you mean 'bert_tiny_en_uncased'?", id="tabular-intent-misspelt_encoder_preset"),
    pytest.param("tabular-intent", ["data.text.encoder.preset=tiny", "data.text.encoder.sequence_length=512"],
                 "longer than the 32 positions", id="tabular-intent-encoder_longer_than_its_positions"),
])
def test_train_py_refuses_before_tensorflow_loads(tmp_path, template, args, expected):
    """README promises these mistakes cost about a second, not TensorFlow's import (~4 s): `python train.py` with
    every TensorFlow or Keras import made to fail still gives the one-line error, exit status 2."""
    project = render_template(template, tmp_path, {"project_slug": "early"})
    (project / "runs" / "done").mkdir(parents=True)
    (project / "runs" / "done" / "metrics.json").write_text("{}")
    (project / "tiny").mkdir()  # a preset folder's config, as save_to_preset writes it
    (project / "tiny" / "config.json").write_text('{"config": {"max_sequence_length": 32}}')
    result = subprocess.run([sys.executable, "-c", TENSORFLOW_BLOCKER, *args], cwd=project, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and expected in result.stderr, result.stderr
    assert "before the check" not in result.stderr and "Traceback" not in result.stderr
