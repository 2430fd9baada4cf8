"""64-byte round trips from Python, all measured in this one run, each as
``NAME p50_us=X p99_us=Y``: cellshm (Python host -> Python cell, Python host -> Rust
cell, in Spin and Adaptive modes; and the typed path, ``kv.Store.Get`` through the
generated client answering 64 bytes, beside a raw 64 B echo) beside
multiprocessing.Pipe, socket.socketpair and pyzmq REQ/REP over ipc://.

    make bench-python            # installs pyzmq into its own venv (.venv-bench)
    python bench.py [--quick]
"""

import multiprocessing as mp
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, List

import cellshm

ROOT = Path(__file__).resolve().parents[3]
QUICK = "--quick" in sys.argv
N = 5_000 if QUICK else 50_000
PAYLOAD = bytes(64)
PY_CELL = Path(__file__).resolve().parent / "echo_cell.py"


def measure(name: str, once: Callable[[], object], n: int = N) -> float:
    for _ in range(n // 10):
        once()
    samples: List[int] = []
    clock = time.perf_counter_ns
    for _ in range(n):
        start = clock()
        once()
        samples.append(clock() - start)
    samples.sort()
    p50 = samples[len(samples) // 2] / 1000
    p99 = samples[int(len(samples) * 0.99)] / 1000
    print(f"{name} p50_us={p50:.2f} p99_us={p99:.2f}", flush=True)
    return p50


def bench_cellshm() -> None:
    rust_cell = [str(ROOT / "target" / "release" / "cellshm-testkit"), "cell"]
    py_cell = [sys.executable, str(PY_CELL)]
    for wait in ("spin", "adaptive"):
        for label, argv in (("python_cell", py_cell), ("rust_cell", rust_cell)):
            with cellshm.Hub() as hub:
                env = {"CELLSHM_WAIT": wait, "CELLSHM_WORKERS": "2", "CELLSHM_QUIET": "1"}
                peer = hub.spawn(argv, env=env, wait=wait)
                peer.wait_ready(15)
                measure(f"cellshm_python_host_{label}_{wait}", lambda: peer.call("Echo.echo", PAYLOAD))
                peer.shutdown(2.0)


def bench_typed() -> None:
    """The generated client against the Rust kv cell, Spin: the typed path's cost."""
    out = tempfile.mkdtemp(prefix="cellshm-bench-gen-")
    proto = ROOT / "examples" / "proto"
    cellshm._native.codegen("python", out, [str(proto)], [str(proto / "kv.proto")])
    sys.path.insert(0, out)
    import kv_cellshm  # type: ignore[import-not-found]
    import kv_pb2  # type: ignore[import-not-found]

    with cellshm.Hub() as hub:
        env = {"CELLSHM_WAIT": "spin", "CELLSHM_WORKERS": "2", "CELLSHM_QUIET": "1"}
        peer = hub.spawn([str(ROOT / "target" / "release" / "kv-cell")], env=env, wait="spin")
        peer.wait_ready(15)
        store = kv_cellshm.StoreClient(peer)
        store.put(kv_pb2.PutRequest(key="k", value=PAYLOAD))
        request = kv_pb2.GetRequest(key="k")
        measure("cellshm_python_host_rust_cell_typed_get_spin", lambda: store.get(request))
        peer.shutdown(2.0)


def _pipe_child(conn) -> None:  # type: ignore[no-untyped-def]
    while True:
        message = conn.recv_bytes()
        if not message:
            return
        conn.send_bytes(message)


def bench_pipe() -> None:
    parent, child = mp.Pipe()
    process = mp.Process(target=_pipe_child, args=(child,))
    process.start()

    def once() -> None:
        parent.send_bytes(PAYLOAD)
        parent.recv_bytes()

    measure("multiprocessing_pipe", once)
    parent.send_bytes(b"")
    process.join()


def _socket_child(sock: socket.socket) -> None:
    while True:
        message = sock.recv(64)
        if not message:
            return
        sock.sendall(message)


def bench_socketpair() -> None:
    ours, theirs = socket.socketpair()
    process = mp.Process(target=_socket_child, args=(theirs,))
    process.start()
    theirs.close()

    def once() -> None:
        ours.sendall(PAYLOAD)
        got = 0
        while got < 64:
            got += len(ours.recv(64 - got))

    measure("socket_socketpair", once)
    # The forked child also holds our end, so closing it sends no EOF: stop it directly.
    process.terminate()
    process.join()
    ours.close()


def _zmq_child(address: str) -> None:
    import zmq

    context = zmq.Context()
    rep = context.socket(zmq.REP)
    rep.bind(address)
    while True:
        message = rep.recv()
        rep.send(message)
        if not message:
            break
    rep.close()
    context.term()


def bench_zmq() -> None:
    try:
        import zmq
    except ImportError:
        print("# pyzmq is not installed: skipping pyzmq_req_rep_ipc (make bench-python installs it)")
        return
    address = f"ipc://{tempfile.gettempdir()}/cellshm-bench-{os.getpid()}.ipc"
    process = mp.Process(target=_zmq_child, args=(address,))
    process.start()
    context = zmq.Context()
    req = context.socket(zmq.REQ)
    req.connect(address)

    def once() -> None:
        req.send(PAYLOAD)
        req.recv()

    measure("pyzmq_req_rep_ipc", once)
    req.send(b"")
    req.recv()
    req.close()
    context.term()
    process.join()


if __name__ == "__main__":
    print(f"# 64 B round trips from Python {sys.version.split()[0]}, {os.cpu_count()} cpus, {N} samples each, one run")
    bench_cellshm()
    bench_typed()
    bench_pipe()
    bench_socketpair()
    bench_zmq()
