"""One Kafka request and its answer on a blocking socket, through sluice's own codec: the
exchange the tools (:mod:`sluice.tools.wire`), the testing kit (:mod:`sluice.testing.topics`)
and the tests' bare clients share, for requests no client library sends for them.

Everything happens before one deadline: a socket's timeout is per ``recv``, so a peer that
sends a byte now and then (a slow or hostile one) would hold the call far beyond it. What is
not a Kafka answer (a size no answer has, a correlation id that is not the request's, a body
that does not decode) is a ``ConnectionError`` naming the API and the peer.
"""

from __future__ import annotations

import socket
import time

from sluice.hostport import host_port
from sluice.protocol import ApiKey, ProtocolError, ResponseBody, decode_response
from sluice.protocol.primitives import I32

MAX_ANSWER = 64 * 1024 * 1024
"""Far above any answer these callers ask for: a size beyond it is no Kafka frame (an HTTP
server's ``HTTP`` reads as 1.2 GB, which was awaited until the timeout)."""


def left(deadline: float) -> float:
    """Seconds left before ``deadline`` (``time.monotonic``); TimeoutError when none are."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("timed out")
    return remaining


def round_trip(
    sock: socket.socket,
    frame: bytes | bytearray,
    api: ApiKey,
    version: int,
    correlation_id: int,
    deadline: float,
) -> ResponseBody:
    """Send ``frame`` (``encode_request``'s, size prefix included) and read its answer, all
    before ``deadline``: TimeoutError when it passes, ConnectionError when the peer closes the
    connection or answers with something else than this request's answer."""
    peer = host_port(*sock.getpeername()[:2])
    sock.settimeout(left(deadline))  # sendall's timeout is for the whole send
    sock.sendall(frame)
    head = _receive(sock, 4, deadline, api, peer)
    (size,) = I32.unpack(head)
    if not 4 <= size <= MAX_ANSWER:
        raise ConnectionError(
            f"{api.name}: {peer} does not answer as a Kafka broker does (its answer "
            f"begins {head!r}, which is no frame size)"
        )
    answer = _receive(sock, size, deadline, api, peer)
    (answered,) = I32.unpack_from(answer)
    if answered != correlation_id:
        raise ConnectionError(
            f"{api.name}: {peer} answered request {correlation_id} as request {answered}"
        )
    try:
        _, response = decode_response(answer, api, version)
    except ProtocolError as exc:
        raise ConnectionError(
            f"{api.name}: {peer} answered with something that is not a {api.name} "
            f"v{version} response ({exc})"
        ) from None
    return response


def _receive(sock: socket.socket, n: int, deadline: float, api: ApiKey, peer: str) -> bytes:
    data = bytearray()
    while len(data) < n:
        sock.settimeout(left(deadline))
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError(
                f"{api.name}: {peer} closed the connection after {len(data)} of {n} bytes of "
                "its answer (the broker may still do what was asked)"
            )
        data += chunk
    return bytes(data)
