"""``host:port`` text as Kafka clients read it, for addresses and log lines alike."""

from __future__ import annotations

DEFAULT_PORT = 9092
"""Kafka's port, which librdkafka gives a bootstrap entry without one."""


def host_port(host: str, port: int) -> str:
    """``host:port``, an IPv6 address in brackets (``[::1]:9092``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bootstrap_addresses(servers: str) -> list[tuple[str, int]]:
    """A comma-separated bootstrap list as (host, port) pairs, read as librdkafka reads it: a
    ``PLAINTEXT://`` prefix, ``[v6]:port``, a bare host or IPv6 address on port 9092. So what
    speaks the protocol itself (the testing kit's topic helpers, ``sluice transactions``)
    connects where a librdkafka client given the same string does; empty entries are skipped,
    as librdkafka skips them (``"k1:9092,"``). ValueError, naming the entry, for what
    librdkafka would only time out on: no address at all, a port that is not 1..65535
    (``127.0.0.1:99999``; the socket layer would wrap it to another port), more than one colon
    outside brackets that is no IPv6 address."""
    entries = []
    for entry in servers.split(","):
        if not entry.strip():
            continue
        address = entry.strip().rpartition("://")[2]
        if not address:
            raise ValueError(f"no address after the protocol: {entry!r}")
        port: str | None
        if address.startswith("["):  # [v6]:port
            host, _, rest = address[1:].partition("]")
            port = rest.removeprefix(":") if rest.startswith(":") else None
        elif address.count(":") == 1:
            host, _, port = address.partition(":")
        elif ":" in address:  # bare IPv6, on the default port
            import ipaddress  # only here: not on an embedded broker's start path

            try:
                ipaddress.IPv6Address(address)
            except ValueError:
                raise ValueError(
                    f"not HOST:PORT (an IPv6 address with a port goes in brackets: "
                    f"[::1]:9092): {entry!r}"
                ) from None
            host, port = address, None
        else:  # a host name, on the default port
            host, port = address, None
        if not host or (port is not None and not (port.isdigit() and 1 <= int(port) <= 65535)):
            raise ValueError(f"not HOST:PORT with a port of 1-65535: {entry!r}")
        entries.append((host, DEFAULT_PORT if port is None else int(port)))
    if not entries:
        raise ValueError(f"no broker address in {servers!r}")
    return entries
