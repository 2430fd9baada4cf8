"""Typed services from examples/proto/kv.proto: the modules cellshm-codegen writes,
between Python and Rust hosts and Python and Rust cells (real processes), every method
kind, a deadline, a cancellation, error statuses, the contract check, and mypy --strict
over a user's code that uses them."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest

import cellshm
from conftest import ROOT, _cargo_binary, spawn_ready

EXAMPLES = ROOT / "examples" / "python"


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """kv_pb2.py, kv_pb2.pyi and kv_cellshm.py, written by the generator, importable."""
    out = tmp_path_factory.mktemp("generated")
    codegen = _cargo_binary("cellshm-codegen")
    proto = ROOT / "examples" / "proto"
    subprocess.run([str(codegen), "--lang", "python", "--out", str(out), "-I", str(proto), str(proto / "kv.proto")], check=True)
    assert sorted(p.name for p in out.iterdir()) == ["kv_cellshm.py", "kv_pb2.py", "kv_pb2.pyi"]
    sys.path.insert(0, str(out))
    return out


@pytest.fixture(scope="module")
def kv(generated: Path) -> Any:
    import kv_cellshm  # noqa: F401  (generated)
    import kv_pb2

    return kv_pb2


def cell_env(generated: Path) -> Dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join([str(generated), os.environ.get("PYTHONPATH", "")])}


#: The C++ cell, which CMake builds (make test-c) when protobuf's C++ library is found.
CPP_KV_CELL = ROOT / "build" / "kv_cell_cpp"


def cpp_kv_cell() -> List[str]:
    if not CPP_KV_CELL.exists():
        pytest.skip("build/kv_cell_cpp was not built: protobuf's C++ library or protoc is missing (see make test-c)")
    return [str(CPP_KV_CELL)]


@pytest.fixture(params=["rust", "rust-async", "python", "python-async", "cpp"])
def store_cell(request: pytest.FixtureRequest, generated: Path, hub: cellshm.Hub) -> cellshm.Peer:
    if request.param == "rust":
        return spawn_ready(hub, [str(_cargo_binary("kv-cell"))])
    if request.param == "rust-async":
        return spawn_ready(hub, [str(_cargo_binary("kv-async-cell"))])
    if request.param == "cpp":
        return spawn_ready(hub, cpp_kv_cell())
    if request.param == "python-async":
        return spawn_ready(hub, [sys.executable, str(EXAMPLES / "kv_async_cell.py")], env=cell_env(generated))
    return spawn_ready(hub, [sys.executable, str(EXAMPLES / "kv_cell.py")], env=cell_env(generated))


def client(peer: cellshm.Peer) -> Any:
    import kv_cellshm

    return kv_cellshm.StoreClient.connect(peer, timeout=10.0)


def test_every_method_kind_from_a_python_host(kv: Any, store_cell: cellshm.Peer) -> None:
    store = client(store_cell)
    first = store.put(kv.PutRequest(key="a/1", value=b"one"))
    reply = store.put(kv.PutRequest(key="a/1", value=b"uno"))
    assert reply.previous == b"one" and reply.HasField("previous")
    assert reply.sequence == first.sequence + 1
    assert store.get(kv.GetRequest(key="a/1")).value == b"uno"
    store.put(kv.PutRequest(key="b/x", value=b"another prefix"))
    store.put(kv.PutRequest(key="a/2", value=b"two"))
    events = [(e.key, e.value) for e in store.watch(kv.WatchRequest(prefix="a/", max_events=2, since=first.sequence))]
    assert events == [("a/1", b"uno"), ("a/2", b"two")]
    upload = store.upload()
    total = 0
    for i in range(100):
        data = bytes([i % 256]) * (i * 37)
        total += len(data)
        upload.send(kv.Chunk(key="blob", data=data))
    summary = upload.finish()
    assert (summary.chunks, summary.bytes) == (100, total)
    assert len(store.get(kv.GetRequest(key="blob")).value) == total
    chat = store.chat()
    for i in range(50):
        chat.send(kv.ChatMessage(text=f"m{i}"))
        answer = chat.recv()
        assert answer is not None and answer.text == f"you said: m{i}"
    chat.close_send()
    assert chat.recv() is None


def test_async_calls_and_async_iteration(kv: Any, store_cell: cellshm.Peer) -> None:
    store = client(store_cell)

    async def main() -> List[str]:
        first = await store.put_async(kv.PutRequest(key="x", value=b"1"))
        await store.put_async(kv.PutRequest(key="x", value=b"2"))
        return [e.value.decode() async for e in store.watch(kv.WatchRequest(prefix="x", max_events=1, since=first.sequence))]

    assert asyncio.run(main()) == ["2"]


def test_every_stream_kind_awaited_on_the_loop_without_threads(kv: Any, store_cell: cellshm.Peer) -> None:
    import threading

    store = client(store_cell)

    async def main() -> None:
        threads = threading.active_count()
        upload = store.upload()
        for i in range(200):
            await upload.send_async(kv.Chunk(key="async-blob", data=bytes([i % 256]) * 100))
        summary = await upload.finish_async()
        assert (summary.chunks, summary.bytes) == (200, 20_000)
        chat = store.chat()
        for i in range(40):
            await chat.send_async(kv.ChatMessage(text=f"m{i}"))
            answer = await chat.recv_async()
            assert answer is not None and answer.text == f"you said: m{i}"
        await chat.close_send_async()
        assert await chat.recv_async() is None
        watched = store.watch(kv.WatchRequest(prefix="async-", max_events=3, since=0))
        assert len([e async for e in watched]) == 3
        # No executor thread was started for any of it.
        assert threading.active_count() == threads

    asyncio.run(main())


def test_statuses_deadlines_and_cancellation(kv: Any, store_cell: cellshm.Peer) -> None:
    store = client(store_cell)
    with pytest.raises(cellshm.NotFound, match="no key 'absent'|no key \"absent\""):
        store.get(kv.GetRequest(key="absent"))
    with pytest.raises(cellshm.InvalidArgument, match="the key is empty"):
        store.put(kv.PutRequest(key="", value=b"v"))
    quiet = kv.WatchRequest(prefix="never/")
    with pytest.raises(cellshm.DeadlineExceeded):
        list(store.watch(quiet, timeout=0.2))
    # Twice as many watchers as the cell has stream threads, each cancelled: if their
    # handlers did not end, the last watcher would never run.
    for _ in range(16):
        with store.watch(quiet):
            pass
    since = store.put(kv.PutRequest(key="c/0", value=b"")).sequence
    watch = store.watch(kv.WatchRequest(prefix="c/", max_events=1, since=since), timeout=10.0)
    store.put(kv.PutRequest(key="c/1", value=b"seen"))
    assert [e.key for e in watch] == ["c/1"]


def test_a_generated_client_calls_a_supervised_cell_by_name(kv: Any, generated: Path) -> None:
    import kv_cellshm

    with cellshm.Supervisor(max_peers=2) as sup:
        sup.add("kv", [sys.executable, str(EXAMPLES / "kv_async_cell.py")], env={**cell_env(generated), "CELLSHM_QUIET": "1"})
        sup.wait_for("kv", "ready")
        store = kv_cellshm.StoreClient.connect(sup.cell("kv"), timeout=10.0)
        store.put(kv.PutRequest(key="s", value=b"v"))

        async def read() -> bytes:
            reply = await store.get_async(kv.GetRequest(key="s"))
            return bytes(reply.value)

        assert asyncio.run(read()) == b"v"


def test_the_contract_check_names_what_a_cell_lacks(kv: Any, hub: cellshm.Hub) -> None:
    import kv_cellshm

    partial = spawn_ready(hub, [str(_cargo_binary("kv-partial-cell"))])
    with pytest.raises(cellshm.FailedPrecondition, match="does not serve kv.Store.Watch"):
        kv_cellshm.StoreClient.connect(partial)
    wrong_kind = spawn_ready(hub, [str(_cargo_binary("kv-partial-cell")), "--watch-as-unary"])
    with pytest.raises(cellshm.FailedPrecondition, match="serves kv.Store.Watch as a unary method, not server streaming"):
        kv_cellshm.StoreClient.connect(wrong_kind)
    # Without the check, what it serves works and the rest is UNIMPLEMENTED.
    store = kv_cellshm.StoreClient(partial, timeout=5.0)
    with pytest.raises(cellshm.NotFound):
        store.get(kv.GetRequest(key="k"))
    with pytest.raises(cellshm.Unimplemented):
        list(store.watch(kv.WatchRequest()))


@pytest.mark.parametrize("cell", ["python", "cpp"])
def test_python_and_cpp_servicers_report_their_kinds(generated: Path, hub: cellshm.Hub, cell: str) -> None:
    argv = cpp_kv_cell() if cell == "cpp" else [sys.executable, str(EXAMPLES / "kv_cell.py")]
    peer = spawn_ready(hub, argv, env=cell_env(generated))
    kinds = {name: kind for name, _, kind in peer.served_methods()}
    assert kinds["kv.Store.Get"] == cellshm.MethodKind.UNARY
    assert kinds["kv.Store.Watch"] == cellshm.MethodKind.SERVER_STREAMING
    assert kinds["kv.Store.Upload"] == cellshm.MethodKind.CLIENT_STREAMING
    assert kinds["kv.Store.Chat"] == cellshm.MethodKind.BIDI


@pytest.mark.parametrize("cell", ["rust", "python", "cpp"])
def test_the_example_hosts_run(generated: Path, cell: str) -> None:
    env = {**os.environ, **cell_env(generated), "CELLSHM_QUIET": "1"}
    cells = {"rust": lambda: [str(_cargo_binary("kv-cell"))], "python": lambda: [sys.executable, str(EXAMPLES / "kv_cell.py")]}
    cell_argv = cpp_kv_cell() if cell == "cpp" else cells[cell]()
    hosts = [[sys.executable, str(EXAMPLES / "kv_host.py")], [str(_cargo_binary("kv-host"))]]
    for host in hosts:
        out = subprocess.run(host + cell_argv, env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
        for line in ["fruit/pear", "get nothing: NOT_FOUND", "upload: 2 chunks, 22 bytes", "chat: you said: bye"]:
            assert line in out.stdout, f"{host}: {line!r} missing in\n{out.stdout}"


def test_user_code_over_the_generated_modules_passes_mypy_strict(generated: Path) -> None:
    env = {**os.environ, "MYPYPATH": str(generated)}
    examples = ["kv_host.py", "kv_cell.py", "kv_async_cell.py"]
    files = [*(str(EXAMPLES / e) for e in examples), str(generated / "kv_cellshm.py")]
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", *files], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr



def test_as_a_plugin_of_grpc_tools_protoc(generated: Path, tmp_path: Path) -> None:
    """protoc (grpc_tools' build of it) writes the _pb2 modules, the plugin the cellshm
    ones: the same kv_cellshm.py as the generator's own, and it works over protoc's
    messages; lang=c gives the same header."""
    plugin = _cargo_binary("protoc-gen-cellshm")
    proto = ROOT / "examples" / "proto"
    protoc = [sys.executable, "-m", "grpc_tools.protoc", f"--plugin=protoc-gen-cellshm={plugin}", f"-I{proto}"]
    subprocess.run(
        protoc + [f"--cellshm_out=lang=python:{tmp_path}", f"--python_out={tmp_path}", f"--pyi_out={tmp_path}", "kv.proto"],
        check=True,
        cwd=proto,
    )
    assert (tmp_path / "kv_cellshm.py").read_text() == (generated / "kv_cellshm.py").read_text()
    assert "Generated by the protocol buffer compiler" in (tmp_path / "kv_pb2.py").read_text()
    c_dir = tmp_path / "c"
    c_dir.mkdir()
    subprocess.run(protoc + [f"--cellshm_out=lang=c:{c_dir}", "kv.proto"], check=True, cwd=proto)
    golden = ROOT / "codegen" / "tests" / "golden" / "kv" / "c" / "kv.cellshm.h"
    assert (c_dir / "kv.cellshm.h").read_text() == golden.read_text()
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "CELLSHM_QUIET": "1"}
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "kv_host.py"), str(_cargo_binary("kv-cell"))],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and "chat: you said: bye" in out.stdout, out.stdout + out.stderr


def test_the_installed_package_generates_without_rust_or_protoc(generated: Path, tmp_path: Path) -> None:
    """``python -m cellshm.codegen`` writes what the Rust binary writes, and the package's
    ``protoc-gen-cellshm`` script is the plugin protoc finds on PATH."""
    proto = ROOT / "examples" / "proto"
    out = subprocess.run(
        [sys.executable, "-m", "cellshm.codegen", "--lang", "python", "--out", str(tmp_path / "a"), "-I", str(proto), str(proto / "kv.proto")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    for name in ("kv_pb2.py", "kv_pb2.pyi", "kv_cellshm.py"):
        assert (tmp_path / "a" / name).read_text() == (generated / name).read_text(), name
    missing = subprocess.run(
        [sys.executable, "-m", "cellshm.codegen", "--lang", "python", "--out", str(tmp_path), "nope.proto"], capture_output=True, text=True
    )
    assert missing.returncode == 1 and "nope.proto: no such file" in missing.stderr
    scripts = Path(sys.executable).parent
    env = {**os.environ, "PATH": os.pathsep.join([str(scripts), os.environ.get("PATH", "")])}
    (tmp_path / "b").mkdir()
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{proto}", f"--cellshm_out=lang=python:{tmp_path / 'b'}", "kv.proto"],
        check=True,
        cwd=proto,
        env=env,
    )
    assert (tmp_path / "b" / "kv_cellshm.py").read_text() == (generated / "kv_cellshm.py").read_text()


def test_every_python_snippet_of_the_readme_passes_mypy_strict(generated: Path, tmp_path: Path) -> None:
    text = (ROOT / "README.md").read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```python\n")[1:]]
    assert len(blocks) >= 3, "the README's Python snippets went missing"
    files = []
    for i, block in enumerate(blocks):
        path = tmp_path / f"readme_snippet_{i}.py"
        path.write_text(block)
        files.append(str(path))
    env = {**os.environ, "MYPYPATH": str(generated)}
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", *files], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_a_hash_collision_is_refused_when_registering_and_by_the_contract_check() -> None:
    # "Svc.m79518" and "Svc.m67915" have the same 32-bit id (0x66c0a660).
    assert cellshm.method_id("Svc.m79518") == cellshm.method_id("Svc.m67915")
    with cellshm.Hub() as hub:
        hub.method("Svc.m67915")(lambda request: b"67915")
        with pytest.raises(cellshm.AlreadyExists, match="Svc.m79518.*Svc.m67915"):
            hub.method("Svc.m79518")(lambda request: b"79518")
        with pytest.raises(cellshm.AlreadyExists):
            hub.stream_method("Svc.m79518", kind=cellshm.MethodKind.BIDI)(lambda call: None)
        with pytest.raises(ValueError, match="streaming MethodKind"):
            hub.stream_method("Svc.other", kind=cellshm.MethodKind.UNARY)(lambda call: None)


def test_the_contract_check_refuses_another_name_under_one_of_its_ids(hub: cellshm.Hub) -> None:
    from cellshm import typed

    script = (
        "import cellshm\n"
        "cell = cellshm.Cell.from_args()\n"
        "cell.method('Svc.m79518')(lambda request: b'79518')\n"
        "cell.run()\n"
    )
    peer = spawn_ready(hub, [sys.executable, "-c", script])
    ours = [typed.MethodInfo("Svc.m67915", cellshm.method_id("Svc.m67915"), cellshm.MethodKind.UNARY)]
    with pytest.raises(cellshm.AlreadyExists, match="serves 'Svc.m79518' with the id 0x66c0a660 of 'Svc.m67915'"):
        typed.check_served(peer, "Svc", ours, 5.0)


def test_well_known_types_between_a_python_host_and_a_rust_cell(tmp_path: Path, hub: cellshm.Hub) -> None:
    """A service of Timestamp, Duration, Empty, Any, Struct and a wrapper
    (codegen/tests/protos/wkt/inventory.proto), generated for Python, calling the Rust
    cell generated from the same file (codegen/check's inventory-cell)."""
    proto = ROOT / "codegen" / "tests" / "protos"
    codegen = _cargo_binary("cellshm-codegen")
    subprocess.run([str(codegen), "--lang", "python", "--out", str(tmp_path), "-I", str(proto), str(proto / "wkt" / "inventory.proto")], check=True)
    sys.path.insert(0, str(tmp_path))
    try:
        from google.protobuf import any_pb2, duration_pb2, empty_pb2, struct_pb2, timestamp_pb2, wrappers_pb2
        from wkt import inventory_cellshm, inventory_pb2  # generated

        peer = spawn_ready(hub, [str(_cargo_binary("inventory-cell"))])
        inventory = inventory_cellshm.InventoryClient.connect(peer, timeout=10.0)
        attributes = struct_pb2.Struct()
        attributes.update({"colour": "red"})
        item = inventory_pb2.Item(
            id="apple",
            added=timestamp_pb2.Timestamp(seconds=1_700_000_000, nanos=5),
            shelf_life=duration_pb2.Duration(seconds=604_800),
            extra=any_pb2.Any(type_url="type.example/fruit", value=b"\x01\x02"),
            attributes=attributes,
            note=wrappers_pb2.StringValue(value="crisp"),
            seen=[timestamp_pb2.Timestamp(seconds=1, nanos=2)],
        )
        stored = inventory.put(item)
        assert isinstance(stored, timestamp_pb2.Timestamp) and stored.seconds > 1_700_000_000
        assert inventory.get(wrappers_pb2.StringValue(value="apple")) == item
        with pytest.raises(cellshm.NotFound):
            inventory.get(wrappers_pb2.StringValue(value="pear"))
        assert isinstance(inventory.uptime(empty_pb2.Empty()), duration_pb2.Duration)
        assert list(inventory.list(empty_pb2.Empty())) == [item]
    finally:
        sys.path.remove(str(tmp_path))


def test_a_topic_of_messages_is_published_and_read_typed(kv: Any) -> None:
    import cellshm.typed as typed

    with cellshm.Hub() as hub:
        publisher = typed.publish(hub, "events", kv.Event, sample_size=256)
        subscriber = typed.subscribe(hub, "events", kv.Event, cellshm.Policy.BLOCK)
        for i in range(3):
            publisher.publish(kv.Event(key=f"k{i}", value=b"v" * i))
        with pytest.raises(TypeError):
            publisher.publish(kv.GetRequest(key="wrong type"))  # type: ignore[arg-type]
        with pytest.raises(cellshm.InvalidArgument):
            publisher.publish(kv.Event(key="x" * 300))
        # A sample that is no Event fails that read alone.
        publisher.publisher.publish(b"\xff\xff\xff")
        publisher.publish(kv.Event(key="last"))
        seen = []
        for _ in range(3):
            sample = subscriber.recv(1.0)
            assert sample is not None
            seen.append((sample.seq, sample.missed, sample.message.key, sample.message.value))
        assert seen == [(1, 0, "k0", b""), (2, 0, "k1", b"v"), (3, 0, "k2", b"vv")]
        with pytest.raises(cellshm.Internal):
            subscriber.recv(1.0)
        last = subscriber.recv(1.0)
        assert last is not None and last.message.key == "last"
        publisher.close()
        assert list(subscriber) == [], "iteration ends with the topic"
