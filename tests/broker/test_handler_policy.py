"""What the broker serves and how it fails, over the wire: ApiVersions lists exactly the APIs
with a registered handler, each answered at every advertised version; and a handler that fails
unexpectedly (a bug) closes that one connection, whatever the API, with the failure logged,
while other connections go on."""

from __future__ import annotations

import logging

import pytest

from sluice.broker import broker as broker_module
from sluice.protocol import ApiKey, RequestBody
from sluice.protocol import messages as m
from sluice.protocol.api_versions import SUPPORTED
from sluice.testing import EmbeddedBroker
from tests.server.wire import ConnectionClosed, WireClient, api_versions, metadata


def test_advertised_is_what_has_handlers(sluice_fresh_broker: EmbeddedBroker) -> None:
    with WireClient.to(sluice_fresh_broker) as client:
        listed = {k.api_key: (k.min_version, k.max_version) for k in api_versions(client).api_keys}
    assert listed == {api: (r.min_version, r.max_version) for api, r in broker_module.HANDLERS.items()}
    # the codec decodes more than is served: those are never advertised
    assert ApiKey.SASL_HANDSHAKE in SUPPORTED and ApiKey.SASL_HANDSHAKE not in listed
    assert ApiKey.INIT_PRODUCER_ID in listed


def test_a_decodable_but_unserved_api_closes_the_connection(sluice_fresh_broker: EmbeddedBroker) -> None:
    with WireClient.to(sluice_fresh_broker) as client:
        client.send(ApiKey.SASL_HANDSHAKE, 1, m.SaslHandshakeRequest(mechanism="PLAIN"))
        assert client.wait_closed() == b""


@pytest.mark.parametrize("api", [ApiKey.METADATA, ApiKey.JOIN_GROUP, ApiKey.DESCRIBE_CONFIGS])
def test_a_failing_handler_closes_only_its_connection(
    sluice_fresh_broker: EmbeddedBroker,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    api: ApiKey,
) -> None:
    """The same policy for every API family (plain handlers and the group coordinator's)."""

    async def broken(*_args: object) -> None:
        raise RuntimeError("simulated bug")

    registration = broker_module.HANDLERS[api]
    monkeypatch.setitem(broker_module.HANDLERS, api, broker_module.Registration(broken, registration.min_version, registration.max_version))
    bodies: dict[ApiKey, RequestBody] = {
        ApiKey.METADATA: m.MetadataRequest(topics=[]),
        ApiKey.JOIN_GROUP: m.JoinGroupRequest(group_id="g", session_timeout_ms=10_000, member_id="", protocol_type="consumer", protocols=[]),
        ApiKey.DESCRIBE_CONFIGS: m.DescribeConfigsRequest(resources=[]),
    }
    caplog.set_level(logging.ERROR, logger="sluice.broker.broker")
    with WireClient.to(sluice_fresh_broker) as bystander, WireClient.to(sluice_fresh_broker) as victim:
        assert api_versions(bystander).error_code == 0
        victim.send(api, registration.max_version, bodies[api])
        with pytest.raises(ConnectionClosed):
            victim.recv_frame()
        monkeypatch.undo()
        assert metadata(bystander, None).topics == []  # the other connection is untouched
    failures = [r for r in caplog.records if "failed; closing that connection" in r.getMessage()]
    assert len(failures) == 1 and failures[0].exc_info is not None
