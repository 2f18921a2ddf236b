"""The CLI starts without the heavy layers: `gsu --help`, `gsu info` and sub-command help
for commands that do not need them import neither torch, numba nor faiss."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

HEAVY = ("torch", "numba", "faiss", "scipy", "pandas", "sklearn")


def _modules_after(argv: list[str]) -> tuple[int, set[str], str]:
    code = (
        "import sys, json, contextlib, io\n"
        "from gsu.cli import main\n"
        "buf = io.StringIO()\n"
        "rc = 0\n"
        "with contextlib.redirect_stdout(buf):\n"
        "    try:\n"
        f"        rc = main({argv!r})\n"
        "    except SystemExit as e:\n"
        "        rc = e.code\n"
        "print(json.dumps({'rc': rc, 'mods': sorted(sys.modules), 'out': buf.getvalue()}))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    d = json.loads(p.stdout.strip().splitlines()[-1])
    return d["rc"], {m.split(".")[0] for m in d["mods"]}, d["out"]


@pytest.mark.parametrize("argv", [["--help"], ["bench", "--help"], ["build", "--help"], ["serve", "--help"]])
def test_help_imports_no_heavy_layer(argv):
    rc, mods, out = _modules_after(argv)
    assert rc == 0
    assert "usage: gsu" in out
    assert not mods & set(HEAVY), sorted(mods & set(HEAVY))


def test_info_reads_the_header_only(tmp_path):
    from gsu.index import FlatIndex

    x = np.random.default_rng(0).standard_normal((20, 8)).astype(np.float32)
    path = tmp_path / "f.gsu"
    idx = FlatIndex(8, "ip")
    idx.add(x)
    idx.save(path)
    rc, mods, out = _modules_after(["info", str(path)])
    assert rc == 0
    assert "kind:     flat" in out and "(20, 8)" in out
    assert not mods & set(HEAVY), sorted(mods & set(HEAVY))


def test_retrieve_and_train_help_still_list_their_options():
    rc, _, out = _modules_after(["retrieve", "--help"])
    assert rc == 0 and "--method" in out and "requests" in out and "--no-mmap" in out
    rc, mods, out = _modules_after(["-v", "train", "--help"])
    assert rc == 0 and "--schema" in out and "--method" in out
