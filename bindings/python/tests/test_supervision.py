"""The supervisor and attaching, from Python."""

import asyncio
import os
import signal
import struct
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
        subscription = sup.on_event(events.append)
        sup.add("py", py_test_cell, env={"CELLSHM_QUIET": "1"}, initial_backoff=0.01, max_backoff=0.05)
        sup.wait_for("py", "ready")
        first = sup.pid("py")
        assert sup.call("py", "Echo.echo", b"one", timeout=5) == b"one"
        os.kill(first, signal.SIGKILL)
        assert sup.wait_for("py", "crashed") == "signal 9"
        sup.wait_for("py", "ready")
        assert sup.pid("py") != first
        assert sup.call("py", "Echo.echo", b"two", timeout=5) == b"two"

        async def both_ways() -> "tuple[bytes, bytes]":
            # The supervisor's own call_async, and a supervised cell as a LinkEnd.
            return (
                await sup.call_async("py", "Echo.echo", b"async", timeout=5),
                await sup.cell("py").call_async("Echo.echo", b"cell", timeout=5),
            )

        assert asyncio.run(both_ways()) == (b"async", b"cell")
        assert sup.stop("py", grace=3) == 0
        assert sup.status("py") == ("exited", "stopped (exit code 0)")
        with pytest.raises(cellshm.Unavailable):
            sup.call("py", "Echo.echo", b"three", timeout=1)
    subscription.close()
    statuses = [e.status for e in events]
    assert statuses[:5] == ["starting", "ready", "crashed", "starting", "ready"], statuses
    assert events[2].reason == "signal 9" and events[2].pid == first and events[2].restarts == 1


def test_restart_update_stop_start_and_remove_each_event_once_in_order_with_a_raising_listener(py_test_cell, caplog):
    events = []
    raised = []

    def raising(event):
        raised.append(event.status)
        raise RuntimeError("deliberate error in a supervisor listener")

    with cellshm.Supervisor(max_peers=4) as sup:
        recorder = sup.on_event(events.append)
        thrower = sup.on_event(raising)
        quiet = {"CELLSHM_QUIET": "1"}
        sup.add("w", py_test_cell, env={**quiet, "FLAVOUR": "plain"}, initial_backoff=0.01)
        with pytest.raises(cellshm.AlreadyExists):
            sup.add("w", py_test_cell)
        sup.wait_for("w", "ready")
        first = sup.pid("w")

        sup.restart("w", grace=3)
        sup.wait_for("w", "ready")
        assert sup.pid("w") != first

        sup.update("w", py_test_cell, env={**quiet, "FLAVOUR": "spicy"}, grace=3)
        sup.wait_for("w", "ready")
        assert sup.call("w", "Test.env", b"FLAVOUR", timeout=5) == b"spicy"
        with pytest.raises(cellshm.NotFound):
            sup.update("nobody", py_test_cell)

        assert sup.stop("w", grace=3) == 0
        assert sup.status("w") == ("exited", "stopped (exit code 0)")
        sup.start("w")
        sup.wait_for("w", "ready")

        os.kill(sup.pid("w"), signal.SIGKILL)
        assert sup.wait_for("w", "crashed") == "signal 9"
        sup.wait_for("w", "ready")

        sup.remove("w", grace=3)
        assert sup.status("w") is None and sup.names() == []
        with pytest.raises(cellshm.NotFound):
            sup.restart("w")
        with pytest.raises(ValueError, match="unknown cell status"):
            sup.wait_for("w", "redy")
        recorder.close()
        thrower.close()
    expected = (
        ["starting", "ready"]  # add
        + ["stopping", "exited", "starting", "ready"] * 2  # restart, update
        + ["stopping", "exited"]  # stop
        + ["starting", "ready"]  # start
        + ["crashed", "starting", "ready"]  # SIGKILL
        + ["stopping", "exited", "removed"]  # remove
    )
    assert [e.status for e in events] == expected
    assert raised == expected, "the raising listener saw every event too"
    errors = [r for r in caplog.records if r.name == "cellshm.supervisor"]
    assert len(errors) == len(expected) and "deliberate error" in errors[0].exc_text


def test_a_closed_or_collected_subscription_gets_no_more_events(py_test_cell):
    import gc

    kept, closed, collected = [], [], []
    with cellshm.Supervisor(max_peers=4) as sup:
        keep = sup.on_event(kept.append)
        closing = sup.on_event(closed.append)
        sup.on_event(collected.append)  # not kept: unregistered once collected
        gc.collect()
        sup.add("s", py_test_cell, env={"CELLSHM_QUIET": "1"})
        sup.wait_for("s", "ready")
        closing.close()
        assert not closing.active
        sup.restart("s")
        sup.wait_for("s", "ready")
        keep.close()
    assert [e.status for e in kept] == ["starting", "ready", "stopping", "exited", "starting", "ready"]
    assert [e.status for e in closed] == ["starting", "ready"]
    assert collected == []


def test_a_hung_cell_is_relaunched_as_unresponsive_and_calls_end_at_the_default_timeout(py_test_cell):
    crashes = []
    with cellshm.Supervisor(max_peers=4, default_timeout=0.3) as sup:
        events = sup.on_event(lambda e: crashes.append(e) if e.status == "crashed" else None)
        env = {"CELLSHM_QUIET": "1", "CELLSHM_WORKERS": "1"}
        sup.add("stuck", py_test_cell, env=env, heartbeat_interval=0.1, heartbeat_misses=2, initial_backoff=0.01)
        sup.wait_for("stuck", "ready")
        first = sup.pid("stuck")
        # Its only handler thread sleeps for a minute: the process lives, nothing serves.
        with pytest.raises(cellshm.DeadlineExceeded):
            sup.call("stuck", "Test.sleep", struct.pack("<I", 60_000))
        assert sup.wait_for("stuck", "crashed", timeout=5) == "unresponsive"
        sup.wait_for("stuck", "ready")
        assert sup.pid("stuck") != first
        # No limit, asked for explicitly, outlives the default (on a cell without
        # heartbeats: a thread busy that long is what a hung cell looks like).
        sup.add("patient", py_test_cell, env=env)
        sup.wait_for("patient", "ready")
        half_a_second = struct.pack("<I", 500)
        with pytest.raises(cellshm.DeadlineExceeded):
            sup.call("patient", "Test.sleep", half_a_second)
        assert sup.call("patient", "Test.sleep", half_a_second, timeout=cellshm.FOREVER) == b""
        events.close()
    assert [(e.reason, e.pid) for e in crashes] == [("unresponsive", first)]
    with cellshm.Supervisor() as other, pytest.raises(ValueError, match="heartbeat_interval"):
        other.add("x", py_test_cell, heartbeat_interval=0)


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
