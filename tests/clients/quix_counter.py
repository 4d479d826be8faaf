"""A stateful Quix Streams application (run with the Quix environment's interpreter): counts
records per key in a RocksDB store, whose changelog topic Quix Streams creates compacted, and
sends each new count to an output topic. Prints the outputs it produced as JSON lines.

    python tests/clients/quix_counter.py BOOTSTRAP INPUT OUTPUT STATE_DIR GROUP COUNT
"""

from __future__ import annotations

import json
import sys

from quixstreams import Application  # type: ignore[import-not-found]


def main(bootstrap: str, source: str, sink: str, state_dir: str, group: str, count: int) -> None:
    app = Application(
        broker_address=bootstrap,
        consumer_group=group,
        auto_offset_reset="earliest",
        state_dir=state_dir,
        commit_every=5,  # a checkpoint (and changelog records) every 5 records, not every 5 s
        loglevel="WARNING",
    )
    inputs = app.topic(source, key_deserializer="str", value_deserializer="json")
    outputs = app.topic(sink, key_serializer="str", value_serializer="json")

    def counted(value: dict[str, int], state: object) -> dict[str, int]:
        total = state.get("count", 0) + value["n"]  # type: ignore[attr-defined]
        state.set("count", total)  # type: ignore[attr-defined]
        return {"count": total}

    sdf = app.dataframe(inputs).apply(counted, stateful=True)
    sdf.to_topic(outputs)
    for row in app.run(count=count, timeout=60, metadata=True):
        print(json.dumps({"key": row["_key"], "count": row["count"]}), flush=True)


if __name__ == "__main__":
    bootstrap, source, sink, state_dir, group, count = sys.argv[1:7]
    main(bootstrap, source, sink, state_dir, group, int(count))
