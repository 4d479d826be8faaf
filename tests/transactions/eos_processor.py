"""A consume-transform-produce processor (confluent-kafka), run as a child process by
``test_exactly_once.py``. It SIGKILLs itself at the point it is told, so the test picks kill
points with a seeded RNG and a failure can be replayed.

Per transaction: up to ``--batch`` input records read with read_committed from the partitions
it is assigned (starting at the group's committed offsets), one result per record produced to
the same partition of the output topic, the consumer's positions sent to the transaction
(``send_offsets_to_transaction``), committed. A result's key is the input record's
``partition:offset``, so the test can count each input record's results.

Kill points (``--kill-txn N --kill-phase P``): in the N-th transaction of this run (from 0),
``produce`` after the ``--kill-after``-th result, ``offsets`` after send_offsets_to_transaction,
``commit`` ``--kill-delay-ms`` into commit_transaction (a timer thread: somewhere inside the
EndTxn round trip), ``committed`` right after commit_transaction returned. It exits 0 once it has
processed every input partition to its end (it may get there before its kill point).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time

from confluent_kafka import Consumer, Producer, TopicPartition


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--output", required=True)
    ap.add_argument("--partitions", type=int, required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--transactional-id", required=True)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--kill-txn", type=int, default=-1)
    ap.add_argument("--kill-phase", default="")
    ap.add_argument("--kill-after", type=int, default=0)
    ap.add_argument("--kill-delay-ms", type=float, default=0.0)
    args = ap.parse_args()

    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": args.group,
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    producer = Producer(
        {
            "bootstrap.servers": args.bootstrap,
            "transactional.id": args.transactional_id,
            "linger.ms": 2,
        }
    )
    # Fences the previous incarnation and aborts its open transaction, if any.
    t0 = time.monotonic()
    producer.init_transactions(30)
    print(f"init_transactions {time.monotonic() - t0:.3f} s", flush=True)
    # Assigned, not subscribed: each incarnation starts from the group's committed offsets
    # (asked with require_stable, so never from before an undecided transaction's offsets)
    # without waiting for the dead incarnation's group membership to time out.
    parts = [TopicPartition(args.input, p) for p in range(args.partitions)]
    consumer.assign(parts)
    ends = [consumer.get_watermark_offsets(tp, 30)[1] for tp in parts]
    done = [max(tp.offset, 0) for tp in consumer.committed(parts, 30)]

    txn = 0
    spent = {"consume": 0.0, "send_offsets": 0.0, "commit": 0.0}
    while not all(n >= end for n, end in zip(done, ends, strict=True)):
        # (it may catch up before its kill point: then it exits 0 and the test goes on)
        kill = args.kill_phase if txn == args.kill_txn else ""
        t0 = time.monotonic()
        records = [msg for msg in consumer.consume(args.batch, 0.2) if msg.error() is None]
        spent["consume"] += time.monotonic() - t0
        if not records:
            continue
        producer.begin_transaction()
        upto: dict[int, int] = {}
        for i, msg in enumerate(records):
            partition, offset = msg.partition() or 0, msg.offset() or 0
            key = f"{partition}:{offset}".encode()
            producer.produce(args.output, (msg.value() or b"").upper(), key=key, partition=partition)
            upto[partition] = offset + 1
            if kill == "produce" and i + 1 == min(args.kill_after, len(records)):
                producer.flush(30)  # the results are on the partitions, uncommitted
                die()
        t0 = time.monotonic()
        producer.send_offsets_to_transaction(
            [TopicPartition(args.input, p, o) for p, o in upto.items()],
            consumer.consumer_group_metadata(),
            30,
        )
        spent["send_offsets"] += time.monotonic() - t0
        if kill == "offsets":
            die()
        if kill == "commit":
            threading.Timer(args.kill_delay_ms / 1000, die).start()
        t0 = time.monotonic()
        producer.commit_transaction(30)
        spent["commit"] += time.monotonic() - t0
        if kill in ("committed", "commit"):
            die()
        for p, o in upto.items():
            done[p] = o
        txn += 1
    consumer.close()
    print(f"{txn} transactions; seconds in " + ", ".join(f"{k} {v:.2f}" for k, v in spent.items()))
    return 0


if __name__ == "__main__":
    started = time.monotonic()
    code = main()
    print(f"done in {time.monotonic() - started:.2f} s", flush=True)
    sys.exit(code)
