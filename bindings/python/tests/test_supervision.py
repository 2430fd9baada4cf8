"""The supervisor and attaching, from Python."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import cellshm

HERE = Path(__file__).resolve().parent


def test_a_supervised_python_cell_is_relaunched_and_stopped(py_test_cell):
    events = []
    with cellshm.Supervisor(max_peers=4) as sup:
        sup.on_event(lambda *event: events.append(event))
        sup.add("py", py_test_cell, env={"CELLSHM_QUIET": "1"}, initial_backoff=0.01, max_backoff=0.05)
        sup.wait_for("py", "ready")
        first = sup.pid("py")
        assert sup.call("py", "Echo.echo", b"one", timeout=5) == b"one"
        os.kill(first, signal.SIGKILL)
        assert sup.wait_for("py", "crashed") == "signal 9"
        sup.wait_for("py", "ready")
        assert sup.pid("py") != first
        assert sup.call("py", "Echo.echo", b"two", timeout=5) == b"two"
        assert sup.stop("py", grace=3) == 0
        assert sup.status("py") == ("exited", "stopped (exit code 0)")
        with pytest.raises(cellshm.Unavailable):
            sup.call("py", "Echo.echo", b"three", timeout=1)
    statuses = [e[1] for e in events]
    assert statuses[:5] == ["starting", "ready", "crashed", "starting", "ready"], statuses


def test_a_cell_that_cannot_start_is_given_up():
    with cellshm.Supervisor() as sup:
        sup.add("doomed", ["false"], max_restarts=2, initial_backoff=0.01, max_backoff=0.02)
        assert sup.wait_for("doomed", "failed") == "code 1"


def test_a_python_process_attaches_and_a_uid_outside_the_list_is_refused(hub):
    listener = hub.enable_attach()
    cell = subprocess.Popen([sys.executable, str(HERE / "cells" / "py_attach_cell.py"), hub.name, "visitor"])
    try:
        deadline = time.monotonic() + 10
        peer = None
        while time.monotonic() < deadline:
            peer = hub.peer("visitor")
            if peer is not None and peer.state == "ready":
                break
            time.sleep(0.01)
        assert peer is not None and peer.state == "ready"
        assert peer.pid == cell.pid
        assert peer.call("Echo.echo", b"hello visitor", timeout=5) == b"hello visitor"
        with pytest.raises(cellshm.FailedPrecondition):
            peer.kill()  # not ours to kill: the host did not spawn it
        assert listener.refusals() == []
    finally:
        cell.kill()
        cell.wait()
    listener.close()
    # An allow-list without our uid: we are refused, with the reason (the Rust suite
    # covers a real other user, running as nobody).
    strict = hub.enable_attach(allowed_uids=[os.getuid() + 12345])
    with pytest.raises(cellshm.PermissionDenied, match="not allowed"):
        cellshm.Cell.attach(hub.name, "intruder")
    assert any(f"uid {os.getuid()}" in r for r in strict.refusals())
    strict.close()
