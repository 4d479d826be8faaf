"""Topics for tests: a name no other test uses, and a topic created on any Kafka-compatible
broker before the test's clients start.

Tests that share one broker (a session-wide one is much faster than a broker per test) keep
apart by topic name. :func:`create_topic` speaks CreateTopics itself, through sluice's codec over
a plain socket, so it needs no client library and works against sluice or Apache Kafka alike.
"""

from __future__ import annotations

import math
import re
import socket
import uuid
from collections.abc import Iterable, Mapping

from sluice.errors import ErrorCode
from sluice.protocol import ApiKey, RequestBody, ResponseBody, decode_response, encode_request
from sluice.protocol import messages as m
from sluice.protocol.primitives import I32

MAX_TOPIC_NAME = 249
"""Kafka's limit on a topic name's length."""

_CREATE_TOPICS_VERSION = 7
_DELETE_TOPICS_VERSION = 4
_ILLEGAL = re.compile(r"[^A-Za-z0-9._-]+")


class TopicCreationError(Exception):
    """The broker refused the topic; ``code`` is its Kafka error code. ``created`` names the
    topics the same request did create (the others of a :func:`create_topics`), which exist
    now and are the caller's to delete."""

    verb = "creating"

    def __init__(
        self, name: str, code: int, message: str | None, created: Iterable[str] = ()
    ) -> None:
        try:
            label = ErrorCode(code).name
        except ValueError:
            label = "error"
        super().__init__(
            f"{self.verb} topic {name!r} failed: {label} ({code})"
            f"{': ' + message if message else ''}"
        )
        self.name = name
        self.code = code
        self.created = list(created)


class TopicDeletionError(TopicCreationError):
    """The broker refused to delete the topic; ``code`` is its Kafka error code."""

    verb = "deleting"


def unique_topic_name(hint: str = "topic") -> str:
    """A legal topic name no other call returns: ``hint`` (a test's id, say, so failures are
    readable) with characters Kafka does not allow replaced by ``-``, and a random suffix. A
    long hint keeps its end, where a test id's most specific part is."""
    suffix = "-" + uuid.uuid4().hex[:12]
    readable = _ILLEGAL.sub("-", hint).strip("-.") or "topic"
    return readable[-(MAX_TOPIC_NAME - len(suffix)) :] + suffix


TopicSpec = int | Mapping[str, object]
"""A topic declared up front: its partition count, or its configs by Kafka name with an optional
``"partitions"`` entry (default 1), e.g. ``{"partitions": 3, "retention.ms": 60000}``."""


def create_topic(
    bootstrap_servers: str,
    name: str,
    partitions: int = 1,
    *,
    configs: Mapping[str, object] | None = None,
    timeout: float = 30.0,
) -> str:
    """Create topic ``name`` with ``partitions`` partitions (replication factor 1) and topic
    ``configs`` (Kafka names) on the first broker of ``bootstrap_servers``; returns ``name``.
    Raises :class:`TopicCreationError` when the broker refuses, e.g. with
    TOPIC_ALREADY_EXISTS."""
    spec = {**(configs or {}), "partitions": partitions}
    create_topics(bootstrap_servers, {name: spec}, timeout=timeout)
    return name


def create_topics(
    bootstrap_servers: str,
    topics: Mapping[str, TopicSpec],
    *,
    exist_ok: bool = False,
    timeout: float = 30.0,
) -> list[str]:
    """Create every topic of ``topics`` (name -> :data:`TopicSpec`) in one CreateTopics
    request; returns the names of those it created. Raises :class:`TopicCreationError` for the
    first refusal (TOPIC_ALREADY_EXISTS is no refusal with ``exist_ok``), with the names of
    those the request created all the same in its ``created``."""
    creatable = []
    for name, spec in topics.items():
        partitions, configs = topic_spec(spec)
        creatable.append(
            m.CreatableTopic(
                name=name,
                num_partitions=partitions,
                replication_factor=1,
                assignments=[],
                configs=[m.CreatableTopicConfig(name=k, value=v) for k, v in configs.items()],
            )
        )
    body = m.CreateTopicsRequest(topics=creatable, timeout_ms=int(timeout * 1000))
    response = _call(bootstrap_servers, ApiKey.CREATE_TOPICS, _CREATE_TOPICS_VERSION, body, timeout)
    assert isinstance(response, m.CreateTopicsResponse)
    created = [r.name for r in response.topics if r.error_code == ErrorCode.NONE]
    for result in response.topics:
        if result.error_code == ErrorCode.NONE:
            continue
        if result.error_code != ErrorCode.TOPIC_ALREADY_EXISTS or not exist_ok:
            raise TopicCreationError(
                result.name, result.error_code, result.error_message, created=created
            )
    return created


def delete_topics(bootstrap_servers: str, names: Iterable[str], *, timeout: float = 30.0) -> None:
    """Delete topics by name in one DeleteTopics request; a topic that does not exist (deleted
    already) is no error. Raises :class:`TopicDeletionError` for any other refusal."""
    names = list(names)
    if not names:
        return
    body = m.DeleteTopicsRequest(topic_names=names, timeout_ms=int(timeout * 1000))
    response = _call(bootstrap_servers, ApiKey.DELETE_TOPICS, _DELETE_TOPICS_VERSION, body, timeout)
    assert isinstance(response, m.DeleteTopicsResponse)
    for result in response.responses:
        if result.error_code not in (ErrorCode.NONE, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION):
            raise TopicDeletionError(result.name or "?", result.error_code, result.error_message)


def topic_spec(spec: TopicSpec) -> tuple[int, dict[str, str]]:
    """A :data:`TopicSpec` as (partitions, configs as strings)."""
    if isinstance(spec, int):
        return spec, {}
    configs = {k: config_value(v) for k, v in spec.items() if k != "partitions"}
    partitions = spec.get("partitions", 1)
    if not isinstance(partitions, int):
        raise TypeError(f"partitions must be an int, not {partitions!r}")
    return partitions, configs


def config_value(value: object) -> str:
    """A setting's value as Kafka's configs carry it: ``True`` is ``"true"``, 60000 is ``"60000"``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _call(
    bootstrap_servers: str, api: ApiKey, version: int, body: RequestBody, timeout: float
) -> ResponseBody:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout is a number of seconds, not {timeout!r}")
    if not math.isfinite(timeout) or timeout <= 0:  # 0 made the socket non-blocking
        raise ValueError(f"timeout is a finite number of seconds above 0, not {timeout!r}")
    frame = encode_request(api, version, 1, "sluice.testing", body)
    try:
        with socket.create_connection(_first_address(bootstrap_servers), timeout=timeout) as sock:
            sock.sendall(frame)
            (size,) = I32.unpack(_receive(sock, 4))
            _, response = decode_response(_receive(sock, size), api, version)
    except TimeoutError:
        raise TimeoutError(
            f"{api.name}: no answer from {bootstrap_servers} within {timeout} s (the broker may "
            "still do what was asked)"
        ) from None
    return response


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
