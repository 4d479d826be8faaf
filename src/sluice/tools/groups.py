"""``sluice groups list|describe|delete|reset-offsets``: consumer group administration over the
wire protocol (ListGroups, DescribeGroups, OffsetFetch, ListOffsets, DeleteGroups,
OffsetCommit), in the spirit of Kafka's ``kafka-consumer-groups``."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sluice.plural import plural
from sluice.tools.common import (
    SubParsers,
    ToolError,
    UsageError,
    add_output_option,
    admin_client,
    describe_error,
    group_id,
    is_error,
    leaf,
    list_offsets,
    list_topics,
    print_json,
    print_table,
    wait,
)

if TYPE_CHECKING:
    from confluent_kafka.admin import AdminClient, ConsumerGroupDescription  # type: ignore[attr-defined]  # no __all__


def _topic_scope(text: str) -> tuple[str, list[int] | None]:
    """argparse type for ``--topic``: ``TOPIC`` or ``TOPIC:P[,P...]``."""
    name, sep, parts = text.rpartition(":")
    if not sep:
        return text, None
    try:
        partitions = sorted({int(p) for p in parts.split(",")})
    except ValueError:
        # A colon that is not followed by partition numbers belongs to the name.
        return text, None
    if not name or any(p < 0 for p in partitions):
        raise argparse.ArgumentTypeError(f"expected TOPIC or TOPIC:P[,P...], got {text!r}")
    return name, partitions


def _datetime_ms(text: str) -> int:
    """argparse type for ``--to-datetime``: ISO 8601 (naive means local time), to epoch ms."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ISO 8601 date-time, got {text!r}") from None
    try:
        stamp = when.timestamp()
    except (ValueError, OverflowError, OSError):  # a local time at the ends of the calendar
        raise argparse.ArgumentTypeError(f"out of range: {text!r}") from None
    # Before 1970 every record is at or after it: the earliest offset (ListOffsets takes no
    # negative time; librdkafka refused it as "an invalid offset").
    return max(0, int(stamp * 1000))


def add_parsers(group: SubParsers) -> None:
    """Add the ``groups`` actions to ``group`` (the subparsers of ``sluice groups``)."""
    p = leaf(group, "list", "list consumer groups", list_)
    p.add_argument(
        "--state",
        nargs="?",
        const=frozenset(),
        type=_states,
        metavar="STATE[,STATE...]",
        help="show each group's state too; given states, only groups in them (as "
        "kafka-consumer-groups --list --state Stable,Empty)",
    )
    add_output_option(p)

    p = leaf(
        group, "describe", "members, assignments, committed offsets and lag of groups", describe
    )
    p.add_argument("groups", nargs="+", metavar="GROUP", type=group_id)
    p.add_argument(
        "--members",
        action="store_true",
        help="list the members and their assignments instead of offsets",
    )
    add_output_option(p)

    p = leaf(group, "delete", "delete consumer groups (and their committed offsets)", delete)
    p.add_argument("groups", nargs="+", metavar="GROUP", type=group_id)

    p = leaf(group, "reset-offsets", "set an inactive group's committed offsets", reset_offsets)
    p.add_argument("group", metavar="GROUP", type=group_id)
    scope = p.add_mutually_exclusive_group(required=True)
    scope.add_argument(
        "--topic",
        "-t",
        type=_topic_scope,
        action="append",
        metavar="TOPIC[:P,...]",
        help="a topic, or some of its partitions (repeatable)",
    )
    scope.add_argument(
        "--all-topics", action="store_true", help="every topic the group has offsets for"
    )
    to = p.add_mutually_exclusive_group(required=True)
    to.add_argument("--to-earliest", action="store_true", help="the log start offset")
    to.add_argument("--to-latest", action="store_true", help="the log end offset")
    to.add_argument("--to-offset", type=int, metavar="N", help="offset N (kept within the log)")
    to.add_argument(
        "--shift-by", type=int, metavar="N", help="the committed offset plus N (may be negative)"
    )
    to.add_argument(
        "--to-datetime",
        type=_datetime_ms,
        metavar="ISO8601",
        help="the first record at or after this time, e.g. 2024-05-01T12:00:00Z",
    )
    p.add_argument(
        "--execute",
        action="store_true",
        help="commit the new offsets (without it: a dry run that prints them)",
    )
    add_output_option(p)


GROUP_STATES = ("Stable", "Empty", "PreparingRebalance", "CompletingRebalance", "Dead", "Unknown")


def _states(text: str) -> frozenset[str]:
    """argparse type for ``groups list --state``: comma-separated states, any case (as Kafka's
    tool reads them), in Kafka's spelling; an unknown one is a usage error naming the states."""
    by_lower = {name.lower(): name for name in GROUP_STATES}
    states = set()
    for word in text.split(","):
        name = by_lower.get(word.strip().lower())
        if name is None:
            raise argparse.ArgumentTypeError(
                f"unknown group state {word.strip()!r} (states: {', '.join(GROUP_STATES)})"
            )
        states.add(name)
    return frozenset(states)


def _state_name(state: Any) -> str:
    """``Stable``, ``Empty``, ``PreparingRebalance``... (Kafka's spelling) from librdkafka's enum."""
    names = {
        "STABLE": "Stable",
        "EMPTY": "Empty",
        "DEAD": "Dead",
        "PREPARING_REBALANCING": "PreparingRebalance",
        "COMPLETING_REBALANCING": "CompletingRebalance",
        "UNKNOWN": "Unknown",
    }
    raw = getattr(state, "name", str(state))
    return names.get(raw, raw)


def list_(args: argparse.Namespace) -> int:
    admin = admin_client(args)
    try:
        result = wait(admin.list_consumer_groups(request_timeout=args.timeout), args)
    except Exception as exc:
        raise ToolError(f"cannot list groups: {describe_error(exc)}") from exc
    for err in result.errors:
        print(f"warning: {describe_error(Exception(err))}", file=sys.stderr)
    listings = sorted(result.valid, key=lambda g: g.group_id)
    if args.state:  # only the groups in these states
        listings = [g for g in listings if _state_name(g.state) in args.state]
    if args.output == "json":
        print_json(
            [
                {
                    "group": g.group_id,
                    "state": _state_name(g.state),
                    "simple": g.is_simple_consumer_group,
                }
                for g in listings
            ]
        )
    elif args.state is not None:
        print_table(((g.group_id, _state_name(g.state)) for g in listings), ["GROUP", "STATE"])
    else:
        for g in listings:
            print(g.group_id)
    return 0


def _describe_group(
    admin: AdminClient, args: argparse.Namespace, group: str
) -> ConsumerGroupDescription:
    futures = admin.describe_consumer_groups([group], request_timeout=args.timeout)
    try:
        description: ConsumerGroupDescription = wait(futures[group], args)
    except Exception as exc:
        if is_error(exc, "GROUP_ID_NOT_FOUND"):
            raise ToolError(f"unknown group {group!r}") from exc
        raise ToolError(f"cannot describe group {group!r}: {describe_error(exc)}") from exc
    return description


def _committed(
    admin: AdminClient, args: argparse.Namespace, group: str
) -> dict[tuple[str, int], int]:
    """The group's committed offsets (partitions with none are left out)."""
    from confluent_kafka import ConsumerGroupTopicPartitions

    futures = admin.list_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(group)], request_timeout=args.timeout
    )
    try:
        result = wait(futures[group], args)
    except Exception as exc:
        if is_error(exc, "GROUP_ID_NOT_FOUND"):
            return {}
        raise ToolError(f"cannot fetch offsets of group {group!r}: {describe_error(exc)}") from exc
    offsets: dict[tuple[str, int], int] = {}
    for tp in result.topic_partitions or []:
        if tp.error is not None:
            raise ToolError(
                f"offset of {tp.topic}[{tp.partition}] in group {group!r}: {tp.error.str()}"
            )
        if tp.offset >= 0:
            offsets[(tp.topic, tp.partition)] = tp.offset
    return offsets


def _group_report(admin: AdminClient, args: argparse.Namespace, group: str) -> dict[str, Any]:
    desc = _describe_group(admin, args, group)
    committed = _committed(admin, args, group)
    state = _state_name(desc.state)
    if state == "Dead" and not committed and not desc.members:
        raise ToolError(f"unknown group {group!r}")
    owner: dict[tuple[str, int], Any] = {}
    members = []
    for m in sorted(desc.members, key=lambda m: m.member_id):
        tps = sorted(
            (tp.topic, tp.partition)
            for tp in (m.assignment.topic_partitions if m.assignment else [])
        )
        for tp in tps:
            owner[tp] = m
        members.append(
            {
                "member_id": m.member_id,
                "group_instance_id": m.group_instance_id,
                "client_id": m.client_id,
                "host": m.host,
                "assignment": [{"topic": t, "partition": p} for t, p in tps],
            }
        )
    partitions = sorted(set(committed) | set(owner))
    ends = list_offsets(admin, args, partitions, "latest")
    offsets = []
    for tp in partitions:
        current = committed.get(tp)
        end = ends[tp]
        who = owner.get(tp)
        offsets.append(
            {
                "topic": tp[0],
                "partition": tp[1],
                "current_offset": current,
                "log_end_offset": end,
                "lag": None if current is None else max(0, end - current),
                "member_id": who.member_id if who else None,
                "host": who.host if who else None,
                "client_id": who.client_id if who else None,
            }
        )
    coordinator = desc.coordinator
    return {
        "group": group,
        "state": state,
        "assignor": desc.partition_assignor or None,
        "coordinator": None
        if coordinator is None
        else f"{coordinator.id} ({coordinator.host}:{coordinator.port})",
        "members": members,
        "offsets": offsets,
    }


def _dash(value: object) -> object:
    return "-" if value is None or value == "" else value


def describe(args: argparse.Namespace) -> int:
    admin = admin_client(args)
    reports = [_group_report(admin, args, g) for g in dict.fromkeys(args.groups)]
    if args.output == "json":
        print_json(reports)
        return 0
    for i, r in enumerate(reports):
        if i:
            print()
        print(
            f"Group: {r['group']}  State: {r['state']}  Assignor: {_dash(r['assignor'])}  "
            f"Members: {len(r['members'])}  Coordinator: {_dash(r['coordinator'])}"
        )
        if args.members:
            if not r["members"]:
                print(f"Consumer group {r['group']!r} has no active members.")
                continue
            print_table(
                (
                    (
                        m["member_id"],
                        _dash(m["group_instance_id"]),
                        m["host"],
                        m["client_id"],
                        len(m["assignment"]),
                        _dash(",".join(f"{a['topic']}:{a['partition']}" for a in m["assignment"])),
                    )
                    for m in r["members"]
                ),
                ["CONSUMER-ID", "INSTANCE-ID", "HOST", "CLIENT-ID", "#PARTITIONS", "ASSIGNMENT"],
            )
            continue
        rows: list[tuple[object, ...]] = [
            (
                o["topic"],
                o["partition"],
                _dash(o["current_offset"]),
                o["log_end_offset"],
                _dash(o["lag"]),
                _dash(o["member_id"]),
                _dash(o["host"]),
                _dash(o["client_id"]),
            )
            for o in r["offsets"]
        ]
        # Members that own nothing still show, as in Kafka's tool.
        rows += [
            ("-", "-", "-", "-", "-", m["member_id"], m["host"], m["client_id"])
            for m in r["members"]
            if not m["assignment"]
        ]
        print_table(
            rows,
            [
                "TOPIC",
                "PARTITION",
                "CURRENT-OFFSET",
                "LOG-END-OFFSET",
                "LAG",
                "CONSUMER-ID",
                "HOST",
                "CLIENT-ID",
            ],
        )
    return 0


def delete(args: argparse.Namespace) -> int:
    admin = admin_client(args)
    groups = list(dict.fromkeys(args.groups))
    futures = admin.delete_consumer_groups(groups, request_timeout=args.timeout)
    failed = []
    for group, future in futures.items():
        try:
            wait(future, args)
        except Exception as exc:
            if is_error(exc, "GROUP_ID_NOT_FOUND"):
                failed.append(f"unknown group {group!r}")
            elif is_error(exc, "NON_EMPTY_GROUP"):
                failed.append(f"group {group!r} has active members: stop its consumers first")
            else:
                failed.append(f"cannot delete group {group!r}: {describe_error(exc)}")
            continue
        print(f"Deleted group {group}.")
    if failed:
        raise ToolError("; ".join(failed))
    return 0


def _scope(
    admin: AdminClient, args: argparse.Namespace, committed: dict[tuple[str, int], int]
) -> list[tuple[str, int]]:
    if args.all_topics:
        if not committed:
            raise ToolError(
                f"group {args.group!r} has no committed offsets; name topics with --topic"
            )
        return sorted(committed)
    meta = list_topics(admin, args, None)
    wanted: set[tuple[str, int]] = set()
    for topic, partitions in args.topic:
        tmeta = meta.topics.get(topic)
        if tmeta is None:
            raise ToolError(f"unknown topic {topic!r}")
        if partitions is None:
            wanted.update((topic, p) for p in tmeta.partitions)
            continue
        missing = [p for p in partitions if p not in tmeta.partitions]
        if missing:
            raise ToolError(
                f"topic {topic!r} has no partition {missing[0]} (it has {len(tmeta.partitions)})"
            )
        wanted.update((topic, p) for p in partitions)
    return sorted(wanted)


def reset_offsets(args: argparse.Namespace) -> int:
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition

    if args.to_offset is not None and args.to_offset < 0:
        raise UsageError("--to-offset must be >= 0")
    admin = admin_client(args)
    desc = _describe_group(admin, args, args.group)
    state = _state_name(desc.state)
    if desc.members or state not in ("Empty", "Dead", "Unknown"):
        raise ToolError(
            f"group {args.group!r} is {state} with {plural(len(desc.members), 'member')}: "
            "offsets can only be reset while it has no members; stop its consumers first"
        )
    committed = _committed(admin, args, args.group)
    partitions = _scope(admin, args, committed)
    starts = list_offsets(admin, args, partitions, "earliest")
    ends = list_offsets(admin, args, partitions, "latest")
    by_time: dict[tuple[str, int], int] = {}
    if args.to_datetime is not None:
        by_time = list_offsets(admin, args, partitions, args.to_datetime)
    plan: list[tuple[str, int, int | None, int]] = []
    for tp in partitions:
        lo, hi = starts[tp], ends[tp]
        current = committed.get(tp)
        if args.to_earliest:
            target = lo
        elif args.to_latest:
            target = hi
        elif args.to_offset is not None:
            target = args.to_offset
        elif args.shift_by is not None:
            # No committed offset: a consumer would start at the log end (auto.offset.reset=latest).
            target = (hi if current is None else current) + args.shift_by
        else:
            target = by_time[tp]
        plan.append((tp[0], tp[1], current, min(max(target, lo), hi)))
    if args.output == "json":
        print_json(
            [
                {
                    "group": args.group,
                    "topic": t,
                    "partition": p,
                    "current_offset": c,
                    "new_offset": n,
                }
                for t, p, c, n in plan
            ]
        )
    else:
        print_table(
            ((args.group, t, p, _dash(c), n) for t, p, c, n in plan),
            ["GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "NEW-OFFSET"],
        )
    if not args.execute:
        print("Dry run: nothing changed; add --execute to commit these offsets.", file=sys.stderr)
        return 0
    request = ConsumerGroupTopicPartitions(
        args.group, [TopicPartition(t, p, n) for t, p, _, n in plan]
    )
    futures = admin.alter_consumer_group_offsets([request], request_timeout=args.timeout)
    try:
        result = wait(futures[args.group], args)
    except Exception as exc:
        raise ToolError(
            f"cannot commit offsets of group {args.group!r}: {describe_error(exc)}"
        ) from exc
    errors = [tp for tp in result.topic_partitions or [] if tp.error is not None]
    if errors:
        tp = errors[0]
        raise ToolError(
            f"cannot commit offsets of group {args.group!r}: {tp.topic}[{tp.partition}]: {tp.error.str()}"
        )
    if args.output != "json":
        print(
            f"Committed new offsets of {plural(len(plan), 'partition')} for group {args.group}.",
            file=sys.stderr,
        )
    return 0
