"""Streams from Python: against the Rust test cell and a Python cell, both ways, with
cancellation, errors and asyncio, over real shared memory and real processes."""

import asyncio
import struct
import threading
import time
from typing import List

import pytest

import cellshm

from conftest import spawn_ready


def test_a_rust_cells_stream_arrives_in_order(hub: cellshm.Hub, rust_test_cell: List[str]) -> None:
    peer = spawn_ready(hub, rust_test_cell)
    items = list(peer.open_stream("Stream.count", struct.pack("<II", 2000, 100), timeout=30))
    assert len(items) == 2000
    assert all(len(item) == 100 and struct.unpack_from("<I", item)[0] == i for i, item in enumerate(items))


def test_a_stream_error_is_raised_after_its_items(hub: cellshm.Hub, rust_test_cell: List[str]) -> None:
    peer = spawn_ready(hub, rust_test_cell)
    got = []
    with pytest.raises(cellshm.Aborted, match="gave up after 3 items"):
        for item in peer.open_stream("Stream.fail_after", struct.pack("<I", 3), timeout=10):
            got.append(struct.unpack("<I", item)[0])
    assert got == [0, 1, 2]


def test_unknown_stream_methods_raise_unimplemented(hub: cellshm.Hub, rust_test_cell: List[str]) -> None:
    peer = spawn_ready(hub, rust_test_cell)
    with pytest.raises(cellshm.Unimplemented):
        peer.open_stream("Nope.nothing").recv()


def test_client_streaming_to_a_python_cell(hub: cellshm.Hub, py_test_cell: List[str]) -> None:
    peer = spawn_ready(hub, py_test_cell)
    stream = peer.open_stream("Stream.sum", timeout=30)
    chunks = [bytes([i % 251]) * 50_000 for i in range(40)]
    digest = 0
    for chunk in chunks:
        stream.send(chunk)
        digest = (digest * 31 + sum(chunk)) % (1 << 61)
    count, got = struct.unpack("<QQ", stream.finish())
    assert (count, got) == (sum(map(len, chunks)), digest)


def test_a_python_cell_streams_to_a_python_host(hub: cellshm.Hub, py_test_cell: List[str]) -> None:
    peer = spawn_ready(hub, py_test_cell)
    items = list(peer.open_stream("Stream.count", struct.pack("<II", 500, 8), timeout=30))
    assert [struct.unpack_from("<I", i)[0] for i in items] == list(range(500))


def test_cancelling_reaches_a_python_handler(hub: cellshm.Hub, py_test_cell: List[str]) -> None:
    seen = threading.Event()
    seen_at: List[float] = []

    @hub.method("Host.cancel_seen")
    def cancel_seen(request: bytes) -> None:
        seen_at.append(struct.unpack("<d", request)[0])
        seen.set()

    peer = spawn_ready(hub, py_test_cell)
    with peer.open_stream("Stream.until_cancelled", timeout=30) as stream:
        assert stream.recv() == b"started"
        cancelled_at = time.monotonic()
    assert stream.closed
    assert seen.wait(5.0), "the handler never saw the cancellation"
    # Handler-side clock minus ours: both are CLOCK_MONOTONIC.
    assert seen_at[0] - cancelled_at < 0.5


def test_a_stream_iterates_under_asyncio(hub: cellshm.Hub, rust_test_cell: List[str]) -> None:
    peer = spawn_ready(hub, rust_test_cell)

    async def main() -> List[int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.001)
                ticks += 1

        task = asyncio.ensure_future(ticker())
        got = []
        # 100 items, 2 ms apart: the loop keeps running while we wait for them.
        async for item in peer.open_stream("Stream.count", struct.pack("<III", 100, 16, 2), timeout=30):
            got.append(struct.unpack_from("<I", item)[0])
        task.cancel()
        assert ticks > 20
        return got

    assert asyncio.run(main()) == list(range(100))


def test_a_stream_deadline_raises_deadline_exceeded(hub: cellshm.Hub, rust_test_cell: List[str]) -> None:
    peer = spawn_ready(hub, rust_test_cell)
    with pytest.raises(cellshm.DeadlineExceeded):
        for _ in peer.open_stream("Stream.count", struct.pack("<III", 100, 16, 10), timeout=0.1):
            pass


def test_wrong_arguments_are_clear_errors(hub: cellshm.Hub, rust_test_cell: List[str]) -> None:
    peer = spawn_ready(hub, rust_test_cell)
    with pytest.raises(TypeError, match="payload must be bytes"):
        peer.open_stream("Stream.count", "text")  # type: ignore[arg-type]
    stream = peer.open_stream("Stream.count", struct.pack("<II", 1, 4))
    stream.cancel()
    with pytest.raises(cellshm.CellshmError, match="closed"):
        stream.recv()


def test_a_python_unary_handler_sees_its_call_cancelled(hub: cellshm.Hub, py_test_cell: List[str]) -> None:
    seen = threading.Event()

    @hub.method("Host.cancel_seen")
    def cancel_seen(request: bytes) -> None:
        seen.set()

    peer = spawn_ready(hub, py_test_cell)
    with pytest.raises(cellshm.DeadlineExceeded):
        peer.call("Test.until_cancelled", timeout=0.1)
    assert seen.wait(5.0), "the handler never saw its deadline pass"
    seen.clear()

    async def cancel_one() -> None:
        task = asyncio.ensure_future(peer.call_async("Test.until_cancelled", timeout=30))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_one())
    assert seen.wait(5.0), "the handler never saw the cancellation"
    with pytest.raises(RuntimeError, match="only valid inside"):
        cellshm.current_call()
