"""A cell serving ``kv.Store`` (examples/proto/kv.proto) from memory, in Python.

Generate the modules first, then put them on the path::

    cellshm-codegen --lang python --out gen -I examples/proto examples/proto/kv.proto
    PYTHONPATH=gen kv-host python examples/python/kv_cell.py
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Deque, Dict, Optional

import cellshm
from cellshm import typed

import kv_cellshm
import kv_pb2

HISTORY = 1024


class MemoryStore(kv_cellshm.StoreServicer):
    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._values: Dict[str, bytes] = {}
        self._history: Deque[kv_pb2.Event] = deque(maxlen=HISTORY)
        self._sequence = 0

    def _set(self, key: str, value: bytes) -> "tuple[Optional[bytes], int]":
        with self._lock:
            self._sequence += 1
            self._history.append(kv_pb2.Event(key=key, value=value, sequence=self._sequence))
            previous = self._values.get(key)
            self._values[key] = value
            self._lock.notify_all()
            return previous, self._sequence

    def get(self, request: kv_pb2.GetRequest, context: cellshm.CallContext) -> kv_pb2.GetReply:
        with self._lock:
            if request.key not in self._values:
                raise cellshm.NotFound(f"no key {request.key!r}")
            return kv_pb2.GetReply(found=True, value=self._values[request.key])

    def put(self, request: kv_pb2.PutRequest, context: cellshm.CallContext) -> kv_pb2.PutReply:
        if not request.key:
            raise cellshm.InvalidArgument("the key is empty")
        previous, sequence = self._set(request.key, request.value)
        reply = kv_pb2.PutReply(sequence=sequence)
        if previous is not None:
            reply.previous = previous
        return reply

    def watch(self, request: kv_pb2.WatchRequest, stream: typed.ServerStream[None, kv_pb2.Event]) -> None:
        next_sequence, sent = request.since + 1, 0
        while True:
            with self._lock:
                # Woken by every change; the timeout only rechecks cancellation.
                while self._sequence < next_sequence:
                    if stream.cancelled:
                        raise cellshm.Cancelled("the watcher went away")
                    self._lock.wait(0.02)
                due = [e for e in self._history if e.sequence >= next_sequence]
                next_sequence = self._sequence + 1
            for event in due:
                if event.key.startswith(request.prefix):
                    stream.send(event)
                    sent += 1
                    if request.max_events and sent == request.max_events:
                        return

    def upload(self, stream: typed.ServerStream[kv_pb2.Chunk, None]) -> kv_pb2.UploadReply:
        reply = kv_pb2.UploadReply()
        for chunk in stream:
            with self._lock:
                value = self._values.get(chunk.key, b"")
            reply.chunks += 1
            reply.bytes += len(chunk.data)
            self._set(chunk.key, value + chunk.data)
        return reply

    def chat(self, stream: typed.ServerStream[kv_pb2.ChatMessage, kv_pb2.ChatMessage]) -> None:
        for message in stream:
            stream.send(kv_pb2.ChatMessage(text=f"you said: {message.text}"))


def main() -> None:
    cell = cellshm.Cell.from_args()
    kv_cellshm.serve_store(cell, MemoryStore())
    cell.run()


if __name__ == "__main__":
    main()
