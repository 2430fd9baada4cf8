"""Hub configuration from Python: keyword arguments, checked with clear errors, and 8 MiB
payloads both ways once the hub has 8 MiB slots."""

import pytest

import cellshm

BIG = 8 << 20
CLASSES = [(256, 256), (4096, 128), (65536, 32), (1 << 20, 4), (BIG, 2)]


@pytest.mark.parametrize("cell", ["py_test_cell", "rust_test_cell"])
def test_a_hub_with_8_MiB_slots_carries_8_MiB_both_ways(cell, request):
    argv = request.getfixturevalue(cell)
    with cellshm.Hub(slot_classes=CLASSES, stream_window=16, server_threads=3) as hub:
        peer = hub.spawn(argv, name="big", env={"CELLSHM_QUIET": "1"})
        peer.wait_ready(15)
        payload = bytes((i * 7 + i // 4096) % 256 for i in range(4096)) * (BIG // 4096)
        assert peer.call("Echo.echo", payload, timeout=30) == payload
        with pytest.raises(cellshm.PayloadTooLarge):
            peer.call("Echo.echo", payload + b"!", timeout=30)


def test_a_default_hub_refuses_8_MiB_and_bad_shapes_are_named():
    with cellshm.Hub() as hub:
        assert hub  # a default hub carries at most 1 MiB: see the Rust and C suites
    with pytest.raises(cellshm.InvalidArgument, match="ring_capacity"):
        cellshm.Hub(ring_capacity=100)
    with pytest.raises(cellshm.InvalidArgument, match="slot_size"):
        cellshm.Hub(slot_classes=[(100, 4)])
    with pytest.raises(cellshm.InvalidArgument, match="must increase"):
        cellshm.Hub(slot_classes=[(4096, 4), (256, 4)])
    with pytest.raises(TypeError, match="slot_classes"):
        cellshm.Hub(slot_classes=[(256, "many")])  # type: ignore[list-item]
    with cellshm.Hub(stream_window=0) as hub, pytest.raises(cellshm.InvalidArgument, match="stream_window"):
        hub.spawn(["true"])
    with pytest.raises(cellshm.InvalidArgument, match="stream_window"):
        cellshm.Supervisor(stream_window=5000)
    with cellshm.Supervisor(slot_classes=CLASSES) as sup:
        assert sup.hub_name
