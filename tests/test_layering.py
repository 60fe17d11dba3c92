"""The layers point one way: meshops <- render <- face4d, and inside face4d nothing imports the
evaluation package (``face4d.eval``), which sits on top of the models, generation and data.

Read from the source (every ``import``, at module level or inside a function), so an import that
runs only on some code path breaks the test too. ``tests/test_render.py`` and
``tests/test_spiral.py`` check the same rules at run time for ``render`` and ``meshops``."""
import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every absolute import in a Python file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def offending(package: str, forbidden: tuple[str, ...], exclude: str | None = None) -> list[str]:
    hits = []
    for path in sorted((ROOT / package).rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        if exclude is not None and relative.startswith(exclude):
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
])
def test_no_import_points_up(package, forbidden, exclude):
    assert offending(package, forbidden, exclude) == []


def test_the_check_catches_an_upward_import(tmp_path, monkeypatch):
    core = tmp_path / "face4d" / "training.py"
    core.parent.mkdir()
    core.write_text("def ic():\n    from face4d.eval.metrics import classify\n")
    (tmp_path / "face4d" / "eval").mkdir()
    (tmp_path / "face4d" / "eval" / "harness.py").write_text("import face4d.eval.metrics\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert offending("face4d", ("face4d.eval",), "face4d/eval/") == [
        "face4d/training.py:2 imports face4d.eval.metrics"]
