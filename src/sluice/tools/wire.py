"""A small blocking Kafka client on sluice's own codec, for the tools whose APIs librdkafka does
not expose (ListTransactions, DescribeTransactions; InitProducerId to fence a transactional
id). Plaintext only: it speaks to sluice or to any Kafka-compatible broker without SASL or TLS.

It connects to the first bootstrap server that answers, learns the brokers (Metadata) and the
versions each serves (ApiVersions), and finds coordinators (FindCoordinator) itself.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar

from sluice.errors import ErrorCode
from sluice.hostport import host_port
from sluice.protocol import ApiKey, RequestBody, encode_request
from sluice.protocol import messages as m
from sluice.roundtrip import round_trip
from sluice.tools.common import ToolError, bootstrap_entries

T = TypeVar("T")

CLIENT_ID = "sluice-tools"


@dataclass(frozen=True, slots=True)
class Node:
    node_id: int
    host: str
    port: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


class Connection:
    """One broker connection: requests answered in order, each within ``timeout`` seconds
    (the whole answer, not each read of it)."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.address = host_port(host, port)
        self.timeout = timeout
        try:
            self._sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise ToolError(f"cannot reach {self.address}: {exc.strerror or exc}") from exc
        self._correlation = 0
        self._versions: dict[int, tuple[int, int]] | None = None

    def call(self, api: ApiKey, version: int, body: RequestBody, expect: type[T]) -> T:
        self._correlation += 1
        frame = encode_request(api, version, self._correlation, CLIENT_ID, body)
        try:
            response = round_trip(
                self._sock, frame, api, version, self._correlation, time.monotonic() + self.timeout
            )
        except OSError as exc:
            raise ToolError(f"{api.name} to {self.address} failed: {exc.strerror or exc}") from exc
        if not isinstance(response, expect):
            raise ToolError(f"{api.name} to {self.address}: an answer that does not match")
        return response

    def version(self, api: ApiKey, ours: tuple[int, int]) -> int:
        """The highest version of ``api`` both sides speak (ApiVersions, asked once)."""
        if self._versions is None:
            answer = self.call(
                ApiKey.API_VERSIONS, 0, m.ApiVersionsRequest(), m.ApiVersionsResponse
            )
            self._versions = {a.api_key: (a.min_version, a.max_version) for a in answer.api_keys}
        theirs = self._versions.get(api)
        if theirs is None or theirs[1] < ours[0] or theirs[0] > ours[1]:
            raise ToolError(
                f"{self.address} does not serve {api.name} (versions {ours[0]}-{ours[1]})"
            )
        return min(ours[1], theirs[1])

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Cluster:
    """The brokers behind ``bootstrap`` (comma-separated HOST:PORT), with a connection to each
    opened when first needed."""

    def __init__(self, bootstrap: str, timeout: float) -> None:
        self.timeout = timeout
        self._connections: dict[int, Connection] = {}
        errors = []
        for host, port in bootstrap_entries(bootstrap):
            try:
                first = Connection(host, port, timeout)
            except ToolError as exc:
                errors.append(str(exc))
                continue
            with first:
                answer = first.call(
                    ApiKey.METADATA, 1, m.MetadataRequest(topics=[]), m.MetadataResponse
                )
            self.nodes = {b.node_id: Node(b.node_id, b.host, b.port) for b in answer.brokers}
            return
        raise ToolError("; ".join(errors) or f"no bootstrap server in {bootstrap!r}")

    def connection(self, node_id: int) -> Connection:
        if node_id not in self._connections:
            node = self.nodes.get(node_id)
            if node is None:
                raise ToolError(f"no broker with id {node_id}")
            self._connections[node_id] = Connection(node.host, node.port, self.timeout)
        return self._connections[node_id]

    def transaction_coordinator(self, transactional_id: str) -> int:
        """FindCoordinator (key type 1) for ``transactional_id``, retried while the cluster says
        it is loading or moving, within the timeout."""
        deadline = time.monotonic() + self.timeout
        node_id = next(iter(sorted(self.nodes)))
        while True:
            conn = self.connection(node_id)
            answer = conn.call(
                ApiKey.FIND_COORDINATOR,
                conn.version(ApiKey.FIND_COORDINATOR, (1, 3)),
                m.FindCoordinatorRequest(key=transactional_id, key_type=1),
                m.FindCoordinatorResponse,
            )
            if answer.error_code == 0:
                if answer.node_id not in self.nodes:
                    self.nodes[answer.node_id] = Node(answer.node_id, answer.host, answer.port)
                return int(answer.node_id)
            if time.monotonic() > deadline:
                raise ToolError(
                    f"no transaction coordinator for {transactional_id!r}: "
                    f"{error_name(answer.error_code)}"
                )
            time.sleep(0.1)

    def close(self) -> None:
        for conn in self._connections.values():
            conn.close()
        self._connections.clear()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def error_name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return f"error {code}"
