"""How results leave ``sluice bench``: a table (rich), JSON lines, markdown, PNG plots, progress."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from sluice.bench.harness import MIB, Result

COLUMNS = ("case", "target", "msg/s", "MB/s", "p50 ms", "p99 ms", "p99.9 ms", "max ms",
           "broker CPU s/M msg", "broker RSS MiB", "client RSS MiB", "bottleneck")


def _num(v: float | None, fmt: str = ",.0f") -> str:
    return "-" if v is None else format(v, fmt)


def _ms(v: float | None) -> str:
    return "-" if v is None else (f"{v:,.2f}" if v < 100 else f"{v:,.0f}")


def row(r: Result) -> list[str]:
    lat = r.latency
    return [
        r.case, r.target, _num(r.msgs_s), _num(r.mb_s, ",.1f"),
        _ms(lat.p50_ms if lat else None), _ms(lat.p99_ms if lat else None),
        _ms(lat.p999_ms if lat else None), _ms(lat.max_ms if lat else None),
        _num(r.broker_cpu_per_million, ",.2f"),
        _num(r.broker_rss_peak / MIB if r.broker_rss_peak else None),
        _num(r.client_rss_peak / MIB if r.client_rss_peak else None),
        r.bottleneck,
    ]


def markdown(results: Sequence[Result], columns: Sequence[str] = COLUMNS) -> str:
    """A markdown table of ``results`` (the columns named, in :data:`COLUMNS` order)."""
    index = [COLUMNS.index(c) for c in columns]
    lines = ["| " + " | ".join(columns) + " |",
             "|" + "|".join("---" if c in ("case", "target", "bottleneck") else "---:"
                            for c in columns) + "|"]
    for r in results:
        cells = row(r)
        lines.append("| " + " | ".join(cells[i] for i in index) + " |")
    return "\n".join(lines)


def print_table(results: Sequence[Result], file: IO[str] | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(*COLUMNS, show_lines=False)
    for r in results:
        table.add_row(*row(r))
    console = Console(file=file or sys.stdout, width=200)
    console.print(table)
    for r in results:
        for note in r.notes:
            console.print(f"{r.case} [{r.target}]: {note}", markup=False)


def print_json(results: Sequence[Result], file: IO[str] | None = None) -> None:
    out = file or sys.stdout
    for r in results:
        out.write(json.dumps(r.as_json(), sort_keys=False) + "\n")
    out.flush()


def plot(results: Sequence[Result], path: Path, title: str = "") -> None:
    """Throughput and p99 latency over time, one line per result; for ``slow-consumer`` the
    consumer's RSS over time. A small PNG (matplotlib, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    memory = any(r.scenario == "slow-consumer" for r in results)
    panels: list[tuple[str, str, float]] = (
        [("client_rss_bytes", "consumer RSS, MiB", MIB)] if memory
        else [("msgs_per_s", "msg/s", 1.0), ("p99_ms", "p99 latency, ms", 1.0)])
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 2.2 * len(panels) + 0.6), dpi=80,
                             sharex=True, squeeze=False)
    for (key, label, scale), ax in zip(panels, axes[:, 0], strict=True):
        for r in results:
            pts = [(p["t"], p[key] / scale) for p in r.timeline if key in p]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, label=f"{r.case} [{r.target}]"[:60], linewidth=1, marker=".")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    axes[-1, 0].set_xlabel("seconds")
    handles, _ = axes[0, 0].get_legend_handles_labels()
    if handles:
        axes[0, 0].legend(fontsize=6, loc="best")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    plt.close(fig)


def bars(labels: Sequence[str], series: dict[str, Sequence[float]], ylabel: str, path: Path,
         title: str = "") -> None:
    """Grouped bars: one group per label, one bar per series (e.g. sluice and Kafka)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=80)
    width = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series.items()):
        ax.bar([x + i * width for x in range(len(labels))], values, width, label=name)
    ax.set_xticks([x + width * (len(series) - 1) / 2 for x in range(len(labels))])
    ax.set_xticklabels(labels, fontsize=6, rotation=20, ha="right")
    ax.set_ylabel(ylabel)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    plt.close(fig)


ProgressFn = Callable[[str, int, int, float], None]
Say = Callable[[str], None]


def say(message: str) -> None:
    """A progress line on stderr (stdout stays the results')."""
    print(f"  {message}", file=sys.stderr, flush=True)


@contextmanager
def live_progress(enabled: bool = True) -> Iterator[ProgressFn]:
    """A progress callback ``(case, done, total, seconds)``: a rich bar on a terminal, a plain line
    every 5 s elsewhere (logs), nothing for runs shorter than that."""
    if not enabled:
        yield lambda _case, _done, _total, _seconds: None
        return
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("{task.description}"), BarColumn(),
                      TextColumn("{task.completed:,.0f}/{task.total:,.0f}"), TimeElapsedColumn(),
                      console=Console(stderr=True), transient=True) as bar:
            tasks: dict[str, Any] = {}

            def update(case: str, done: int, total: int, seconds: float) -> None:
                if case not in tasks:
                    tasks[case] = bar.add_task(case[:50], total=max(1, total))
                bar.update(tasks[case], completed=done)

            yield update
        return
    last = [time.monotonic()]

    def line(case: str, done: int, total: int, seconds: float) -> None:
        if time.monotonic() - last[0] >= 5:
            last[0] = time.monotonic()
            print(f"  {case}: {done:,}/{total:,} messages, {seconds:.0f} s", file=sys.stderr, flush=True)

    yield line
