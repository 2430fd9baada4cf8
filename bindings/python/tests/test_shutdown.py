"""Closing a hub reads as a normal end: every cell is told goodbye and exits 0 quietly."""

from pathlib import Path
import time
from typing import Callable, Dict, List, Tuple

import cellshm

from conftest import ROOT


def test_closing_a_hub_lets_rust_c_and_python_cells_exit_0_and_print_nothing(
    tmp_path: Path, rust_test_cell: List[str], py_test_cell: List[str]
) -> None:
    c_cell = ROOT / "build" / "test_cell"
    assert c_cell.exists(), "run `make test-c` first"
    cells = {"rust": rust_test_cell, "c": [str(c_cell)], "python": py_test_cell}
    peers: Dict[str, Tuple[cellshm.Peer, Path]] = {}
    with cellshm.Hub() as hub:
        for lang, argv in cells.items():
            log = tmp_path / f"{lang}.stderr"
            # The cell's stderr goes to a file; not quiet, so anything it prints shows.
            wrapped = ["sh", "-c", 'exec "$@" 2>"$CELL_LOG"', "sh", *argv]
            peer = hub.spawn(wrapped, name=lang, env={"CELL_LOG": str(log)})
            peer.wait_ready(15.0)
            peers[lang] = (peer, log)
    for lang, (peer, log) in peers.items():
        code = peer.wait_exit(5.0)
        assert code == 0, f"{lang} exited {code}: {log.read_text()}"
        assert log.read_text() == "", f"{lang} printed {log.read_text()!r}"


def test_reusing_the_slot_of_a_cell_that_died_inside_a_python_handler_does_not_wait_for_it(
    rust_test_cell: List[str],
) -> None:
    import threading

    entered, release = threading.Event(), threading.Event()
    with cellshm.Hub(max_peers=1) as hub:

        @hub.method("Host.echo")
        def echo(request: bytes) -> bytes:
            entered.set()
            release.wait(20)
            return request

        first = hub.spawn(rust_test_cell, name="first", env={"CELLSHM_QUIET": "1"})
        first.wait_ready(15.0)
        caller = threading.Thread(target=lambda: _ignore_errors(lambda: first.call("Test.call_host", b"x", timeout=20)))
        caller.start()
        assert entered.wait(5)
        first.kill()
        first.wait_exit(5.0)
        started = time.monotonic()
        # The handler still runs (and will want the GIL); spawning must not wait for it.
        second = hub.spawn(rust_test_cell, name="second", env={"CELLSHM_QUIET": "1"})
        second.wait_ready(15.0)
        assert time.monotonic() - started < 10
        assert second.call("Echo.echo", b"fresh", timeout=5) == b"fresh"
        release.set()
        caller.join(10)
        second.kill()


def _ignore_errors(f: Callable[[], object]) -> None:
    try:
        f()
    except cellshm.CellshmError:
        pass
