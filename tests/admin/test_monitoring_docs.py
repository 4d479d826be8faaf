"""docs/monitoring.md lists every metric the broker serves (and nothing else), the Grafana
dashboard and the alert rules query only metrics that exist, and the console's screenshots the
page shows are in the repository."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from prometheus_client.parser import text_string_to_metric_families

from sluice.testing import EmbeddedBroker
from tests.admin.http import request

DOCS = Path(__file__).resolve().parents[2] / "docs"
_NAME = re.compile(r"\bsluice_[a-z0-9_]+")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[set[str]]:
    """Every metric name a broker with a topic, a group and traffic serves, as queried: a
    counter with its ``_total``, a histogram by its base name and its three series."""
    with EmbeddedBroker(tmp_path_factory.mktemp("docs"), admin=True) as broker:
        producer = Producer({"bootstrap.servers": broker.bootstrap_servers})
        producer.produce("docs-topic", b"v")
        assert producer.flush(30) == 0
        consumer = Consumer(
            {
                "bootstrap.servers": broker.bootstrap_servers,
                "group.id": "docs-group",
                "auto.offset.reset": "earliest",
            }
        )
        consumer.subscribe(["docs-topic"])
        msg = consumer.poll(15)
        assert msg is not None and msg.error() is None
        consumer.commit(asynchronous=False)
        text = request(broker.admin_url + "/metrics").body.decode()
        consumer.close()
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + s for s in ("", "_bucket", "_sum", "_count"))
        else:
            names.add(family.name)
        assert family.samples, f"{family.name} has no samples: the test broker should show it"
    yield names


def _documented() -> set[str]:
    text = (DOCS / "monitoring.md").read_text()
    table = text.split("### Metrics", 1)[1].split("\n\n", 2)[1]
    rows = [line for line in table.splitlines() if line.startswith("| `sluice_")]
    return {re.match(r"\| `(sluice_[a-z0-9_]+)`", row).group(1) for row in rows}  # type: ignore[union-attr]


def _base(name: str, served: set[str]) -> str:
    """A histogram's series by the histogram's name (a gauge may end in _sum too)."""
    for suffix in ("_bucket", "_sum", "_count"):
        base = name.removesuffix(suffix)
        if base != name and base + "_bucket" in served:
            return base
    return name


def test_every_served_metric_is_documented_and_nothing_else(served: set[str]) -> None:
    documented = _documented()
    names = {_base(n, served) for n in served}
    assert documented == names, documented ^ names


def test_the_dashboard_queries_only_served_metrics(served: set[str]) -> None:
    dashboard = json.loads((DOCS / "grafana" / "sluice-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 20
    used = {n for e in exprs for n in _NAME.findall(e)}
    assert used <= served, used - served
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_the_dashboards_p50_series_are_drawn_dashed_as_their_titles_say() -> None:
    """A latency panel's p99 and p50 share colours; the title says p50 is dashed, so an
    override must make it so (the request latency panel said it and drew both solid)."""
    dashboard = json.loads((DOCS / "grafana" / "sluice-dashboard.json").read_text())
    panels = [
        p
        for p in dashboard["panels"]
        if any(t.get("legendFormat", "").startswith("p50") for t in p.get("targets", []))
    ]
    assert len(panels) >= 2
    for panel in panels:
        assert "p50 dashed" in panel["title"], panel["title"]
        dashed = [
            o["matcher"]["options"]
            for o in panel["fieldConfig"]["overrides"]
            for prop in o["properties"]
            if prop["id"] == "custom.lineStyle" and prop["value"].get("fill") == "dash"
        ]
        p50 = [t["legendFormat"] for t in panel["targets"] if t["legendFormat"].startswith("p50")]
        assert dashed and all(
            re.fullmatch(r"/(.*)/", m) and re.match(m[1:-1], name) for m in dashed for name in p50
        ), (panel["title"], dashed)


def test_the_alert_rules_query_only_served_metrics(served: set[str]) -> None:
    rules = (DOCS / "prometheus" / "sluice-alerts.yml").read_text()
    alerts = re.findall(r"^\s+- alert: (\w+)$", rules, re.MULTILINE)
    exprs = re.findall(r"expr: \|?\n?((?:.*\n)+?)\s+(?:for|labels):", rules)
    assert len(alerts) == len(exprs) >= 8
    used = {n for e in exprs for n in _NAME.findall(e)}
    assert used <= served, used - served
    documented = (DOCS / "monitoring.md").read_text()
    for alert in alerts:
        assert f"`{alert}`" in documented, alert


def test_the_console_screenshots_exist() -> None:
    text = (DOCS / "monitoring.md").read_text()
    images = re.findall(r"!\[[^\]]*\]\((console/[a-z-]+\.png)\)", text)
    assert len(images) == 6
    for image in images:
        data = (DOCS / image).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) < 400_000, image
