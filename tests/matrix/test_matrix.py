"""Host in Rust, C and Python x cell in Rust, C and Python (9 pairs): echo, error
propagation, deadline and death detection, with real processes of each language."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUST = ROOT / "target" / "release" / "cellshm-testkit"
C_BUILD = ROOT / "build"
PY_CELL = ROOT / "bindings" / "python" / "tests" / "cells" / "py_test_cell.py"

HOSTS = {
    "rust": [str(RUST), "matrix-host"],
    "c": [str(C_BUILD / "matrix_host")],
    "python": [sys.executable, str(Path(__file__).with_name("matrix_host.py"))],
}
CELLS = {
    "rust": [str(RUST), "cell"],
    "c": [str(C_BUILD / "test_cell")],
    "python": [sys.executable, str(PY_CELL)],
}


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("host", sorted(HOSTS))
def test_pair(host: str, cell: str) -> None:
    for path in (HOSTS[host][0], CELLS[cell][0]):
        if not Path(path).exists():
            pytest.fail(f"{path} is missing: run `make test-c` (C programs) and build the Rust binaries first")
    out = subprocess.run(HOSTS[host] + CELLS[cell], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, f"host={host} cell={cell}\n{out.stdout}\n{out.stderr}"
    assert f"matrix host={host}: ok" in out.stdout
