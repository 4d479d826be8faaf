"""Topics for tests: a name no other test uses, and a topic created on any Kafka-compatible
broker before the test's clients start.

Tests that share one broker (a session-wide one is much faster than a broker per test) keep
apart by topic name. :func:`create_topic` speaks CreateTopics itself, through sluice's codec over
a plain socket, so it needs no client library and works against sluice or Apache Kafka alike.
"""

from __future__ import annotations

import re
import socket
import uuid
from collections.abc import Mapping

from sluice.errors import ErrorCode
from sluice.protocol import ApiKey, decode_response, encode_request
from sluice.protocol import messages as m
from sluice.protocol.primitives import I32

MAX_TOPIC_NAME = 249
"""Kafka's limit on a topic name's length."""

_CREATE_TOPICS_VERSION = 7
_ILLEGAL = re.compile(r"[^A-Za-z0-9._-]+")


class TopicCreationError(Exception):
    """The broker refused the topic; ``code`` is its Kafka error code."""

    def __init__(self, name: str, code: int, message: str | None) -> None:
        try:
            label = ErrorCode(code).name
        except ValueError:
            label = "error"
        super().__init__(
            f"creating topic {name!r} failed: {label} ({code}){': ' + message if message else ''}"
        )
        self.name = name
        self.code = code


def unique_topic_name(hint: str = "topic") -> str:
    """A legal topic name no other call returns: ``hint`` (a test's id, say, so failures are
    readable) with characters Kafka does not allow replaced by ``-``, and a random suffix. A
    long hint keeps its end, where a test id's most specific part is."""
    suffix = "-" + uuid.uuid4().hex[:12]
    readable = _ILLEGAL.sub("-", hint).strip("-.") or "topic"
    return readable[-(MAX_TOPIC_NAME - len(suffix)) :] + suffix


def create_topic(
    bootstrap_servers: str,
    name: str,
    partitions: int = 1,
    *,
    configs: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> str:
    """Create topic ``name`` with ``partitions`` partitions (replication factor 1) and topic
    ``configs`` (Kafka names) on the first broker of ``bootstrap_servers``; returns ``name``.
    Raises :class:`TopicCreationError` when the broker refuses, e.g. with
    TOPIC_ALREADY_EXISTS."""
    body = m.CreateTopicsRequest(
        topics=[
            m.CreatableTopic(
                name=name,
                num_partitions=partitions,
                replication_factor=1,
                assignments=[],
                configs=[
                    m.CreatableTopicConfig(name=k, value=v) for k, v in (configs or {}).items()
                ],
            )
        ],
        timeout_ms=int(timeout * 1000),
    )
    frame = encode_request(ApiKey.CREATE_TOPICS, _CREATE_TOPICS_VERSION, 1, "sluice.testing", body)
    with socket.create_connection(_first_address(bootstrap_servers), timeout=timeout) as sock:
        sock.sendall(frame)
        (size,) = I32.unpack(_receive(sock, 4))
        _, response = decode_response(
            _receive(sock, size), ApiKey.CREATE_TOPICS, _CREATE_TOPICS_VERSION
        )
    assert isinstance(response, m.CreateTopicsResponse)
    (result,) = response.topics
    if result.error_code != ErrorCode.NONE:
        raise TopicCreationError(name, result.error_code, result.error_message)
    return name


def _first_address(bootstrap_servers: str) -> tuple[str, int]:
    first = bootstrap_servers.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"not host:port: {first!r}")
    return host.strip("[]"), int(port)


def _receive(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError(
                f"the broker closed the connection after {len(data)} of {n} bytes"
            )
        data += chunk
    return bytes(data)
