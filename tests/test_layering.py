"""The layers point one way: meshops <- render <- face4d, and inside face4d nothing imports the
evaluation package (``face4d.eval``), which sits on top of the models, generation and data; the data
package imports none of the layers above it (outputs, pipeline, demo, command line), and the demo is
a leaf that only its command imports. The command line builds its parser without torch.

Read from the source (every ``import``, at module level or inside a function), so an import that
runs only on some code path breaks the test too. ``tests/test_render.py`` and
``tests/test_spiral.py`` check the same rules at run time for ``render`` and ``meshops``."""
import ast
import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def imported_modules(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every absolute import in a Python file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def offending(package: str, forbidden: tuple[str, ...], exclude: str | tuple[str, ...] = ()) -> list[str]:
    """Imports of ``forbidden`` modules (or their submodules) in ``package``'s files, but for those
    whose path starts with one of ``exclude``."""
    hits = []
    for path in sorted((ROOT / package).rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        if exclude and relative.startswith(exclude):
            continue
        hits += [f"{relative}:{line} imports {module}" for line, module in imported_modules(path)
                 if any(module == name or module.startswith(name + ".") for name in forbidden)]
    return hits


def test_imported_modules_sees_function_level_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("import os\n\ndef f():\n    from face4d.eval.metrics import accuracy\n    import face4d.eval\n")
    assert imported_modules(source) == [(1, "os"), (4, "face4d.eval.metrics"), (5, "face4d.eval")]


@pytest.mark.parametrize("package, forbidden, exclude", [
    ("face4d", ("face4d.eval",), "face4d/eval/"),  # core modules never import the evaluation
    ("meshops", ("face4d", "render"), None),  # meshops is the bottom layer
    ("render", ("face4d",), None),  # render takes arrays, never face4d objects
    # the data layer sits below what writes outputs, the pipeline and the commands
    ("face4d/data", ("face4d.outputs", "face4d.pipeline", "face4d.demo", "face4d.commands", "face4d.cli"), None),
    ("face4d", ("face4d.demo",), ("face4d/demo.py", "face4d/commands/")),  # the demo is a leaf
    # the command line: only itself and the results scripts' harness (its shared options) use it
    ("face4d", ("face4d.commands", "face4d.cli"), ("face4d/commands/", "face4d/cli.py", "face4d/eval/")),
])
def test_no_import_points_up(package, forbidden, exclude):
    assert offending(package, forbidden, exclude or ()) == []


HELP_WITHOUT_TORCH = """
import argparse, sys
import face4d.cli

def walk(parser):
    parser.format_help()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                walk(sub)

walk(face4d.cli.build_parser())
loaded = sorted(name for name in ("torch", "safetensors", "sentence_transformers", "pyvista") if name in sys.modules)
assert not loaded, f"face4d --help imported {loaded}"
"""


@pytest.mark.slow  # a fresh interpreter importing the package
def test_the_parser_and_every_help_build_without_torch():
    """``face4d --help`` (and each command's) starts at once: the command modules import the heavy
    modules inside ``run``, and the options' defaults come from torch-free ``face4d.settings``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", HELP_WITHOUT_TORCH], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_check_catches_an_upward_import(tmp_path, monkeypatch):
    core = tmp_path / "face4d" / "training.py"
    core.parent.mkdir()
    core.write_text("def ic():\n    from face4d.eval.metrics import classify\n")
    (tmp_path / "face4d" / "eval").mkdir()
    (tmp_path / "face4d" / "eval" / "harness.py").write_text("import face4d.eval.metrics\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert offending("face4d", ("face4d.eval",), "face4d/eval/") == [
        "face4d/training.py:2 imports face4d.eval.metrics"]
