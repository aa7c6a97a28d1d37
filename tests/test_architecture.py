"""The layout of docs/architecture.md holds: import-linter contracts, no import cycles, imports at
the top of modules (a lazy import is for a heavy optional dependency and says so), and the pure
definitions real/ shares load without the simulators."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("twin", "real", "calibration", "reports")


def test_import_linter_contracts_are_kept(tmp_path):
    lint = Path(sys.executable).with_name("lint-imports")
    # its cache in tmp_path: the suite writes nothing into the checkout
    proc = subprocess.run([str(lint), "--cache-dir", str(tmp_path / "cache")], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def _cycles(graph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.find_modules_directly_imported_by(v):
            if w not in graph.modules:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for m in sorted(graph.modules):
        if m not in index:
            visit(m)
    return out


def test_no_import_cycles():
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)   # no .grimp_cache/ written into the checkout
    # a package's __init__ that re-exports lazily (twin, real.bench) is not a cycle of code
    assert _cycles(graph) == []


def _function_level_imports(path: Path) -> list[tuple[int, str]]:
    lines = path.read_text().splitlines()
    tree = ast.parse("\n".join(lines))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, (ast.Import, ast.ImportFrom)):
                    line = lines[inner.lineno - 1]
                    above = lines[inner.lineno - 2] if inner.lineno > 1 else ""
                    if "# lazy:" not in line and "# lazy:" not in above:
                        found.append((inner.lineno, line.strip()))
    return found


def test_imports_sit_at_the_top_unless_lazy_on_purpose():
    hidden = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            found = _function_level_imports(path)
            if found:
                hidden[str(path.relative_to(ROOT))] = found
    assert not hidden, f"imports inside functions without a '# lazy: why' comment: {hidden}"


def test_shared_definitions_load_without_the_simulators():
    # real/ runs on GPU images without simpy: what it imports from the twin must not pull it in
    code = ("import sys, twin.costs.flops, twin.core.specs, twin.core.schedules, real.bench; "
            "heavy = sorted(m for m in ('simpy', 'torch', 'matplotlib', 'pandas', 'scipy.optimize') if m in sys.modules); "
            "print(heavy); assert not heavy")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_test_modules_have_unique_basenames():
    """The test folders are not packages, so pytest imports each test module by its basename: two
    files of one name in different folders fail collection of the second (a clean clone's CI found
    this twice). tests/real/ prefixes its modules with test_real_ where another folder has the name."""
    names: dict[str, list[str]] = {}
    for path in (ROOT / "tests").rglob("test_*.py"):
        names.setdefault(path.name, []).append(str(path.relative_to(ROOT)))
    assert {n: p for n, p in names.items() if len(p) > 1} == {}
