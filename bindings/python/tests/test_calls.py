"""A Python host calling Rust and Python cells: payloads, errors, both directions."""

import time

import pytest

import cellshm
from conftest import spawn_ready, u32


@pytest.fixture(params=["rust", "python"])
def echo_peer(request, hub, rust_test_cell, py_test_cell):
    return spawn_ready(hub, rust_test_cell if request.param == "rust" else py_test_cell, name=request.param)


def test_echo_accepts_every_bytes_like_type_and_size(echo_peer):
    for size in (0, 1, 16, 17, 1024, 65_536, 1 << 20):
        data = bytes(i % 251 for i in range(size))
        assert echo_peer.call("Echo.echo", data, timeout=5.0) == data
        assert echo_peer.call("Echo.echo", bytearray(data), timeout=5.0) == data
        assert echo_peer.call("Echo.echo", memoryview(data), timeout=5.0) == data
    assert echo_peer.call("Echo.echo", timeout=5.0) == b""
    assert echo_peer.state == "ready"


def test_errors_arrive_as_the_right_exception_classes(echo_peer):
    with pytest.raises(cellshm.Unimplemented) as error:
        echo_peer.call("No.such", b"", timeout=5.0)
    assert error.value.code == 12 and "No.such" in error.value.message
    assert isinstance(error.value, cellshm.CellshmError)

    with pytest.raises(cellshm.DeadlineExceeded) as error:
        echo_peer.call("Test.sleep", u32(500), timeout=0.05)
    assert isinstance(error.value, TimeoutError)

    with pytest.raises(cellshm.PayloadTooLarge):
        echo_peer.call("Echo.echo", bytes((1 << 20) + 1), timeout=5.0)

    # Still serving after every one of them.
    assert echo_peer.call("Echo.echo", b"alive", timeout=5.0) == b"alive"


def test_a_raising_python_handler_sends_its_message_and_the_cell_keeps_serving(hub, py_test_cell):
    peer = spawn_ready(hub, py_test_cell)
    with pytest.raises(cellshm.Internal) as error:
        peer.call("Test.raise", b"abc", timeout=5.0)
    assert error.value.message == "ValueError: bad request of 3 bytes"
    with pytest.raises(cellshm.NotFound) as error:
        peer.call("Test.not_found", b"7", timeout=5.0)
    assert error.value.message == "no widget 7" and error.value.status == "NOT_FOUND"
    assert peer.call("Echo.echo", b"still here", timeout=5.0) == b"still here"


def test_memoryview_requests_are_read_in_place(hub, py_test_cell):
    peer = spawn_ready(hub, py_test_cell)
    data = bytes(range(200))
    assert peer.call("Echo.view", data, timeout=5.0) == data[::-1]


def test_a_view_kept_past_its_handler_keeps_its_slot_until_released(hub, py_test_cell):
    peer = spawn_ready(hub, py_test_cell)
    kept = bytes([0xAA]) * 1000
    peer.call("Echo.keep_view", kept, timeout=5.0)
    # Requests of the same size cycle through all 128 of the host's 4 KiB slots: had the
    # kept view's slot come back, one of these would overwrite what it shows.
    for i in range(300):
        assert peer.call("Echo.echo", bytes([i % 256]) * 1000, timeout=5.0) == bytes([i % 256]) * 1000
    assert peer.call("Test.kept_views", b"", timeout=5.0) == kept
    peer.call("Test.drop_kept_views", b"", timeout=5.0)
    # Released now: the next request lets the slot go, and the pool is whole again.
    for i in range(300):
        assert peer.call("Echo.echo", bytes([i % 256]) * 1000, timeout=5.0) == bytes([i % 256]) * 1000


def test_cells_call_host_methods_in_both_languages(hub, rust_test_cell, py_test_cell):
    @hub.method("Host.echo")
    def host_echo(request: bytes) -> bytes:
        return b"host:" + request

    for argv in (rust_test_cell, py_test_cell):
        peer = spawn_ready(hub, argv)
        assert peer.call("Test.call_host", b"ping", timeout=5.0) == b"host:ping"


def test_killing_a_cell_mid_call_raises_peer_dead_at_once(hub, rust_test_cell, py_test_cell):
    for argv in (rust_test_cell, py_test_cell):
        peer = spawn_ready(hub, argv)
        deaths = []
        peer.on_death(deaths.append)
        import threading

        killer = threading.Timer(0.2, peer.kill)
        killer.start()
        started = time.monotonic()
        with pytest.raises(cellshm.PeerDead) as error:
            peer.call("Test.sleep", u32(10_000), timeout=30.0)
        assert time.monotonic() - started < 1.5
        assert isinstance(error.value, ConnectionError)
        assert peer.state == "dead" and isinstance(peer.death, cellshm.PeerDead)
        assert len(deaths) == 1 and isinstance(deaths[0], cellshm.PeerDead)
        assert peer.wait_exit(5.0) == 128 + 9


def test_bad_arguments_raise_type_and_value_errors(hub, rust_test_cell):
    peer = spawn_ready(hub, rust_test_cell)
    with pytest.raises(TypeError, match="payload must be bytes"):
        peer.call("Echo.echo", "a str", timeout=1.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="payload must be bytes"):
        peer.call("Echo.echo", 42, timeout=1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout"):
        peer.call("Echo.echo", b"", timeout=-1)
    with pytest.raises(TypeError, match="timeout"):
        peer.call("Echo.echo", b"", timeout="soon")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="method name is empty"):
        peer.call("", b"")
    with pytest.raises(TypeError, match="argv"):
        hub.spawn("not a list")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="wait"):
        hub.spawn(["true"], wait="sometimes")
    with pytest.raises(ValueError, match="max_peers"):
        cellshm.Hub(max_peers=0)
    with pytest.raises(cellshm.AlreadyExists):
        hub.method("Host.dup")(lambda r: r)
        hub.method("Host.dup")(lambda r: r)


def test_notifications_and_ping(hub, rust_test_cell):
    peer = spawn_ready(hub, rust_test_cell)
    for _ in range(10):
        peer.notify("Test.sleep", u32(0))
    assert 0 < peer.ping(5.0) < 5.0


def test_graceful_shutdown_and_a_process_that_never_joins(hub, py_test_cell):
    peer = spawn_ready(hub, py_test_cell)
    assert peer.shutdown(5.0) == 0
    assert peer.state == "dead"
    stranger = hub.spawn(["true"], name="stranger")
    with pytest.raises(cellshm.PeerDead, match="died before it was ready"):
        stranger.wait_ready(10.0)


def test_the_status_table_matches_the_exception_classes():
    for name, code in cellshm.iter_status_codes():
        cls = cellshm.error_class(code)
        if code:
            assert cls.code == code and cls.status == name, (name, code, cls)
        assert cellshm.status_name(code) == name
    assert cellshm.method_id("Echo.echo") == 0x3E895C50
