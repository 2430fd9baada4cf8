"""Caller identity and permissions from Python: a host method allowed to cell "a" only,
its handler seeing a's name and pid, "b" refused with PermissionDenied before the handler
(and counted), then a policy instead of the list."""

import os
from typing import List

import pytest

import cellshm


def test_a_host_method_allowed_to_one_cell_refuses_the_other_and_sees_who_calls(hub, py_test_cell, rust_test_cell):
    seen = []

    @hub.method("Host.echo", allow=["a"])
    def echo(request: bytes) -> bytes:
        seen.append(cellshm.current_call().caller)
        return request

    with pytest.raises(cellshm.InvalidArgument):
        hub.allow("", ["a"])
    hub.allow("Host.nothing", ["a"])  # kept by name: a gateway checks it for a cell's method
    with pytest.raises(TypeError):
        hub.allow("Host.echo", "a")
    quiet = {"CELLSHM_QUIET": "1"}
    a = hub.spawn(py_test_cell, name="a", env=quiet)
    b = hub.spawn(rust_test_cell, name="b", env=quiet)  # a Rust cell, refused the same way
    a.wait_ready(10)
    b.wait_ready(10)

    assert a.call("Test.call_host", b"from a", timeout=5) == b"from a"
    with pytest.raises(cellshm.PermissionDenied, match='cell "b".*allow list'):
        b.call("Test.call_host", b"from b", timeout=5)
    assert len(seen) == 1, "the refused call never reached the handler"
    who = seen[0]
    assert isinstance(who, cellshm.CallerInfo)
    assert (who.name, who.pid, who.peer_id, who.uid) == ("a", a.pid, a.id, os.getuid())
    assert who == a.identity
    assert (a.refused_calls, b.refused_calls) == (0, 1)

    # A policy instead of the list.
    hub.allow_everyone("Host.echo")
    asked = []

    def only_a(caller: cellshm.CallerInfo, method: str) -> bool:
        asked.append((caller.name, method))
        return caller.pid == a.pid

    hub.set_access_policy(only_a)
    assert a.call("Test.call_host", b"again", timeout=5) == b"again"
    with pytest.raises(cellshm.PermissionDenied, match="policy"):
        b.call("Test.call_host", b"again", timeout=5)
    assert asked == [("a", "Host.echo"), ("b", "Host.echo")]
    assert b.refused_calls == 2
    hub.set_access_policy(None)
    assert b.call("Test.call_host", b"free", timeout=5) == b"free"
    assert [w.name for w in seen] == ["a", "a", "b"]


def test_a_handler_outside_a_host_has_no_caller_and_stream_handlers_see_theirs(hub, rust_test_cell):
    openers = []

    @hub.stream_method("Host.countdown", allow=["streamer"])
    def countdown(call: cellshm.StreamCall) -> None:
        openers.append(call.caller)
        call.send((0).to_bytes(4, "little"))

    streamer = hub.spawn(rust_test_cell, name="streamer", env={"CELLSHM_QUIET": "1"})
    other = hub.spawn(rust_test_cell, name="other", env={"CELLSHM_QUIET": "1"})
    streamer.wait_ready(10)
    other.wait_ready(10)
    assert streamer.call("Test.stream_from_host", (1).to_bytes(4, "little"), timeout=5) == (0).to_bytes(4, "little")
    with pytest.raises(cellshm.PermissionDenied):
        other.call("Test.stream_from_host", (1).to_bytes(4, "little"), timeout=5)
    assert [c.name for c in openers] == ["streamer"] and openers[0].pid == streamer.pid
    assert other.refused_calls == 1


def test_peer_metrics_count_calls_errors_and_latency_per_method_both_ways(hub, rust_test_cell):
    @hub.method("Host.echo")
    def echo(request: bytes) -> bytes:
        return request

    peer = hub.spawn(rust_test_cell, name="measured", env={"CELLSHM_QUIET": "1"})
    peer.wait_ready(10)
    for _ in range(5):
        assert peer.call("Echo.echo", b"x", timeout=5) == b"x"
    for _ in range(2):
        with pytest.raises(cellshm.Unimplemented):
            peer.call("Nope.nope", b"", timeout=5)
    assert peer.call("Test.call_host", b"up", timeout=5) == b"up"
    m = peer.metrics()
    assert isinstance(m, cellshm.PeerMetrics) and m.state == "ready"
    out = {x.name: x for x in m.host_to_cell}
    assert (out["Echo.echo"].calls, out["Echo.echo"].errors, out["Echo.echo"].in_flight) == (5, {}, 0)
    assert 0 < out["Echo.echo"].p50_ns <= out["Echo.echo"].p99_ns <= out["Echo.echo"].max_ns
    assert out["Nope.nope"].errors == {"UNIMPLEMENTED": 2}
    served = {x.name: x for x in m.cell_to_host}
    assert served["Host.echo"].calls == 1 and served["cellshm.Lifecycle.ready"].calls >= 1
    assert (m.open_streams, m.refused_calls, m.restarts) == (0, 0, 0)


def test_an_attached_process_relays_to_the_hosts_cells_only_if_the_host_enabled_it(py_test_cell: List[str]) -> None:
    """`Hub.enable_relay`: an attached process of that uid reaches the host's cells
    through `cellshm.Relay.call`; before, the host refuses it."""
    import struct

    def header(peer: str, method: str, caller: str = "") -> bytes:
        return b"".join(struct.pack("<I", len(s.encode())) + s.encode() for s in (peer, method, caller))

    with cellshm.Hub() as hub:
        peer = hub.spawn(py_test_cell, name="echo")
        peer.wait_ready(10)
        attach = hub.enable_attach()
        relay = cellshm.Cell.attach(hub.name, "gateway")
        try:
            with pytest.raises(cellshm.Unimplemented):
                relay.call("cellshm.Relay.call", header("echo", "Echo.echo") + b"x", timeout=5)
            hub.enable_relay([os.geteuid()])
            assert relay.call("cellshm.Relay.call", header("echo", "Echo.echo") + b"relayed", timeout=5) == b"relayed"
            hub.allow("Echo.echo", ["ops"])
            with pytest.raises(cellshm.PermissionDenied, match="guest"):
                relay.call("cellshm.Relay.call", header("echo", "Echo.echo", "guest") + b"x", timeout=5)
        finally:
            relay.close()
            del attach
