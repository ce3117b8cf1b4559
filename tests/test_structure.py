"""The package's shape: imports among tinyseek modules point one way only (no cycle, not even through an
import inside a function), every name has one import path (the module that defines it: no re-export modules, no
imported name kept only for others to import), and every module opens with a docstring whose first line says
what it is.

Read from the source with `ast` (nothing is imported), so a cycle that only a rarely taken code path would
close is caught as well.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "tinyseek"
PUBLIC_API = {"tinyseek"}  # the one module that may declare names for others (`__all__`): tinyseek.load_model


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


# ----------------------------------------------------------------------------------------------
# one import path per name


def _is_all(node: ast.stmt) -> bool:
    return isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)


def _all_names(tree: ast.Module) -> list[str]:
    """The strings of a top-level `__all__ = [...]` (the module's declared public names), else []."""
    return [e.value for node in tree.body if _is_all(node) for e in node.value.elts]


def _only_imports(src: str) -> bool:
    """A re-export module: after its docstring and `from __future__` import, nothing but imports (and `__all__`)."""
    tree = ast.parse(src)
    body = tree.body[1:] if ast.get_docstring(tree) is not None else tree.body
    body = [n for n in body if not (isinstance(n, ast.ImportFrom) and n.module == "__future__")]
    return bool(body) and all(isinstance(n, (ast.Import, ast.ImportFrom)) or _is_all(n) for n in body)


def _unused_tinyseek_imports(src: str) -> list[str]:
    """Names imported from tinyseek modules (anywhere in the source) that the module never reads: kept only so that
    others can import them from here. A name in the module's `__all__` is declared public and counts as read."""
    tree = ast.parse(src)
    bound: dict[str, int] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").split(".")[0] == "tinyseek"):
            bound.update({a.asname or a.name: node.lineno for a in node.names})
        elif isinstance(node, ast.Import):
            bound.update(
                {a.asname or "tinyseek": node.lineno for a in node.names if a.name.split(".")[0] == "tinyseek"}
            )
    read = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    return [f"{name} (line {line})" for name, line in bound.items() if name not in read | set(_all_names(tree))]


def _defined(tree: ast.Module) -> set[str]:
    """The names a module itself binds at top level: functions, classes, assignments (not imports)."""
    out = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            out |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return out


def _imports_from_elsewhere(src: str, defined: dict[str, set[str]]) -> list[str]:
    """`from tinyseek.X import name` where X neither defines `name` nor has it as a submodule: a second path."""
    out = []
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.ImportFrom) and not node.level and node.module in defined:
            for a in node.names:
                if a.name not in defined[node.module] and f"{node.module}.{a.name}" not in defined:
                    out.append(f"line {node.lineno}: {a.name} is not defined in {node.module}")
    return out


def test_the_reexport_checks_flag_a_probe():
    shim = '"""A shim."""\n\nfrom __future__ import annotations\n\nfrom tinyseek.inference.engine import Engine\n'
    assert _only_imports(shim)
    assert _only_imports(shim + '__all__ = ["Engine"]\n')
    assert not _only_imports(shim + "X = 1\n")
    assert not _only_imports('"""Only a docstring: a package map."""\n')

    probe = (
        "from tinyseek.a import used, kept\nimport tinyseek.b\ndef f():\n    from tinyseek import c\n    return used\n"
    )
    assert _unused_tinyseek_imports(probe) == ["kept (line 1)", "tinyseek (line 2)", "c (line 4)"]
    assert _unused_tinyseek_imports(probe + '__all__ = ["kept", "c"]\ntinyseek.b.g()\n') == []

    defined = {"tinyseek.a": {"f"}, "tinyseek.pkg": set(), "tinyseek.pkg.sub": {"g"}}
    probe = "from tinyseek.a import f, g\nfrom tinyseek.pkg import sub\nfrom tinyseek.pkg.sub import g\n"
    assert _imports_from_elsewhere(probe, defined) == ["line 1: g is not defined in tinyseek.a"]
    tree = ast.parse("import os\nfrom x import y\nA = B = 1\nD: int = 2\ndef f(): pass\nclass C: pass\n")
    assert _defined(tree) == {"A", "B", "D", "f", "C"}


def test_no_reexport_module_and_no_name_kept_for_others():
    problems = []
    for name, path in _modules().items():
        src = path.read_text(encoding="utf-8")
        if _only_imports(src):
            problems.append(f"{path}: only imports (a re-export module); import the names from where they are defined")
        problems += [f"{path}: imports {n} and never uses it (a re-export?)" for n in _unused_tinyseek_imports(src)]
        if _all_names(ast.parse(src)) and name not in PUBLIC_API:
            problems.append(f"{path}: `__all__` outside the declared public API {sorted(PUBLIC_API)}")
    assert not problems, "\n".join(problems)


def test_every_tinyseek_name_is_imported_from_the_module_that_defines_it():
    mods = _modules()
    defined = {name: _defined(ast.parse(path.read_text(encoding="utf-8"))) for name, path in mods.items()}
    root = PKG.parent
    files = [*mods.values(), *sorted((root / "tests").rglob("*.py")), *sorted((root / "benchmarks").rglob("*.py"))]
    problems = [f"{f}: {p}" for f in files for p in _imports_from_elsewhere(f.read_text(encoding="utf-8"), defined)]
    assert not problems, "\n".join(problems)


# ----------------------------------------------------------------------------------------------
# functions a reader can hold in their head

MAX_FUNCTION_LINES = 120  # def line to last line, docstring included; model.py, the one-file model, is exempt
LONG_FUNCTION_EXEMPT = {"tinyseek.model"}


def _long_functions(src: str, limit: int) -> list[str]:
    """Functions and methods (nested ones too) longer than `limit` lines, as 'name (N lines, line L)'."""
    return [
        f"{n.name} ({n.end_lineno - n.lineno + 1} lines, line {n.lineno})"
        for n in ast.walk(ast.parse(src))
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > limit
    ]


def test_the_length_check_flags_a_probe():
    lines = [f"x{i} = {i}\n" for i in range(10)]
    probe = "def short():\n" + "".join("    " + x for x in lines[:5])
    probe += "\nclass C:\n    def long(self):\n" + "".join("        " + x for x in lines)
    assert _long_functions(probe, limit=8) == ["long (11 lines, line 9)"]
    assert _long_functions(probe, limit=11) == []


def test_no_function_longer_than_the_rule_outside_the_model():
    problems = [
        f"{path}: {f}"
        for name, path in _modules().items()
        if name not in LONG_FUNCTION_EXEMPT
        for f in _long_functions(path.read_text(encoding="utf-8"), MAX_FUNCTION_LINES)
    ]
    assert not problems, f"longer than {MAX_FUNCTION_LINES} lines (split into named steps):\n" + "\n".join(problems)
