"""pytest plugin, registered by sluice's ``pytest11`` entry point: real-broker fixtures.

- ``sluice_broker``: one :class:`~sluice.testing.EmbeddedBroker` for the whole session (per
  pytest-xdist worker), started when a test first asks for it. Each test gets it healthy: the
  faults the previous test scripted are cleared, a broker it stopped is started again, and the
  topics it created through the helpers are deleted.
- ``sluice_fresh_broker``: a broker of its own for one test, with its data in ``tmp_path``
  (restart it, inspect its files, count its connections).
- ``sluice_topic``: a new topic on ``sluice_broker`` (on ``sluice_fresh_broker`` in a test
  that uses that one instead), uniquely named after the test; one
  partition, or as ``@pytest.mark.sluice_topic(partitions=3, configs={...})`` or an indirect
  parameter (``3``, or ``{"partitions": 3, "retention.ms": 60000}``) says.
- ``sluice_process``: ``sluice serve`` as a child process, to SIGKILL and start again.
- ``sluice_settings``: the broker settings (Kafka names) both brokers start with; override it
  (session scope) in a conftest.py, or in a test module or class (function or module scope):
  ``sluice_broker`` is then a session broker for those settings, shared by the tests that
  have them.
- ``sluice_session_broker``: the session's broker for session-scoped fixtures of your own.

``--kafka-bootstrap HOST:PORT`` (or the ``SLUICE_KAFKA_BOOTSTRAP`` environment variable) runs
the same tests against a cluster sluice does not start (Apache Kafka, Redpanda, a ``sluice
serve`` elsewhere): ``sluice_broker`` and ``sluice_fresh_broker`` are then an
:class:`~sluice.testing.ExternalCluster`, topics are still unique per test and deleted after it,
and what only an embedded broker has (faults, restarts, its data directory, ``sluice_process``)
skips the test.

Nothing of the broker is imported until a test uses a fixture, so the plugin costs nothing in
a pytest run that does not.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

if TYPE_CHECKING:
    from sluice.testing.cluster import Cluster, ExternalCluster
    from sluice.testing.embedded import EmbeddedBroker
    from sluice.testing.process import BrokerProcess

BOOTSTRAP_ENV = "SLUICE_KAFKA_BOOTSTRAP"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sluice", "sluice: Kafka fixtures")
    group.addoption(
        "--kafka-bootstrap",
        metavar="HOST:PORT",
        default=None,
        help=(
            "run the sluice fixtures against this Kafka cluster instead of an embedded sluice "
            f"broker (also ${BOOTSTRAP_ENV})"
        ),
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "sluice_topic(partitions=1, configs=None): the sluice_topic fixture's partitions and "
        "topic configs (Kafka names)",
    )
    _check_bootstrap(config)


def _check_bootstrap(config: pytest.Config) -> None:
    """A usage error at once for a ``--kafka-bootstrap`` that names no cluster: given empty (an
    unset ``$VAR`` in CI) it ran every test against an embedded sluice broker instead, passing
    for the wrong target; ``h:99999`` or ``,`` failed each test later on its connection."""
    option: str | None = config.getoption("kafka_bootstrap", None)
    if option is not None and not option.strip():
        raise pytest.UsageError(
            "--kafka-bootstrap is empty: give HOST:PORT of the cluster, or leave the option out "
            "to run against an embedded sluice broker"
        )
    bootstrap = external_bootstrap(config)
    if bootstrap is None:
        return
    from sluice.hostport import bootstrap_addresses

    try:
        bootstrap_addresses(bootstrap)
    except ValueError as exc:
        source = "--kafka-bootstrap" if option else f"${BOOTSTRAP_ENV}"
        raise pytest.UsageError(f"{source}: {exc}") from None


def external_bootstrap(config: pytest.Config) -> str | None:
    """The cluster named by ``--kafka-bootstrap`` or $SLUICE_KAFKA_BOOTSTRAP, if any."""
    option: str | None = config.getoption("kafka_bootstrap", None)
    return option or os.environ.get(BOOTSTRAP_ENV) or None


def _external_cluster(bootstrap: str) -> ExternalCluster:
    """The cluster at ``bootstrap``, where what only an embedded broker has skips the test
    (the plain class raises NotSupportedHere for the same members)."""
    from sluice.testing.cluster import ExternalCluster

    class Skipping(ExternalCluster):
        def _not_here(self, what_needs: str) -> NoReturn:
            skip = pytest.skip.Exception(f"{what_needs} an embedded sluice broker (--kafka-bootstrap)")
            # Reported at the test, as a skip marker's is: raised here, every such skip of a
            # run was one line of -rs's summary at this file ("SKIPPED [14] plugin.py:102"),
            # naming no test. (A private attribute of pytest's: ignored where it has none.)
            skip._use_item_location = True
            raise skip

    return Skipping(bootstrap)


@pytest.fixture(scope="session")
def sluice_settings() -> Mapping[str, object]:
    """Broker settings by Kafka name for ``sluice_broker`` and ``sluice_fresh_broker``
    (override in a conftest.py, session scope; or in a test module or class, function or module
    scope, for a broker of those tests' own)."""
    return {}


class _Clusters:
    """The session's clusters: the external one under ``--kafka-bootstrap``, else an embedded
    broker per set of ``sluice_settings``. One broker for the session, whatever a test module
    says, started with the settings of whichever module asked first: a module's override
    (``{"auto.create.topics.enable": False}``) then held for every later module too, and the
    outcome hung on the order the tests ran in."""

    def __init__(self, bootstrap: str | None, tmp_path_factory: pytest.TempPathFactory) -> None:
        self._external = None if bootstrap is None else _external_cluster(bootstrap)
        self._tmp_path_factory = tmp_path_factory
        self._brokers: dict[str, EmbeddedBroker] = {}

    def get(self, settings: Mapping[str, object]) -> Cluster:
        if self._external is not None:
            return self._external  # the cluster has settings of its own
        key = _settings_key(settings)
        broker = self._brokers.get(key)
        if broker is None:
            from sluice.testing.embedded import EmbeddedBroker

            broker = EmbeddedBroker(self._tmp_path_factory.mktemp("sluice"), settings=settings)
            broker.start()
            self._brokers[key] = broker
        return broker

    def close(self) -> None:
        if self._external is not None:
            try:
                # Topics made for the whole session (by session fixtures of the suite's own):
                # the cluster outlives the run, and the next run would find them there.
                made = list(self._external.created_topics)
                self._external.delete_topics(made, missing_ok=True)
            finally:
                self._external.close()
        brokers, self._brokers = list(self._brokers.values()), {}
        failures = []
        for broker in brokers:
            try:
                broker.stop()
            except Exception as exc:  # the others are stopped all the same
                failures.append(exc)
        if failures:
            raise failures[0]


def _settings_key(settings: Mapping[str, object]) -> str:
    """Settings as a key, by their Kafka strings: the same settings (``3`` or ``"3"``, in any
    order) share a broker. A value with no Kafka string is refused here, as the broker would."""
    from sluice.testing.topics import config_value

    if not isinstance(settings, Mapping):
        raise TypeError(
            f"sluice_settings returns a mapping of broker settings by Kafka name, not {settings!r}"
        )
    return repr(sorted((str(k), config_value(v, k, key=str(k))) for k, v in settings.items()))


@pytest.fixture(scope="session")
def _sluice_clusters(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[_Clusters]:
    clusters = _Clusters(external_bootstrap(request.config), tmp_path_factory)
    try:
        yield clusters
    finally:
        clusters.close()


@pytest.fixture(scope="session")
def sluice_session_broker(
    _sluice_clusters: _Clusters, sluice_settings: Mapping[str, object]
) -> Cluster:
    """The session's broker itself, for session-scoped fixtures of your own (topics that every
    test reads, say). Tests use ``sluice_broker``: the same broker, kept healthy per test (a
    module that overrides ``sluice_settings`` gets a broker of its own)."""
    return _sluice_clusters.get(sluice_settings)


@pytest.fixture
def sluice_broker(
    request: pytest.FixtureRequest,
    _sluice_clusters: _Clusters,
    sluice_settings: Mapping[str, object],
) -> Iterator[EmbeddedBroker]:
    """The session's broker for these ``sluice_settings`` (see the module's documentation),
    healthy for this test; the topics this test creates through its helpers are deleted when
    it ends."""
    from sluice.testing.embedded import EmbeddedBroker

    cluster = _sluice_clusters.get(sluice_settings)
    if "sluice_session_broker" in request.fixturenames:
        session = request.getfixturevalue("sluice_session_broker")
        if session is not cluster:
            # pytest makes a session fixture once, with the settings where it was first asked
            # for: the test's session fixtures (their topics) are on another broker than its own
            pytest.fail(
                "this test's sluice_settings are not those sluice_session_broker started with, "
                "so the session fixtures it takes live on another broker than sluice_broker: "
                "override sluice_settings in the root conftest.py, or keep tests with settings "
                "of their own off session fixtures built on sluice_session_broker",
                pytrace=False,
            )
    if isinstance(cluster, EmbeddedBroker) and not cluster.running:
        cluster.start()  # an earlier test stopped it
    before = set(cluster.created_topics)
    try:
        yield cluster  # type: ignore[misc]  # an ExternalCluster under --kafka-bootstrap
    finally:
        if isinstance(cluster, EmbeddedBroker):
            if cluster.running:
                cluster.faults.clear()
            else:
                cluster.start()
        # missing_ok: the test may have deleted one itself
        made = [t for t in cluster.created_topics if t not in before]
        cluster.delete_topics(made, missing_ok=True)


@pytest.fixture
def sluice_fresh_broker(
    request: pytest.FixtureRequest, tmp_path: Path, sluice_settings: Mapping[str, object]
) -> Iterator[EmbeddedBroker]:
    """A broker for this test alone, data in ``tmp_path / "sluice-data"``, stopped after it
    (under --kafka-bootstrap: the external cluster, as ``sluice_broker``)."""
    if external_bootstrap(request.config) is not None:
        yield request.getfixturevalue("sluice_broker")
        return
    from sluice.testing.embedded import EmbeddedBroker

    with EmbeddedBroker(tmp_path / "sluice-data", settings=sluice_settings) as broker:
        yield broker


@pytest.fixture
def sluice_process(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BrokerProcess]:
    """A started ``sluice serve`` child; its output is in ``tmp_path / "sluice-serve.log"``."""
    if external_bootstrap(request.config) is not None:
        pytest.skip("sluice_process starts sluice itself (--kafka-bootstrap is set)")
    from sluice.testing.process import BrokerProcess

    with BrokerProcess(tmp_path / "sluice-data", tmp_path / "sluice-serve.log") as broker:
        broker.start()
        yield broker


@pytest.fixture
def sluice_topic(request: pytest.FixtureRequest) -> str:
    """A new topic on ``sluice_broker`` (on ``sluice_fresh_broker`` in a test that uses that
    one instead), named after the test (made unique), deleted after it: one partition unless
    a ``sluice_topic`` marker or an indirect parameter says otherwise."""
    from sluice.testing.topics import topic_spec, unique_topic_name

    # Made on the session's broker, the topic a fresh-broker test wrote to was created on its
    # own broker on first use, without the partitions and configs the marker asked for.
    spec: Any = getattr(request, "param", None)
    marker = request.node.get_closest_marker("sluice_topic")
    if spec is None and marker is not None:
        spec = _marker_spec(marker)
    partitions, configs = topic_spec(spec if spec is not None else 1)
    fresh_only = "sluice_fresh_broker" in request.fixturenames and (
        "sluice_broker" not in request.fixturenames
    )
    broker = "sluice_fresh_broker" if fresh_only else "sluice_broker"
    sluice_broker: Cluster = request.getfixturevalue(broker)
    name = unique_topic_name(request.node.name)
    return sluice_broker.create_topic(name, partitions, configs=configs)


def _marker_spec(marker: pytest.Mark) -> dict[str, object]:
    """The topic a ``sluice_topic`` marker asks for. Its arguments are checked: a misspelt one
    (``partition=3``, ``config={...}``) was ignored without a word, and the test ran against a
    topic of one partition with the broker's default configs."""
    unknown = sorted(set(marker.kwargs) - {"partitions", "configs"})
    given_twice = bool(marker.args) and "partitions" in marker.kwargs
    if unknown or len(marker.args) > 1 or given_twice:
        what = (
            f"unknown argument {', '.join(unknown)}"
            if unknown
            else "partitions given twice"
            if given_twice
            else f"{len(marker.args)} positional arguments"
        )
        pytest.fail(
            f"@pytest.mark.sluice_topic({_marker_arguments(marker)}): {what}; it takes "
            "partitions (also as its one positional argument) and configs, e.g. "
            '@pytest.mark.sluice_topic(partitions=3, configs={"retention.ms": 60000})',
            pytrace=False,
        )
    configs = marker.kwargs.get("configs") or {}
    if not isinstance(configs, Mapping):
        pytest.fail(
            f"@pytest.mark.sluice_topic: configs is a mapping of topic configs by Kafka name, "
            f"not {configs!r}",
            pytrace=False,
        )
    spec: dict[str, object] = {**configs}
    spec["partitions"] = marker.kwargs.get("partitions", marker.args[0] if marker.args else 1)
    return spec


def _marker_arguments(marker: pytest.Mark) -> str:
    return ", ".join([*map(repr, marker.args), *(f"{k}={v!r}" for k, v in marker.kwargs.items())])
