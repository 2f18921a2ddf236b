"""The house rules of the code base, checked on the source and on a traced search.

- Imports go down the layers only (:data:`LAYERS`, the order of docs/ARCHITECTURE.md),
  lazy imports inside functions included; nothing imports a private name (``_x``) or a
  private module from another package.
- ``FilteredIndex.search``'s walk from the ``filter`` argument to its kernel never
  re-enters a file it has already descended from (no callbacks up the call stack), for
  every route and filter form.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import numpy as np
import pytest

import gsu

ROOT = Path(gsu.__file__).parent

#: low to high; a module may import its own layer and the layers before it
LAYERS = [
    {"errors"},
    {"gsu", "_validate", "_rwlock", "_simd", "_nbopts", "_format"},
    {"device"},
    {"index"},
    {"retrieval"},
    {"datasets"},
    {"ctr"},
    {"serve"},
    {"client"},
    {"bench"},
    {"demo"},
    {"cli"},
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _unit(parts: list[str]) -> str:
    """``["gsu", "index", "hnsw"]`` -> ``"index"``; ``["gsu", "cli"]`` -> ``"cli"``; ``["gsu"]`` -> ``"gsu"``."""
    return parts[1] if len(parts) > 1 else "gsu"


def _imports():
    """(file, importing unit, imported module parts, imported names) for every gsu import."""
    for p in sorted(ROOT.rglob("*.py")):
        parts = list(p.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        src = _unit(parts)
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.split(".")[0] == "gsu":
                mod = node.module.split(".")
                names = [a.name for a in node.names]
                if mod == ["gsu"]:  # `from gsu import _validate`: the submodules themselves
                    for n in names:
                        yield p, src, (["gsu", n] if (ROOT / f"{n}.py").exists() or (ROOT / n).is_dir() else ["gsu"]), [n]
                else:
                    yield p, src, mod, names
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] == "gsu":
                        yield p, src, a.name.split("."), []


def test_every_unit_has_a_layer():
    units = {_unit(list(p.relative_to(ROOT.parent).with_suffix("").parts)) for p in ROOT.glob("*") if p.suffix == ".py" or p.is_dir()}
    units.discard("__pycache__")
    units.discard("__init__")
    assert units - set(RANK) == set(), "add the new module or package to LAYERS (and to docs/ARCHITECTURE.md)"


def test_imports_go_down_the_layers():
    up = [f"{p.relative_to(ROOT.parent)}: {src} imports {'.'.join(mod)}"
          for p, src, mod, _ in _imports() if RANK[_unit(mod)] > RANK[src]]
    assert up == []


def test_no_private_name_from_another_package():
    bad = []
    for p, src, mod, names in _imports():
        dst = _unit(mod)
        if dst == src or len(mod) < 2 or not (ROOT / mod[1]).is_dir():
            continue  # same package, or the project's shared low-level modules (gsu._format, ...)
        private_mod = any(m.startswith("_") and not m.startswith("__") for m in mod[2:])
        private_name = [n for n in names if n.startswith("_") and not n.startswith("__")]
        if private_mod or private_name:
            bad.append(f"{p.relative_to(ROOT.parent)}: from {'.'.join(mod)} import {', '.join(names)}")
    assert bad == []


def _walk(route: str, flt_kind: str, sel: float) -> list[str]:
    """Call stacks (as file chains) that re-enter a file during one ``FilteredIndex.search``."""
    from gsu.index import Filter, FilteredIndex

    rng = np.random.default_rng(0)
    n, d = 2_000, 16
    idx = FilteredIndex(d, M=8, ef_construction=32, nlist=8, calibrate=False)
    idx.add(rng.standard_normal((n, d)).astype(np.float32))
    nq = 4

    def make():
        if flt_kind == "shared":
            return Filter(np.sort(rng.choice(n, max(1, int(n * sel)), replace=False)))
        return Filter.per_query([np.sort(rng.choice(n, max(1, int(n * sel * (i + 1) / nq)), replace=False)) for i in range(nq)])

    q = rng.standard_normal((nq, d)).astype(np.float32)
    idx.search(q, 10, filter=make(), route=route)  # compile first: the walk, not numba's compiler
    f = make()
    stack: list[str | None] = []
    bad: list[str] = []

    def prof(frame, event, arg):
        if event == "call":
            fn = frame.f_code.co_filename
            name = str(Path(fn).relative_to(ROOT)) if fn.startswith(str(ROOT)) else None
            if name is not None:
                files = [s for s in stack if s]
                if files and files[-1] != name and name in files:
                    bad.append(" > ".join(files + [name]) + f" [{frame.f_code.co_name}]")
            stack.append(name)
        elif event == "return" and stack:
            stack.pop()

    sys.setprofile(prof)
    try:
        idx.search(q, 10, filter=f, route=route)
    finally:
        sys.setprofile(None)
    return bad


@pytest.mark.parametrize("route", ["auto", "exact", "ivf", "hnsw"])
@pytest.mark.parametrize("flt_kind", ["shared", "per_query"])
@pytest.mark.parametrize("sel", [0.01, 0.3])
def test_filtered_search_walk_never_reenters_a_file(route, flt_kind, sel):
    assert _walk(route, flt_kind, sel) == []
