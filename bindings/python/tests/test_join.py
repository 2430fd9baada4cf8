"""Joining (protocol 2.1) from Python: argv left alone, spawning from any thread, and
nothing left behind by a host that ends without cleaning up."""

import os
import select
import subprocess
import sys
import threading
from pathlib import Path
from typing import Dict, List, Set

import pytest

import cellshm

from conftest import HERE, ROOT, spawn_ready


def test_a_cell_with_strict_argparse_joins_and_keeps_its_own_arguments(hub: cellshm.Hub) -> None:
    argv = [sys.executable, str(HERE / "cells" / "py_argparse_cell.py"), "--greeting", "hej"]
    peer = spawn_ready(hub, argv)
    assert peer.call("Greeter.greet", b"world", timeout=5) == b"hej world"


def test_a_cell_spawned_from_a_thread_that_then_exits_keeps_serving(
    hub: cellshm.Hub, rust_test_cell: List[str]
) -> None:
    spawned: Dict[str, cellshm.Peer] = {}
    thread = threading.Thread(target=lambda: spawned.update(peer=spawn_ready(hub, rust_test_cell)))
    thread.start()
    thread.join()
    peer = spawned["peer"]
    # The spawning thread is gone; the cell is not (no parent-death signal tied to it).
    for i in range(20):
        assert peer.call("Echo.echo", bytes([i]) * 100, timeout=5) == bytes([i]) * 100
    assert peer.state == "ready"


def _abstract_sockets() -> Set[str]:
    with open("/proc/net/unix") as table:
        return {f.split()[7] for f in table.readlines()[1:] if len(f.split()) > 7 and f.split()[7].startswith("@cellshm")}


def _ends_within(pid: int, seconds: float) -> bool:
    """Waits on a pidfd (the process's end is an event) for `pid` to end."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True  # already gone
    try:
        readable, _, _ = select.select([fd], [], [], seconds)
        return bool(readable)
    finally:
        os.close(fd)


def test_a_c_host_that_returns_without_freeing_leaves_nothing_behind(tmp_path: Path) -> None:
    """Only what the hub could have made is looked at, not what other programs (another
    test run beside this one) write: the host and its cell get a TMPDIR and an
    XDG_RUNTIME_DIR of their own, /dev/shm is checked for cellshm names, and the abstract
    namespace for this hub's socket."""
    program = ROOT / "build" / "host_without_free"
    cell = ROOT / "build" / "test_cell"
    assert program.exists() and cell.exists(), "run `make test-c` first"
    private = {"TMPDIR": tmp_path / "tmp", "XDG_RUNTIME_DIR": tmp_path / "run"}
    for d in private.values():
        d.mkdir()
    shm_before = {n for n in os.listdir("/dev/shm") if "cellshm" in n}
    name = f"no-free-{os.getpid()}"
    for _ in range(5):
        out = subprocess.run([str(program), str(cell), name], capture_output=True, text=True, timeout=30,
                             env={**os.environ, "CELLSHM_QUIET": "1", **{k: str(v) for k, v in private.items()}})
        assert out.returncode == 0, out.stderr
        pid = int(out.stdout.strip().split("=")[1])
        assert _ends_within(pid, 1.0), f"cell {pid} outlived its host by 1 s"
        # The name is free again at once: nothing of the hub survived its process.
        assert all(h.name != name for h in cellshm.list_hubs())
    for d in private.values():
        assert os.listdir(d) == [], f"left behind in {d}: {os.listdir(d)}"
    assert {n for n in os.listdir("/dev/shm") if "cellshm" in n} <= shm_before
    assert not any(s.endswith(f"/{name}") for s in _abstract_sockets())


def test_a_cell_that_dies_early_reports_its_exit_status_and_the_end_of_its_stderr(hub: cellshm.Hub) -> None:
    script = "import sys; sys.stderr.write('boom: no config at /etc/cell.toml\\n'); sys.exit(3)"
    peer = hub.spawn([sys.executable, "-c", script], name="early", stderr_tail=256)
    with pytest.raises(cellshm.PeerDead, match=r"(?s)exited with status 3.*boom: no config at /etc/cell.toml"):
        peer.wait_ready(10)
    with pytest.raises(ValueError):
        hub.spawn([sys.executable, "-c", "pass"], stderr_tail=-1)
