"""Crash tests: ``sluice serve`` as a child process, killed the hard way."""

from confluent_kafka import Producer

from sluice.testing import ExternalCluster


def test_an_acknowledged_record_survives_a_crash(sluice_process):
    cluster = ExternalCluster(sluice_process.bootstrap_servers)  # the helpers, on the child
    topic = cluster.create_topic()
    producer = Producer({"bootstrap.servers": sluice_process.bootstrap_servers, "acks": "all"})
    producer.produce(topic, b"acknowledged")
    assert producer.flush(10) == 0
    sluice_process.kill()  # SIGKILL: no shutdown at all
    sluice_process.start()  # the same port and data
    assert [r.value for r in cluster.consume_all(topic)] == [b"acknowledged"]
