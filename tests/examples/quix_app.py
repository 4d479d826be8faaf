"""A Quix Streams application (run by test_quix_streams.py in Quix's own environment)."""

import json
import sys
from typing import Any

from quixstreams import Application  # type: ignore[import-not-found]


def run(bootstrap_servers: str, source: str, sink: str, mode: str, state_dir: str) -> Any:
    """Orders in, totals out: ``stateless`` (VAT per order), ``stateful`` (a running total per
    customer); ``eos`` is the stateless one with exactly-once processing."""
    app = Application(
        broker_address=bootstrap_servers,
        consumer_group=f"{source}-quix",
        auto_offset_reset="earliest",
        state_dir=state_dir,
        use_changelog_topics=mode != "stateful-local",
        processing_guarantee="exactly-once" if mode == "eos" else "at-least-once",
    )
    orders = app.dataframe(app.topic(source, value_deserializer="json"))
    if mode.startswith("stateful"):

        def running_total(order, state):
            total = state.get("total", 0) + order["amount"]
            state.set("total", total)
            return {"customer": order["customer"], "total": total}

        orders = orders.apply(running_total, stateful=True)
    else:
        orders = orders.filter(lambda order: order["amount"] > 0)
        orders = orders.apply(lambda o: {"id": o["id"], "total": o["amount"] * 12 // 10})
    orders.to_topic(app.topic(sink, value_serializer="json"))
    return app.run(count=3, timeout=30)  # stop after 3 outputs: what tests need


if __name__ == "__main__":
    try:
        print(json.dumps(run(*sys.argv[1:6])))
    except Exception as failure:  # Quix may raise a later error, from shutting down: say all
        chain, cause = [], failure.__cause__ or failure.__context__
        chain.append(repr(failure))
        while cause is not None:
            chain.append(repr(cause))
            cause = cause.__cause__ or cause.__context__
        sys.exit("\n".join(chain))
