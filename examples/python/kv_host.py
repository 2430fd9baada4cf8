"""A Python host calling every method of ``kv.Store`` on a cell (Rust, Python or C++).

    cellshm-codegen --lang python --out gen -I examples/proto examples/proto/kv.proto
    PYTHONPATH=gen python examples/python/kv_host.py target/release/kv-cell
"""

from __future__ import annotations

import asyncio
import sys

import cellshm

import kv_cellshm
import kv_pb2


def run(argv: "list[str]") -> None:
    with cellshm.Hub() as hub:
        peer = hub.spawn(argv)
        peer.wait_ready(10)
        # Checks that the cell serves every method of kv.Store as its kind.
        store = kv_cellshm.StoreClient.connect(peer, timeout=5.0)
        first = store.put(kv_pb2.PutRequest(key="fruit/apple", value=b"red"))
        with store.watch(kv_pb2.WatchRequest(prefix="fruit/", max_events=2, since=first.sequence)) as watch:
            previous = store.put(kv_pb2.PutRequest(key="fruit/apple", value=b"green")).previous
            print(f"put fruit/apple twice; it was {previous!r}")
            store.put(kv_pb2.PutRequest(key="fruit/pear", value=b"yellow"))
            for event in watch:
                print(f"watch: #{event.sequence} {event.key} = {event.value!r}")
        got = asyncio.run(store.get_async(kv_pb2.GetRequest(key="fruit/apple")))
        print(f"get fruit/apple: {got.value!r}")
        try:
            store.get(kv_pb2.GetRequest(key="nothing"))
        except cellshm.NotFound as e:
            print(f"get nothing: {e}")
        upload = store.upload()
        for part in (b"log line 1\n", b"log line 2\n"):
            upload.send(kv_pb2.Chunk(key="log", data=part))
        reply = upload.finish()
        print(f"upload: {reply.chunks} chunks, {reply.bytes} bytes")
        chat = store.chat()
        for text in ("hello", "bye"):
            chat.send(kv_pb2.ChatMessage(text=text))
            answer = chat.recv()
            if answer is not None:
                print(f"chat: {answer.text}")
        chat.close_send()
        for _ in chat:
            pass
        peer.shutdown()


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: kv_host.py CELL [ARGS...]")
    run(sys.argv[1:])
