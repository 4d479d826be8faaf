"""Topics for tests: a name no other test uses, and a topic created on any Kafka-compatible
broker before the test's clients start.

Tests that share one broker (a session-wide one is much faster than a broker per test) keep
apart by topic name. :func:`create_topic` speaks CreateTopics itself, through sluice's codec over
a plain socket, so it needs no client library and works against sluice or Apache Kafka alike.
"""

from __future__ import annotations

import enum
import math
import re
import socket
import time
import uuid
from collections.abc import Iterable, Mapping

from sluice.errors import ErrorCode
from sluice.hostport import bootstrap_addresses, host_port
from sluice.protocol import ApiKey, RequestBody, ResponseBody, encode_request
from sluice.protocol import messages as m
from sluice.roundtrip import round_trip

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
    """The broker refused to delete the topic; ``code`` is its Kafka error code
    (UNKNOWN_TOPIC_OR_PARTITION for one that does not exist). ``deleted`` names the topics the
    same request did delete."""

    verb = "deleting"

    def __init__(
        self, name: str, code: int, message: str | None, deleted: Iterable[str] = ()
    ) -> None:
        super().__init__(name, code, message)
        self.deleted = list(deleted)


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
    ``configs`` (Kafka names) through the first broker of ``bootstrap_servers`` that takes a
    connection (each is tried in turn); returns ``name``.
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


def delete_topics(
    bootstrap_servers: str,
    names: Iterable[str],
    *,
    missing_ok: bool = False,
    timeout: float = 30.0,
) -> list[str]:
    """Delete topics by name in one DeleteTopics request; returns the names of those it
    deleted. Raises :class:`TopicDeletionError` for the first refusal, as Kafka's admin
    clients do: UNKNOWN_TOPIC_OR_PARTITION for a topic that does not exist, unless
    ``missing_ok`` (cleanup code, where a test may have deleted it itself), with the names of
    those the request deleted all the same in its ``deleted``."""
    names = list(dict.fromkeys(topic_names(names)))  # once each: twice read as missing
    if not names:
        return []
    body = m.DeleteTopicsRequest(topic_names=names, timeout_ms=int(timeout * 1000))
    response = _call(bootstrap_servers, ApiKey.DELETE_TOPICS, _DELETE_TOPICS_VERSION, body, timeout)
    assert isinstance(response, m.DeleteTopicsResponse)
    deleted = [r.name or "?" for r in response.responses if r.error_code == ErrorCode.NONE]
    for result in response.responses:
        if result.error_code == ErrorCode.NONE:
            continue
        if result.error_code != ErrorCode.UNKNOWN_TOPIC_OR_PARTITION or not missing_ok:
            raise TopicDeletionError(
                result.name or "?", result.error_code, result.error_message, deleted=deleted
            )
    return deleted


def topic_names(names: Iterable[str]) -> list[str]:
    """``names`` as a list, each a str. A str itself is refused: iterated, ``"ab"`` named
    topics ``a`` and ``b``, and a delete removed topic ``a``."""
    if isinstance(names, str | bytes):
        raise TypeError(f"topic names are an iterable of str, not the str {names!r}: give [{names!r}]")
    listed = list(names)
    for name in listed:
        if not isinstance(name, str):
            raise TypeError(f"a topic name is a str, not {name!r}")
    return listed


def topic_spec(spec: TopicSpec) -> tuple[int, dict[str, str]]:
    """A :data:`TopicSpec` as (partitions, configs as strings)."""
    if isinstance(spec, int) and not isinstance(spec, bool):
        return spec, {}
    if not isinstance(spec, Mapping):  # True was a topic of 1 partition
        raise TypeError(f"a topic is a partition count or a mapping of configs, not {spec!r}")
    configs = {k: config_value(v, k, key=k) for k, v in spec.items() if k != "partitions"}
    partitions = spec.get("partitions", 1)
    if isinstance(partitions, bool) or not isinstance(partitions, int):
        raise TypeError(f"partitions must be an int, not {partitions!r}")
    return partitions, configs


def config_value(value: object, name: object = "a setting", *, key: str | None = None) -> str:
    """A setting's value as Kafka's configs carry it: ``True`` is ``"true"``, 60000 is
    ``"60000"``, an Enum member is its value, a list or tuple is Kafka's comma-separated list
    (``["compact", "delete"]`` is ``"compact,delete"``) for a list setting. What has no such
    string is refused naming the setting (``name``), rather than sent as Python's repr (which
    a free-form setting took as its value): None (leave the setting out), bytes, a mapping, a
    set (no order), a list for a setting ``key`` sluice knows is no list, a nested list, and a
    list item with a comma in it."""
    from sluice.errors import InvalidConfigError

    if isinstance(value, enum.Enum):  # str() of a (str, Enum) member is 'Class.MEMBER'
        value = value.value
    if value is None:
        raise InvalidConfigError(
            f"{name}: None is no value; leave the setting out to keep its default"
        )
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple):
        if key is not None and not _takes_list(key):
            raise InvalidConfigError(f"{name}: {value!r} is a list; the setting takes one value")
        items = []
        for item in value:
            if isinstance(item, list | tuple | set | frozenset | Mapping):
                raise InvalidConfigError(
                    f"{name}: a list setting's items are single values, not {item!r}"
                )
            text = config_value(item, name)
            if "," in text:
                raise InvalidConfigError(
                    f"{name}: the list item {text!r} has a comma, which Kafka's lists "
                    "separate items with"
                )
            items.append(text)
        return ",".join(items)
    if isinstance(value, bytes | bytearray | memoryview | Mapping | set | frozenset):
        kind = "a set has no order; give a list" if isinstance(value, set | frozenset) else (
            "decode bytes first" if not isinstance(value, Mapping) else "a setting has one value"
        )
        raise InvalidConfigError(f"{name}: {value!r} is no config value ({kind})")
    return str(value)


def broker_settings(
    settings: Mapping[str, object] | None, owner: str, own: Mapping[str, str]
) -> dict[str, str]:
    """Broker ``settings`` by Kafka name as Kafka's strings (:func:`config_value`), refusing
    those ``owner`` (EmbeddedBroker, BrokerProcess) sets from its own arguments: ``own`` maps
    each such name to what to give instead (else they would be overridden without a word)."""
    from sluice.errors import InvalidConfigError

    given = {k: config_value(v, k, key=k) for k, v in (settings or {}).items()}
    for name, instead in own.items():
        if name in given:
            raise InvalidConfigError(f"{name}: {owner} sets it itself; give {instead} instead")
    return given


def _takes_list(key: str) -> bool:
    """Whether setting ``key`` is one of Kafka's lists, or one sluice does not know (another
    broker's, which may be). The types are DescribeConfigs' (a broker-wide default such as
    ``log.cleanup.policy`` has its topic setting's)."""
    from sluice.config import ConfigType, describe

    return describe(key)[0] in (ConfigType.LIST, ConfigType.UNKNOWN)


def _call(
    bootstrap_servers: str, api: ApiKey, version: int, body: RequestBody, timeout: float
) -> ResponseBody:
    """Send one request to the first broker of ``bootstrap_servers`` that takes a connection
    (trying each in turn, as clients do) and return its answer. Only a failed connect moves on
    to the next address: once a request is sent it may take effect, so it is never sent twice."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout is a number of seconds, not {timeout!r}")
    if not math.isfinite(timeout) or timeout <= 0:  # 0 made the socket non-blocking
        raise ValueError(f"timeout is a finite number of seconds above 0, not {timeout!r}")
    frame = encode_request(api, version, 1, "sluice.testing", body)
    deadline = time.monotonic() + timeout
    sock = _connect(bootstrap_servers, api, deadline)
    peer = host_port(*sock.getpeername()[:2])
    try:
        with sock:
            response = round_trip(sock, frame, api, version, 1, deadline)
    except TimeoutError:
        raise TimeoutError(
            f"{api.name}: no answer from {peer} within {timeout} s (the broker may "
            "still do what was asked)"
        ) from None
    return response


def _connect(bootstrap_servers: str, api: ApiKey, deadline: float) -> socket.socket:
    """A connection to the first address of ``bootstrap_servers`` that takes one before
    ``deadline``; each attempt gets an even share of the time left, so one address that
    never answers does not use it all. ConnectionError naming every address and why, when
    none does."""
    addresses = bootstrap_addresses(bootstrap_servers)
    failures = []
    for i, (host, port) in enumerate(addresses):
        share = (deadline - time.monotonic()) / (len(addresses) - i)
        try:
            return socket.create_connection((host, port), timeout=max(share, 0.001))
        except OSError as exc:  # refused, unreachable, unresolvable, timed out
            failures.append(f"{host_port(host, port)} ({exc or type(exc).__name__})")
    raise ConnectionError(
        f"{api.name}: no broker of {bootstrap_servers!r} took a connection: " + "; ".join(failures)
    )
