"""A raw-socket Kafka client for the server tests: frames on a plain blocking socket, every read
bounded by a deadline, and a precise notion of "the broker closed this connection".

Typed requests go through sluice's own codec (``encode_request``/``decode_response``); anything
else (garbage, truncated frames, impossible sizes) goes out with :meth:`WireClient.send_bytes`.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import time
import uuid
from types import TracebackType
from typing import TypeVar

from sluice.protocol import ApiKey, RequestBody, decode_response, encode_request
from sluice.protocol import messages as m
from sluice.protocol.records import build_batch, decode_records, iter_stored_batches
from sluice.testing import EmbeddedBroker

T = TypeVar("T")

DEFAULT_TIMEOUT = 10.0
ZERO_UUID = uuid.UUID(int=0)


I32 = struct.Struct(">i")


def header(api_key: int, version: int, correlation_id: int, client_id: bytes = b"bad") -> bytes:
    """A request header v1 (non-flexible) by hand: key, version, correlation id, client id."""
    return struct.pack(">hhih", api_key, version, correlation_id, len(client_id)) + client_id


def sized(body: bytes) -> bytes:
    """A frame: the body behind its 4-byte size prefix."""
    return I32.pack(len(body)) + body


def connections_settle(broker: EmbeddedBroker, expected: int, timeout: float = 5.0) -> None:
    """Wait until the server holds exactly ``expected`` connections (closed ones unregistered)."""
    server = broker.server
    assert server is not None
    deadline = time.monotonic() + timeout
    while len(server.connections) != expected:
        assert time.monotonic() < deadline, (
            f"{len(server.connections)} connections open, expected {expected}"
        )
        time.sleep(0.01)


class ConnectionClosed(Exception):
    """The broker closed the connection (FIN or RST) before a whole frame arrived."""

    def __init__(self, partial: bytes) -> None:
        super().__init__(f"connection closed by the broker ({len(partial)} bytes of a frame read)")
        self.partial = partial


class WireClient:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str | None = "sluice-server-tests",
        timeout: float = DEFAULT_TIMEOUT,
        source: str | None = None,
    ) -> None:
        """``source``: the local address to connect from (any of 127/8 reaches a broker on
        127.0.0.1, and is a different peer address to it)."""
        self.sock = socket.create_connection(
            (host, port), timeout=timeout, source_address=None if source is None else (source, 0)
        )
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.client_id = client_id
        self.timeout = timeout
        self._buf = bytearray()
        self._eof = False
        self._next_id = 1

    @classmethod
    def to(
        cls,
        broker: EmbeddedBroker,
        *,
        client_id: str | None = "sluice-server-tests",
        timeout: float = DEFAULT_TIMEOUT,
        source: str | None = None,
    ) -> WireClient:
        return cls("127.0.0.1", broker.port, client_id=client_id, timeout=timeout, source=source)

    # -- sending -----------------------------------------------------------------------------------

    def next_id(self) -> int:
        cid = self._next_id
        self._next_id += 1
        return cid

    def frame(
        self, api_key: int, version: int, body: RequestBody, correlation_id: int | None = None
    ) -> tuple[int, bytes]:
        """Encode a request frame (size prefix included) without sending it."""
        cid = self.next_id() if correlation_id is None else correlation_id
        return cid, bytes(encode_request(api_key, version, cid, self.client_id, body))

    def send_bytes(self, data: bytes | bytearray | memoryview) -> None:
        self.sock.sendall(data)

    def send(self, api_key: int, version: int, body: RequestBody) -> int:
        cid, data = self.frame(api_key, version, body)
        self.sock.sendall(data)
        return cid

    # -- receiving -------------------------------------------------------------------------------

    def _fill(self, need: int, deadline: float) -> None:
        while len(self._buf) < need:
            if self._eof:
                raise ConnectionClosed(bytes(self._buf))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"no complete frame within the deadline ({len(self._buf)} bytes buffered)"
                )
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(1 << 20)
            except TimeoutError:
                continue  # the loop re-checks the deadline
            except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
                chunk = b""
            if not chunk:
                self._eof = True
            self._buf += chunk

    def recv_frame(self, timeout: float | None = None) -> bytes:
        """One response frame without its size prefix. Raises ConnectionClosed or TimeoutError."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        self._fill(4, deadline)
        (size,) = struct.unpack_from(">i", self._buf)
        assert size >= 4, f"the broker sent a frame of size {size}"
        self._fill(4 + size, deadline)
        frame = bytes(self._buf[4 : 4 + size])
        del self._buf[: 4 + size]
        return frame

    def recv(
        self,
        api_key: int,
        version: int,
        correlation_id: int,
        response_type: type[T],
        timeout: float | None = None,
    ) -> T:
        cid, body = decode_response(self.recv_frame(timeout), api_key, version)
        assert cid == correlation_id, f"correlation id {cid}, expected {correlation_id}"
        assert isinstance(body, response_type), type(body)
        return body

    def call(
        self,
        api_key: int,
        version: int,
        body: RequestBody,
        response_type: type[T],
        timeout: float | None = None,
    ) -> T:
        cid = self.send(api_key, version, body)
        return self.recv(api_key, version, cid, response_type, timeout)

    def wait_closed(self, timeout: float = 5.0) -> bytes:
        """Read until the broker closes the connection; returns what arrived before the close.
        Fails if the connection is still open at the deadline."""
        deadline = time.monotonic() + timeout
        try:
            self._fill(1 << 62, deadline)  # more than ever arrives: read to EOF
        except ConnectionClosed as closed:
            data = closed.partial
            self._buf.clear()
            return data
        except TimeoutError:
            raise AssertionError(
                f"the broker did not close the connection within {timeout}s"
            ) from None
        raise AssertionError("unreachable")

    def is_quiet(self) -> bool:
        """True if the connection is open and nothing has arrived (checked without blocking)."""
        if self._buf or self._eof:
            return False
        self.sock.setblocking(False)
        try:
            self.sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return True
        except (ConnectionResetError, ConnectionAbortedError):
            return False
        finally:
            self.sock.settimeout(self.timeout)
        return False  # data arrived, or b"": the broker closed

    # -- lifecycle -------------------------------------------------------------------------------

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> WireClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# -- typed requests ------------------------------------------------------------------------------


def api_versions(client: WireClient, version: int = 3) -> m.ApiVersionsResponse:
    body = m.ApiVersionsRequest(client_software_name="sluice-tests", client_software_version="1.0")
    return client.call(ApiKey.API_VERSIONS, version, body, m.ApiVersionsResponse)


def metadata_request(topics: list[str] | None, *, auto_create: bool = True) -> m.MetadataRequest:
    return m.MetadataRequest(
        topics=None
        if topics is None
        else [m.MetadataRequestTopic(topic_id=ZERO_UUID, name=t) for t in topics],
        allow_auto_topic_creation=auto_create,
    )


def metadata(
    client: WireClient, topics: list[str] | None, *, auto_create: bool = True, version: int = 12
) -> m.MetadataResponse:
    return client.call(
        ApiKey.METADATA,
        version,
        metadata_request(topics, auto_create=auto_create),
        m.MetadataResponse,
    )


def create_topics_request(names: list[str], partitions: int = 1) -> m.CreateTopicsRequest:
    return m.CreateTopicsRequest(
        topics=[
            m.CreatableTopic(name=n, num_partitions=partitions, replication_factor=1) for n in names
        ],
        timeout_ms=10_000,
    )


def create_topics(client: WireClient, names: list[str], partitions: int = 1) -> dict[str, int]:
    """Error code per topic name, in request order."""
    resp = client.call(
        ApiKey.CREATE_TOPICS, 7, create_topics_request(names, partitions), m.CreateTopicsResponse
    )
    return {t.name: t.error_code for t in resp.topics}


def create_topic(client: WireClient, name: str, partitions: int = 1) -> None:
    assert create_topics(client, [name], partitions) == {name: 0}


def produce_request(
    topic: str, partition: int, records: bytes | None, *, acks: int = 1
) -> m.ProduceRequest:
    return m.ProduceRequest(
        acks=acks,
        timeout_ms=10_000,
        topic_data=[
            m.ProduceTopicData(
                name=topic,
                partition_data=[
                    m.ProducePartitionData(
                        index=partition, records=None if records is None else bytearray(records)
                    )
                ],
            )
        ],
    )


def produce(
    client: WireClient,
    topic: str,
    partition: int,
    records: bytes | None,
    *,
    acks: int = 1,
    version: int = 9,
) -> m.ProducePartitionResponse:
    resp = client.call(
        ApiKey.PRODUCE,
        version,
        produce_request(topic, partition, records, acks=acks),
        m.ProduceResponse,
    )
    assert [t.name for t in resp.responses] == [topic]
    (part,) = resp.responses[0].partition_responses
    assert part.index == partition
    return part


def fetch_request(
    topic: str,
    partition: int,
    offset: int,
    *,
    max_wait_ms: int = 0,
    min_bytes: int = 1,
    max_bytes: int = 1 << 20,
) -> m.FetchRequest:
    return m.FetchRequest(
        max_wait_ms=max_wait_ms,
        min_bytes=min_bytes,
        max_bytes=max_bytes,
        topics=[
            m.FetchTopic(
                topic=topic,
                partitions=[
                    m.FetchPartition(
                        partition=partition, fetch_offset=offset, partition_max_bytes=max_bytes
                    )
                ],
            )
        ],
    )


def fetch_partition(resp: m.FetchResponse, topic: str, partition: int) -> m.FetchPartitionData:
    assert resp.error_code == 0
    assert [t.topic for t in resp.responses] == [topic]
    (part,) = resp.responses[0].partitions
    assert part.partition_index == partition
    return part


def fetch(
    client: WireClient,
    topic: str,
    partition: int,
    offset: int,
    *,
    max_wait_ms: int = 0,
    version: int = 12,
) -> m.FetchPartitionData:
    resp = client.call(
        ApiKey.FETCH,
        version,
        fetch_request(topic, partition, offset, max_wait_ms=max_wait_ms),
        m.FetchResponse,
    )
    return fetch_partition(resp, topic, partition)


def list_offsets_request(topic: str, partition: int, timestamp: int) -> m.ListOffsetsRequest:
    return m.ListOffsetsRequest(
        replica_id=-1,
        topics=[
            m.ListOffsetsTopic(
                name=topic,
                partitions=[m.ListOffsetsPartition(partition_index=partition, timestamp=timestamp)],
            )
        ],
    )


def list_offset(
    client: WireClient, topic: str, partition: int, timestamp: int = -1
) -> tuple[int, int]:
    """(error code, offset); timestamp -1 is the latest offset, -2 the earliest."""
    resp = client.call(
        ApiKey.LIST_OFFSETS,
        7,
        list_offsets_request(topic, partition, timestamp),
        m.ListOffsetsResponse,
    )
    (part,) = resp.topics[0].partitions
    return part.error_code, part.offset


# -- records ---------------------------------------------------------------------------------------


def batch(values: list[bytes], *, key: bytes | None = None) -> bytes:
    return build_batch([(key, v) for v in values], base_timestamp=int(time.time() * 1000))


def records_bytes(records: object) -> bytes:
    """A fetch answer's record set as bytes (None, for an error answer, as empty)."""
    if records is None:
        return b""
    assert isinstance(records, bytes | bytearray | memoryview), type(records)
    return bytes(records)


def record_values(records: object) -> list[bytes | None]:
    """Values of every whole batch in a fetch answer's record set (a partial tail is dropped)."""
    if records is None:
        return []
    assert isinstance(records, bytes | bytearray | memoryview), type(records)
    data = bytes(records)
    out: list[bytes | None] = []
    for h in iter_stored_batches(data):
        out.extend(r.value for r in decode_records(data[h.position : h.position + h.size]))
    return out


def record_offsets(records: object) -> list[int]:
    assert isinstance(records, bytes | bytearray | memoryview), type(records)
    data = bytes(records)
    out: list[int] = []
    for h in iter_stored_batches(data):
        out.extend(range(h.base_offset, h.next_offset))
    return out


def fetch_all_values(client: WireClient, topic: str, partition: int = 0) -> list[bytes | None]:
    """Every value from offset 0 to the high watermark, over as many fetches as it takes."""
    out: list[bytes | None] = []
    offset = 0
    while True:
        part = fetch(client, topic, partition, offset)
        assert part.error_code == 0, part.error_code
        if offset >= part.high_watermark:
            return out
        offsets = record_offsets(part.records)
        assert offsets and offsets[0] <= offset, (offset, offsets[:3])
        values = record_values(part.records)
        skip = offset - offsets[0]
        out.extend(values[skip:])
        offset = offsets[len(values) - 1] + 1


# -- the bystander ---------------------------------------------------------------------------------


class Witness:
    """A well-behaved client working alongside the misbehaving ones: it owns a topic, keeps one
    connection open the whole time, and :meth:`check` proves that connection still works and
    every record it ever wrote is intact and in order."""

    def __init__(self, broker: EmbeddedBroker, topic: str = "witness") -> None:
        self.broker = broker
        self.topic = topic
        self.client = WireClient.to(broker, client_id="witness")
        self.written: list[bytes | None] = []
        self.rounds = 0
        create_topic(self.client, topic)
        self.write()

    def write(self) -> None:
        values = [f"{self.topic}-{self.rounds}-{i}".encode() for i in range(3)]
        part = produce(self.client, self.topic, 0, batch(values))
        assert part.error_code == 0, part.error_message
        assert part.base_offset == len(self.written)
        self.written.extend(values)
        self.rounds += 1

    def check(self) -> None:
        """The witness's own connection still works, so does a new one, and its data is intact."""
        self.write()
        assert fetch_all_values(self.client, self.topic) == self.written
        assert list_offset(self.client, self.topic, 0) == (0, len(self.written))
        with WireClient.to(self.broker, client_id="witness-new") as fresh:
            assert api_versions(fresh).error_code == 0
            assert fetch_all_values(fresh, self.topic) == self.written

    def close(self) -> None:
        self.client.close()
