"""The Python host of the cross-language matrix: runs the four checks against the cell
started by argv and prints ``matrix host=python: ok``."""

import sys
import threading
import time

import cellshm


def main(argv: list) -> None:
    with cellshm.Hub() as hub:
        peer = hub.spawn(argv, name="matrix", env={"CELLSHM_QUIET": "1"})
        peer.wait_ready(15)
        data = bytes(i % 251 for i in range(1000))
        assert peer.call("Echo.echo", data, timeout=5) == data, "echo"
        try:
            peer.call("Test.fail", (5).to_bytes(4, "little") + b"no widget 7", timeout=5)
            raise AssertionError("Test.fail did not fail")
        except cellshm.NotFound as error:
            assert "no widget 7" in error.message, error
        try:
            peer.call("Test.fail", (142).to_bytes(4, "little") + b"from the future", timeout=5)
            raise AssertionError("Test.fail did not fail")
        except cellshm.CellshmError as error:
            # A status number this side does not know arrives as it was sent.
            assert type(error) is cellshm.CellshmError and error.code == 142, error
            assert "from the future" in error.message, error
        try:
            peer.call("Test.sleep", (500).to_bytes(4, "little"), timeout=0.05)
            raise AssertionError("no deadline")
        except cellshm.DeadlineExceeded:
            pass
        killed = []

        def kill() -> None:
            time.sleep(0.2)
            killed.append(time.monotonic())
            peer.kill()

        threading.Thread(target=kill).start()
        try:
            peer.call("Test.sleep", (10_000).to_bytes(4, "little"), timeout=30)
            raise AssertionError("no death")
        except cellshm.PeerDead:
            assert time.monotonic() - killed[0] < 1.0, "death seen late"
        peer.wait_exit(5)
    print("matrix host=python: ok")


if __name__ == "__main__":
    main(sys.argv[1:])
