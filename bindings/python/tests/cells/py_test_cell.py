"""The Python cell used by the pytest suite.

Methods: Echo.echo, Echo.view (memoryview request), Echo.keep_view / Test.kept_views /
Test.drop_kept_views (a view kept past its handler), Test.sleep (u32 ms), Test.fail (u32
status + message, like the Rust and C test cells), Test.raise (raises ValueError), Test.not_found (raises cellshm.NotFound), Test.call_host (calls the
host's Host.echo), Test.log (logs the request at WARNING), Test.async_echo (async def),
Test.env (the value of the environment variable the request names); Topic.read,
Topic.open, Topic.send, Topic.close (publish/subscribe, bodies as the Rust and C test
cells': u32 little-endian, strings u32-length-prefixed).
With PY_CELL_MODE=async the cell serves with asyncio (serve_async)."""

import asyncio
import logging
import os
import pickle
import struct
import sys
import time

import cellshm

cell = cellshm.Cell.from_args()
log = logging.getLogger("py_test_cell")
log.addHandler(cell.log_handler())
log.setLevel(logging.DEBUG)


@cell.method("Echo.echo")
def echo(request: bytes) -> bytes:
    return request


@cell.method("Test.env")
def env(request: bytes) -> bytes:
    return os.environ.get(request.decode(), "").encode()


@cell.method("Echo.view", view=True)
def view(request: memoryview) -> bytes:
    assert isinstance(request, memoryview) and request.readonly
    return bytes(request[::-1])


# Buffers still exported from request views after their handler returned.
kept_views: "list[pickle.PickleBuffer]" = []


@cell.method("Echo.keep_view", view=True)
def keep_view(request: memoryview) -> bytes:
    # A PickleBuffer holds an export of the view, so the view cannot be released when
    # the handler returns: the binding must keep the slot it reads from.
    kept_views.append(pickle.PickleBuffer(request))
    return b""


@cell.method("Test.kept_views")
def read_kept_views(request: bytes) -> bytes:
    return b"".join(bytes(view) for view in kept_views)


@cell.method("Test.drop_kept_views")
def drop_kept_views(request: bytes) -> None:
    kept_views.clear()


@cell.method("Test.sleep")
def sleep(request: bytes) -> None:
    (ms,) = struct.unpack("<I", request[:4])
    time.sleep(ms / 1000)


@cell.method("Test.raise")
def fail(request: bytes) -> bytes:
    raise ValueError(f"bad request of {len(request)} bytes")


@cell.method("Test.not_found")
def not_found(request: bytes) -> bytes:
    raise cellshm.NotFound(f"no widget {request.decode()}")


@cell.method("Test.fail")
def fail_with(request: bytes) -> bytes:
    (code,) = struct.unpack("<I", request[:4])
    error_class = cellshm.error_class(code)
    if error_class is cellshm.CellshmError:
        raise cellshm.CellshmError(request[4:].decode(), code=code)  # a code we do not know
    raise error_class(request[4:].decode())


@cell.method("Test.call_host")
def call_host(request: bytes) -> bytes:
    return cell.call("Host.echo", request, timeout=5.0)


@cell.method("Test.log")
def log_it(request: bytes) -> None:
    log.warning("the host said %s", request.decode())


@cell.method("Test.log_extra")
def log_extra(request: bytes) -> bytes:
    """Logs with extra fields; answers the line it logged from."""
    line = sys._getframe().f_lineno + 1
    log.warning("disk %s is full", request.decode(), extra={"disk": request.decode(), "used_pct": 97})
    return str(line).encode()


@cell.method("Test.async_echo")
async def async_echo(request: bytes) -> bytes:
    await asyncio.sleep(0.001)
    return b"async:" + request


@cell.method("Test.until_cancelled")
def unary_until_cancelled(request: bytes) -> bytes:
    call = cellshm.current_call()
    if call.wait_cancelled(10.0):
        cell.notify("Host.cancel_seen", struct.pack("<d", time.monotonic()))
        if call.deadline_ns and time.monotonic_ns() >= call.deadline_ns:
            raise cellshm.DeadlineExceeded("the caller's deadline passed")
        raise cellshm.Cancelled("the caller cancelled")
    return b"never cancelled"


@cell.stream_method("Stream.count")
def count(call: cellshm.StreamCall) -> None:
    n, size = struct.unpack_from("<II", call.request)
    for i in range(n):
        call.send(struct.pack("<I", i).ljust(size, b"."))


@cell.stream_method("Stream.sum")
def total(call: cellshm.StreamCall) -> bytes:
    count, digest = 0, 0
    for item in call:
        count += len(item)
        digest = (digest * 31 + sum(item)) % (1 << 61)
    return struct.pack("<QQ", count, digest)


@cell.stream_method("Stream.until_cancelled")
def until_cancelled(call: cellshm.StreamCall) -> None:
    call.send(b"started")
    if call.wait_cancelled(10.0):
        # Tell the host through a unary call that the handler saw it.
        cell.notify("Host.cancel_seen", struct.pack("<d", time.monotonic()))
        raise cellshm.Cancelled("the caller cancelled")


def _name_and_u32s(body: bytes, count: int) -> "tuple[str, tuple[int, ...]]":
    (length,) = struct.unpack_from("<I", body)
    name = body[4 : 4 + length].decode()
    return name, struct.unpack_from(f"<{count}I", body, 4 + length)


@cell.method("Topic.read")
def topic_read(request: bytes) -> bytes:
    name, (policy, n, count) = _name_and_u32s(request, 3)
    received = missed = last = ended = 0
    with cell.subscribe(name, policy, disconnect_after=n) as subscriber:
        while received < count:
            try:
                sample = subscriber.recv(30.0)
            except cellshm.CellshmError as error:
                ended = error.code
                break
            if sample is None:
                raise cellshm.DeadlineExceeded("no sample in 30 s")
            with sample:
                if int.from_bytes(sample.data[:8], "little") != sample.seq:
                    raise cellshm.DataLoss(f"sample {sample.seq} says otherwise")
                received += 1
                missed += sample.missed
                last = sample.seq
    return struct.pack("<QQQI", received, missed, last, ended)


publishers: "dict[str, cellshm.Publisher]" = {}


@cell.method("Topic.open")
def topic_open(request: bytes) -> None:
    name, (sample_size, depth) = _name_and_u32s(request, 2)
    publishers[name] = cell.publish(name, sample_size=sample_size, depth=depth)


@cell.method("Topic.send")
def topic_send(request: bytes) -> None:
    name, (count, size) = _name_and_u32s(request, 2)
    publisher = publishers[name]
    for _ in range(count):
        with publisher.loan(30.0) as loan:
            loan.buffer[:8] = loan.seq.to_bytes(8, "little")
            loan.publish(max(size, 8))


@cell.method("Topic.close")
def topic_close(request: bytes) -> None:
    name, _ = _name_and_u32s(request, 0)
    publishers.pop(name).close()


if os.environ.get("PY_CELL_MODE") == "async":
    asyncio.run(cell.serve_async())
else:
    cell.run()
