"""Publish/subscribe from Python: one publisher to subscribers in Rust, C, Python and the
host itself; policies, history, zero-copy samples and loans, asyncio, a publisher's death.
Real cell processes, real shared memory."""

import asyncio
import pickle
import struct
import threading
from typing import List

import pytest

import cellshm
from conftest import ROOT, spawn_ready

C_TEST_CELL = ROOT / "build" / "test_cell"


def body(name: str, *values: int) -> bytes:
    return struct.pack("<I", len(name)) + name.encode() + struct.pack(f"<{len(values)}I", *values)


def read_reply(reply: bytes) -> "tuple[int, int, int, int]":
    received, missed, last, ended = struct.unpack("<QQQI", reply)
    return received, missed, last, ended


def call_in_thread(peer: cellshm.Peer, method: str, request: bytes, results: List[object]) -> threading.Thread:
    def run() -> None:
        try:
            results.append(peer.call(method, request, timeout=600.0))
        except BaseException as error:  # noqa: BLE001 - reported by the test
            results.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


SAMPLES = 1_000_000


def test_one_publisher_four_languages_every_sample_in_order_and_a_slow_drop_oldest_subscriber_counts_its_gap(
    hub: cellshm.Hub, rust_test_cell: List[str], py_test_cell: List[str]
) -> None:
    cells = {
        "rust": spawn_ready(hub, rust_test_cell, name="rust"),
        "c": spawn_ready(hub, [str(C_TEST_CELL)], name="c"),
        "python": spawn_ready(hub, py_test_cell, name="python"),
    }
    publisher = hub.publish("numbers", sample_size=64, depth=256)
    results: "dict[str, List[object]]" = {name: [] for name in cells}
    threads = [
        call_in_thread(peer, "Topic.read", body("numbers", int(cellshm.Policy.BLOCK), 0, SAMPLES), results[name])
        for name, peer in cells.items()
    ]
    host = hub.subscribe("numbers", cellshm.Policy.BLOCK)
    slow = hub.subscribe("numbers", cellshm.Policy.DROP_OLDEST)
    host_seen: List[int] = []

    def read_in_host() -> None:
        expected = 1
        for sample in host:
            with sample:
                if sample.seq != expected or sample.missed or bytes(sample.data[:8]) != expected.to_bytes(8, "little"):
                    host_seen.append(-expected)
                    return
            expected += 1
            if expected > SAMPLES:
                break
        host_seen.append(expected - 1)

    reader = threading.Thread(target=read_in_host)
    reader.start()
    publisher.wait_for_subscribers(5, 30.0)
    padding = bytes(56)
    publish = publisher.publish
    for seq in range(1, SAMPLES + 1):
        publish(seq.to_bytes(8, "little") + padding, 60.0)
    for thread in threads:
        thread.join()
    reader.join()
    for name, result in results.items():
        assert len(result) == 1 and isinstance(result[0], bytes), f"{name}: {result}"
        assert read_reply(result[0]) == (SAMPLES, 0, SAMPLES, 0), name
    assert host_seen == [SAMPLES]
    # The subscriber that never read holds the newest queue's worth and knows exactly
    # how many went before them.
    first = slow.try_recv()
    assert first is not None and (first.seq, first.missed) == (SAMPLES - 255, SAMPLES - 256)
    assert slow.dropped == SAMPLES - 256
    first.release()
    publisher.close()
    rest = [sample.seq for sample in slow]
    assert rest == list(range(SAMPLES - 254, SAMPLES + 1)), "iteration ends once the closed topic is read"


def test_samples_are_read_in_place_loans_written_in_place_and_views_outliving_them_are_safe(hub: cellshm.Hub) -> None:
    publisher = hub.publish("frames", sample_size=1024, depth=4, max_borrowed=2)
    subscriber = hub.subscribe("frames", cellshm.Policy.BLOCK)
    with publisher.loan() as loan:
        assert loan.capacity == 1024 and loan.seq == 1
        loan.buffer[:5] = b"hello"
        assert loan.publish(5) == 1
    with publisher.loan() as loan:
        loan.buffer[:3] = b"not"  # left unpublished: the slot goes back
    assert publisher.publish(b"x" * 1000) == 2
    with pytest.raises(cellshm.InvalidArgument):
        publisher.publish(b"x" * 1025)
    sample = subscriber.recv(1.0)
    assert sample is not None and sample.seq == 1 and len(sample) == 5
    assert sample.data.readonly and bytes(sample.data) == b"hello" and sample.tobytes() == b"hello"
    with pytest.raises(TypeError):
        sample.data[0] = 0
    # Something made from the view keeps the sample: release says so, nothing is lost.
    kept = pickle.PickleBuffer(sample.data)
    with pytest.raises(BufferError):
        sample.release()
    assert bytes(kept) == b"hello"
    kept.release()
    sample.release()
    assert sample.released
    with pytest.raises(cellshm.FailedPrecondition):
        sample.data
    big = subscriber.recv(1.0)
    assert big is not None and big.seq == 2 and bytes(big) == b"x" * 1000
    # A view outliving its collected sample keeps the sample (and its slot) until it
    # can be released: the bytes stay what they were.
    held = pickle.PickleBuffer(big.data)
    del big
    for _ in range(8):
        publisher.publish(b"y" * 1000)
        with subscriber.recv(1.0) as other:  # type: ignore[union-attr]
            assert bytes(other.data) == b"y" * 1000
    assert bytes(held) == b"x" * 1000
    held.release()
    # A loan's buffer in use blocks its publishing, clearly.
    loan = publisher.loan()
    buffer = pickle.PickleBuffer(loan.buffer)
    with pytest.raises(BufferError):
        loan.publish(1)
    buffer.release()
    assert loan.publish(1) == 11
    subscriber.close()
    publisher.close()
    with pytest.raises(cellshm.FailedPrecondition):
        publisher.publish(b"late")


def test_history_disconnect_after_and_wrong_arguments(hub: cellshm.Hub) -> None:
    publisher = hub.publish("history", sample_size=64, depth=16, history=10)
    for seq in range(1, 101):
        publisher.publish(seq.to_bytes(8, "little"))
    late = hub.subscribe("history", cellshm.Policy.BLOCK)
    seqs = []
    for _ in range(10):
        sample = late.recv(1.0)
        assert sample is not None
        seqs.append(sample.seq)
        sample.release()
    assert seqs == list(range(91, 101)) and late.try_recv() is None
    lagging = hub.subscribe("history", cellshm.Policy.DISCONNECT_AFTER, disconnect_after=4)
    late.close()
    for seq in range(101, 121):
        publisher.publish(seq.to_bytes(8, "little"))
    with pytest.raises(cellshm.ResourceExhausted, match="lagged"):
        while True:
            sample = lagging.recv(1.0)
            assert sample is not None
            sample.release()
    with pytest.raises(cellshm.AlreadyExists):
        hub.publish("history")
    with pytest.raises(cellshm.NotFound):
        hub.subscribe("nothing")
    with pytest.raises(cellshm.InvalidArgument, match="power of two"):
        hub.publish("bad", depth=3)
    with pytest.raises(ValueError):
        hub.subscribe("history", cellshm.Policy.DISCONNECT_AFTER)
    with pytest.raises(ValueError):
        hub.subscribe("history", wait="sometimes")


def test_wait_any_wakes_for_the_subscriber_that_gets_a_sample(hub: cellshm.Hub) -> None:
    one, two = hub.publish("one"), hub.publish("two")
    subscribers = [hub.subscribe("one"), hub.subscribe("two")]
    assert cellshm.wait_any(subscribers, 0.0) == []
    publishing = threading.Thread(target=lambda: two.publish(b"hi"))
    publishing.start()
    assert cellshm.wait_any(subscribers, 30.0) == [1]
    publishing.join()
    sample = subscribers[1].try_recv()
    assert sample is not None and bytes(sample) == b"hi"
    sample.release()
    one.close()
    assert cellshm.wait_any(subscribers, 30.0) == [0], "an end is ready too"


def test_a_last_value_topic_and_an_event_topic(hub: cellshm.Hub) -> None:
    board = hub.publish_last_value("board", sample_size=64)
    for value in range(1, 6):
        board.publish(value.to_bytes(8, "little"))
    reader = hub.subscribe("board")
    current = reader.latest()
    assert current is not None and (current.seq, current.missed, bytes(current)) == (5, 0, (5).to_bytes(8, "little"))
    current.release()
    assert reader.latest() is None
    for value in range(6, 10):
        board.publish(value.to_bytes(8, "little"))
    current = reader.latest()
    assert current is not None and (current.seq, current.missed) == (9, 3)
    current.release()
    ticks = hub.publish_events("ticks")
    waiter = hub.subscribe("ticks")
    for _ in range(3):
        ticks.publish(b"")
    with pytest.raises(cellshm.InvalidArgument):
        ticks.publish(bytes(9))
    event = waiter.recv(1.0)
    assert event is not None and (event.seq, event.missed, len(event)) == (3, 2, 0)


@pytest.mark.parametrize("publisher_cell", ["rust", "c", "python"])
def test_a_cell_publishes_the_host_reads_with_async_for_and_its_death_ends_the_topic(
    hub: cellshm.Hub, rust_test_cell: List[str], py_test_cell: List[str], publisher_cell: str
) -> None:
    argv = {"rust": rust_test_cell, "c": [str(C_TEST_CELL)], "python": py_test_cell}[publisher_cell]
    peer = spawn_ready(hub, argv, name="publisher")
    peer.call("Topic.open", body("from-cell", 256, 16), timeout=10.0)
    subscriber = hub.subscribe("from-cell", cellshm.Policy.BLOCK)
    sending: List[object] = []
    sender = call_in_thread(peer, "Topic.send", body("from-cell", 2000, 200), sending)

    async def read() -> "tuple[int, BaseException]":
        count = 0
        async for sample in subscriber:
            with sample:
                assert sample.seq == count + 1 and len(sample) == 200
                assert bytes(sample.data[:8]) == sample.seq.to_bytes(8, "little")
            count += 1
            if count == 2000:
                break
        await asyncio.get_running_loop().run_in_executor(None, sender.join)
        peer.kill()
        try:
            await subscriber.recv_async()
        except cellshm.CellshmError as error:
            return count, error
        raise AssertionError("a sample came after the last one sent")

    count, end = asyncio.run(asyncio.wait_for(read(), 60.0))
    assert count == 2000 and sending == [b""]
    assert isinstance(end, cellshm.PeerDead), end
    peer.wait_exit(10.0)
