"""Controlling a consumer while ``run`` holds records it has taken from the buffer: what it had
not started when it returned is neither committed nor behind the position; a pause and a seek
take effect on the records it holds, not only on the buffer; a dead-letter topic the consumer
reads itself is refused rather than feeding the consumer its own dead letters."""

from __future__ import annotations

import asyncio
import contextlib
import re
from pathlib import Path
from typing import Any

import confluent_kafka as ck
import pytest
from prometheus_client import CollectorRegistry

from sluice.client import ConfigurationError, Consumer, ConsumerRecord, ProcessingError
from sluice.testing import EmbeddedBroker
from tests.client.conftest import DEADLINE, Target, read_topic
from tests.client.test_consumer import committed, consumer, produce, run


@pytest.mark.parametrize("ordering", ["none", "partition"])
def test_records_run_had_not_started_are_neither_committed_nor_passed(
    target: Target, ordering: str
) -> None:
    topic, _ = target.topic("c-unstarted", 1)
    produce(target, topic, [str(i).encode() for i in range(200)], partition=0)
    group = f"g-{topic}"
    processed: list[int] = []

    async def main() -> tuple[int | None, dict[tuple[str, int], int]]:
        async with consumer(target, topic, group) as c:

            async def handler(r: ConsumerRecord) -> None:
                processed.append(r.offset)
                if r.offset == 5:
                    c.stop()  # records are waiting in lanes now
                await asyncio.sleep(0.001)

            await c.run(handler, concurrency=4, ordering=ordering)
            position = c.position(topic, 0)
            return position, await c.commit()

    position, explicit = run(main())
    first_unprocessed = min(set(range(200)) - set(processed))
    assert first_unprocessed < 200, "run processed everything: nothing was left to give back"
    assert position == first_unprocessed
    assert explicit.get((topic, 0), first_unprocessed) <= first_unprocessed
    assert committed(target, group, topic, 1)[0] == first_unprocessed


@pytest.mark.parametrize("concurrency", [1, 4])
def test_no_record_of_a_partition_paused_during_run_starts_until_resumed(
    target: Target, concurrency: int
) -> None:
    topic, n = target.topic("c-pause-run", 2)
    if n < 2:
        pytest.skip("needs two partitions")
    per = 300
    for p in range(2):
        produce(target, topic, [f"{p}-{i}".encode() for i in range(per)], partition=p)
    processed: list[tuple[int, int]] = []
    while_paused: list[tuple[int, int]] = []
    state: dict[str, int | None] = {"paused": None, "resumed": None}

    async def main() -> None:
        async with consumer(target, topic) as c:

            async def handler(r: ConsumerRecord) -> None:
                if state["paused"] is None and r.offset == 50:
                    # Inside a batch, with that partition's next records taken (and, at
                    # concurrency 4, queued in its lane): pause it.
                    state["paused"] = r.partition
                    c.pause((topic, r.partition))
                elif r.partition == state["paused"] and state["resumed"] is None:
                    while_paused.append((r.partition, r.offset))
                await asyncio.sleep(0)
                processed.append((r.partition, r.offset))
                other = 1 - (state["paused"] or 0)
                done_other = sum(1 for p, _ in processed if p == other)
                if done_other == per and state["resumed"] is None:
                    state["resumed"] = 1
                    c.resume((topic, state["paused"] or 0))
                if len(processed) == 2 * per:
                    c.stop()

            await c.run(handler, concurrency=concurrency, ordering="partition")

    run(main())
    assert not while_paused, f"{len(while_paused)} records of the paused partition started"
    assert state["resumed"] == 1
    for p in range(2):
        assert [o for q, o in processed if q == p] == list(range(per))  # in order, once each


@pytest.mark.parametrize("concurrency", [1, 4])
def test_a_seek_during_run_applies_to_the_records_it_holds(
    target: Target, concurrency: int
) -> None:
    topic, _ = target.topic("c-seek-run", 1)
    total, to = 3000, 2500
    produce(target, topic, [str(i).encode() for i in range(total)], partition=0)
    processed: list[int] = []
    after_seek: list[int] = []
    sought = asyncio.Event()

    async def main() -> None:
        async with consumer(target, topic) as c:

            async def handler(r: ConsumerRecord) -> None:
                if sought.is_set():
                    after_seek.append(r.offset)
                processed.append(r.offset)
                if r.offset == 10 and not sought.is_set():
                    await c.seek(topic, 0, to)
                    sought.set()
                if r.offset == total - 1:
                    c.stop()

            await c.run(handler, concurrency=concurrency, ordering="partition")

    run(main())
    assert after_seek == list(range(to, total))  # nothing taken before the seek, then in order
    assert processed[: processed.index(10) + 1] == list(range(11))


def test_a_dead_letter_topic_the_consumer_reads_itself_is_refused(target: Target) -> None:
    topic, _ = target.topic("c-dlq-self", 1)
    with pytest.raises(ConfigurationError, match="topic"):
        Consumer(target.bootstrap, group_id="g", topics=[topic], dead_letter_topic="{topic}",
                 metrics_registry=CollectorRegistry())
    with pytest.raises(ConfigurationError, match="reads itself"):
        Consumer(target.bootstrap, group_id="g", topics=[topic, "audit"],
                 dead_letter_topic="audit", metrics_registry=CollectorRegistry())


def test_a_pattern_matching_its_own_dead_letters_stops_run(target: Target) -> None:
    topic, _ = target.topic("c-dlq-pattern", 1)
    produce(target, topic, [b"bad"], partition=0)
    dlq = f"{topic}.dlq"

    async def main() -> None:
        async def handler(r: ConsumerRecord) -> None:
            raise ValueError("cannot process")

        async with Consumer(
            target.bootstrap, group_id=f"g-{topic}", pattern=f"^{topic}.*",
            dead_letter_topic="{topic}.dlq", max_retries=0,
            metrics_registry=CollectorRegistry(),
            **{"auto.offset.reset": "earliest", **target.client},
        ) as c:
            with pytest.raises(ProcessingError) as failed:
                await c.run(handler)
            assert isinstance(failed.value.dead_letter_error, ConfigurationError)
            assert "reads itself" in str(failed.value.dead_letter_error)

    run(main())
    admin = ck.admin.AdminClient({"bootstrap.servers": target.bootstrap, **target.client})
    assert dlq not in admin.list_topics(timeout=10).topics  # nothing was written


def test_a_pattern_without_a_caret_is_a_regex_and_a_bad_one_is_refused(target: Target) -> None:
    """librdkafka reads a subscription without a leading ``^`` as a literal topic name: a
    ``pattern="orders-.*"`` subscribed to no topic at all (librdkafka logged "Subscribed
    topic not available"), while the toolkit's own dead-letter check read it as a regex. The
    ``^`` is now added. An empty pattern, one that is not a str (``5`` subscribed to topic
    "5") or not a regex was a KafkaException at start, or silently nothing: now a
    ConfigurationError at construction."""
    first, _ = target.topic("c-pat-a", 1)
    suffix = first.removeprefix("c-pat-a")  # "-<random hex>"
    second = "c-pat-b" + suffix
    target.make(second)
    produce(target, first, [b"a"], partition=0)
    produce(target, second, [b"b"], partition=0)

    async def main() -> list[bytes]:
        got: list[ConsumerRecord] = []
        async with Consumer(
            target.bootstrap, group_id=f"g-{first}", pattern="c-pat-[ab]" + re.escape(suffix),
            metrics_registry=None, **{"auto.offset.reset": "earliest", **target.client},
        ) as c:
            while len(got) < 2:
                got += await c.getmany(10, 1.0)
        return sorted(r.value for r in got)

    assert run(main()) == [b"a", b"b"]
    for bad in ("", "^(", 5, ["^t"]):
        with pytest.raises(ConfigurationError, match="pattern"):
            Consumer(target.bootstrap, group_id="g", pattern=bad, metrics_registry=None)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="pattern"):
        Consumer(target.bootstrap, group_id="g", topics=["^["], metrics_registry=None)


@pytest.mark.parametrize("concurrency", [1, 4])
def test_stop_cuts_a_retry_backoff_short_and_leaves_the_record_unprocessed(
    target: Target, concurrency: int
) -> None:
    """``max_retries=5`` with ``retry_backoff=2`` would wait at least 17 s (half of each
    jittered backoff: 1 + 2 + 4 + 5 + 5) before giving up; ``stop()`` during the first backoff
    returns at once, and the failing record is neither committed nor behind the position."""
    topic, _ = target.topic("c-stop-backoff", 1)
    produce(target, topic, [str(i).encode() for i in range(10)], partition=0)
    group = f"g-{topic}"
    calls: list[int] = []

    async def main() -> tuple[float, int | None]:
        async with consumer(target, topic, group, max_retries=5, retry_backoff=2.0,
                            retry_backoff_max=5.0) as c:

            async def handler(r: ConsumerRecord) -> None:
                calls.append(r.offset)
                if r.offset == 3:
                    asyncio.get_running_loop().call_soon(c.stop)  # during the first backoff
                    raise ValueError("fails until retried enough")

            started = asyncio.get_running_loop().time()
            await c.run(handler, concurrency=concurrency, ordering="partition")
            elapsed = asyncio.get_running_loop().time() - started
            return elapsed, c.position(topic, 0)

    elapsed, position = run(main())
    assert calls.count(3) == 1  # no retry ran: the stop came in its backoff
    assert elapsed < 10, f"run took {elapsed:.1f} s to stop"
    assert position == 3
    assert committed(target, group, topic, 1)[0] == 3


def test_a_failure_with_shedding_on_gives_the_rest_of_the_batch_back(target: Target) -> None:
    """Concurrency 1 with an overload policy takes the per-record path: a handler failure that
    stops ``run`` leaves the failed record and everything after it unprocessed and served next."""
    from sluice.client import Shed

    topic, _ = target.topic("c-shed-fail", 1)
    produce(target, topic, [str(i).encode() for i in range(100)], partition=0)

    async def main() -> tuple[int | None, list[int]]:
        async with consumer(target, topic, max_retries=0, shed=Shed(max_age=3600)) as c:

            async def handler(r: ConsumerRecord) -> None:
                if r.offset == 10:
                    raise ValueError("fails")

            with pytest.raises(ProcessingError):
                await c.run(handler)
            position = c.position(topic, 0)
            rest: list[int] = []
            while len(rest) < 90:
                got = await c.getmany(500, 5)
                assert got, f"only {len(rest)} of the 90 records left came back"
                rest += [r.offset for r in got]
            return position, rest

    position, rest = run(main())
    assert position == 10
    assert rest == list(range(10, 100))


@pytest.mark.parametrize(("concurrency", "ordering", "shedding", "end"), [
    (1, "partition", False, "cancel"), (4, "none", False, "cancel"), (4, "key", False, "cancel"),
    (1, "partition", True, "cancel"), (4, "none", True, "cancel"),
    (1, "partition", False, "stop"), (4, "none", False, "stop"), (1, "partition", False, "fail"),
])
def test_records_held_for_a_pause_survive_the_end_of_run_in_order(
    target: Target, concurrency: int, ordering: str, shedding: bool, end: str
) -> None:
    """A partition paused in the middle of a batch: its records of that batch wait to go back
    to the buffer. When ``run`` ends right then (cancelled, stopped, a handler failure), they
    still go back, in offset order with the batch's unstarted rest, and resume serves all.
    The buffer holds both partitions' records interleaved, chunk by chunk: each chunk is
    produced once the consumer holds the one before."""
    from sluice.client import Shed

    topic, n = target.topic("c-held-end", 2)
    if n < 2:
        pytest.skip("needs two partitions")
    produce(target, topic, [b"warm"], partition=0)
    options: dict[str, Any] = {"shed": Shed(max_age=3600)} if shedding else {}
    options["max_retries"] = 0

    async def main() -> tuple[set[tuple[int, int]], list[tuple[int, int]]]:
        processed: set[tuple[int, int]] = set()
        async with consumer(target, topic, **options) as c:
            gate = asyncio.Event()
            paused: list[bool] = []

            async def handler(r: ConsumerRecord) -> None:
                await gate.wait()
                if r.partition == 0 and r.offset >= 1 and not paused:
                    paused.append(True)
                    c.pause((topic, 0))
                elif r.partition == 1 and paused:
                    if end == "stop":
                        c.stop()
                    elif end == "cancel":
                        task.cancel()
                        await asyncio.sleep(0)
                    else:
                        raise RuntimeError("fails: run stops")
                processed.add((r.partition, r.offset))
                await asyncio.sleep(0)

            task = asyncio.create_task(c.run(handler, concurrency=concurrency, ordering=ordering))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            total = 1
            for chunk in range(10):
                for p in range(2):
                    values = [b"%d-%d-%d" % (p, chunk, i) for i in range(10)]
                    await asyncio.to_thread(produce, target, topic, values, None, p)
                    total += 10
                    while (m := c.metrics())["consumed"] + m["buffered_records"] < total:
                        assert loop.time() < deadline, "the records never came"
                        await asyncio.sleep(0.01)  # polling the fetch
            gate.set()
            with contextlib.suppress(asyncio.CancelledError, ProcessingError):
                await task
            assert paused, "the pause never happened"
            c.resume((topic, 0))
            rest: list[tuple[int, int]] = []
            while True:
                got = await c.getmany(1000, 1)
                if not got:
                    break
                rest += [(r.partition, r.offset) for r in got]
        return processed, rest

    processed, rest = run(main())
    for p in range(2):
        mine = [o for q, o in rest if q == p]
        assert mine == sorted(mine), f"partition {p} came back out of order: {mine[:60]}"
    everything = {(0, o) for o in range(101)} | {(1, o) for o in range(100)}
    missing = sorted(everything - processed - set(rest))
    assert not missing, f"{len(missing)} records lost: {missing[:20]}"


def test_a_pause_during_a_rebalance_drain_does_not_stall_the_partition(target: Target) -> None:
    """A handler pauses its partition while a rebalance waits for it (the drain): the revocation
    forgets the pause, so librdkafka must not keep it either; records produced to the partition
    after it is assigned back reach the consumer."""
    topic, n = target.topic("c-pause-drain", 2)
    if n < 2:
        pytest.skip("needs two partitions")
    for p in range(2):
        produce(target, topic, [f"{p}-{i}".encode() for i in range(20)], partition=p)
    group = f"g-{topic}"
    later: list[int] = []

    async def main() -> None:
        def make() -> Consumer:
            return consumer(target, topic, group, **{"heartbeat.interval.ms": 100,
                                                      "partition.assignment.strategy": "range"})

        a, b = make(), make()
        joined = asyncio.Event()
        async with a:

            async def handler(r: ConsumerRecord) -> None:
                if r.partition == 0 and r.offset == 3 and not joined.is_set():
                    joined.set()
                    while a.metrics()["revocations"] == 0:
                        await asyncio.sleep(0.01)  # polling the revocation's start
                    a.pause((topic, 0))  # during the drain, which waits for this handler
                if r.value is not None and r.value.startswith(b"later"):
                    later.append(r.offset)
                    if len(later) == 10:
                        a.stop()

            task_a = asyncio.create_task(a.run(handler))
            await joined.wait()
            async with b:
                b_task = asyncio.create_task(b.run(lambda r: asyncio.sleep(0)))
                # The eager (range) rebalance revokes both partitions, drains, then assigns one:
                # the revocation counter moves at the drain's start, while both are still held.
                while a.metrics()["revocations"] == 0 or len(a.assignment()) != 1:
                    await asyncio.sleep(0.05)  # polling the rebalance's end
                assert a.paused() == []
                mine = [p for t, p in a.assignment()]
                produce(target, topic, [b"later-%d" % i for i in range(10)], partition=mine[0])
                await asyncio.wait_for(task_a, 30)
                b.stop()
                await b_task

    run(main())
    assert len(later) == 10


def test_a_regex_topic_matching_its_own_dead_letters_stops_run(target: Target) -> None:
    """``topics=["^name.*"]`` is a regex to librdkafka, as ``pattern`` is: the same guard."""
    topic, _ = target.topic("c-dlq-regex", 1)
    produce(target, topic, [b"bad"], partition=0)

    async def main() -> None:
        async def handler(r: ConsumerRecord) -> None:
            raise ValueError("cannot process")

        async with Consumer(
            target.bootstrap, group_id=f"g-{topic}", topics=[f"^{topic}.*"],
            dead_letter_topic="{topic}.dlq", max_retries=0,
            metrics_registry=CollectorRegistry(),
            **{"auto.offset.reset": "earliest", **target.client},
        ) as c:
            with pytest.raises(ProcessingError) as failed:
                await c.run(handler)
            assert "reads itself" in str(failed.value.dead_letter_error)

    run(main())
    admin = ck.admin.AdminClient({"bootstrap.servers": target.bootstrap, **target.client})
    assert f"{topic}.dlq" not in admin.list_topics(timeout=10).topics


@pytest.mark.parametrize("topics", [b"orders", [], [""], ["a", 3]])
def test_topics_that_are_not_topic_names_are_refused(target: Target, topics: object) -> None:
    with pytest.raises(ConfigurationError, match="topics="):
        Consumer(target.bootstrap, group_id="g", topics=topics,  # type: ignore[arg-type]
                 metrics_registry=CollectorRegistry())


@pytest.mark.parametrize("concurrency", [1, 4])
def test_stop_from_another_thread_is_handed_to_the_loop(target: Target, concurrency: int) -> None:
    """A watchdog thread (or a ``signal.signal`` handler on a thread with no loop) calls
    ``stop()``: ``run`` returns, having processed what it started, and the call never touches
    the loop's events from the wrong thread (in debug mode asyncio raises there)."""
    import threading

    topic, _ = target.topic("c-stop-thread", 1)
    produce(target, topic, [str(i).encode() for i in range(50)], partition=0)
    group = f"g-{topic}"
    seen = threading.Event()
    stopper_errors: list[BaseException] = []

    def stopper(c: Consumer) -> None:
        seen.wait(DEADLINE)
        try:
            c.stop()
        except BaseException as exc:  # reported by the assertion below
            stopper_errors.append(exc)

    async def main() -> tuple[list[int], int | None]:
        processed: list[int] = []
        async with consumer(target, topic, group, commit_interval=60.0) as c:

            async def handler(r: ConsumerRecord) -> None:
                processed.append(r.offset)
                if r.offset == 49:
                    seen.set()  # everything is processed: run now waits for more, idle

            thread = threading.Thread(target=stopper, args=(c,))
            thread.start()
            try:
                await c.run(handler, concurrency=concurrency, ordering="partition")
            finally:
                await asyncio.to_thread(thread.join)
            return processed, c.position(topic, 0)

    processed, position = asyncio.run(asyncio.wait_for(main(), DEADLINE), debug=True)
    assert stopper_errors == []
    assert sorted(processed) == list(range(50))
    assert position == 50
    assert committed(target, group, topic, 1)[0] == 50


@pytest.mark.parametrize("concurrency", [1, 4])
def test_a_record_running_across_a_seek_back_does_not_commit_past_the_replay(
    target: Target, concurrency: int
) -> None:
    """A handler seeks its partition back (to process offsets 2..5 again) and returns: the
    record it ran for counts for nothing (the seek started the watermark afresh). It
    counted: the watermark went to 6 while 2..5 were about to be replayed, a commit then
    said 6, and a crash there skipped the replay the seek asked for. Failed every time
    before the fix at concurrency 1; concurrency 4 held (the record's end came before the
    replay started: the next test has the other order)."""
    topic, _ = target.topic("c-seek-back", 1)
    produce(target, topic, [str(i).encode() for i in range(10)], partition=0)
    group = f"g-{topic}"
    replaying = asyncio.Event()
    go_on = asyncio.Event()
    seen: list[int] = []

    async def main() -> dict[tuple[str, int], int]:
        async with consumer(target, topic, group, commit_interval=60.0) as c:

            async def handler(r: ConsumerRecord) -> None:
                seen.append(r.offset)
                if r.offset == 5 and seen.count(5) == 1:
                    await c.seek(topic, 0, 2)
                elif seen.count(5) == 1 and r.offset == 2:  # the replay's first record
                    replaying.set()
                    await go_on.wait()
                if seen.count(9) == 1 and r.offset == 9:
                    c.stop()

            task = asyncio.create_task(
                c.run(handler, concurrency=concurrency, ordering="partition"))
            await replaying.wait()
            during = await c.commit()
            go_on.set()
            await task
            return during

    during = run(main())
    assert all(o <= 2 for (_, _), o in during.items()), during
    assert seen == [0, 1, 2, 3, 4, 5, 2, 3, 4, 5, 6, 7, 8, 9]
    assert committed(target, group, topic, 1)[0] == 10


def test_a_record_running_across_a_seek_back_does_not_finish_its_replay(target: Target) -> None:
    """Concurrency 4, any order: record 5 runs while another task seeks back to 2; the
    replayed 5 starts, then the first 5 finishes. Its offset counted for the watermark that
    the seek started afresh, as if the replayed 5 had finished: a commit then said 10 while
    the replayed 5 was still running (a crash there skipped it). Failed every time before
    the fix."""
    topic, _ = target.topic("c-seek-back-4", 1)
    produce(target, topic, [str(i).encode() for i in range(10)], partition=0)
    group = f"g-{topic}"
    first_five, second_five = asyncio.Event(), asyncio.Event()
    release_first, release_second = asyncio.Event(), asyncio.Event()
    seen: list[int] = []
    finished: list[int] = []

    async def main() -> dict[tuple[str, int], int]:
        async with consumer(target, topic, group, commit_interval=60.0) as c:

            async def handler(r: ConsumerRecord) -> None:
                seen.append(r.offset)
                if r.offset == 5:
                    first = seen.count(5) == 1
                    (first_five if first else second_five).set()
                    await (release_first if first else release_second).wait()
                finished.append(r.offset)
                if finished.count(9) == 2:
                    c.stop()

            task = asyncio.create_task(c.run(handler, concurrency=4, ordering="none"))
            await first_five.wait()
            while sorted(finished) != [0, 1, 2, 3, 4, 6, 7, 8, 9]:
                await asyncio.sleep(0.01)  # polling the handlers' progress
            await c.seek(topic, 0, 2)
            await second_five.wait()
            while finished.count(4) < 2:
                await asyncio.sleep(0.01)
            release_first.set()
            while finished.count(5) < 1:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0)  # the first 5's end: _process after its handler returned
            during = await c.commit()
            release_second.set()
            await task
            return during

    during = run(main())
    assert all(o <= 5 for (_, _), o in during.items()), during
    assert committed(target, group, topic, 1)[0] == 10


@pytest.mark.parametrize("concurrency", [1, 4])
def test_a_shed_record_whose_dead_letter_copy_failed_is_not_passed(
    tmp_path: Path, concurrency: int
) -> None:
    """Shedding with ``dead_letter=True``: the copy of record 0 cannot be written (the broker
    refuses produces), so ``run`` stops with ``ConsumerError``. That record was neither shed
    nor processed, yet the position was past it and it was not given back: a ``commit()``
    after, or ``run`` started again, went on from record 1 and record 0 was lost without its
    copy (and its bytes stayed counted as held). Failed every time before the fix."""
    from sluice.client import ConsumerError, Shed
    from sluice.testing import EmbeddedBroker

    with EmbeddedBroker(tmp_path, topics={"t": 1, "t.dlq": 1}) as broker:
        target = Target(broker.bootstrap_servers)
        produce(target, "t", [str(i).encode() for i in range(5)], partition=0)

        async def main() -> int | None:
            async with consumer(target, "t", "g", shed=Shed(max_age=0.0, dead_letter=True),
                                dead_letter_topic="{topic}.dlq",
                                dead_letter_options={"message.timeout.ms": 2000}) as c:

                async def handler(r: ConsumerRecord) -> None:
                    raise AssertionError("every record is shed")

                fault = await asyncio.to_thread(
                    broker.faults.fail, "Produce", "TOPIC_AUTHORIZATION_FAILED", count=1000)
                with pytest.raises(ConsumerError, match="shed record"):
                    await c.run(handler, concurrency=concurrency, ordering="none")
                assert fault.hits
                position = c.position("t", 0)
                await asyncio.to_thread(broker.faults.clear)
                later = asyncio.create_task(c.run(handler, concurrency=concurrency))
                while c.position("t", 0) != 5:
                    await asyncio.sleep(0.01)  # polling run's progress
                c.stop()
                await later
                return position

        position = run(main())
        assert position == 0
        dlq = read_topic(target, "t.dlq")
        assert sorted(int(s.value or b"") for s in dlq) == list(range(5))


@pytest.mark.parametrize("where", ["loop", "thread before start", "thread after start"])
def test_a_stop_before_run_ends_the_next_run_at_once(target: Target, where: str) -> None:
    """``stop()`` before ``run()`` (a SIGTERM that came while the application was starting,
    or a watchdog's, before the consumer even started) was lost: the next ``run`` went on until
    another stop. It now ends that run at once, nothing processed, after its (empty) last
    commit; and only that one: the run after it works as ever."""
    import threading

    topic, _ = target.topic("c-stop-first", 1)
    produce(target, topic, [str(i).encode() for i in range(10)], partition=0)
    group = f"g-{topic}"
    seen: list[int] = []

    async def main() -> None:
        c = consumer(target, topic, group, commit_interval=60.0)
        if where == "thread before start":
            thread = threading.Thread(target=c.stop)
            thread.start()
            thread.join()
        async with c:
            if where == "loop":
                c.stop()
            elif where == "thread after start":  # handed to the loop, which runs it next
                thread = threading.Thread(target=c.stop)
                thread.start()
                thread.join()
                await asyncio.sleep(0)

            async def handler(r: ConsumerRecord) -> None:
                seen.append(r.offset)
                if r.offset == 9:
                    c.stop()

            await asyncio.wait_for(c.run(handler), 10.0)  # ran on, before the fix
            assert seen == []
            await c.run(handler)  # this run's own stop ends it

    run(main())
    assert seen == list(range(10))
    assert committed(target, group, topic, 1)[0] == 10


@pytest.mark.parametrize("concurrency", [1, 4])
def test_a_stop_during_a_run_ends_that_run_alone(target: Target, concurrency: int) -> None:
    """A stop is taken by the run it stopped (and a second stop while that run winds down
    too): the run after it processes the rest."""
    topic, _ = target.topic("c-stop-twice", 1)
    produce(target, topic, [str(i).encode() for i in range(10)], partition=0)
    group = f"g-{topic}"
    first: list[int] = []
    second: list[int] = []

    async def main() -> None:
        async with consumer(target, topic, group, commit_interval=60.0) as c:

            async def one(r: ConsumerRecord) -> None:
                first.append(r.offset)
                if r.offset == 4:
                    c.stop()
                    c.stop()

            async def two(r: ConsumerRecord) -> None:
                second.append(r.offset)
                if r.offset == 9:
                    c.stop()

            await c.run(one, concurrency=concurrency, ordering="partition")
            await asyncio.wait_for(c.run(two, concurrency=concurrency, ordering="partition"),
                                   DEADLINE)

    run(main())
    assert first == list(range(5))
    assert second == list(range(5, 10))
    assert committed(target, group, topic, 1)[0] == 10


def test_a_stop_from_a_signal_handler_wakes_an_idle_run(tmp_path: Path) -> None:
    """``stop()`` from a ``signal.signal`` handler while ``run`` waits for records: the handler
    runs on the loop's thread, interrupting its ``select()``, and what the stop set was seen
    only when something else woke the loop, ``run``'s next commit tick (``commit_interval``
    away: 58 s in a repro with 60). By then the stop's deadline (``close_timeout``) was spent,
    and ``run``'s last commit failed ("not confirmed within 0.0 s"): the processed record was
    read again after a restart. Before the fix the child outlived the test's wait; now the
    stop wakes the loop, and the record's offset is committed."""
    import subprocess
    import sys

    app = Path(__file__).with_name("stop_idle_signal_app.py")
    root = Path(__file__).resolve().parents[2]
    with EmbeddedBroker(tmp_path, topics={"t": 1}) as broker:
        produce(Target(broker.bootstrap_servers), "t", [b"one"], partition=0)
        child = subprocess.Popen(
            [sys.executable, str(app), broker.bootstrap_servers], cwd=root,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:  # the child signals itself once its loop waits in select() (see the app)
            out, err = child.communicate(timeout=30)  # the commit tick was 45 s away
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
            pytest.fail("the stop from the signal handler waited for run's next commit tick")
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        assert child.returncode == 0, err
        assert out.split() == ["stopped"], out
        assert committed(Target(broker.bootstrap_servers), "g", "t", 1) == {0: 1}


def test_a_stop_from_a_signal_handler_during_start_is_kept(tmp_path: Path) -> None:
    """``stop()`` from a ``signal.signal`` handler runs on the thread the signal interrupted:
    delivered while ``start()`` held the lock that orders it with ``run()``, it waited for
    that lock, which its own thread held, for ever (the application hung on its SIGTERM; here
    the child was killed at the deadline, every time, before the fix). The stop is now kept
    for the run that follows, which returns at once."""
    import subprocess
    import sys

    app = Path(__file__).with_name("stop_signal_app.py")
    root = Path(__file__).resolve().parents[2]
    with EmbeddedBroker(tmp_path, topics={"t": 1}) as broker:
        # A record to process, were the stop lost (the run would fail on it: see the app)
        produce(Target(broker.bootstrap_servers), "t", [b"not for this run"], partition=0)
        try:
            done = subprocess.run(
                [sys.executable, str(app), broker.bootstrap_servers], cwd=root,
                capture_output=True, text=True, timeout=DEADLINE / 2,
            )
        except subprocess.TimeoutExpired:
            pytest.fail("stop() from the signal handler deadlocked the application")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["stopped", "processed=0"], done.stdout


def test_a_pattern_is_read_as_librdkafka_reads_it(target: Target) -> None:
    """librdkafka matches with POSIX extended regexes: ``[[:alnum:]]`` is a character class
    there, and was a set followed by a literal ``]`` to the toolkit's own dead-letter guard
    (Python's ``re``, with a FutureWarning), so a pattern matching its own dead letters wrote
    them and read them back; ``\\d`` is the letter d there (``^orders-\\d`` subscribed to
    nothing, silently) and ``(?:...)`` is refused at subscribe: both are refused at
    construction now, saying what to write."""
    import warnings

    topic, _ = target.topic("c-posix", 1)
    produce(target, topic, [b"bad"], partition=0)
    dlq = f"{topic}.dlq"
    posix = f"^{topic[:-1]}[[:alnum:]]"  # the topic, and its dead-letter topic too

    async def main() -> list[bytes]:
        seen: list[bytes] = []

        async def handler(r: ConsumerRecord) -> None:
            seen.append(r.value)
            raise ValueError("cannot process")

        with warnings.catch_warnings():
            warnings.simplefilter("error")
            c = Consumer(
                target.bootstrap, group_id=f"g-{topic}", pattern=posix,
                dead_letter_topic="{topic}.dlq", max_retries=0,
                metrics_registry=CollectorRegistry(),
                **{"auto.offset.reset": "earliest", **target.client},
            )
        async with c:
            with pytest.raises(ProcessingError) as failed:
                await asyncio.wait_for(c.run(handler), DEADLINE)
            assert "reads itself" in str(failed.value.dead_letter_error)
        return seen

    assert run(main()) == [b"bad"]  # read: librdkafka's class matched the topic
    admin = ck.admin.AdminClient({"bootstrap.servers": target.bootstrap, **target.client})
    assert dlq not in admin.list_topics(timeout=10).topics  # nothing was written
    for bad, hint in ((r"^orders-\d+", r"\[0-9\]"), (r"^orders-[\d]", r"\[0-9\]"),
                      ("^(?:orders|audit)", r"write \(\.\.\.\)")):
        with pytest.raises(ConfigurationError, match=hint):
            Consumer(target.bootstrap, group_id="g", pattern=bad, metrics_registry=None)
        with pytest.raises(ConfigurationError, match=hint):
            Consumer(target.bootstrap, group_id="g", topics=[bad], metrics_registry=None)


@pytest.mark.parametrize("concurrency", [1, 4])
def test_a_cancelled_error_the_handler_raises_itself_is_its_failure(
    target: Target, concurrency: int
) -> None:
    """A handler awaiting a future or task that someone else cancels raises ``CancelledError``
    though nobody cancelled ``run``: that is the record's failure (retried here, then
    processed). It ended ``run`` with a ``CancelledError`` at concurrency 1, and at 4 killed the
    worker: the record's lane never ran again, nor the later records of its key, and ``run``
    waited for ever with the partition's commits stuck below it."""
    topic, _ = target.topic("c-own-cancel", 1)
    total = 20
    produce(target, topic, [str(i).encode() for i in range(total)],
            keys=[b"k%d" % (i % 3) for i in range(total)], partition=0)
    group = f"g-{topic}"
    calls: dict[int, int] = {}

    async def main() -> int:
        async with consumer(target, topic, group, max_retries=1, retry_backoff=0.01) as c:

            async def handler(r: ConsumerRecord) -> None:
                calls[r.offset] = calls.get(r.offset, 0) + 1
                if r.offset == 3 and calls[r.offset] == 1:
                    gone = asyncio.get_running_loop().create_future()
                    asyncio.get_running_loop().call_soon(gone.cancel)
                    await gone  # cancelled by someone else: CancelledError here
                if len(calls) == total:
                    c.stop()

            await asyncio.wait_for(c.run(handler, concurrency=concurrency, ordering="key"),
                                   DEADLINE / 4)
            return int(c.metrics()["retries"])

    assert run(main()) == 1
    assert calls == {o: 2 if o == 3 else 1 for o in range(total)}
    assert committed(target, group, topic, 1)[0] == total
