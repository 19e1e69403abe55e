"""Find the cookiecutter templates shipped with kerasls and render one safely.

In a source checkout the templates are the repository's `templates/` folder; in an installed wheel the same
folder is the package `kerasls.templates` (setup.cfg maps one onto the other).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
from pathlib import Path

from kerasls.errors import KeraslsError

_SLUG = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def templates_root() -> Path:
    try:
        from importlib.resources import files

        root = Path(str(files("kerasls.templates")))
        if root.is_dir():
            return root
    except ModuleNotFoundError:
        pass
    return Path(__file__).resolve().parent.parent / "templates"


def available_templates() -> dict[str, str]:
    """Template name -> one-line description (the `_description` key of its cookiecutter.json)."""
    found = {}
    for folder in sorted(templates_root().iterdir()):
        spec = folder / "cookiecutter.json"
        if spec.is_file():
            found[folder.name] = json.loads(spec.read_text(encoding="utf-8")).get("_description", "")
    return found


def template_path(name_or_path: str) -> Path:
    if name_or_path in available_templates():
        return templates_root() / name_or_path
    path = Path(name_or_path)
    if (path / "cookiecutter.json").is_file():
        return path
    names = ", ".join(available_templates())
    raise KeraslsError(f"unknown template {name_or_path!r}; choose one of: {names} (see `kerasls templates`)")


def check_slug(slug: str) -> None:
    if not _SLUG.match(slug):
        raise KeraslsError(
            f"project_slug={slug!r} is not a Python identifier (letters, digits, '_'; no '/', '..' or spaces); "
            "pass e.g. project_slug=shop_intents"
        )


def check_smoothing(value: str) -> None:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0.0 <= number < 1.0:
        raise KeraslsError(f"label_smoothing={value!r} must be a number in [0, 1), e.g. label_smoothing=0.1")


def rendered_variables(template: Path, extra_context: dict) -> dict:
    """The variables cookiecutter will use with --no-input, rendered from cookiecutter.json."""
    from cookiecutter.environment import StrictEnvironment

    spec = json.loads((template / "cookiecutter.json").read_text(encoding="utf-8"))
    context = {key: (value[0] if isinstance(value, list) else value) for key, value in spec.items()}
    context.update(extra_context)
    environment = StrictEnvironment(context={"cookiecutter": context})
    rendered = {}
    for key, value in context.items():
        if isinstance(value, str) and not key.startswith("_"):
            value = environment.from_string(value).render(cookiecutter={**context, **rendered})
        rendered[key] = value
    return rendered


def render_template(name_or_path, output_dir=".", extra_context=None, no_input=True, force=False) -> Path:
    """Render with the cookiecutter library; refuse a non-empty target folder unless `force`."""
    from cookiecutter.exceptions import CookiecutterException, FailedHookException, OutputDirExistsException
    from cookiecutter.main import cookiecutter

    template = template_path(str(name_or_path))
    extra_context = dict(extra_context or {})
    spec = json.loads((template / "cookiecutter.json").read_text(encoding="utf-8"))
    unknown = sorted(set(extra_context) - set(spec))
    if unknown:
        raise KeraslsError(
            f"unknown template variable(s) {unknown} for {template.name}; known: "
            f"{[k for k in spec if not k.startswith('_')]}"
        )
    for key, value in extra_context.items():
        if isinstance(spec.get(key), list) and value not in spec[key]:
            raise KeraslsError(f"{key}={value!r} is not a choice of {template.name}; choose one of {spec[key]}")
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise KeraslsError(f"-o {output_dir}: is a file, not a folder; pass a folder for the new project")
    overwrite = force
    if no_input:
        variables = rendered_variables(template, extra_context)
        slug = str(variables["project_slug"])
        check_slug(slug)
        if "label_smoothing" in variables:
            check_smoothing(str(variables["label_smoothing"]))
        target = output_dir / slug
        if target.exists() and any(target.iterdir()) and not force:
            raise KeraslsError(f"{target} exists and is not empty; choose another project_slug or -o, or pass --force")
        overwrite = force or target.exists()
    logging.getLogger("cookiecutter").setLevel(logging.CRITICAL)  # its hook failures log tracebacks
    try:
        with tempfile.TemporaryDirectory(prefix="kerasls-template-") as clean_copy:
            # pip byte-compiles the installed template's .py files; never render __pycache__ into a project
            source = Path(clean_copy) / template.name
            shutil.copytree(template, source, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            project = cookiecutter(str(source), no_input=no_input, extra_context=extra_context,
                                   output_dir=str(output_dir), overwrite_if_exists=overwrite)
    except EOFError:
        print(flush=True)  # end cookiecutter's unanswered prompt line, so the error starts a line of its own
        raise KeraslsError("no input to answer the template's questions; pass --no-input and key=value variables "
                           "(e.g. project_slug=shop)") from None
    except OutputDirExistsException as error:
        raise KeraslsError(f"{error}; choose another project_slug or -o, or pass --force") from None
    except FailedHookException as error:
        raise KeraslsError(f"template {template.name}: {error}") from None
    except CookiecutterException as error:
        raise KeraslsError(f"template {template.name}: {error}") from None
    return Path(project)
