"""A cell serving ``kv.Store`` by calling its host's ``kv.Store`` for each request: run
under ``cellshm-grpc serve --remote store=URL``, whose host forwards those calls to a
remote gRPC server. Deadlines go on with each call; a cancelled stream cancels the
host's stream it relays."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Optional

import cellshm
from cellshm import typed

import kv_cellshm
import kv_pb2


def left(deadline_ns: int) -> Optional[float]:
    """Seconds left before a caller's deadline (None: it has none)."""
    return None if deadline_ns == 0 else max(0.001, (deadline_ns - time.monotonic_ns()) / 1e9)


def cancel_when(stream: "typed.ServerStream[Any, Any]", cancel: Callable[[], None]) -> threading.Event:
    """Calls ``cancel`` once ``stream`` is cancelled, until the returned event is set."""
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            if stream.wait_cancelled(0.05):
                cancel()
                return

    threading.Thread(target=watch, daemon=True).start()
    return done


class Relay(kv_cellshm.StoreServicer):
    def __init__(self, cell: cellshm.Cell) -> None:
        self.host = kv_cellshm.StoreClient(cell)

    def get(self, request: kv_pb2.GetRequest, context: cellshm.CallContext) -> kv_pb2.GetReply:
        return self.host.get(request, timeout=left(context.deadline_ns))

    def put(self, request: kv_pb2.PutRequest, context: cellshm.CallContext) -> kv_pb2.PutReply:
        return self.host.put(request, timeout=left(context.deadline_ns))

    def watch(self, request: kv_pb2.WatchRequest, stream: typed.ServerStream[None, kv_pb2.Event]) -> None:
        upstream = self.host.watch(request, timeout=left(stream.deadline_ns))
        done = cancel_when(stream, upstream.cancel)
        try:
            for event in upstream:
                stream.send(event)
        finally:
            done.set()

    def upload(self, stream: typed.ServerStream[kv_pb2.Chunk, None]) -> kv_pb2.UploadReply:
        upstream = self.host.upload(timeout=left(stream.deadline_ns))
        for chunk in stream:
            upstream.send(chunk)
        return upstream.finish()

    def chat(self, stream: typed.ServerStream[kv_pb2.ChatMessage, kv_pb2.ChatMessage]) -> None:
        upstream = self.host.chat(timeout=left(stream.deadline_ns))

        def forward() -> None:
            for message in stream:
                upstream.send(message)
            upstream.close_send()

        sender = threading.Thread(target=forward, daemon=True)
        sender.start()
        for answer in upstream:
            stream.send(answer)
        sender.join()


def main() -> None:
    cell = cellshm.Cell.from_args()
    kv_cellshm.serve_store(cell, Relay(cell))
    cell.serve()
    cell.run()


if __name__ == "__main__":
    main()
