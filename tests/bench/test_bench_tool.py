"""`sluice bench`'s harness: argument parsing, percentiles, CPU accounting, the JSON schema, the
plot file, and one short end-to-end run against a child broker. Numbers are never asserted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from sluice.bench import output
from sluice.bench.args import options
from sluice.bench.cli import scenario_parser
from sluice.bench.compare import Matrix, comparison
from sluice.bench.harness import (
    JSON_KEYS,
    Histogram,
    Latency,
    Process,
    Result,
    bottleneck,
    cpu_seconds,
    median_result,
    parse_settings,
)
from sluice.bench.scenarios import Options, produce_works
from sluice.bench.targets import Remote

SRC = Path(__file__).resolve().parents[2] / "src"


def _result(target: str = "sluice", rate: float = 1000.0, case: str = "produce 100 B") -> Result:
    return Result("produce", case, target, 10_000, 100, 10_000 / rate, {"acks": "1"}, 0,
                  Latency(1.0, 2.0, 3.0, 4.0, 5.0, 1250),
                  [Process("broker", 2.0, 50 * 2**20)], [Process("produce 1", 1.5, 40 * 2**20)],
                  [{"t": 0.5, "msgs_per_s": rate, "p99_ms": 3.0, "client_rss_bytes": 2.0**20},
                   {"t": 1.0, "msgs_per_s": rate, "p99_ms": 4.0, "client_rss_bytes": 2.0**21}])


# -- arguments -------------------------------------------------------------------------------


def test_scenario_arguments_and_client_settings() -> None:
    args = scenario_parser().parse_args(
        ["produce", "--messages", "5000", "--size", "1024", "--acks", "-1", "-X", "linger.ms=20",
         "-X", "compression.type = zstd", "--json", "--plot", "x.png", "--producers", "3"])
    opts = options(args)
    assert (args.scenario, args.json, args.plot) == ("produce", True, Path("x.png"))
    assert (opts.messages, opts.size, opts.acks, opts.producers) == (5000, 1024, "all", 3)
    assert opts.client == {"linger.ms": "20", "compression.type": "zstd"}
    quick = options(scenario_parser().parse_args(["e2e", "--quick"]))
    assert (quick.messages, quick.seconds) == (50_000, 5.0)


def test_sluice_bench_help_names_every_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    from sluice.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["bench", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for name in ("produce", "consume", "e2e", "durable", "writer", "strategies",
                 "slow-consumer", "compare", "report", "storage", "--bootstrap", "-X"):
        assert name in text
    assert "``" not in text  # the module docstring's reST quoting is not for a terminal


def test_bad_arguments_are_refused_with_a_reason(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        parse_settings(["linger.ms"])
    with pytest.raises(SystemExit, match="-X expected KEY=VALUE"):
        options(scenario_parser().parse_args(["produce", "-X", "nope"]))
    with pytest.raises(SystemExit):
        scenario_parser().parse_args(["no-such-scenario"])
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("given", "said"),
    [
        (["--messages", "-5"], "argument --messages: must be >= 1: '-5'"),
        (["--messages", "0"], "argument --messages: must be >= 1: '0'"),
        (["--messages", "2.5"], "argument --messages: not an integer: '2.5'"),
        (["--size", "-1"], "argument --size: must be >= 0: '-1'"),
        (["--partitions", "0"], "argument --partitions: must be >= 1: '0'"),
        (["--producers", "0"], "argument --producers: must be >= 1: '0'"),
        (["--consumers", "0"], "argument --consumers: must be >= 1: '0'"),
        (["--repeat", "0"], "argument --repeat: must be >= 1: '0'"),
        (["--rate", "nan"], "argument --rate: must be >= 0: 'nan'"),
        (["--linger-ms", "-1"], "argument --linger-ms: must be >= 0: '-1'"),
        (["--seconds", "0"], "argument --seconds: must be > 0: '0'"),
        (["--deadline", "-3"], "argument --deadline: must be > 0: '-3'"),
    ],
)
def test_a_count_or_time_out_of_range_is_a_usage_error(
    given: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """--messages -5 ran and reported 0 messages (exit 0), --messages 0 ran the default
    200,000, --partitions 0 ended in a KafkaException traceback."""
    with pytest.raises(SystemExit) as exit_:
        scenario_parser().parse_args(["produce", *given])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"sluice bench: error: {said}"


def test_client_settings_win_and_load_is_split_over_processes() -> None:
    target = Remote("127.0.0.1:1", {"api.version.request": False})
    opts = Options(messages=10, producers=5, processes=2, rate=300.0,
                   client={"acks": "0", "linger.ms": "7"})
    works = produce_works(target, "t", opts, opts.messages)
    assert [w.count for w in works] == [5, 5]
    assert [w.instances for w in works] == [3, 2]
    assert [w.rate for w in works] == [150.0, 150.0]
    assert works[0].config["acks"] == "0" and works[0].config["linger.ms"] == "7"
    assert works[0].config["api.version.request"] is False


def test_compare_matrix_runs_every_case_on_the_same_options() -> None:
    cases = Matrix(sizes=(100, 1024), partitions=(1, 8), acks=("1", "all"),
                   rates=(1000.0,), base=Options(messages=1000, repeat=3)).cases()
    assert {c.opts.repeat for c in cases} == {1}  # compare's rounds are the repetitions
    produce = [c for c in cases if c.scenario == "produce"]
    assert len(produce) == 8 and len([c for c in cases if c.scenario == "consume"]) == 4
    assert {c.opts.messages for c in produce if c.opts.size == 1024} == {200}
    (e2e,) = [c for c in cases if c.scenario == "e2e"]
    assert e2e.opts.rate == 1000.0


# -- percentiles and CPU ---------------------------------------------------------------------


def test_percentiles_merge_across_processes() -> None:
    a, b = Histogram(), Histogram()
    for ms in range(1, 501):
        a.record_us(ms * 1000)
    for ms in range(501, 1001):
        b.record_us(ms * 1000)
    merged = Histogram.loads(a.dumps())  # as a worker's histogram reaches the parent
    merged.add(Histogram.loads(b.dumps()))
    lat = merged.latency()
    assert lat is not None and lat.samples == 1000
    assert lat.p50_ms == pytest.approx(500, rel=0.01)
    assert lat.p90_ms == pytest.approx(900, rel=0.01)
    assert lat.p99_ms == pytest.approx(990, rel=0.01)
    assert lat.max_ms == pytest.approx(1000, rel=0.01)
    assert Histogram().latency() is None


def test_cpu_seconds_from_proc_follows_the_process_clock() -> None:
    pid = os.getpid()
    before, clock = cpu_seconds(pid), time.process_time()
    end = clock + 0.3
    while time.process_time() < end:
        pass  # burn CPU: both clocks must see it
    after, used = cpu_seconds(pid), time.process_time() - clock
    assert before is not None and after is not None
    assert after - before == pytest.approx(used, abs=0.05)
    assert cpu_seconds(2**22 + 12345) is None  # no such process


def test_cpu_per_message_and_the_bottleneck_side() -> None:
    r = _result(rate=1000.0)  # 10 s, 10,000 x 100 B, broker 2 CPU s
    assert r.broker_cpu_per_million == pytest.approx(200.0)
    assert r.broker_cpu_per_gb == pytest.approx(2000.0)
    busy, idle = Process("b", 9.5, None), Process("c", 1.0, None)
    assert bottleneck(10, [busy], [idle]) == "broker"
    assert bottleneck(10, [idle], [busy]) == "client"
    assert bottleneck(10, [], [idle]) == "unknown"
    cores = os.cpu_count() or 1
    spread = [Process(f"c{i}", 8.0, None) for i in range(cores)]
    assert bottleneck(10, [Process("b", 5.0, None)], spread) == "machine"
    assert bottleneck(10, [Process("b", 1.0, None)], [idle]) == "neither"


def test_median_result_keeps_every_runs_errors_and_the_spread() -> None:
    runs = [_result(rate=r) for r in (100.0, 300.0, 200.0)]
    runs[0].errors = 2
    mid = median_result(runs)
    assert mid.msgs_s == pytest.approx(200.0) and mid.errors == 2
    assert "median of 3 runs; msg/s 100-300" in mid.notes[-1]


# -- output ----------------------------------------------------------------------------------


def test_json_has_the_stable_keys() -> None:
    obj = json.loads(json.dumps(_result().as_json()))
    assert tuple(obj) == JSON_KEYS
    assert obj["latency_ms"] == {"p50": 1.0, "p90": 2.0, "p99": 3.0, "p99.9": 4.0,
                                 "max": 5.0, "samples": 1250}
    assert obj["msgs_per_s"] == 1000.0 and obj["mb_per_s"] == 0.1
    assert obj["bottleneck"] in ("broker", "client", "machine", "neither", "unknown")
    assert obj["params"] == {"size": 100, "acks": "1"}


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    assert data[-8:-4] == b"IEND"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_plots_are_small_valid_pngs(tmp_path: Path) -> None:
    output.plot([_result(), _result("Kafka", 500.0)], tmp_path / "a.png", "title")
    width, height = _png_size(tmp_path / "a.png")
    assert 300 < width <= 800 and 200 < height <= 800
    slow = _result()
    slow.scenario = "slow-consumer"
    output.plot([slow], tmp_path / "rss.png")
    assert _png_size(tmp_path / "rss.png")[0] > 0
    output.bars(["a", "b"], {"x": [1.0, 2.0], "y": [2.0, 1.0]}, "msg/s", tmp_path / "b.png")
    assert (tmp_path / "b.png").stat().st_size < 100_000


def test_tables_show_each_figure_and_the_ratio() -> None:
    text = output.markdown([_result()])
    assert "| produce 100 B | sluice | 1,000 | 0.1 | 1.00 | 3.00 | 4.00 | 5.00 | 200.00 | 50 | " \
           "40 |" in text
    both = comparison([_result("Kafka 0.9.0.1", 500.0), _result("sluice", 1000.0)])
    assert "| produce 100 B | 500 | 1,000 | 2.00x | 200.00 | 200.00 | 1.00x |" in both


# -- end to end ------------------------------------------------------------------------------


def test_produce_json_end_to_end_against_a_child_broker() -> None:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    done = subprocess.run(
        [sys.executable, "-m", "sluice.cli", "bench", "produce", "--messages", "20000", "--json"],
        capture_output=True, text=True, timeout=180, env=env, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = done.stdout.strip().splitlines()
    obj = json.loads(line)
    assert tuple(obj) == JSON_KEYS
    assert (obj["scenario"], obj["target"], obj["messages"], obj["errors"]) == (
        "produce", "sluice", 20_000, 0)
    assert obj["latency_ms"]["samples"] > 0
    assert obj["broker_cpu_s"] is not None and obj["broker_rss_peak_bytes"] > 0
    assert obj["client_processes"] == 1 and obj["client_rss_peak_bytes"] > 0


def test_slow_consumer_runs_the_consumer_toolkit(sluice_broker: Any) -> None:
    """The toolkit's variants of founding claim 3 run a real ``sluice.client.Consumer`` in a
    worker process and report what it read and its RSS."""
    from sluice.bench.scenarios import slow_consumer, toolkit_variants

    target = Remote(sluice_broker.bootstrap_servers)
    opts = Options(messages=2000, size=1024, seconds=20.0)
    (variant, *_) = toolkit_variants()
    (result,) = slow_consumer(target, opts, lambda _msg: None, variants=[variant], process_us=0.0)
    # every record the fill wrote (its producer also writes one warm-up record)
    assert result.case == variant.label and result.messages == 2001 and result.errors == 0
    assert result.client_rss_peak is not None and result.client_rss_peak > 0


def test_storage_json_has_its_stable_keys(tmp_path: Path) -> None:
    """``sluice bench storage --json``: a line per case with STORAGE_JSON_KEYS, then recovery."""
    from sluice.bench.storage import STORAGE_JSON_KEYS

    env = {**os.environ, "PYTHONPATH": str(SRC)}
    done = subprocess.run(
        [sys.executable, "-m", "sluice.cli", "bench", "storage", "--sizes", "1", "--seconds", "0.05",
         "--max-mib", "1", "--recovery-gib", "0.001", "--dir", str(tmp_path), "--json"],
        capture_output=True, text=True, timeout=180, env=env, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    *cases, last = [json.loads(line) for line in done.stdout.strip().splitlines()]
    assert len(cases) == 12 and all(tuple(c) == STORAGE_JSON_KEYS for c in cases)
    assert {c["case"] for c in cases} >= {"raw os.write", "log inline, ack=written", "log read, 64 KiB fetches"}
    assert all(c["mb_s"] > 0 for c in cases)
    assert tuple(last) == ("scenario", "case", "segment_bytes", "unclean_open_s", "clean_reopen_s")


def test_fetch_json_has_its_stable_keys() -> None:
    """``sluice bench fetch --json``: a line per case with FETCH_JSON_KEYS on stdout, the table
    on stderr (it had no --json: the only bench tool whose numbers a script could not read)."""
    from sluice.bench.fetch import FETCH_JSON_KEYS

    env = {**os.environ, "PYTHONPATH": str(SRC)}
    done = subprocess.run(
        [sys.executable, "-m", "sluice.cli", "bench", "fetch", "--mib", "1", "--sizes", "100",
         "--partitions", "2", "--consumers", "1,2", "--cache", "warm", "--json"],
        capture_output=True, text=True, timeout=180, env=env, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    cases = [json.loads(line) for line in done.stdout.strip().splitlines()]
    assert [tuple(c) for c in cases] == [FETCH_JSON_KEYS] * 2
    assert [(c["consumers"], c["partitions"], c["value_bytes"]) for c in cases] == [(1, 2, 100), (2, 2, 100)]
    assert all(c["records_s"] > 0 and c["mb_s"] > 0 and c["runs"] == 1 for c in cases)
    assert "records/s" in done.stderr  # the table, for a reader


def test_usage_and_invalid_choice_name_every_subcommand(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The description named compare, report, storage and fetch; the usage line and the
    invalid-choice error listed only the scenarios."""
    from sluice.bench.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["no-such-scenario"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    usage, _, message = err.partition("sluice bench: error:")
    assert "invalid choice: 'no-such-scenario'" in message
    for name in ("compare", "report", "storage", "fetch", "produce", "slow-consumer"):
        assert name in usage and f"'{name}'" in message
    with pytest.raises(SystemExit) as exit_:  # options first: no scenario, and said so
        main(["--json", "compare"])
    assert exit_.value.code == 2
    assert "compare takes its own options" in capsys.readouterr().err


_SLUICE_WITH_DEFAULT_SIGINT = (
    "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "runpy.run_module('sluice', run_name='__main__', alter_sys=True)"
)
"""``python -m sluice`` as from a terminal, whatever SIGINT handling this process inherited."""


def _in_session(sid: int) -> list[int]:
    """Live processes of session ``sid`` (zombies left out: their parent reaps them)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            found.append(int(entry))
    return found


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return cmdline.read().replace(b"\0", b" ").decode()
    except OSError:
        return f"{pid} (gone)"


def _load_workers(pids: list[int], with_clients: bool) -> int:
    """How many of ``pids`` are load workers (``with_clients``: that built their librdkafka
    clients, whose threads they then have)."""
    count = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                if b"spawn_main" not in cmdline.read():
                    continue
            threads = len(os.listdir(f"/proc/{pid}/task"))
        except OSError:
            continue
        count += threads >= 4 or not with_clients
    return count


@pytest.mark.parametrize("loading", [False, True], ids=["starting", "loading"])
@pytest.mark.parametrize("how", ["ctrl-c", "sigterm", "sigterm-twice"])
def test_a_signal_ends_a_run_with_one_line_and_nothing_left_behind(
    tmp_path: Path, how: str, loading: bool
) -> None:
    """Ctrl-C (to the whole process group, as a terminal sends it) printed a KeyboardInterrupt
    traceback; SIGTERM killed the bench alone, leaving its broker child and load workers running
    and their temporary directory behind. Now either ends the run with one line and 130, after
    stopping them and removing the directory; a second signal does not cut that short. The
    signal lands as the workers start, or once their clients run."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "PYTHONPATH": str(SRC), "TMPDIR": str(scratch)}
    bench = subprocess.Popen(
        [sys.executable, "-c", _SLUICE_WITH_DEFAULT_SIGINT, "bench", "produce",
         "--messages", "100000000", "--rate", "10000", "--producers", "2"],
        env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while _load_workers(_in_session(bench.pid), loading) < 2:  # broker up, workers too
            assert bench.poll() is None, bench.communicate()
            assert time.monotonic() < deadline, "the load workers never started"
            time.sleep(0.05)
        if how == "ctrl-c":
            os.killpg(bench.pid, signal.SIGINT)
        else:
            bench.send_signal(signal.SIGTERM)
            if how == "sigterm-twice":
                bench.send_signal(signal.SIGTERM)
        out, err = bench.communicate(timeout=90)
        # multiprocessing's resource tracker leaves when it reads the end of its pipe, just
        # after the bench exits: allowed a moment
        gone = time.monotonic() + 10
        while (left := _in_session(bench.pid)) and time.monotonic() < gone:
            time.sleep(0.05)
        left_cmds = [_cmdline(pid) for pid in left]
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
        for pid in _in_session(bench.pid):  # whatever it left behind
            os.kill(pid, signal.SIGKILL)
    assert (bench.returncode, out) == (130, b""), err.decode()
    assert err.decode().splitlines()[-1:] == ["sluice bench produce: interrupted"]
    assert "Traceback" not in err.decode()
    assert (left_cmds, list(scratch.iterdir())) == ([], [])


def test_a_bad_bootstrap_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """A port outside 1-65535 hung the run: librdkafka only retries such an address."""
    from sluice.bench.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["produce", "--bootstrap", "127.0.0.1:99999", "--quick"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "sluice bench: error: --bootstrap: not HOST:PORT with a port of 1-65535: '127.0.0.1:99999'"
    )
    # Given empty (an unset $VAR), it measured a broker child of its own instead, silently.
    with pytest.raises(SystemExit) as exit_:
        main(["produce", "--bootstrap", "", "--quick"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "sluice bench: error: --bootstrap: no broker address in ''"
    )


def test_a_broker_nobody_listens_at_ends_the_run_at_once() -> None:
    """`sluice bench produce --bootstrap 127.0.0.1:1` waited without a word (a minute and more,
    each step's timeout in turn) instead of saying the broker is not there."""
    import socket

    with socket.socket() as s:  # a port that was free a moment ago: nobody listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = subprocess.run(
        [sys.executable, "-m", "sluice", "bench", "produce", "--bootstrap", f"127.0.0.1:{port}",
         "--quick"],
        capture_output=True, timeout=30, env={**os.environ, "PYTHONPATH": str(SRC)},
    )
    assert (p.returncode, p.stdout) == (1, b"")
    assert p.stderr.decode() == (
        f"sluice bench produce: cannot reach 127.0.0.1:{port}: Connection refused\n"
    )
