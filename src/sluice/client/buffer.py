"""The consumer's own buffer: fetched records the application has not taken yet, in arrival
order, with a paused partition's records held aside rather than dropped (librdkafka purges a
paused partition's fetch queue; this buffer is why a pause costs no refetch here)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from itertools import repeat
from operator import attrgetter

from sluice.client.records import ConsumerRecord

TP = tuple[str, int]
size_of = attrgetter("size")
_popleft = deque.popleft


class FetchBuffer:
    """Records ready to serve (``ready``) and records of paused partitions (``held``). Every
    operation runs on the event loop."""

    def __init__(self) -> None:
        self.ready: deque[ConsumerRecord] = deque()
        self.held: dict[TP, deque[ConsumerRecord]] = {}
        self.paused: set[TP] = set()
        self.bytes = 0
        """Sizes (:attr:`ConsumerRecord.size`) of everything in the buffer."""

    def __len__(self) -> int:
        # A metrics scrape calls this from its own thread while the loop pauses and resumes
        # (held gains and loses partitions): iterating held there raised "dictionary changed
        # size during iteration" when the threads switched midway. list() copies the values
        # in one C call, with no bytecode (so no switch) inside it.
        return len(self.ready) + sum(map(len, list(self.held.values())))

    def add(self, records: list[ConsumerRecord], nbytes: int | None = None) -> None:
        """``nbytes``: the records' sizes' sum, when the caller knows it."""
        self.bytes += sum(map(size_of, records)) if nbytes is None else nbytes
        if not self.paused:
            self.ready.extend(records)
            return
        for r in records:
            tp = (r.topic, r.partition)
            if tp in self.paused:
                self.held.setdefault(tp, deque()).append(r)
            else:
                self.ready.append(r)

    def take(self, n: int) -> list[ConsumerRecord]:
        """Up to ``n`` ready records, in arrival order."""
        ready = self.ready
        if n >= len(ready):
            out = list(ready)
            ready.clear()
        else:  # popleft n times in C (no bytecode per record)
            out = list(map(_popleft, repeat(ready, n)))
        self.bytes -= sum(map(size_of, out))
        return out

    def take_one(self) -> ConsumerRecord:
        r = self.ready.popleft()
        self.bytes -= r.size
        return r

    def unread(self, records: Iterable[ConsumerRecord]) -> None:
        """Put records taken but not used back in front, each partition's in offset order."""
        back = sorted(records, key=lambda r: (r.topic, r.partition, r.offset))
        if not back:
            return
        self.bytes += sum(map(size_of, back))
        for r in reversed(back):
            tp = (r.topic, r.partition)
            if tp in self.paused:
                self.held.setdefault(tp, deque()).appendleft(r)
            else:
                self.ready.appendleft(r)

    def pause(self, tps: Iterable[TP]) -> None:
        new = set(tps) - self.paused
        if not new:
            return
        self.paused |= new
        keep: deque[ConsumerRecord] = deque()
        for r in self.ready:
            tp = (r.topic, r.partition)
            if tp in new:
                self.held.setdefault(tp, deque()).append(r)
            else:
                keep.append(r)
        self.ready = keep

    def resume(self, tps: Iterable[TP]) -> None:
        """Serve the held records first: no record of these partitions is in ``ready`` now, so
        each partition keeps its order."""
        for tp in tps:
            if tp not in self.paused:
                continue
            self.paused.discard(tp)
            held = self.held.pop(tp, None)
            if held:
                self.ready.extendleft(reversed(held))

    def drop(self, tps: set[TP]) -> list[ConsumerRecord]:
        """Remove (and return) every record of ``tps``: a seek or a revoked partition."""
        dropped: list[ConsumerRecord] = []
        for tp in tps:
            dropped.extend(self.held.pop(tp, ()))
        if any((r.topic, r.partition) in tps for r in self.ready):
            keep: deque[ConsumerRecord] = deque()
            for r in self.ready:
                (dropped if (r.topic, r.partition) in tps else keep).append(r)
            self.ready = keep
        self.bytes -= sum(map(size_of, dropped))
        return dropped
