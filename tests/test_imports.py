"""The package loads lazily: the CLI's --help imports no onnxruntime (nor onnx, graphsurgeon, SciPy,
NumPy), and every public name still imports from ``onnxprune``."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

import onnxprune

HEAVY = ("onnxruntime", "onnx", "onnx_graphsurgeon", "scipy", "numpy")


def test_cli_import_loads_no_heavy_module():
    code = ("import sys, onnxprune, onnxprune.cli; "
            f"loaded = [m for m in {HEAVY!r} if m in sys.modules]; "
            "assert not loaded, loaded")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_help_answers_without_heavy_imports():
    code = ("import sys\n"
            "from onnxprune.cli import main\n"
            "try:\n"
            "    main(['--help'], prog_name='onnxprune')\n"
            "except SystemExit as exit:\n"
            "    assert exit.code == 0, exit.code\n"
            f"loaded = [m for m in {HEAVY!r} if m in sys.modules]\n"
            "assert not loaded, loaded\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Usage: onnxprune" in done.stdout


def test_console_script_help_exits_0():
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "onnxprune", "--help"], capture_output=True, text=True, timeout=60)
    seconds = time.perf_counter() - started
    assert done.returncode == 0, done.stderr
    assert "--calib" in done.stdout
    print(f"onnxprune --help: {seconds:.2f}s")  # loosely watched (pytest -s); no assertion that could flake


def test_every_public_name_imports():
    for name in onnxprune.__all__:
        assert getattr(onnxprune, name) is not None, name
    assert set(onnxprune.__all__) <= set(dir(onnxprune))
    from onnxprune import PruneConfig, prune, save_model  # noqa: F401  (the eager spelling still works)

    from onnxprune.graph.io import save_model as writer
    assert save_model is writer


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="module 'onnxprune' has no attribute 'no_such_name'"):
        onnxprune.no_such_name  # noqa: B018


def _module_imports() -> dict[str, set[str]]:
    """Each onnxprune module -> the onnxprune modules it imports (by reading the source)."""
    import ast
    from pathlib import Path

    root = Path(onnxprune.__file__).parent
    graph = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        tree = ast.parse(path.read_text())
        deps = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        deps |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        graph[name] = {d for d in deps if d.startswith("onnxprune")}
    return graph


def test_no_import_circles():
    graph = _module_imports()
    assert "onnxprune.ops.linear" in graph and "onnxprune.ops.base" in graph["onnxprune.ops.linear"]
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            raise AssertionError("import circle: " + " -> ".join(path[path.index(module):] + [module]))
        if module in done or module not in graph:
            return
        for dep in graph[module]:
            visit(dep, path + [module])
        done.add(module)

    for module in graph:
        if module != "onnxprune":  # the lazy __init__ names its homes only for type checkers
            visit(module, [])
