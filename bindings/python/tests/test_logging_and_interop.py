"""Log forwarding, the Rust host with a Python cell, and the stubs."""

import logging
import subprocess
import sys
import time
from pathlib import Path

from conftest import spawn_ready

PACKAGE = Path(__file__).resolve().parents[1] / "python" / "cellshm"


def test_cell_log_records_appear_in_the_host_log_with_the_cell_name(hub, py_test_cell, caplog):
    peer = spawn_ready(hub, py_test_cell, name="chatty")
    with caplog.at_level(logging.DEBUG, logger="cellshm.cell"):
        peer.call("Test.log", b"hello", timeout=5.0)
        deadline = time.monotonic() + 5
        while not any("the host said hello" in r.getMessage() for r in caplog.records) and time.monotonic() < deadline:
            time.sleep(0.01)
    record = next(r for r in caplog.records if "the host said hello" in r.getMessage())
    assert record.name == "cellshm.cell.chatty"
    assert record.levelno == logging.WARNING
    assert record.cell == "chatty" and record.peer_id == peer.id and record.cell_logger == "py_test_cell"


def test_a_python_cells_records_keep_their_extra_fields_location_time_and_logger(hub, py_test_cell, caplog):
    import threading

    arrived = threading.Event()
    records = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "disk sda" in record.getMessage():
                records.append(record)
                arrived.set()

    peer = spawn_ready(hub, py_test_cell, name="disks")
    catcher = Catch()
    logging.getLogger("cellshm.cell.disks").addHandler(catcher)
    try:
        with caplog.at_level(logging.DEBUG, logger="cellshm.cell"):
            before = time.time()
            line = int(peer.call("Test.log_extra", b"sda", timeout=5.0))
            assert arrived.wait(5), "the record never reached the host's log"
    finally:
        logging.getLogger("cellshm.cell.disks").removeHandler(catcher)
    record = records[0]
    assert record.name == "cellshm.cell.disks" and record.cell_logger == "py_test_cell"
    assert (record.disk, record.used_pct) == ("sda", "97"), "extra fields arrive (as strings)"
    assert record.pathname.endswith("py_test_cell.py") and record.lineno == line
    assert before - 1 <= record.created <= time.time(), "made when the cell made it"


def test_the_rust_example_host_calls_a_python_cell(rust_echo_host, py_test_cell):
    out = subprocess.run(
        [str(rust_echo_host), "--", *py_test_cell], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert 'echo-0: Echo.echo -> "hello from the Rust host"' in out.stdout
    assert "echo-0: exited (exit status: 0)" in out.stdout


def test_stubs_match_the_native_module():
    out = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "cellshm._native", "--ignore-missing-stub"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_package_is_typed():
    assert (PACKAGE / "py.typed").exists()
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "-p", "cellshm"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_python_example_host_runs_python_and_rust_cells(rust_echo_host):
    root = Path(__file__).resolve().parents[3]
    rust_cell = rust_echo_host.with_name("echo-cell")
    out = subprocess.run(
        [sys.executable, str(root / "examples" / "python" / "echo_host.py"), "--", str(rust_cell)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "echo-0: Echo.echo -> 'hello from the Python host'" in out.stdout
    assert "echo-1: Echo.echo -> 'hello from the Python host'" in out.stdout
    assert "echo-0: Echo.upper -> 'SHOUT'" in out.stdout
    assert "cellshm.cell.echo-0: upper-casing 5 bytes" in out.stderr, "the cell's log record reached the host's log"
    assert "echo-1: exited with code 0" in out.stdout


def test_the_host_filters_what_a_python_cell_sends_and_lists_its_methods(hub, py_test_cell, caplog):
    peer = spawn_ready(hub, py_test_cell, name="filtered")
    names = [name for name, _, _ in peer.served_methods()]
    assert "Echo.echo" in names and "Test.log" in names and "cellshm.Introspect.methods" in names
    peer.set_log_filter("error")
    with caplog.at_level(logging.DEBUG, logger="cellshm.cell"):
        peer.call("Test.log", b"dropped", timeout=5.0)  # logs at WARNING: filtered out in the cell
        peer.set_log_filter("warn,py_test_cell=warn")
        peer.call("Test.log", b"kept", timeout=5.0)
        deadline = time.monotonic() + 5
        while not any("kept" in r.getMessage() for r in caplog.records) and time.monotonic() < deadline:
            time.sleep(0.01)
    messages = [r.getMessage() for r in caplog.records if r.name == "cellshm.cell.filtered"]
    assert any("the host said kept" in m for m in messages), messages
    assert not any("dropped" in m for m in messages), messages
    import pytest
    import cellshm

    with pytest.raises(cellshm.InvalidArgument):
        peer.set_log_filter("loud")
