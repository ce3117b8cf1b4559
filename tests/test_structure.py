"""The package's shape: imports among tinyseek modules point one way only (no cycle, not even through an
import inside a function), and every module opens with a docstring whose first line says what it is.

Read from the source with `ast` (nothing is imported), so a cycle that only a rarely taken code path would
close is caught as well.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "tinyseek"


def _modules() -> dict[str, Path]:
    out = {}
    for f in sorted(PKG.rglob("*.py")):
        parts = list(f.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The tinyseek modules `name` imports anywhere in its source (top level, functions, TYPE_CHECKING blocks)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            # `from pkg import sub` imports the submodule pkg.sub; `from mod import name` imports mod
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:  # `import tinyseek.train.grpo` names the module; drop attributes
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {name: _imports(name, path, set(mods)) for name, path in mods.items()}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        path.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                return path[path.index(m) :] + [m]
            if m not in state and (c := visit(m)) is not None:
                return c
        path.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (c := visit(n)) is not None:
            return c
    return None


def test_the_checker_sees_imports_inside_functions_and_finds_cycles():
    known = {"tinyseek", "tinyseek.a", "tinyseek.b", "tinyseek.pkg", "tinyseek.pkg.c"}
    src = PKG.parent / "tests" / "_structure_probe.py"
    src.write_text(
        "from tinyseek import a\ndef f():\n    from tinyseek.pkg.c import X\n    import tinyseek.b.attr\n",
        encoding="utf-8",
    )
    try:
        assert _imports("tinyseek.x", src, known) == {"tinyseek.a", "tinyseek.pkg.c", "tinyseek.b"}
    finally:
        src.unlink()
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_among_tinyseek_modules():
    graph = _graph()
    assert len(graph) > 30  # the walk found the package
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_every_module_opens_with_a_one_line_summary():
    for path in _modules().values():
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        assert doc, f"{path}: no module docstring"
        first = doc.splitlines()[0].strip()
        assert first and len(first) <= 120, f"{path}: the docstring's first line should say the module's one idea"
