"""The public API: `kerasls.__all__` names what generated projects use, each name loads, importing kerasls loads no
TensorFlow, and both templates' rendered files import kerasls only through those names."""

import ast
import json
import subprocess
import sys

import pytest

import kerasls
from kerasls.templates_index import render_template


def test_every_public_name_loads():
    for name in kerasls.__all__:
        assert getattr(kerasls, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        kerasls.nope  # noqa: B018


def test_importing_kerasls_and_the_pre_tensorflow_names_loads_no_tensorflow():
    code = ("import json, sys, kerasls\n"
            "kerasls.check_before_tensorflow, kerasls.TabularConfig, kerasls.ImageConfig, kerasls.KeraslsError\n"
            "print(json.dumps('tensorflow' in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert json.loads(result.stdout) is False, result.stderr


def kerasls_uses(source: str) -> list:
    """(how, name) of every use of kerasls in a Python file: `from kerasls import X`, `from kerasls.m import X`,
    `import kerasls.m`, and `kerasls.X` attributes."""
    uses = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "kerasls":
            uses += [(f"from {node.module} import", alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            uses += [("import", alias.name) for alias in node.names if alias.name.startswith("kerasls.")]
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "kerasls":
            uses.append(("attribute", node.attr))
    return uses


@pytest.mark.parametrize("template", ["tabular-intent", "image-classifier"])
def test_generated_projects_use_only_public_names(template, tmp_path):
    project = render_template(template, output_dir=tmp_path, extra_context={"project_slug": "p"})
    files = [project / "train.py", project / "model.py", *sorted((project / "tests").glob("*.py"))]
    uses = [(path.name, how, name) for path in files for how, name in kerasls_uses(path.read_text())]
    assert uses and any(name == "fit" for _, _, name in uses)
    outside = [use for use in uses if use[1] not in ("from kerasls import", "attribute")
               or use[2] not in kerasls.__all__]
    assert outside == []
