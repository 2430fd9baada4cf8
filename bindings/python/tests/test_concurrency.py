"""Threads, the GIL, asyncio."""

import asyncio
import threading
import time

import pytest

import cellshm
from conftest import spawn_ready, u32


def test_eight_threads_calling_concurrently(hub, rust_test_cell):
    peer = spawn_ready(hub, rust_test_cell)
    errors = []

    def work(t: int) -> None:
        for i in range(500):
            data = bytes([t]) * (8 + i % 300) + i.to_bytes(4, "little")
            try:
                if peer.call("Echo.echo", data, timeout=10.0) != data:
                    errors.append((t, i, "wrong answer"))
            except Exception as error:  # pragma: no cover - reported below
                errors.append((t, i, repr(error)))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_the_gil_is_released_while_a_call_blocks(hub, rust_test_cell):
    peer = spawn_ready(hub, rust_test_cell)
    counter = 0
    stop = threading.Event()

    def count() -> None:
        nonlocal counter
        while not stop.is_set():
            counter += 1

    thread = threading.Thread(target=count)
    thread.start()
    time.sleep(0.05)
    before = counter
    peer.call("Test.sleep", u32(300), timeout=5.0)
    during = counter - before
    stop.set()
    thread.join()
    # With the GIL held for 300 ms the counter would barely move.
    assert during > 100_000, f"the other thread only counted {during} times during the call"


def test_a_hundred_concurrent_async_calls_on_one_peer(hub, rust_test_cell, py_test_cell):
    for argv in (rust_test_cell, py_test_cell):
        peer = spawn_ready(hub, argv)

        async def main() -> None:
            payloads = [i.to_bytes(4, "little") * (1 + i % 50) for i in range(100)]
            answers = await asyncio.gather(*(peer.call_async("Echo.echo", p, timeout=10.0) for p in payloads))
            assert answers == payloads
            with pytest.raises(cellshm.DeadlineExceeded):
                await peer.call_async("Test.sleep", u32(500), timeout=0.05)
            with pytest.raises(cellshm.Unimplemented):
                await peer.call_async("No.such", b"")
            # A cancelled await leaves nothing behind; the peer keeps working.
            task = asyncio.ensure_future(peer.call_async("Test.sleep", u32(200)))
            await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await peer.call_async("Echo.echo", b"after", timeout=5.0) == b"after"

        asyncio.run(main())


def test_an_asyncio_cell_runs_async_handlers_and_calls_the_host(hub, py_test_cell):
    @hub.method("Host.echo")
    def host_echo(request: bytes) -> bytes:
        return b"host:" + request

    peer = spawn_ready(hub, py_test_cell, env={"PY_CELL_MODE": "async"})
    assert peer.call("Test.async_echo", b"x", timeout=5.0) == b"async:x"
    assert peer.call("Echo.echo", b"y", timeout=5.0) == b"y"
    assert peer.call("Test.call_host", b"z", timeout=5.0) == b"host:z"
    assert peer.shutdown(5.0) == 0, "serve_async returns when the host says goodbye"


def test_async_handlers_need_serve_async(hub, py_test_cell):
    peer = spawn_ready(hub, py_test_cell)
    with pytest.raises(cellshm.Internal, match="serve_async"):
        peer.call("Test.async_echo", b"x", timeout=5.0)
