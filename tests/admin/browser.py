"""Headless Chromium driven by Selenium, for the console's browser tests.

Debian's ``chromium`` and ``chromium-driver`` (``./scripts/test`` installs them when missing).
The browser runs sandboxless (tests may run as root), with a fresh profile, and with everything
that would reach the internet switched off: the console must work offline.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WINDOW = (1200, 800)

T = TypeVar("T")


@contextmanager
def chromium() -> Iterator[WebDriver]:
    for path in (CHROMIUM, CHROMEDRIVER):
        assert Path(path).exists(), (
            f"{path} is missing: ./scripts/test installs chromium and chromium-driver"
        )
    profile = tempfile.mkdtemp(prefix="sluice-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        driver.set_page_load_timeout(30)
        driver.set_script_timeout(30)
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(driver: WebDriver, condition: Callable[[WebDriver], T], timeout: float = 15) -> T:
    """Until ``condition`` returns something truthy (the page redraws as it polls the broker,
    so an element found a moment ago may be gone: that is retried, not a failure)."""
    waiter: WebDriverWait[WebDriver] = WebDriverWait(
        driver, timeout, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,)
    )
    return waiter.until(condition)


def page_errors(driver: WebDriver) -> list[str]:
    """Errors the page logged since last asked: script errors and CSP violations (not HTTP
    errors of the API, which the tests provoke on purpose and the page shows)."""
    return [
        e["message"]
        for e in driver.get_log("browser")  # type: ignore[attr-defined]  # Chrome's own
        if e["level"] == "SEVERE" and e.get("source") != "network"
    ]
