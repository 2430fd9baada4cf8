"""The gRPC gateway (`cellshm-grpc serve`) with real gRPC clients: Python grpcio (sync
and grpc.aio), stubs made by grpc_tools from examples/proto/kv.proto, calling the kv
cells (Rust, Python, C++) through it: every method kind, a deadline, statuses with their
messages, cancelled watchers whose handlers end, and 8 MiB messages both ways."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import grpc
import pytest

from conftest import ROOT, _cargo_binary

EXAMPLES = ROOT / "examples" / "python"
PROTO = ROOT / "examples" / "proto"
CPP_KV_CELL = ROOT / "build" / "kv_cell_cpp"
BIG = 8 << 20


@pytest.fixture(scope="module")
def stubs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """kv_pb2 (cellshm-codegen, as the Python kv cell imports it) and kv_pb2_grpc
    (grpc_tools: what any gRPC client would use), importable."""
    out = tmp_path_factory.mktemp("grpc_stubs")
    codegen = _cargo_binary("cellshm-codegen")
    subprocess.run([str(codegen), "--lang", "python", "--out", str(out), "-I", str(PROTO), str(PROTO / "kv.proto")], check=True)
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I", str(PROTO), f"--grpc_python_out={out}", str(PROTO / "kv.proto")],
        check=True,
    )
    sys.path.insert(0, str(out))
    return out


def cell_argv(kind: str) -> List[str]:
    if kind == "rust":
        return [str(_cargo_binary("kv-cell"))]
    if kind == "cpp":
        if not CPP_KV_CELL.exists():
            pytest.skip("build/kv_cell_cpp was not built: protobuf's C++ library or protoc is missing (see make test-c)")
        return [str(CPP_KV_CELL)]
    return [sys.executable, str(EXAMPLES / "kv_cell.py")]


@contextlib.contextmanager
def serving(args: List[str], env: Optional[Dict[str, str]] = None) -> Iterator[str]:
    """`cellshm-grpc serve --listen 127.0.0.1:0 ARGS...` running; the address it says it
    listens on. It must exit 0 when told to stop."""
    argv = [str(_cargo_binary("cellshm-grpc")), "serve", "--listen", "127.0.0.1:0", *args]
    server = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert line.startswith("listening on "), f"cellshm-grpc said {line!r} (exit {server.poll()})"
        yield line.split()[-1]
    finally:
        server.terminate()
        assert server.wait(timeout=20) == 0


@pytest.fixture(params=["rust", "python", "cpp"])
def gateway(request: pytest.FixtureRequest, stubs: Path) -> Iterator[str]:
    """`cellshm-grpc serve` on a free loopback port with one kv cell; its address."""
    env: Dict[str, str] = {**os.environ, "PYTHONPATH": os.pathsep.join([str(stubs), os.environ.get("PYTHONPATH", "")])}
    with serving(["--", "kv", *cell_argv(request.param)], env) as address:
        yield address


def channel(address: str) -> grpc.Channel:
    options = [("grpc.max_receive_message_length", 4 * BIG), ("grpc.max_send_message_length", 4 * BIG)]
    return grpc.insecure_channel(address, options=options)


def test_every_kind_through_the_gateway_from_grpcio(gateway: str) -> None:
    import kv_pb2
    import kv_pb2_grpc

    with channel(gateway) as ch:
        store = kv_pb2_grpc.StoreStub(ch)
        first = store.Put(kv_pb2.PutRequest(key="a/1", value=b"one"), timeout=10)
        reply = store.Put(kv_pb2.PutRequest(key="a/1", value=b"uno"), timeout=10)
        assert reply.previous == b"one" and reply.sequence == first.sequence + 1
        assert store.Get(kv_pb2.GetRequest(key="a/1"), timeout=10).value == b"uno"
        store.Put(kv_pb2.PutRequest(key="b/x", value=b"another prefix"), timeout=10)
        store.Put(kv_pb2.PutRequest(key="a/2", value=b"two"), timeout=10)
        events = store.Watch(kv_pb2.WatchRequest(prefix="a/", max_events=2, since=first.sequence), timeout=10)
        assert [(e.key, e.value) for e in events] == [("a/1", b"uno"), ("a/2", b"two")]
        chunks = (kv_pb2.Chunk(key="blob", data=bytes([i % 256]) * (i * 37)) for i in range(100))
        summary = store.Upload(chunks, timeout=10)
        assert (summary.chunks, summary.bytes) == (100, sum(i * 37 for i in range(100)))
        answers = store.Chat((kv_pb2.ChatMessage(text=f"m{i}") for i in range(50)), timeout=10)
        assert [a.text for a in answers] == [f"you said: m{i}" for i in range(50)]
    # `cellshm list` shows the gateway beside its hub, with the calls it passed.
    import json

    cli = _cargo_binary("cellshm")
    hubs = json.loads(subprocess.run([str(cli), "list", "--json"], check=True, capture_output=True, text=True).stdout)
    listed = [e for h in hubs for e in h["endpoints"] if e["kind"] == "grpc-gateway" and e["address"] == gateway]
    assert len(listed) == 1 and listed[0]["calls"] >= 8 and listed[0]["tls"] is False, hubs
    text = subprocess.run([str(cli), "list"], check=True, capture_output=True, text=True).stdout
    assert f"grpc-gateway {gateway}  " in text, text


def test_statuses_deadlines_cancels_and_8_mib_messages(gateway: str) -> None:
    import kv_pb2
    import kv_pb2_grpc

    with channel(gateway) as ch:
        store = kv_pb2_grpc.StoreStub(ch)
        with pytest.raises(grpc.RpcError) as missing:
            store.Get(kv_pb2.GetRequest(key="absent"), timeout=10)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        assert "absent" in missing.value.details()
        with pytest.raises(grpc.RpcError) as empty:
            store.Put(kv_pb2.PutRequest(key="", value=b"v"), timeout=10)
        assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert empty.value.details() == "the key is empty"
        # A watcher with nothing to see ends at its deadline, as DEADLINE_EXCEEDED.
        with pytest.raises(grpc.RpcError) as late:
            list(store.Watch(kv_pb2.WatchRequest(prefix="never/"), timeout=0.3))
        assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        # Twice as many watchers as the cell has stream threads, each cancelled by its
        # client: if the cancel did not reach their handlers, the cell could not serve on.
        for _ in range(16):
            watcher = store.Watch(kv_pb2.WatchRequest(prefix="never/"))
            watcher.cancel()
        assert store.Put(kv_pb2.PutRequest(key="c", value=b"after"), timeout=10).sequence > 0
        # 8 MiB each way.
        big = bytes(range(256)) * (BIG // 256)
        store.Put(kv_pb2.PutRequest(key="big", value=big), timeout=30)
        assert store.Get(kv_pb2.GetRequest(key="big"), timeout=30).value == big


def test_grpc_aio_through_the_gateway(gateway: str) -> None:
    import kv_pb2
    import kv_pb2_grpc

    async def main() -> List[Any]:
        async with grpc.aio.insecure_channel(gateway) as ch:
            store = kv_pb2_grpc.StoreStub(ch)
            first = await store.Put(kv_pb2.PutRequest(key="x", value=b"1"), timeout=10)
            await store.Put(kv_pb2.PutRequest(key="x", value=b"2"), timeout=10)
            watched = [e.value async for e in store.Watch(kv_pb2.WatchRequest(prefix="x", max_events=1, since=first.sequence), timeout=10)]
            chat = store.Chat(timeout=10)
            await chat.write(kv_pb2.ChatMessage(text="hi"))
            answer = await chat.read()
            await chat.done_writing()
            return [watched, answer.text]

    assert asyncio.run(main()) == [[b"2"], "you said: hi"]


def grpcurl() -> str:
    """grpcurl as `make grpcurl` installs it (or from PATH); the test is skipped without."""
    import shutil

    installed = ROOT / ".tools" / "bin" / "grpcurl"
    found = str(installed) if installed.exists() else shutil.which("grpcurl")
    if found is None:
        pytest.skip("grpcurl is not installed: `make grpcurl` installs it with Go from the module proxy")
    return found


def test_grpcurl_lists_describes_and_calls_through_reflection_without_proto_files(gateway: str, tmp_path: Path) -> None:
    """Reflection (v1, and v1alpha which grpcurl falls back to) from the descriptors the
    cell's generated code registered: grpcurl is given no .proto file."""
    import json

    def run(*args: str, data: str = "") -> str:
        argv = [grpcurl(), "-plaintext", "-max-time", "20", *(["-d", data] if data else []), gateway, *args]
        done = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, timeout=60)
        assert done.returncode == 0, f"{argv}: {done.stderr}"
        return done.stdout

    listed = run("list").split()
    assert listed == [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
        "kv.Store",
    ]
    described = run("describe", "kv.Store")
    for method in ["Get", "Put", "Watch", "Upload", "Chat"]:
        assert f"rpc {method} (" in described
    assert "rpc Watch ( .kv.WatchRequest ) returns ( stream .kv.Event );" in described
    assert "bool found = 1;" in run("describe", "kv.GetReply")
    put = json.loads(run("kv.Store/Put", data='{"key": "grpcurl", "value": "aGVsbG8="}'))
    assert int(put["sequence"]) > 0
    assert json.loads(run("kv.Store/Get", data='{"key": "grpcurl"}')) == {"found": True, "value": "aGVsbG8="}
    assert json.loads(run("grpc.health.v1.Health/Check", data='{"service": "kv.Store"}')) == {"status": "SERVING"}


class RemoteStore:
    """A kv.Store served by grpcio in this process (with grpcio-reflection, v1alpha): the
    remote gRPC server a cellshm host adds as a peer. It notes what its handlers saw."""

    def __init__(self) -> None:
        self.values: Dict[str, bytes] = {}
        self.sequence = 0
        self.time_remaining: List[Optional[float]] = []
        self.watch_started = threading.Event()
        self.watch_ended = threading.Event()

    def servicer(self) -> Any:
        import kv_pb2
        import kv_pb2_grpc

        store = self

        class Servicer(kv_pb2_grpc.StoreServicer):  # type: ignore[misc]
            def Get(self, request: Any, context: Any) -> Any:
                store.time_remaining.append(context.time_remaining())
                if request.key not in store.values:
                    context.abort(grpc.StatusCode.NOT_FOUND, f"no key {request.key!r} upstream")
                return kv_pb2.GetReply(found=True, value=store.values[request.key])

            def Put(self, request: Any, context: Any) -> Any:
                store.sequence += 1
                store.values[request.key] = request.value
                return kv_pb2.PutReply(sequence=store.sequence)

            def Watch(self, request: Any, context: Any) -> Iterator[Any]:
                store.time_remaining.append(context.time_remaining())
                context.add_callback(store.watch_ended.set)
                store.watch_started.set()
                if request.prefix == "never/":
                    # Nothing to send: wait for the call's end (deadline or cancel) itself.
                    ended = threading.Event()
                    context.add_callback(ended.set)
                    ended.wait(60)
                    return
                for i in range(request.max_events or 10**9):
                    if not context.is_active():
                        return
                    yield kv_pb2.Event(key=f"{request.prefix}{i}", value=b"v", sequence=i + 1)

            def Upload(self, request_iterator: Any, context: Any) -> Any:
                chunks = list(request_iterator)
                return kv_pb2.UploadReply(chunks=len(chunks), bytes=sum(len(c.data) for c in chunks))

            def Chat(self, request_iterator: Any, context: Any) -> Iterator[Any]:
                for message in request_iterator:
                    yield kv_pb2.ChatMessage(text=f"upstream heard: {message.text}")

        return Servicer()


@pytest.fixture
def remote_store(stubs: Path) -> Iterator[tuple[str, RemoteStore]]:
    """A grpcio kv.Store server with reflection on a free port; its address."""
    from concurrent import futures

    from grpc_reflection.v1alpha import reflection

    import kv_pb2
    import kv_pb2_grpc

    store = RemoteStore()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    kv_pb2_grpc.add_StoreServicer_to_server(store.servicer(), server)
    names = (kv_pb2.DESCRIPTOR.services_by_name["Store"].full_name, reflection.SERVICE_NAME)
    reflection.enable_server_reflection(names, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", store
    finally:
        server.stop(0)


def test_a_python_cell_calls_a_remote_grpcio_server_through_its_host(remote_store: tuple[str, RemoteStore], stubs: Path) -> None:
    """grpcio client → gateway → a Python cell that relays kv.Store to its host → the host's
    remote peer (`--remote`, methods found by the remote's reflection) → a grpcio server:
    every kind, statuses, a deadline that reaches the remote, a cancel that ends the
    remote's handler."""
    import kv_pb2
    import kv_pb2_grpc

    address, store = remote_store
    env: Dict[str, str] = {**os.environ, "PYTHONPATH": os.pathsep.join([str(stubs), os.environ.get("PYTHONPATH", "")])}
    relay = ROOT / "bindings" / "python" / "tests" / "cells" / "kv_relay_cell.py"
    with serving(["--remote", f"store=http://{address}", "--", "relay", sys.executable, str(relay)], env) as served:
        with channel(served) as ch:
            store_client = kv_pb2_grpc.StoreStub(ch)
            assert store_client.Put(kv_pb2.PutRequest(key="k", value=b"far"), timeout=10).sequence == 1
            assert store_client.Get(kv_pb2.GetRequest(key="k"), timeout=10).value == b"far"
            with pytest.raises(grpc.RpcError) as missing:
                store_client.Get(kv_pb2.GetRequest(key="absent"), timeout=10)
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND
            assert missing.value.details() == "no key 'absent' upstream"
            events = list(store_client.Watch(kv_pb2.WatchRequest(prefix="p/", max_events=3), timeout=10))
            assert [e.key for e in events] == ["p/0", "p/1", "p/2"]
            chunks = (kv_pb2.Chunk(key="b", data=b"x" * i) for i in range(20))
            assert store_client.Upload(chunks, timeout=10).bytes == sum(range(20))
            answers = store_client.Chat((kv_pb2.ChatMessage(text=f"m{i}") for i in range(5)), timeout=10)
            assert [a.text for a in answers] == [f"upstream heard: m{i}" for i in range(5)]
            # The client's deadline travels gateway → cell → host → remote.
            with pytest.raises(grpc.RpcError) as late:
                list(store_client.Watch(kv_pb2.WatchRequest(prefix="never/"), timeout=0.5))
            assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            remaining = store.time_remaining[-1]
            # grpcio keeps a deadline in whole milliseconds: up to 1 ms over is rounding.
            assert remaining is not None and 0 < remaining <= 0.501, remaining
            assert store.watch_ended.wait(10), "the remote's handler ended at the deadline"
            # A cancel travels the same way.
            store.watch_started.clear()
            store.watch_ended.clear()
            watcher = store_client.Watch(kv_pb2.WatchRequest(prefix="never/"))
            assert store.watch_started.wait(10), "the watch reached the remote"
            watcher.cancel()
            assert store.watch_ended.wait(10), "the client's cancel reached the remote's handler"


def test_a_python_host_adds_a_remote_peer_that_its_cells_and_itself_call(remote_store: tuple[str, RemoteStore], stubs: Path) -> None:
    """`Hub.add_remote`: the grpcio server's methods (found by its reflection) become host
    methods a Python cell calls (through its kv.Store relay) and the host calls itself."""
    import cellshm
    import kv_cellshm
    import kv_pb2

    address, _ = remote_store
    relay = ROOT / "bindings" / "python" / "tests" / "cells" / "kv_relay_cell.py"
    env = {"PYTHONPATH": os.pathsep.join([str(stubs), os.environ.get("PYTHONPATH", "")])}
    with cellshm.Hub() as hub:
        remote = hub.add_remote("store", f"http://{address}")
        kinds = dict(remote.methods)
        assert sorted(kinds) == ["kv.Store.Chat", "kv.Store.Get", "kv.Store.Put", "kv.Store.Upload", "kv.Store.Watch"]
        assert kinds["kv.Store.Watch"] == cellshm.MethodKind.SERVER_STREAMING
        assert kinds["kv.Store.Chat"] == cellshm.MethodKind.BIDI
        peer = hub.spawn([sys.executable, str(relay)], name="relay", env=env)
        peer.wait_ready(10)
        store = kv_cellshm.StoreClient(peer, timeout=10)
        store.put(kv_pb2.PutRequest(key="a", value=b"1"))
        assert store.get(kv_pb2.GetRequest(key="a")).value == b"1"
        assert [e.key for e in store.watch(kv_pb2.WatchRequest(prefix="q/", max_events=2))] == ["q/0", "q/1"]
        with pytest.raises(cellshm.NotFound, match="upstream"):
            store.get(kv_pb2.GetRequest(key="nothing"))
        # The host calls it too.
        reply = remote.call("kv.Store.Get", kv_pb2.GetRequest(key="a").SerializeToString(), timeout=5)
        assert kv_pb2.GetReply.FromString(reply).value == b"1"
        assert remote.counters[0] >= 5 and remote.counters[1] >= 1
        with pytest.raises(cellshm.AlreadyExists):
            hub.add_remote("again", f"http://{address}")
        with pytest.raises(cellshm.Unavailable):
            hub.add_remote("nobody", "http://127.0.0.1:1", timeout=2)
        # The grpcio server serves no health service.
        with pytest.raises(cellshm.Unimplemented):
            remote.is_serving()


def test_a_supervisor_watches_a_remote_grpcio_server_by_its_health(stubs: Path) -> None:
    """`Supervisor.add_remote`: the remote is listed among the cells, "ready" while it
    answers (grpcio's health servicer, then none at all), "unavailable" with the reason
    while its health says NOT_SERVING or it is gone; not the supervisor's to stop."""
    from concurrent import futures

    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    import cellshm

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    events: List[tuple[str, str, Optional[str]]] = []
    try:
        with cellshm.Supervisor() as sup, sup.on_event(lambda e: events.append((e.name, e.status, e.reason))):
            servicer.set("", health_pb2.HealthCheckResponse.SERVING)
            methods = [("kv.Store.Get", cellshm.MethodKind.UNARY)]
            sup.add_remote("store", f"http://127.0.0.1:{port}", methods=methods, health_interval=0.02)
            sup.wait_for("store", "ready")
            assert sup.names() == ["store"]
            servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
            reason = sup.wait_for("store", "unavailable")
            assert reason is not None and "NOT_SERVING" in reason
            status = sup.status("store")
            assert status is not None and status[0] == "unavailable"
            servicer.set("", health_pb2.HealthCheckResponse.SERVING)
            sup.wait_for("store", "ready")
            with pytest.raises(cellshm.FailedPrecondition):
                sup.stop("store")
            with pytest.raises(cellshm.FailedPrecondition):
                sup.call("store", "kv.Store.Get")
            server.stop(0)
            sup.wait_for("store", "unavailable")
            sup.remove("store")
            assert [s for (_, s, _) in events] == ["starting", "ready", "unavailable", "ready", "unavailable", "removed"]
    finally:
        server.stop(0)

    # A server without a health service counts as serving while it answers.
    bare = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    port = bare.add_insecure_port("127.0.0.1:0")
    bare.start()
    try:
        with cellshm.Supervisor() as sup:
            sup.add_remote("bare", f"http://127.0.0.1:{port}", methods=[("x.Y.z", cellshm.MethodKind.UNARY)], health_interval=0.02)
            assert sup.wait_for("bare", "ready") is None
    finally:
        bare.stop(0)


def test_a_gateway_process_serves_another_processs_hub_through_its_hosts_relay(stubs: Path) -> None:
    """`cellshm-grpc serve --hub NAME` in a process of its own: this (Python) host enables
    attaching and its relay; grpcio reaches its kv cell through the gateway and the host,
    every kind, and the host's allow-list refuses a caller the gateway cannot name."""
    import cellshm
    import kv_pb2
    import kv_pb2_grpc

    env = {"PYTHONPATH": os.pathsep.join([str(stubs), os.environ.get("PYTHONPATH", "")])}
    with cellshm.Hub(name=f"relayed-{os.getpid()}") as hub:
        peer = hub.spawn([sys.executable, str(EXAMPLES / "kv_cell.py")], name="kv", env=env)
        peer.wait_ready(10)
        attach = hub.enable_attach()
        hub.enable_relay([os.geteuid()])
        try:
            with serving(["--hub", hub.name]) as served, channel(served) as ch:
                store = kv_pb2_grpc.StoreStub(ch)
                first = store.Put(kv_pb2.PutRequest(key="r/1", value=b"one"), timeout=10)
                assert store.Get(kv_pb2.GetRequest(key="r/1"), timeout=10).value == b"one"
                store.Put(kv_pb2.PutRequest(key="r/2", value=b"two"), timeout=10)
                events = store.Watch(kv_pb2.WatchRequest(prefix="r/", max_events=2, since=first.sequence - 1), timeout=10)
                assert [e.key for e in events] == ["r/1", "r/2"]
                chunks = (kv_pb2.Chunk(key="blob", data=b"y" * i) for i in range(30))
                assert store.Upload(chunks, timeout=10).bytes == sum(range(30))
                answers = store.Chat((kv_pb2.ChatMessage(text=f"m{i}") for i in range(5)), timeout=10)
                assert [a.text for a in answers] == [f"you said: m{i}" for i in range(5)]
                with pytest.raises(grpc.RpcError) as missing:
                    store.Get(kv_pb2.GetRequest(key="absent"), timeout=10)
                assert missing.value.code() == grpc.StatusCode.NOT_FOUND
                # grpc.health.v1 by hand: HealthCheckRequest{service: "kv.Store"} in, SERVING (1) out.
                check = ch.unary_unary("/grpc.health.v1.Health/Check")
                assert check(b"\x0a\x08kv.Store", timeout=10) == b"\x08\x01"
                # The host's rules hold for the callers the gateway names (here: none).
                hub.allow("kv.Store.Put", ["ops"])
                with pytest.raises(grpc.RpcError) as refused:
                    store.Put(kv_pb2.PutRequest(key="r/3", value=b"no"), timeout=10)
                assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        finally:
            del attach
