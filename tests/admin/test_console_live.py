"""The web console as an open page lives with the broker, in a real browser: a broker that
stops and starts again under the overview is said to be not answering and then picked up
again (no stale numbers passed off as live, no negative rates from counters that restarted at
zero), a topic's page follows the traffic, and a full disk shows on the overview.

Each test has its own broker, since they stop it or fill its disk.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from sluice.errors import ErrorCode
from sluice.testing import EmbeddedBroker, create_topic
from tests.admin.browser import chromium, page_errors, wait_for
from tests.disks import fill, small_tmpfs
from tests.server.wire import WireClient, batch, produce

TOPIC = "live"


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    with chromium() as driver:
        yield driver


def _produce(broker: EmbeddedBroker, count: int) -> None:
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers, "linger.ms": 5})
    for i in range(count):
        producer.produce(TOPIC, f"v{i}".encode())
    assert producer.flush(30) == 0


def _consume(broker: EmbeddedBroker, count: int) -> None:
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap_servers,
            "group.id": "live-reader",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([TOPIC])
    got = 0
    try:
        while got < count:
            msg = consumer.poll(10)
            assert msg is not None, f"consumed {got} of {count}"
            assert msg.error() is None, msg.error()
            got += 1
    finally:
        consumer.close()


def _points(driver: WebDriver) -> int:
    charts = driver.find_elements(By.CSS_SELECTOR, ".chart")
    return min(int(c.get_attribute("data-points") or 0) for c in charts) if charts else 0


def _below_zero(driver: WebDriver) -> list[str]:
    """Points the charts drew under their zero line (the lowest grid line), and legend values
    below zero."""
    out: list[str] = []
    for chart in driver.find_elements(By.CSS_SELECTOR, ".chart"):
        zero = max(
            float(g.get_attribute("y1") or 0)
            for g in chart.find_elements(By.CSS_SELECTOR, "line.grid")
        )
        for line in chart.find_elements(By.CSS_SELECTOR, "polyline"):
            for point in (line.get_attribute("points") or "").split():
                if float(point.split(",")[1]) > zero + 0.5:
                    out.append(f"{chart.text.splitlines()[0]}: {point} under {zero}")
        out += [
            v.text
            for v in chart.find_elements(By.CSS_SELECTOR, ".legend .muted")
            if v.text.startswith("-")
        ]
    return out


def test_a_broker_restarted_under_the_overview(tmp_path: Path, browser: WebDriver) -> None:
    with EmbeddedBroker(tmp_path / "data", admin=True) as broker:
        create_topic(broker.bootstrap_servers, TOPIC)
        _produce(broker, 300)
        _consume(broker, 300)
        browser.get(broker.admin_url + "/")
        wait_for(browser, lambda d: _points(d) >= 2)
        stale = browser.find_element(By.ID, "stale")
        assert not stale.is_displayed()

        broker.stop()
        wait_for(browser, lambda d: d.find_element(By.ID, "stale").is_displayed())
        assert "Not updating since" in browser.find_element(By.ID, "stale").text
        before = _points(browser)

        broker.start()  # the same ports; every counter starts again at zero
        wait_for(browser, lambda d: not d.find_element(By.ID, "stale").is_displayed())
        wait_for(browser, lambda d: _points(d) >= before + 2)
        assert _below_zero(browser) == []
        assert page_errors(browser) == []


def test_a_topic_page_follows_the_traffic(tmp_path: Path, browser: WebDriver) -> None:
    with EmbeddedBroker(tmp_path / "data", admin=True) as broker:
        create_topic(broker.bootstrap_servers, TOPIC)
        _produce(broker, 5)
        browser.get(broker.admin_url + f"/topics/{TOPIC}")
        end_offset = "#partitions-table tbody td:nth-child(3)"
        wait_for(browser, lambda d: d.find_element(By.CSS_SELECTOR, end_offset).text == "5")
        _produce(broker, 7)
        wait_for(browser, lambda d: d.find_element(By.CSS_SELECTOR, end_offset).text == "12")
        wait_for(browser, lambda d: "12" in d.find_element(By.ID, "topic-cards").text)
        assert page_errors(browser) == []


def test_a_full_disk_shows_on_the_overview(tmp_path: Path, browser: WebDriver) -> None:
    with (
        small_tmpfs(tmp_path / "disk") as disk,
        EmbeddedBroker(disk / "data", admin=True) as broker,
    ):
        create_topic(broker.bootstrap_servers, TOPIC)
        browser.get(broker.admin_url + "/")
        wait_for(browser, lambda d: d.find_elements(By.ID, "overview-cards"))
        assert browser.find_elements(By.ID, "disk-full") == []
        fill(disk, leave=256 * 1024)
        with WireClient("127.0.0.1", broker.port) as client:
            for _ in range(1000):
                answer = produce(client, TOPIC, 0, batch([b"x" * 16_000]), acks=-1)
                if answer.error_code:
                    break
            assert answer.error_code == ErrorCode.KAFKA_STORAGE_ERROR, "the disk never filled"
        shown = wait_for(browser, lambda d: d.find_elements(By.ID, "disk-full"))
        assert "writes are refused" in shown[0].text
        assert page_errors(browser) == []


def test_the_message_browser_marks_aborted_and_pending_records(
    tmp_path: Path, browser: WebDriver
) -> None:
    with EmbeddedBroker(tmp_path / "data", admin=True) as broker:
        create_topic(broker.bootstrap_servers, TOPIC)
        tx = Producer(
            {"bootstrap.servers": broker.bootstrap_servers, "transactional.id": "live-tx"}
        )
        tx.init_transactions(30)
        tx.begin_transaction()
        tx.produce(TOPIC, b"aborted")
        assert tx.flush(30) == 0
        tx.abort_transaction(30)
        _produce(broker, 1)
        tx.begin_transaction()
        tx.produce(TOPIC, b"open")
        assert tx.flush(30) == 0
        try:
            browser.get(broker.admin_url + f"/topics/{TOPIC}")
            rows = wait_for(
                browser,
                lambda d: d.find_elements(By.CSS_SELECTOR, "#records-table tbody tr"),
            )
            marks = {
                r.find_element(By.CSS_SELECTOR, "td.value").text: (
                    r.get_attribute("class") or "",
                    r.find_element(By.CSS_SELECTOR, "td:nth-child(2)").text.split("\n")[1:],
                )
                for r in rows
            }
            assert marks == {
                "open": ("pending", ["pending"]),
                "v0": ("", []),
                "aborted": ("aborted", ["aborted"]),
            }
            assert page_errors(browser) == []
        finally:
            tx.abort_transaction(30)


def test_groups_named_dot_and_dot_dot_open_their_pages(tmp_path: Path, browser: WebDriver) -> None:
    """Kafka allows any group id; "/groups/.." resolved to the overview and "/groups/." to the
    list (browsers resolve such segments, %2E%2E too), so those groups had no page."""
    with EmbeddedBroker(tmp_path / "data", admin=True) as broker:
        create_topic(broker.bootstrap_servers, TOPIC)
        _produce(broker, 3)
        for group in (".", "..", "../x"):
            consumer = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": group})
            consumer.commit(offsets=[TopicPartition(TOPIC, 0, 2)], asynchronous=False)
            consumer.close()
        for group in (".", "..", "../x"):

            def shown(d: WebDriver, g: str = group) -> bool:
                return bool(d.find_element(By.ID, "group-id").text == g)

            browser.get(broker.admin_url + "/groups")
            wait_for(browser, lambda d: d.find_elements(By.ID, "groups-table"))
            browser.find_element(By.LINK_TEXT, group).click()
            wait_for(browser, shown)
            wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#offsets-table tbody tr"))
            rows = browser.find_element(By.CSS_SELECTOR, "#offsets-table tbody").text
            assert rows.split() == [TOPIC, "0", "2", "3", "1"], (group, rows)
            browser.refresh()  # the address it shows opens the same group
            wait_for(browser, shown)
        assert page_errors(browser) == []


def test_a_page_opened_while_the_broker_is_away_is_drawn_once_it_answers(
    tmp_path: Path, browser: WebDriver
) -> None:
    """A page whose first request failed (the broker stopped or restarting) said 'Error' until
    it was reloaded by hand."""
    with EmbeddedBroker(tmp_path / "data", admin=True) as broker:
        create_topic(broker.bootstrap_servers, TOPIC)
        browser.get(broker.admin_url + "/")
        wait_for(browser, lambda d: d.find_elements(By.ID, "overview-cards"))
        broker.stop()
        browser.find_element(By.ID, "nav-topics").click()  # drawn by the page: no reload
        wait_for(browser, lambda d: d.find_element(By.TAG_NAME, "h1").text == "Error")
        assert browser.find_element(By.ID, "stale").is_displayed()
        broker.start()
        wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, f'tr[data-topic="{TOPIC}"]'))
        assert not browser.find_element(By.ID, "stale").is_displayed()
