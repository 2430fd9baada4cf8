"""A cell serving ``kv.Store`` (examples/proto/kv.proto) with ``async def`` methods, under
``asyncio.run``: every method runs on the cell's event loop, a watcher awaits the next
change (an ``asyncio.Condition``) and streams wait for credit without a thread.

Generate the modules first, then put them on the path::

    cellshm-codegen --lang python --out gen -I examples/proto examples/proto/kv.proto
    PYTHONPATH=gen kv-host python examples/python/kv_async_cell.py
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Deque, Dict, Optional, Tuple

import cellshm
from cellshm import typed

import kv_cellshm
import kv_pb2

HISTORY = 1024


class AsyncMemoryStore(kv_cellshm.StoreServicer):
    """Only the loop touches the state: no lock; an event, set and replaced on each
    change, is what watchers await."""

    def __init__(self) -> None:
        self._changed = asyncio.Event()
        self._values: Dict[str, bytes] = {}
        self._history: Deque[kv_pb2.Event] = deque(maxlen=HISTORY)
        self._sequence = 0

    def _set(self, key: str, value: bytes) -> Tuple[Optional[bytes], int]:
        self._sequence += 1
        self._history.append(kv_pb2.Event(key=key, value=value, sequence=self._sequence))
        previous = self._values.get(key)
        self._values[key] = value
        self._changed.set()
        self._changed = asyncio.Event()
        return previous, self._sequence

    async def get(self, request: kv_pb2.GetRequest, context: cellshm.CallContext) -> kv_pb2.GetReply:
        if request.key not in self._values:
            raise cellshm.NotFound(f"no key {request.key!r}")
        return kv_pb2.GetReply(found=True, value=self._values[request.key])

    async def put(self, request: kv_pb2.PutRequest, context: cellshm.CallContext) -> kv_pb2.PutReply:
        if not request.key:
            raise cellshm.InvalidArgument("the key is empty")
        previous, sequence = self._set(request.key, request.value)
        reply = kv_pb2.PutReply(sequence=sequence)
        if previous is not None:
            reply.previous = previous
        return reply

    async def watch(self, request: kv_pb2.WatchRequest, stream: typed.ServerStream[None, kv_pb2.Event]) -> None:
        next_sequence, sent = request.since + 1, 0
        cancelled = asyncio.ensure_future(stream.wait_cancelled_async())
        try:
            while True:
                while self._sequence < next_sequence:
                    changed = asyncio.ensure_future(self._changed.wait())
                    await asyncio.wait([changed, cancelled], return_when=asyncio.FIRST_COMPLETED)
                    if cancelled.done():
                        changed.cancel()
                        raise cellshm.Cancelled("the watcher went away")
                due = [e for e in self._history if e.sequence >= next_sequence]
                next_sequence = self._sequence + 1
                for event in due:
                    if event.key.startswith(request.prefix):
                        await stream.send_async(event)
                        sent += 1
                        if request.max_events and sent == request.max_events:
                            return
        finally:
            cancelled.cancel()

    async def upload(self, stream: typed.ServerStream[kv_pb2.Chunk, None]) -> kv_pb2.UploadReply:
        reply = kv_pb2.UploadReply()
        async for chunk in stream:
            reply.chunks += 1
            reply.bytes += len(chunk.data)
            self._set(chunk.key, self._values.get(chunk.key, b"") + chunk.data)
        return reply

    async def chat(self, stream: typed.ServerStream[kv_pb2.ChatMessage, kv_pb2.ChatMessage]) -> None:
        async for message in stream:
            await stream.send_async(kv_pb2.ChatMessage(text=f"you said: {message.text}"))


async def main() -> None:
    cell = cellshm.Cell.from_args()
    kv_cellshm.serve_store(cell, AsyncMemoryStore())
    await cell.serve_async()


if __name__ == "__main__":
    asyncio.run(main())
