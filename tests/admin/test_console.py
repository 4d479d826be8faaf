"""The web console in a real browser (headless Chromium, Selenium) against a real broker that
real clients produced to and consumed from: every page renders the broker's topics and groups,
the message browser shows records (a value holding HTML shows as text, and runs nothing),
creating and deleting a topic and producing work (checked with Kafka's own admin client and
consumer), offsets are reset after a dry run, and a read-only console refuses every write.

One browser for the module. Each page's screenshot is saved (small PNGs); with
``SLUICE_UPDATE_SCREENSHOTS=1`` they are copied to docs/console/, where docs/monitoring.md
shows them.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, Producer, TopicPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # re-exported without __all__
    AdminClient,
    ConfigResource,
    NewTopic,
    ResourceType,
)
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select

import sluice
from sluice.protocol.compression import Compression
from sluice.protocol.records import build_batch
from sluice.server.admin.browse import DECODE_LIMIT
from sluice.testing import EmbeddedBroker
from tests.admin.browser import chromium, page_errors, wait_for
from tests.admin.http import request
from tests.server.wire import WireClient, produce
from tests.server.wire import create_topic as wire_create_topic

DOCS = Path(__file__).resolve().parents[2] / "docs" / "console"
TOPIC = "orders"
HTML_VALUE = (
    '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2"><b>bold</b>'
)
LIVE_GROUP = "billing"
IDLE_GROUP = "audit"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(
        tmp_path_factory.mktemp("console"), admin=True, settings={"num.partitions": "2"}
    ) as b:
        yield b


@pytest.fixture(scope="module")
def admin(broker: EmbeddedBroker) -> AdminClient:
    return AdminClient({"bootstrap.servers": broker.bootstrap_servers})


def _consume(consumer: Consumer, count: int) -> None:
    got = 0
    while got < count:
        msg = consumer.poll(10)
        assert msg is not None, f"consumed only {got} of {count}"
        assert msg.error() is None, msg.error()
        got += 1


@pytest.fixture(scope="module")
def seeded(broker: EmbeddedBroker, admin: AdminClient) -> Iterator[None]:
    """``orders``: 3 partitions of JSON records with a header (30 each), which the groups
    ``audit`` (then gone: Empty) and ``billing`` (a live member while the tests run) consume
    and commit; then 5 more in each partition, and last, alone in partition 0, a record whose
    key and value are HTML. So billing lags by 6, 5 and 5."""
    admin.create_topics([NewTopic(TOPIC, 3)])[TOPIC].result(30)
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers, "linger.ms": 5})

    def orders(first: int, count: int) -> None:
        for i in range(first, first + count):
            value = json.dumps({"id": i, "item": "widget", "qty": i % 5}).encode()
            producer.produce(
                TOPIC,
                value,
                key=f"order-{i}".encode(),
                partition=i % 3,
                headers=[("source", b"web")],
            )
        assert producer.flush(30) == 0

    def member(group: str) -> Consumer:
        consumer = Consumer(
            {
                "bootstrap.servers": broker.bootstrap_servers,
                "group.id": group,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "client.id": f"{group}-client",
            }
        )
        consumer.subscribe([TOPIC])
        return consumer

    orders(0, 90)
    audit = member(IDLE_GROUP)
    _consume(audit, 90)
    audit.commit(asynchronous=False)
    audit.close()
    billing = member(LIVE_GROUP)
    _consume(billing, 90)
    billing.commit(asynchronous=False)
    orders(90, 15)
    time.sleep(0.01)  # the HTML record's timestamp is then the newest, whatever the clock's grain
    producer.produce(TOPIC, HTML_VALUE.encode(), key=b"<i>key</i>", partition=0)
    assert producer.flush(30) == 0
    try:
        yield
    finally:
        billing.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    with chromium() as driver:
        yield driver


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("screenshots")
    yield out
    if os.environ.get("SLUICE_UPDATE_SCREENSHOTS") == "1":
        DOCS.mkdir(exist_ok=True)
        for png in out.glob("*.png"):
            shutil.copy(png, DOCS / png.name)


def _screenshot(browser: WebDriver, shots: Path, name: str) -> None:
    path = shots / f"{name}.png"
    assert browser.save_screenshot(str(path))
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) < 400_000, len(data)


def _open(browser: WebDriver, url: str, ready: str) -> None:
    browser.get(url)
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ready))


def _text(browser: WebDriver, css: str) -> str:
    return str(browser.find_element(By.CSS_SELECTOR, css).text)


def _committed(admin: AdminClient, group: str) -> dict[int, int]:
    futures = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])
    result = futures[group].result(30)
    return {tp.partition: tp.offset for tp in result.topic_partitions if tp.topic == TOPIC}


# -- pages -----------------------------------------------------------------------------------------


def test_overview_shows_the_broker_and_lists_every_topic(
    broker: EmbeddedBroker, seeded: None, browser: WebDriver, shots: Path
) -> None:
    # Traffic while the page watches, so its rate charts have something to draw.
    stop = threading.Event()

    def traffic() -> None:
        producer = Producer({"bootstrap.servers": broker.bootstrap_servers, "linger.ms": 20})
        consumer = Consumer(
            {
                "bootstrap.servers": broker.bootstrap_servers,
                "group.id": "overview-reader",
                "auto.offset.reset": "earliest",
            }
        )
        consumer.subscribe(["traffic"])
        i = 0
        while not stop.is_set():
            for _ in range(50):
                producer.produce("traffic", f"t{i}".encode())
                i += 1
            producer.poll(0)
            consumer.consume(100, timeout=0.1)
        producer.flush(30)
        consumer.close()

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        _open(browser, broker.admin_url + "/", "#overview-topics-table")
        # Three samples of the counters on each chart (the page takes one every 2 s).
        wait_for(
            browser,
            lambda d: all(
                int(c.get_attribute("data-points") or 0) >= 3
                for c in d.find_elements(By.CSS_SELECTOR, ".chart")
            ),
            timeout=30,
        )
    finally:
        stop.set()
        worker.join(30)
    wait_for(browser, lambda d: "traffic" in _text(d, "#overview-topics-table"))
    cards = _text(browser, "#overview-cards")
    assert sluice.__version__ in cards
    assert str(broker.data_dir) in cards
    links = {
        a.text: a.get_attribute("href") or ""
        for a in browser.find_elements(By.CSS_SELECTOR, "#overview-topics-table a")
    }
    assert links[TOPIC].endswith(f"/topics/{TOPIC}")
    assert set(links) == set(broker.server.broker.logs.topics)  # type: ignore[union-attr]
    _screenshot(browser, shots, "overview")
    browser.find_element(By.LINK_TEXT, TOPIC).click()
    wait_for(browser, lambda d: _text(d, "#topic-name") == TOPIC)
    assert page_errors(browser) == []


def test_message_browser_shows_records_and_html_as_text(
    broker: EmbeddedBroker, seeded: None, browser: WebDriver, shots: Path
) -> None:
    _open(browser, f"{broker.admin_url}/topics/{TOPIC}", "#records-table")
    # Newest first over every partition: the HTML record leads.
    first_value = wait_for(
        browser, lambda d: d.find_element(By.CSS_SELECTOR, "#records-table tbody tr td.value").text
    )
    assert first_value == HTML_VALUE
    assert _text(browser, "#records-table tbody tr td.key") == "<i>key</i>"
    assert (
        browser.find_elements(
            By.CSS_SELECTOR,
            "#records-table script, #records-table img, #records-table b, #records-table i",
        )
        == []
    )
    assert browser.execute_script("return window.__pwned") is None
    rows = browser.find_elements(By.CSS_SELECTOR, "#records-table tbody tr")
    assert len(rows) == 20
    assert "source: web" in rows[1].find_element(By.CSS_SELECTOR, "td.headers").text
    partitions = _text(browser, "#partitions-table")
    assert "36" in partitions and "35" in partitions  # end offsets: partition 0 has the HTML record
    _screenshot(browser, shots, "topic")

    # JSON pretty-printed, then hex, without asking the broker again.
    Select(browser.find_element(By.ID, "browse-format")).select_by_value("json")
    pretty = browser.find_elements(By.CSS_SELECTOR, "#records-table tbody tr td.value")[1].text
    assert pretty.startswith('{\n  "id": ') and '"item": "widget"' in pretty
    Select(browser.find_element(By.ID, "browse-format")).select_by_value("hex")
    assert _text(browser, "#records-table tbody tr td.value").startswith(
        "3c 73 63 72 69 70 74 3e"
    )  # <script>
    Select(browser.find_element(By.ID, "browse-format")).select_by_value("text")

    # From an offset in one partition, a page at a time.
    Select(browser.find_element(By.ID, "browse-partition")).select_by_value("1")
    Select(browser.find_element(By.ID, "browse-mode")).select_by_value("offset")
    offset = browser.find_element(By.ID, "browse-offset")
    offset.clear()
    offset.send_keys("5")
    browser.find_element(By.ID, "browse-button").click()

    def offsets(d: WebDriver) -> list[int]:
        return [
            int(td.text)
            for td in d.find_elements(By.CSS_SELECTOR, "#records-table tbody tr td:nth-child(2)")
        ]

    wait_for(browser, lambda d: offsets(d) == list(range(5, 25)))
    browser.find_element(By.ID, "browse-next").click()
    wait_for(browser, lambda d: offsets(d) == list(range(25, 35)))
    assert not browser.find_element(By.ID, "browse-next").is_enabled()

    # From a time long past: the partition from its start.
    Select(browser.find_element(By.ID, "browse-mode")).select_by_value("timestamp")
    browser.execute_script("document.getElementById('browse-time').value = '2001-01-01T00:00:00'")
    browser.find_element(By.ID, "browse-button").click()
    wait_for(browser, lambda d: offsets(d) == list(range(0, 20)))
    assert page_errors(browser) == []


def test_produce_form_appends_a_record_clients_read(
    broker: EmbeddedBroker, seeded: None, browser: WebDriver
) -> None:
    _open(browser, f"{broker.admin_url}/topics/{TOPIC}", "#produce-button")
    Select(browser.find_element(By.ID, "produce-partition")).select_by_value("2")
    browser.find_element(By.ID, "produce-key").send_keys("from-console")
    browser.find_element(By.ID, "produce-value").send_keys('{"hello": "console"}')
    browser.find_element(By.ID, "produce-headers").send_keys("trace: abc-123")
    browser.find_element(By.ID, "produce-button").click()
    status = wait_for(browser, lambda d: _text(d, "#produce-status"))
    assert status.startswith("Produced to partition 2 at offset "), status
    offset = int(status.rsplit(" ", 1)[1].rstrip("."))

    consumer = Consumer(
        {"bootstrap.servers": broker.bootstrap_servers, "group.id": "console-check"}
    )
    try:
        consumer.assign([TopicPartition(TOPIC, 2, offset)])
        msg = consumer.poll(10)
        assert msg is not None and msg.error() is None
        assert (msg.key(), msg.value(), msg.headers()) == (
            b"from-console",
            b'{"hello": "console"}',
            [("trace", b"abc-123")],
        )
    finally:
        consumer.close()
    # The browser shows it too (the page reloads its newest records after producing).
    wait_for(
        browser, lambda d: _text(d, "#records-table tbody tr td.value") == '{"hello": "console"}'
    )


def test_topics_page_creates_and_deletes_a_topic(
    broker: EmbeddedBroker, seeded: None, admin: AdminClient, browser: WebDriver, shots: Path
) -> None:
    _open(browser, broker.admin_url + "/topics", "#topics-table")
    assert TOPIC in _text(browser, "#topics-table")
    browser.find_element(By.ID, "create-topic-name").send_keys("made-in-console")
    partitions = browser.find_element(By.ID, "create-topic-partitions")
    partitions.clear()
    partitions.send_keys("4")
    browser.find_element(By.ID, "create-topic-configs").send_keys("retention.ms=3600000")
    browser.find_element(By.ID, "create-topic-button").click()
    wait_for(browser, lambda d: "made-in-console" in _text(d, "#topics-table"))
    metadata = admin.list_topics(timeout=10)
    assert len(metadata.topics["made-in-console"].partitions) == 4
    resource = ConfigResource(ResourceType.TOPIC, "made-in-console")
    configs = admin.describe_configs([resource])[resource].result(10)
    assert configs["retention.ms"].value == "3600000"
    _screenshot(browser, shots, "topics")

    # A bad name is refused with the broker's own message.
    name = browser.find_element(By.ID, "create-topic-name")
    name.clear()
    name.send_keys("bad name!")
    browser.find_element(By.ID, "create-topic-button").click()
    assert "invalid topic name" in wait_for(browser, lambda d: _text(d, "#topics-status"))

    browser.find_element(By.CSS_SELECTOR, "#topics-table a[href='/topics/made-in-console']").click()
    wait_for(browser, lambda d: _text(d, "#topic-name") == "made-in-console")
    browser.find_element(By.ID, "delete-button").click()
    browser.find_element(By.ID, "delete-confirm-name").send_keys("made-in-consol")  # a typo
    browser.find_element(By.ID, "delete-confirm-button").click()
    wait_for(
        browser,
        lambda d: (
            "does not match" in _text(d, "#delete-confirm").lower()
            or "does not match" in d.page_source
        ),
    )
    assert "made-in-console" in admin.list_topics(timeout=10).topics
    browser.find_element(By.ID, "delete-confirm-name").send_keys("e")
    browser.find_element(By.ID, "delete-confirm-button").click()
    wait_for(
        browser,
        lambda d: d.current_url.endswith("/topics") and d.find_elements(By.ID, "topics-table"),
    )
    wait_for(browser, lambda d: "made-in-console" not in _text(d, "#topics-table"))
    assert "made-in-console" not in admin.list_topics(timeout=10).topics


def test_group_pages_show_members_offsets_and_lag(
    broker: EmbeddedBroker, seeded: None, admin: AdminClient, browser: WebDriver, shots: Path
) -> None:
    _open(browser, broker.admin_url + "/groups", "#groups-table")
    rows = {
        tr.get_attribute("data-group"): tr.text
        for tr in browser.find_elements(By.CSS_SELECTOR, "#groups-table tbody tr")
    }
    assert "Stable" in rows[LIVE_GROUP] and "Empty" in rows[IDLE_GROUP]
    _screenshot(browser, shots, "groups")

    _open(browser, f"{broker.admin_url}/groups/{LIVE_GROUP}", "#members-table")
    members = _text(browser, "#members-table")
    assert f"{LIVE_GROUP}-client" in members and f"{TOPIC}: 0, 1, 2" in members
    committed = _committed(admin, LIVE_GROUP)
    probe = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": "probe"})
    try:
        ends = {
            p: probe.get_watermark_offsets(TopicPartition(TOPIC, p), timeout=10)[1]
            for p in range(3)
        }
    finally:
        probe.close()

    def shown(d: WebDriver) -> dict[int, tuple[int, int, int]]:
        out = {}
        for tr in d.find_elements(By.CSS_SELECTOR, "#offsets-table tbody tr"):
            cells = [td.text.replace(",", "") for td in tr.find_elements(By.TAG_NAME, "td")]
            out[int(cells[1])] = (int(cells[2]), int(cells[3]), int(cells[4]))
        return out

    expected = {p: (committed[p], ends[p], ends[p] - committed[p]) for p in range(3)}
    wait_for(browser, lambda d: shown(d) == expected)
    assert sum(lag for _, _, lag in expected.values()) > 0
    # A few samples on the lag chart for the screenshot (the page takes one every 2 s).
    wait_for(
        browser,
        lambda d: (
            int(d.find_element(By.CSS_SELECTOR, ".chart").get_attribute("data-points") or 0) >= 3
        ),
    )
    _screenshot(browser, shots, "group")
    assert page_errors(browser) == []


def test_reset_offsets_dry_run_first_then_apply(
    broker: EmbeddedBroker, seeded: None, admin: AdminClient, browser: WebDriver
) -> None:
    before = _committed(admin, IDLE_GROUP)
    assert before == {0: 30, 1: 30, 2: 30}
    _open(browser, f"{broker.admin_url}/groups/{IDLE_GROUP}", "#reset-dry-run")
    assert not browser.find_element(By.ID, "reset-apply").is_enabled()
    Select(browser.find_element(By.ID, "reset-target")).select_by_value("offset")
    browser.find_element(By.ID, "reset-value").send_keys("3")
    browser.find_element(By.ID, "reset-dry-run").click()
    plan = wait_for(browser, lambda d: _text(d, "#reset-plan-table"))
    assert plan.count("\n") == 3  # a header and one row per committed partition
    assert _committed(admin, IDLE_GROUP) == before  # a dry run changes nothing
    browser.find_element(By.ID, "reset-apply").click()
    wait_for(
        browser, lambda d: "Committed new offsets of 3 partitions" in _text(d, "#reset-status")
    )
    assert _committed(admin, IDLE_GROUP) == {0: 3, 1: 3, 2: 3}

    # A group with members cannot be reset: the coordinator's rule, shown as such.
    _open(browser, f"{broker.admin_url}/groups/{LIVE_GROUP}", "#reset-dry-run")
    browser.find_element(By.ID, "reset-dry-run").click()
    wait_for(browser, lambda d: d.find_element(By.ID, "reset-apply").is_enabled())
    dry_run = _text(browser, "#reset-status")
    browser.find_element(By.ID, "reset-apply").click()
    # The dry run's own status stays until the apply's answer replaces it.
    status = wait_for(browser, lambda d: (t := _text(d, "#reset-status")) != dry_run and t)
    assert status and "has no members" in status


def test_delete_group(
    broker: EmbeddedBroker, seeded: None, admin: AdminClient, browser: WebDriver
) -> None:
    _open(browser, f"{broker.admin_url}/groups/{IDLE_GROUP}", "#delete-button")
    browser.find_element(By.ID, "delete-button").click()
    browser.find_element(By.ID, "delete-confirm-name").send_keys(IDLE_GROUP)
    browser.find_element(By.ID, "delete-confirm-button").click()
    wait_for(
        browser,
        lambda d: d.current_url.endswith("/groups") and d.find_elements(By.ID, "groups-table"),
    )
    wait_for(browser, lambda d: IDLE_GROUP not in _text(d, "#groups-table"))
    listed = admin.list_consumer_groups().result(10)
    assert IDLE_GROUP not in {g.group_id for g in listed.valid}


def test_settings_page_shows_what_describe_configs_reports(
    broker: EmbeddedBroker, admin: AdminClient, browser: WebDriver, shots: Path
) -> None:
    _open(browser, broker.admin_url + "/settings", "#settings-table")
    shown = {}
    for tr in browser.find_elements(By.CSS_SELECTOR, "#settings-table tbody tr"):
        cells = tr.find_elements(By.TAG_NAME, "td")
        shown[cells[0].text] = (cells[1].text, cells[2].text)
    resource = ConfigResource(ResourceType.BROKER, "0")
    reported = admin.describe_configs([resource])[resource].result(10)
    assert set(shown) == set(reported)
    for name, entry in reported.items():
        assert shown[name][0] == (entry.value if entry.value is not None else "null"), name
    assert shown["num.partitions"] == ("2", "STATIC_BROKER_CONFIG")
    _screenshot(browser, shots, "settings")


# -- read-only, and who may write -------------------------------------------------------------------


@pytest.fixture(scope="module")
def read_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(
        tmp_path_factory.mktemp("console-ro"),
        admin=True,
        settings={"sluice.admin.read.only": "true"},
    ) as b:
        yield b


def test_read_only_console_refuses_every_write(
    read_only: EmbeddedBroker, browser: WebDriver
) -> None:
    producer = Producer({"bootstrap.servers": read_only.bootstrap_servers})
    producer.produce("kept", b"v")
    assert producer.flush(30) == 0
    # Every page says so, the settings page too, opened first (it left the badge hidden).
    _open(browser, read_only.admin_url + "/settings", "#settings-table")
    assert browser.find_element(By.ID, "mode").is_displayed()
    _open(browser, read_only.admin_url + "/topics", "#create-topic-button")
    assert browser.find_element(By.ID, "mode").is_displayed()
    assert not browser.find_element(By.ID, "create-topic-button").is_enabled()
    _open(browser, read_only.admin_url + "/topics/kept", "#produce-button")
    assert not browser.find_element(By.ID, "produce-button").is_enabled()
    assert not browser.find_element(By.ID, "delete-button").is_enabled()
    # The server refuses even when the page is bypassed (a write from the page's own origin).
    script = """
        const done = arguments[arguments.length - 1];
        fetch(arguments[0], {method: arguments[1], headers: {"Content-Type": "application/json", "X-Sluice-Console": "1"},
                             body: JSON.stringify(arguments[2])})
          .then(async (r) => done([r.status, await r.json()]));
    """
    for path, method, body in [
        ("/api/topics", "POST", {"name": "sneaky", "partitions": 1}),
        ("/api/topics/kept", "DELETE", {}),
        ("/api/topics/kept/records", "POST", {"value": "x"}),
        ("/api/topics/kept/configs", "POST", {"set": {"retention.ms": "1"}}),
        ("/api/groups/any/reset", "POST", {"topic": "kept", "target": "earliest", "execute": True}),
        ("/api/groups/any", "DELETE", {}),
    ]:
        status, answer = browser.execute_async_script(
            script, read_only.admin_url + path, method, body
        )
        assert (status, answer["error"]) == (403, "READ_ONLY"), (path, answer)
    topics = read_only.server.broker.logs.topics  # type: ignore[union-attr]
    assert set(topics) == {"kept"}
    assert topics["kept"].partitions[0].log.high_watermark == 1
    assert topics["kept"].config_overrides == {}


def test_writes_need_the_console_and_a_loopback_host(broker: EmbeddedBroker) -> None:
    url = broker.admin_url + "/api/topics"
    body = {"name": "forged", "partitions": 1}
    # A cross-site form cannot set the console's header...
    assert (
        request(url, "POST", body, {"Content-Type": "application/json"}, console=False).status
        == 403
    )
    # ... a page of another origin is refused by its Origin ...
    assert request(url, "POST", body, {"Origin": "http://evil.example"}).status == 403
    # ... and a DNS-rebinding page reaches the loopback console only under its own name.
    assert (
        request(broker.admin_url + "/api/overview", headers={"Host": "evil.example"}).status == 403
    )
    assert "forged" not in broker.server.broker.logs.topics  # type: ignore[union-attr]
    ok = request(url, "POST", {"name": "forged-ok", "partitions": 1})
    assert ok.status == 200, ok.body


def test_a_batch_too_big_to_show_is_one_row_saying_why(
    broker: EmbeddedBroker, browser: WebDriver
) -> None:
    host, port = broker.bootstrap_servers.rsplit(":", 1)
    client = WireClient(host, int(port))
    try:
        wire_create_topic(client, "too-big-page")
        for records in (
            build_batch([(None, b"before")], base_timestamp=1),
            build_batch(
                [(None, b"\0" * (DECODE_LIMIT + 1))], base_timestamp=2, compression=Compression.ZSTD
            ),
            build_batch([(None, b"after")], base_timestamp=3),
        ):
            assert produce(client, "too-big-page", 0, records).error_code == 0
    finally:
        client.close()
    _open(browser, f"{broker.admin_url}/topics/too-big-page", "#records-table")
    rows = browser.find_elements(By.CSS_SELECTOR, "#records-table tbody tr")
    assert [r.find_element(By.CSS_SELECTOR, "td.value").text for r in rows][0::2] == [
        "after",
        "before",
    ]
    assert (
        rows[1]
        .find_element(By.CSS_SELECTOR, "td.value")
        .text.startswith("a batch of 1 records the browser cannot show")
    )
    assert page_errors(browser) == []
