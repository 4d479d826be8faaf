"""A small HTTP client for the admin side's tests (urllib, no extra package): status, headers
and body of one request, errors included."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def request(
    url: str,
    method: str = "GET",
    body: Any = None,
    headers: dict[str, str] | None = None,
    *,
    console: bool = True,
    timeout: float = 30.0,
    raw: bytes | None = None,
) -> Answer:
    """``console``: send what the console's own page sends with a write (its header, JSON).
    ``raw``: these bytes as the body instead of ``body`` as JSON."""
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    sent = dict(headers or {})
    if method != "GET" and console:
        sent.setdefault("X-Sluice-Console", "1")
        sent.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=data, method=method, headers=sent)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return Answer(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, dict(exc.headers), exc.read())


def scrape(admin_url: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """``/metrics`` parsed with prometheus-client's own parser: sample name -> labels -> value."""
    answer = request(admin_url + "/metrics")
    assert answer.status == 200, answer
    assert answer.headers["Content-Type"].startswith("text/plain")
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(answer.body.decode()):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def value(
    metrics: dict[str, dict[tuple[tuple[str, str], ...], float]], name: str, **labels: str
) -> float:
    """One sample's value; KeyError names what is missing."""
    series = metrics[name]
    key = tuple(sorted(labels.items()))
    if key not in series:
        raise KeyError(f"{name}{labels} not among {sorted(series)[:20]}")
    return series[key]
