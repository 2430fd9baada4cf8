"""Publish/subscribe: :class:`Publisher`, :class:`Loan`, :class:`Subscriber`,
:class:`Sample`, and :class:`Topics` (``publish``/``subscribe``, the same on a
:class:`Hub`, a :class:`Supervisor` and a :class:`Cell`)."""

from __future__ import annotations

import enum
from typing import Any, Iterator, List, Optional, Sequence, Union

from . import _native

from .errors import Unavailable
from ._common import Payload
from ._asyncio import FOREVER, _loop_calls


class Policy(enum.IntEnum):
    """What a subscriber's full queue does, chosen per subscription (the wire codes)."""

    #: The publisher waits (up to its publish timeout) until this subscriber reads.
    BLOCK = 0
    #: The oldest unread sample is overwritten; the next one read says how many were missed.
    DROP_OLDEST = 1
    #: The new sample is not queued for this subscriber; the next one read says so.
    DROP_NEWEST = 2
    #: A subscriber ``disconnect_after`` samples behind is detached: its next read raises
    #: :class:`ResourceExhausted`.
    DISCONNECT_AFTER = 3


class Sample:
    """One sample, read in place from the publisher's memory.

    ``data`` is a read-only ``memoryview`` of it (no copy), valid until :meth:`release`
    (or the end of a ``with`` block); ``bytes(sample)`` copies it. The publisher cannot
    reuse the slot while the sample is held, and a subscriber holds at most the topic's
    ``max_borrowed`` samples at once: release them promptly."""

    __slots__ = ("_native",)

    def __init__(self, native: Any) -> None:
        self._native = native

    @property
    def seq(self) -> int:
        """Its sequence number: 1 for the topic's first sample, one more for each after."""
        return int(self._native.seq)

    @property
    def missed(self) -> int:
        """Samples this subscriber missed just before this one (its queue was full)."""
        return int(self._native.missed)

    @property
    def data(self) -> memoryview:
        """The sample's bytes where they lie (read-only; the same view each time)."""
        view: memoryview = self._native.data
        return view

    def tobytes(self) -> bytes:
        """A copy of the sample's bytes."""
        return self._native.tobytes()  # type: ignore[no-any-return]

    def __bytes__(self) -> bytes:
        return self.tobytes()

    def __len__(self) -> int:
        return int(len(self._native))

    def release(self) -> None:
        """Lets the publisher use the slot again. ``BufferError`` while something made
        from ``data`` (a slice, a numpy array) is still alive."""
        self._native.release()

    @property
    def released(self) -> bool:
        return bool(self._native.released)

    def __enter__(self) -> "Sample":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<cellshm.Sample seq={self.seq} missed={self.missed} len={len(self)}>"


class Loan:
    """A slot of a topic loaned to write a sample in place: fill :attr:`buffer`, then
    :meth:`publish`. While a loan is out, other publishes of the topic wait. Leaving its
    ``with`` block without publishing gives the slot back."""

    __slots__ = ("_native",)

    def __init__(self, native: Any) -> None:
        self._native = native

    @property
    def buffer(self) -> memoryview:
        """A writable view of the slot (``capacity`` bytes), valid until published."""
        view: memoryview = self._native.buffer
        return view

    @property
    def capacity(self) -> int:
        return int(self._native.capacity)

    @property
    def seq(self) -> int:
        """The sequence number the sample gets when published."""
        return int(self._native.seq)

    def publish(self, length: int) -> int:
        """Publishes the slot's first ``length`` bytes; the sample's sequence number."""
        return int(self._native.publish(length))

    def discard(self) -> None:
        """Gives the slot back unpublished (nothing once published)."""
        self._native.discard()

    def __enter__(self) -> "Loan":
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()


class Publisher:
    """A topic's publishing end, from :meth:`Topics.publish`. Any thread may publish
    (publishes are serialised). :meth:`close` (or leaving its ``with`` block, or the
    object being collected) ends the topic: subscribers read what was queued, then see
    :class:`Unavailable`."""

    __slots__ = ("_native",)

    def __init__(self, native: Any) -> None:
        self._native = native

    @property
    def name(self) -> str:
        return str(self._native.name)

    @property
    def sample_size(self) -> int:
        return int(self._native.sample_size)

    @property
    def subscribers(self) -> int:
        """Subscribers attached now."""
        return int(self._native.subscribers)

    def wait_for_subscribers(self, count: int, timeout: float = 10.0) -> None:
        """Waits until exactly ``count`` subscribers are attached (before publishing to
        subscribers still joining); :class:`DeadlineExceeded` after ``timeout``."""
        self._native.wait_for_subscribers(count, timeout)

    def publish(self, data: Payload, timeout: float = 1.0) -> int:
        """Publishes a copy of ``data``; its sequence number. ``timeout`` (seconds,
        ``math.inf`` for none) bounds the wait for a Block subscriber's full queue
        (then :class:`DeadlineExceeded`, and nobody got the sample)."""
        return int(self._native.publish(data, timeout))

    def loan(self, timeout: float = 1.0) -> Loan:
        """A slot to write a sample in place (see :class:`Loan`)."""
        return Loan(self._native.loan(timeout))

    def close(self) -> None:
        self._native.close()

    @property
    def closed(self) -> bool:
        return bool(self._native.closed)

    def __enter__(self) -> "Publisher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<cellshm.Publisher {self._native.name if not self.closed else '(closed)'}>"


class Subscriber:
    """A topic's subscribing end, from :meth:`Topics.subscribe`. Iterate it (``for
    sample in subscriber`` or ``async for``) to read samples in order; iteration ends
    when the topic is closed, and raises any other end (:class:`PeerDead`: its publisher
    died; :class:`ResourceExhausted`: detached for lagging). Waits release the GIL.
    Closing it (or leaving its ``with`` block) unsubscribes."""

    __slots__ = ("_native",)

    def __init__(self, native: Any) -> None:
        self._native = native

    @property
    def name(self) -> str:
        return str(self._native.name)

    def recv(self, timeout: Optional[float] = None) -> Optional[Sample]:
        """The next sample, waiting up to ``timeout`` seconds (None: no limit); None if
        none came. Raises the subscription's end (:class:`Unavailable` once the topic
        closed and what was queued has been read)."""
        native = self._native.recv(timeout)
        return None if native is None else Sample(native)

    def latest(self) -> Optional[Sample]:
        """The newest sample queued, without waiting (the older ones it skips count in
        its ``missed``); None when nothing came since the last read. What a reader of a
        last-value topic (:meth:`Topics.publish_last_value`) calls whenever it wants
        the current value."""
        native = self._native.latest()
        return None if native is None else Sample(native)

    def try_recv(self) -> Optional[Sample]:
        """The next sample if one is queued, without waiting."""
        return self.recv(0.0)

    async def recv_async(self) -> Sample:
        """:meth:`recv` on the running asyncio loop, no thread waiting."""
        native = self._native
        sample = await _loop_calls().poll(native.poll_recv)
        return Sample(sample)

    @property
    def dropped(self) -> int:
        """Samples the publisher could not queue for this subscriber so far."""
        return int(self._native.dropped)

    def close(self) -> None:
        self._native.close()

    @property
    def closed(self) -> bool:
        return bool(self._native.closed)

    def __iter__(self) -> Iterator[Sample]:
        return self

    def __next__(self) -> Sample:
        try:
            sample = self.recv(FOREVER)
        except Unavailable:
            raise StopIteration from None
        assert sample is not None
        return sample

    def __aiter__(self) -> "Subscriber":
        return self

    async def __anext__(self) -> Sample:
        try:
            return await self.recv_async()
        except Unavailable:
            raise StopAsyncIteration from None

    def __enter__(self) -> "Subscriber":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<cellshm.Subscriber {self._native.name if not self.closed else '(closed)'}>"


def wait_any(subscribers: Sequence[Subscriber], timeout: Optional[float] = None) -> List[int]:
    """The indices of the ``subscribers`` that are ready (a read would find a sample or
    the subscription's end), waiting up to ``timeout`` seconds (None: no limit) for one
    to be, in one wait on all of them with the GIL released; empty if none was. Take the
    ready ones' samples with :meth:`Subscriber.try_recv`."""
    return list(_native.wait_any([s._native for s in subscribers], timeout))


_WAITS = ("adaptive", "spin", "block")


class Topics:
    """``publish`` and ``subscribe``, the same on a :class:`Hub`, a :class:`Supervisor`
    and a :class:`Cell` (the host or any cell may publish, and subscribe to any topic
    the host's rule for ``"topic:NAME"`` lets it)."""

    def _owner(self) -> Any:
        """The native hub, supervisor or cell (each class keeps its own typed `_native`)."""
        return getattr(self, "_native")

    def publish(
        self,
        topic: str,
        *,
        sample_size: int = 4096,
        depth: int = 16,
        history: int = 0,
        max_subscribers: int = 8,
        max_borrowed: int = 2,
    ) -> Publisher:
        """Creates ``topic``, published from here: samples up to ``sample_size`` bytes
        (up to 40 travel in the queue entries themselves), ``depth`` (a power of two)
        per subscriber queue, the last ``history`` kept for late joiners, at most
        ``max_subscribers``, each holding at most ``max_borrowed`` samples.
        :class:`AlreadyExists` while another topic of that name lives."""
        options = (sample_size, depth, history, max_subscribers, max_borrowed)
        return Publisher(self._owner().publish(topic, options))

    def publish_last_value(self, topic: str, *, sample_size: int = 4096, max_subscribers: int = 8) -> Publisher:
        """A "last value" topic (a blackboard): each subscriber's queue holds only the
        newest sample and a new subscriber gets the current one at once; readers call
        :meth:`Subscriber.latest` whenever they want it (subscribe with the default
        :attr:`Policy.DROP_OLDEST`: the publisher never waits)."""
        return self.publish(topic, sample_size=sample_size, depth=1, history=1, max_subscribers=max_subscribers)

    def publish_events(self, topic: str, *, max_subscribers: int = 8) -> Publisher:
        """An event topic: samples of at most 8 bytes (or none) that cost no slot,
        coalesced for a subscriber that has not read yet (it gets the newest; its
        ``missed`` says how many it stands for)."""
        return self.publish(topic, sample_size=8, depth=1, max_subscribers=max_subscribers)

    def subscribe(
        self,
        topic: str,
        policy: Union[Policy, int] = Policy.DROP_OLDEST,
        *,
        disconnect_after: int = 0,
        wait: str = "adaptive",
        spin_us: int = 50,
    ) -> Subscriber:
        """Subscribes to ``topic`` with ``policy`` (``disconnect_after`` samples behind is
        too far with :attr:`Policy.DISCONNECT_AFTER`); ``wait`` is how :meth:`Subscriber.recv`
        waits ("adaptive": polls ``spin_us`` then sleeps; "spin"; "block").
        :class:`NotFound` when no such topic lives."""
        policy = Policy(policy)
        if (policy == Policy.DISCONNECT_AFTER) != (disconnect_after > 0):
            raise ValueError("disconnect_after (> 0) goes with Policy.DISCONNECT_AFTER, and only with it")
        if wait not in _WAITS:
            raise ValueError(f'wait must be "spin", "adaptive" or "block", not {wait!r}')
        return Subscriber(self._owner().subscribe(topic, int(policy), disconnect_after, wait, spin_us))
