"""The pytest fixtures, run the way users run them: sample test modules through pytest's own
``pytester``, in this process, under pytest-xdist (``-n 2``, in child processes), and with
``--kafka-bootstrap`` (and its environment variable) against a ``sluice serve`` started
separately, standing in for an external cluster."""

from __future__ import annotations

import importlib
import inspect
import json
import re
from pathlib import Path

import pytest

from sluice.testing import BrokerProcess, EmbeddedBroker, ExternalCluster, NotSupportedHere
from sluice.testing.plugin import BOOTSTRAP_ENV

pytest_plugins = ["pytester"]

SESSION_MODULE = '''
import json, os
from pathlib import Path
import pytest

SEEN = Path(os.environ["SEEN"])

def note(**facts):
    with SEEN.open("a") as f:
        f.write(json.dumps(facts) + "\\n")

@pytest.mark.sluice_topic(partitions=3, configs={"retention.ms": "60000"})
def test_1_fails_with_a_fault_armed(sluice_broker, sluice_topic):
    note(port=sluice_broker.port, topic=sluice_topic, data_dir=str(sluice_broker.data_dir))
    assert [r.partition for r in sluice_broker.produce(sluice_topic, b"x", partition=2)] == [2]
    sluice_broker.faults.fail("Produce", "NOT_LEADER_OR_FOLLOWER", count=100)
    sluice_broker.faults.pause_appends(sluice_topic, 0)
    assert False, "fails on purpose"

def test_2_gets_it_healthy_and_stops_it(sluice_broker):
    from confluent_kafka.admin import AdminClient
    note(port=sluice_broker.port, faults=len(sluice_broker.faults.active))
    admin = AdminClient({"bootstrap.servers": sluice_broker.bootstrap_servers})
    note(topics=sorted(admin.list_topics(timeout=30).topics))
    sluice_broker.produce(sluice_broker.create_topic(), b"not refused")
    sluice_broker.stop()

@pytest.mark.parametrize("sluice_topic", [2, {"partitions": 4, "cleanup.policy": "delete"}], indirect=True)
def test_3_runs_again_on_the_same_port(sluice_broker, sluice_topic):
    records = sluice_broker.produce(sluice_topic, b"a", b"b")
    note(port=sluice_broker.port, values=sorted(r.value.decode() for r in sluice_broker.consume_until(sluice_topic, 2)))

def test_4_a_fresh_broker_is_another_one(sluice_broker, sluice_fresh_broker, tmp_path):
    note(fresh_port=sluice_fresh_broker.port, port=sluice_broker.port, fresh_dir=str(sluice_fresh_broker.data_dir), tmp=str(tmp_path))
'''


def _seen(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_session_broker_is_shared_kept_healthy_and_cleaned_up(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = tmp_path / "seen.jsonl"
    monkeypatch.setenv("SEEN", str(seen))
    pytester.makepyfile(test_sample=SESSION_MODULE)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4, failed=1)
    first, second, topics, third_a, third_b, fourth = _seen(seen)
    port = first["port"]
    assert second == {"port": port, "faults": 0}  # the same broker; the fault was cleared
    assert first["topic"] not in list(topics["topics"])  # type: ignore[call-overload]  # deleted
    # the paused partition was resumed (else this test's produce would hang, then fail)
    assert third_a == {"port": port, "values": ["a", "b"]}  # started again on its port
    assert third_b == {"port": port, "values": ["a", "b"]}
    assert fourth["port"] == port and fourth["fresh_port"] != port
    assert fourth["fresh_dir"] == str(Path(str(fourth["tmp"])) / "sluice-data")


STRICT_MODULE = """
import pytest
from sluice.testing import ProduceError

@pytest.fixture(scope="{scope}")
def sluice_settings():
    return {{"auto.create.topics.enable": False}}

def test_strict(sluice_broker):
    with pytest.raises(ProduceError, match="UNKNOWN_TOPIC_OR_PART"):
        sluice_broker.produce("never-created", b"x", timeout=1)

def test_strict_again(sluice_broker, sluice_fresh_broker):
    assert sluice_fresh_broker.config.auto_create_topics is False
    assert sluice_broker.config.auto_create_topics is False
"""

DEFAULT_MODULE = """
def test_creates_on_first_use(sluice_broker, sluice_session_broker):
    assert sluice_broker is sluice_session_broker
    topic = "created-on-first-use"
    assert [r.offset for r in sluice_broker.produce(topic, b"x")] == [0]
    sluice_broker.delete_topics([topic])
"""


@pytest.mark.parametrize("scope", ["function", "module", "session"])
@pytest.mark.parametrize("first", ["test_a_strict", "test_b_default"])
def test_settings_a_module_overrides_are_its_own_whatever_runs_first(
    pytester: pytest.Pytester, scope: str, first: str
) -> None:
    """One broker for the session took the settings of whichever module asked first: the
    override leaked into every later module (or was ignored), depending on the order; a
    function-scoped override was a ScopeMismatch for ``sluice_broker``."""
    modules = {"test_a_strict": STRICT_MODULE.format(scope=scope), "test_b_default": DEFAULT_MODULE}
    pytester.makepyfile(**modules)
    order = [first, *(m for m in modules if m != first)]
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", *(f"{m}.py" for m in order))
    result.assert_outcomes(passed=3)


FRESH_TOPIC_MODULE = """
import pytest

def partitions(broker, topic):
    return broker.call(lambda: len(broker.server.broker.logs.topics[topic].partitions))

@pytest.mark.sluice_topic(partitions=3)
def test_on_the_fresh_broker(sluice_fresh_broker, sluice_topic):
    assert partitions(sluice_fresh_broker, sluice_topic) == 3

@pytest.mark.sluice_topic(partitions=2)
def test_on_the_session_broker_when_the_test_has_both(sluice_broker, sluice_fresh_broker, sluice_topic):
    assert partitions(sluice_broker, sluice_topic) == 2
    assert sluice_topic not in sluice_fresh_broker.call(lambda: sluice_fresh_broker.server.broker.logs.topics)
"""


def test_sluice_topic_is_on_the_fresh_broker_of_a_test_that_has_only_that_one(
    pytester: pytest.Pytester,
) -> None:
    """It was made on the session's broker, started for nothing; the test's writes to its own
    broker created the topic there on first use, with one partition and no configs."""
    pytester.makepyfile(test_sample=FRESH_TOPIC_MODULE)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


MARKER_MODULE = """
import pytest

@pytest.mark.sluice_topic(partition=3)
def test_misspelt(sluice_topic):
    pass

@pytest.mark.sluice_topic(partitions=2, config={"retention.ms": 1000})
def test_misspelt_configs(sluice_topic):
    pass

@pytest.mark.sluice_topic(2, partitions=3)
def test_twice(sluice_topic):
    pass

@pytest.mark.sluice_topic(partitions=2, configs=["retention.ms"])
def test_configs_not_a_mapping(sluice_topic):
    pass

@pytest.mark.sluice_topic(2, configs={"retention.ms": 1000})
def test_right(sluice_broker, sluice_topic):
    topic = sluice_broker.call(lambda: sluice_broker.server.broker.logs.topics[sluice_topic])
    assert (len(topic.partitions), topic.config.retention_ms) == (2, 1000)
"""


def test_a_sluice_topic_marker_with_an_argument_it_does_not_take_is_an_error(
    pytester: pytest.Pytester,
) -> None:
    """``partition=3`` or ``config={...}`` was ignored without a word: the test ran against a
    topic of one partition with the broker's default configs."""
    pytester.makepyfile(test_sample=MARKER_MODULE)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=4)
    result.stdout.fnmatch_lines(
        [
            "*sluice_topic(partition=3): unknown argument partition; it takes partitions*",
            "*sluice_topic(partitions=2, config={'retention.ms': 1000}): unknown argument config*",
            "*sluice_topic(2, partitions=3): partitions given twice*",
            "*configs is a mapping of topic configs by Kafka name, not *'retention.ms'*",
        ]
    )


def test_a_test_whose_session_fixtures_are_on_another_broker_than_its_own_fails_saying_so(
    pytester: pytest.Pytester,
) -> None:
    """A directory's conftest.py overrides sluice_settings for the session: its tests get a
    broker of their own, but a session fixture on sluice_session_broker is made once, on the
    broker of whichever test asked first. A test there would look for the fixture's topic on
    its own broker."""
    pytester.makeconftest(
        """
import pytest

@pytest.fixture(scope="session")
def shared_topic(sluice_session_broker):
    return sluice_session_broker.create_topic()
"""
    )
    strict = pytester.mkpydir("strict")
    (strict / "conftest.py").write_text(
        "import pytest\n\n"
        "@pytest.fixture(scope='session')\n"
        "def sluice_settings():\n"
        "    return {'auto.create.topics.enable': False}\n"
    )
    (strict / "test_strict.py").write_text(
        "def test_shared(sluice_broker, shared_topic):\n"
        "    assert sluice_broker.consume_all(shared_topic) == []\n"
    )
    pytester.makepyfile(
        test_default="""
def test_shared(sluice_broker, shared_topic):
    assert sluice_broker.consume_all(shared_topic) == []
"""
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "test_default.py", "strict")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*not those sluice_session_broker started with*"])


def test_the_same_settings_written_otherwise_share_a_broker(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = tmp_path / "seen.jsonl"
    monkeypatch.setenv("SEEN", str(seen))
    module = """
import json, os
import pytest

@pytest.fixture(scope="module")
def sluice_settings():
    return {settings}

def test_port(sluice_broker):
    with open(os.environ["SEEN"], "a") as f:
        f.write(json.dumps({{"port": sluice_broker.port}}) + "\\n")
"""
    pytester.makepyfile(
        test_a=module.format(settings='{"num.partitions": 3, "log.cleanup.policy": ["delete"]}'),
        test_b=module.format(settings='{"log.cleanup.policy": "delete", "num.partitions": "3"}'),
        test_c=module.format(settings='{"num.partitions": 4}'),
    )
    pytester.runpytest_inprocess("-p", "no:cacheprovider").assert_outcomes(passed=3)
    a, b, c = (row["port"] for row in _seen(seen))
    assert a == b != c


XDIST_MODULE = '''
import json, os
import pytest

@pytest.mark.parametrize("n", range(6))
def test_each_worker_has_its_broker(sluice_broker, sluice_topic, n):
    sluice_broker.produce(sluice_topic, b"%d" % n)
    assert [r.value for r in sluice_broker.consume_all(sluice_topic)] == [b"%d" % n]
    with open(os.environ["SEEN"], "a") as f:
        f.write(json.dumps({"worker": os.environ.get("PYTEST_XDIST_WORKER"), "port": sluice_broker.port,
                            "data_dir": str(sluice_broker.data_dir), "pid": os.getpid()}) + "\\n")
'''


def test_under_xdist_each_worker_has_its_own_broker(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    importlib.import_module("xdist")  # a dev dependency: this test needs it, never skips

    seen = tmp_path / "seen.jsonl"
    monkeypatch.setenv("SEEN", str(seen))
    pytester.makepyfile(test_sample=XDIST_MODULE)
    result = pytester.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=6)
    rows = _seen(seen)
    workers = {str(r["worker"]): (r["port"], r["data_dir"], r["pid"]) for r in rows}
    assert len(workers) == 2  # both workers ran tests...
    assert len({r["worker"] for r in rows}) == len({(r["port"], r["data_dir"]) for r in rows})
    ports = {p for p, _, _ in workers.values()}
    dirs = {d for _, d, _ in workers.values()}
    assert len(ports) == 2 and len(dirs) == 2  # ...each with a broker (and a directory) of its own


EXTERNAL_MODULE = '''
import pytest

@pytest.fixture(scope="session")
def shared_topic(sluice_session_broker):
    sluice_session_broker.create_topic("shared-for-the-session", 1)
    return "shared-for-the-session"

def test_a_session_topic(sluice_broker, shared_topic):
    sluice_broker.produce(shared_topic, b"s")

def test_topics_and_records(sluice_broker, sluice_topic):
    sluice_broker.produce(sluice_topic, b"a", b"b", key=b"k")
    assert [r.value for r in sluice_broker.consume_until(sluice_topic, 2)] == [b"a", b"b"]
    sluice_broker.create_topic(sluice_topic + "-more", 2)

def test_a_fresh_broker_is_the_cluster(sluice_broker, sluice_fresh_broker):
    assert sluice_fresh_broker.bootstrap_servers == sluice_broker.bootstrap_servers

def test_faults_skip(sluice_broker):
    sluice_broker.faults.fail("Produce", "NOT_LEADER_OR_FOLLOWER")

def test_processes_skip(sluice_process):
    pass

@pytest.mark.parametrize("what", ["stop", "start", "restart", "cleanup", "call", "port", "running", "admin_url", "data_dir", "config", "server", "topics"])
def test_the_embedded_brokers_own_skip(sluice_broker, what):
    member = getattr(sluice_broker, what)  # a property skips here
    member(lambda: None) if what == "call" else member()
'''


@pytest.mark.parametrize("how", ["option", "environment"])
def test_kafka_bootstrap_runs_the_fixtures_against_an_external_cluster(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    with BrokerProcess(tmp_path / "external", tmp_path / "external.log") as external:
        external.start()
        pytester.makepyfile(test_sample=EXTERNAL_MODULE)
        args = ["-p", "no:cacheprovider", "-rs"]
        if how == "option":
            args += ["--kafka-bootstrap", external.bootstrap_servers]
        else:
            monkeypatch.setenv(BOOTSTRAP_ENV, external.bootstrap_servers)
        result = pytester.runpytest_subprocess(*args)
        result.assert_outcomes(passed=3, skipped=14)
        result.stdout.fnmatch_lines(
            ["*scripted faults need an embedded sluice broker*", "*sluice_process starts sluice*"]
        )
        # each skip is reported at its test, not all of them at one line of the plugin
        skips = [line for line in result.stdout.lines if line.startswith("SKIPPED")]
        assert len(skips) == 14 and all("test_sample.py:" in line for line in skips), skips
        assert "AttributeError" not in result.stdout.str()
        # every topic the tests made was deleted; nothing else was ever there
        assert _topics(external.bootstrap_servers) == []


def _topics(bootstrap: str) -> list[str]:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    return sorted(admin.list_topics(timeout=30).topics)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (["--kafka-bootstrap", ""], "--kafka-bootstrap is empty"),
        (["--kafka-bootstrap", "h:99999"], "--kafka-bootstrap: not HOST:PORT with a port of 1-65535"),
        (["--kafka-bootstrap", " , "], "--kafka-bootstrap: no broker address"),
        ([], "$SLUICE_KAFKA_BOOTSTRAP: not HOST:PORT with a port of 1-65535"),
    ],
)
def test_a_kafka_bootstrap_that_names_no_cluster_is_a_usage_error(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, given: list[str], message: str
) -> None:
    """Given empty (an unset $VAR in a CI script), every test ran against an embedded sluice
    broker instead and passed, for the wrong target; a malformed one failed each test later."""
    if not given:
        monkeypatch.setenv("SLUICE_KAFKA_BOOTSTRAP", "k:0")
    pytester.makepyfile(test_sample="def test_a(sluice_broker):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *given)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str()


def test_the_plugin_imports_no_broker_until_a_fixture_is_used(pytester: pytest.Pytester) -> None:
    """Every pytest run of every project with sluice installed loads the plugin."""
    pytester.makepyfile(
        test_sample="""
        import sys
        def test_nothing_of_sluice_loaded():
            assert "sluice.testing.plugin" in sys.modules
            loaded = [m for m in ("sluice.server.app", "sluice.broker.broker", "sluice.testing.embedded", "confluent_kafka") if m in sys.modules]
            assert loaded == []
        """
    )
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)


EMBEDDED_ONLY = {
    "faults": "scripted faults need",
    "data_dir": "the data directory needs",
    "port": "the broker's port (use bootstrap_servers) needs",
    "running": "running needs",
    "admin_url": "the admin side (admin_url) needs",
    "start": "start() needs",
    "stop": "stop() needs",
    "restart": "restart() needs",
    "cleanup": "cleanup() (of the data directory) needs",
    "call": "call() (run on the broker's loop) needs",
    "config": "the broker's configuration (config) needs",
    "server": "the broker's server object needs",
    "topics": "declared topics (topics) need",
}
"""What only an embedded broker has, and how ExternalCluster says so."""


@pytest.mark.parametrize("member", EMBEDDED_ONLY)
def test_an_external_cluster_refuses_what_needs_an_embedded_broker(member: str) -> None:
    """Each of these was an AttributeError on a plain ExternalCluster (only the plugin's
    subclass had them, to skip the test)."""
    cluster = ExternalCluster("127.0.0.1:1")
    said = re.escape(
        f"{EMBEDDED_ONLY[member]} an embedded sluice broker: ExternalCluster('127.0.0.1:1') "
        "is a cluster sluice did not start"
    )
    with pytest.raises(NotSupportedHere, match=f"^{said}$"):
        found = getattr(cluster, member)  # a property refuses here
        found(lambda: None) if member == "call" else found()


def test_an_external_cluster_refuses_an_address_that_names_no_cluster() -> None:
    """At construction, as the topic helpers would at each call (it was taken, and every later
    use failed on its connection)."""
    for wrong in ("", "h:99999", ","):
        with pytest.raises(ValueError, match=r"HOST:PORT|no broker address"):
            ExternalCluster(wrong)
    with pytest.raises(TypeError, match="bootstrap_servers is a str"):
        ExternalCluster(9092)  # type: ignore[arg-type]
    assert ExternalCluster("kafka-1").bootstrap_servers == "kafka-1"  # on 9092, as librdkafka


def test_an_external_cluster_has_every_public_member_an_embedded_broker_has() -> None:
    """config, server and topics (set in EmbeddedBroker's __init__) were AttributeErrors on an
    external cluster, and so not skipped by the plugin either."""
    embedded = {n for n in dir(EmbeddedBroker()) if not n.startswith("_")}
    assert embedded - set(dir(ExternalCluster("127.0.0.1:1"))) == set()


def test_an_external_clusters_members_are_typed_as_an_embedded_brokers() -> None:
    """So code typed for one takes the other (and mypy checks what follows a call)."""
    for member in EMBEDDED_ONLY:
        mine = inspect.getattr_static(ExternalCluster, member)
        theirs = inspect.getattr_static(EmbeddedBroker, member, None)
        if isinstance(mine, property):
            returns = inspect.signature(mine.fget).return_annotation  # type: ignore[arg-type]
            if theirs is None:  # set in __init__: its annotation there, or its value's type
                theirs_returns = {
                    "faults": "Faults", "data_dir": "Path", "config": "BrokerConfig",
                    "server": "Server | None", "topics": "dict[str, TopicSpec]",
                }[member]
            else:
                theirs_returns = inspect.signature(theirs.fget).return_annotation
            assert returns == theirs_returns, member
        else:
            assert inspect.signature(mine) == inspect.signature(theirs), member


EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_the_documented_examples_run_against_an_external_cluster(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    """docs/testing.md's examples, as a team would run them in a later CI stage against Kafka:
    the same files, with --kafka-bootstrap; what needs an embedded broker skips."""
    with BrokerProcess(tmp_path / "external", tmp_path / "external.log") as external:
        external.start()
        result = pytester.runpytest_subprocess(
            str(EXAMPLES), "--kafka-bootstrap", external.bootstrap_servers, "-p", "no:cacheprovider", "-rs"
        )
        result.assert_outcomes(passed=12, skipped=4)  # the skips: scripted faults, sluice_process
        assert _topics(external.bootstrap_servers) == []
