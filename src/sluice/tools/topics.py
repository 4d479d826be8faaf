"""``sluice topics create|list|describe|delete|alter``: topic administration over the wire
protocol (CreateTopics, Metadata, ListOffsets, DescribeConfigs, DeleteTopics,
IncrementalAlterConfigs, CreatePartitions) against any Kafka-compatible broker."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from sluice.tools.common import (
    INT16_MAX,
    SubParsers,
    ToolError,
    UsageError,
    add_output_option,
    admin_client,
    config_name,
    describe_error,
    int_range,
    is_error,
    key_value,
    leaf,
    list_offsets,
    list_topics,
    positive_int,
    print_json,
    print_table,
    wait,
)

if TYPE_CHECKING:
    from confluent_kafka.admin import AdminClient


def add_parsers(group: SubParsers) -> None:
    """Add the ``topics`` actions to ``group`` (the subparsers of ``sluice topics``)."""
    p = leaf(group, "create", "create topics", create)
    p.add_argument("topics", nargs="+", metavar="TOPIC")
    p.add_argument(
        "--partitions",
        "-p",
        type=positive_int,
        metavar="N",
        help="partition count (default: the broker's num.partitions)",
    )
    p.add_argument(
        "--replication-factor",
        "-r",
        type=int_range(1, INT16_MAX),
        metavar="N",
        help="replicas per partition (default: the broker's default)",
    )
    p.add_argument(
        "--config",
        "-c",
        type=key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="topic config (repeatable)",
    )
    p.add_argument(
        "--if-not-exists", action="store_true", help="succeed when the topic already exists"
    )
    p.add_argument(
        "--validate-only",
        action="store_true",
        help="ask the broker to check the request without creating",
    )

    p = leaf(group, "list", "list topic names", list_)
    p.add_argument(
        "--include-internal",
        action="store_true",
        help="include internal topics (__consumer_offsets...)",
    )
    add_output_option(p)

    p = leaf(group, "describe", "partitions, leaders, offsets and configs of topics", describe)
    p.add_argument("topics", nargs="*", metavar="TOPIC", help="topics to describe (default: all)")
    p.add_argument(
        "--all-configs",
        action="store_true",
        help="show every config, not only the topic's overrides",
    )
    p.add_argument(
        "--include-internal", action="store_true", help="with no TOPIC, include internal topics"
    )
    add_output_option(p)

    p = leaf(group, "delete", "delete topics", delete)
    p.add_argument("topics", nargs="+", metavar="TOPIC")
    p.add_argument("--if-exists", action="store_true", help="succeed when a topic does not exist")

    p = leaf(group, "alter", "change a topic's configs or add partitions", alter)
    p.add_argument("topic", metavar="TOPIC")
    p.add_argument(
        "--config",
        "-c",
        type=key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a config override (repeatable)",
    )
    p.add_argument(
        "--delete-config",
        "-d",
        action="append",
        default=[],
        type=config_name,
        metavar="KEY",
        help="remove a config override, back to the default (repeatable)",
    )
    p.add_argument(
        "--partitions", "-p", type=positive_int, metavar="N", help="raise the partition count to N"
    )
    p.add_argument(
        "--validate-only",
        action="store_true",
        help="ask the broker to check the request without applying",
    )


def _topic_error(topic: str, exc: BaseException) -> ToolError:
    if is_error(exc, "UNKNOWN_TOPIC_OR_PART"):
        return ToolError(f"unknown topic {topic!r}")
    return ToolError(f"topic {topic!r}: {describe_error(exc)}")


def create(args: argparse.Namespace) -> int:
    from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]  # no __all__

    admin = admin_client(args)
    configs = dict(args.config)
    new = [
        NewTopic(
            name,
            num_partitions=args.partitions or -1,
            replication_factor=args.replication_factor or -1,
            config=configs,
        )
        for name in args.topics
    ]
    futures = admin.create_topics(
        new,
        operation_timeout=args.timeout,
        request_timeout=args.timeout,
        validate_only=args.validate_only,
    )
    failed: list[str] = []
    for name, future in futures.items():
        try:
            wait(future, args)
        except Exception as exc:
            if args.if_not_exists and is_error(exc, "TOPIC_ALREADY_EXISTS"):
                continue
            if is_error(exc, "TOPIC_ALREADY_EXISTS"):
                failed.append(f"topic {name!r} already exists")
            else:
                failed.append(f"cannot create topic {name!r}: {describe_error(exc)}")
            continue
        verb = "Validated" if args.validate_only else "Created"
        print(f"{verb} topic {name}.")
    if failed:
        raise ToolError("; ".join(failed))
    return 0


def _topic_names(admin: AdminClient, args: argparse.Namespace) -> list[str]:
    meta = list_topics(admin, args, None)
    return sorted(
        name for name in meta.topics if args.include_internal or not name.startswith("__")
    )


def list_(args: argparse.Namespace) -> int:
    admin = admin_client(args)
    names = _topic_names(admin, args)
    if args.output == "json":
        print_json(names)
    else:
        for name in names:
            print(name)
    return 0


def _source(entry: Any) -> int:
    """A config entry's source as Kafka's number (librdkafka hands back an int or the enum)."""
    source = entry.source
    return int(getattr(source, "value", source))


def _overrides(
    admin: AdminClient, args: argparse.Namespace, topics: list[str]
) -> dict[str, dict[str, str]]:
    from confluent_kafka.admin import ConfigResource, ConfigSource, ResourceType  # type: ignore[attr-defined]  # no __all__

    resources = [ConfigResource(ResourceType.TOPIC, t) for t in topics]
    if not resources:
        return {}
    futures = admin.describe_configs(resources, request_timeout=args.timeout)
    result: dict[str, dict[str, str]] = {}
    for resource, future in futures.items():
        try:
            entries = wait(future, args)
        except Exception as exc:
            raise _topic_error(resource.name, exc) from exc
        result[resource.name] = {
            name: entry.value
            for name, entry in sorted(entries.items())
            if args.all_configs or _source(entry) == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
            if entry.value is not None
        }
    return result


def describe(args: argparse.Namespace) -> int:
    admin = admin_client(args)
    meta = list_topics(admin, args, None)
    if args.topics:
        for name in args.topics:
            if name not in meta.topics:
                raise ToolError(f"unknown topic {name!r}")
        names = list(dict.fromkeys(args.topics))
    else:
        names = sorted(n for n in meta.topics if args.include_internal or not n.startswith("__"))
    described: list[dict[str, Any]] = []
    partitions: list[tuple[str, int]] = []
    for name in names:
        tmeta = meta.topics[name]
        if tmeta.error is not None:
            raise _topic_error(name, Exception(tmeta.error.str()))
        partitions.extend((name, p) for p in tmeta.partitions)
    starts = list_offsets(admin, args, partitions, "earliest")
    ends = list_offsets(admin, args, partitions, "latest")
    configs = _overrides(admin, args, names)
    for name in names:
        tmeta = meta.topics[name]
        parts = []
        for pid in sorted(tmeta.partitions):
            pm = tmeta.partitions[pid]
            parts.append(
                {
                    "partition": pid,
                    "leader": pm.leader,
                    "replicas": list(pm.replicas),
                    "isr": list(pm.isrs),
                    "log_start_offset": starts[(name, pid)],
                    "log_end_offset": ends[(name, pid)],
                }
            )
        described.append(
            {
                "topic": name,
                "partition_count": len(parts),
                "replication_factor": max((len(p["replicas"]) for p in parts), default=0),
                "configs": configs.get(name, {}),
                "partitions": parts,
            }
        )
    if args.output == "json":
        print_json(described)
        return 0
    for i, t in enumerate(described):
        if i:
            print()
        cfg = ",".join(f"{k}={v}" for k, v in t["configs"].items()) or "-"
        print(
            f"Topic: {t['topic']}  PartitionCount: {t['partition_count']}  "
            f"ReplicationFactor: {t['replication_factor']}  Configs: {cfg}"
        )
        print_table(
            (
                (
                    p["partition"],
                    p["leader"],
                    ",".join(map(str, p["replicas"])),
                    ",".join(map(str, p["isr"])),
                    p["log_start_offset"],
                    p["log_end_offset"],
                )
                for p in t["partitions"]
            ),
            ["PARTITION", "LEADER", "REPLICAS", "ISR", "LOG-START-OFFSET", "LOG-END-OFFSET"],
        )
    return 0


def delete(args: argparse.Namespace) -> int:
    admin = admin_client(args)
    futures = admin.delete_topics(
        list(dict.fromkeys(args.topics)),
        operation_timeout=args.timeout,
        request_timeout=args.timeout,
    )
    failed: list[str] = []
    for name, future in futures.items():
        try:
            wait(future, args)
        except Exception as exc:
            if is_error(exc, "UNKNOWN_TOPIC_OR_PART"):
                if not args.if_exists:
                    failed.append(f"unknown topic {name!r}")
                continue
            failed.append(f"cannot delete topic {name!r}: {describe_error(exc)}")
            continue
        print(f"Deleted topic {name}.")
    if failed:
        raise ToolError("; ".join(failed))
    return 0


def alter(args: argparse.Namespace) -> int:
    from confluent_kafka.admin import (  # type: ignore[attr-defined]  # no __all__
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
        NewPartitions,
        ResourceType,
    )

    if not (args.config or args.delete_config or args.partitions):
        raise UsageError("nothing to change: give --config, --delete-config or --partitions")
    both = set(dict(args.config)) & set(args.delete_config)
    if both:
        raise UsageError(f"both set and deleted: {', '.join(sorted(both))}")
    admin = admin_client(args)
    meta = list_topics(admin, args, None)
    if args.topic not in meta.topics:
        raise ToolError(f"unknown topic {args.topic!r}")
    if args.config or args.delete_config:
        entries = [
            ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in args.config
        ]
        entries += [
            ConfigEntry(k, None, incremental_operation=AlterConfigOpType.DELETE)
            for k in args.delete_config
        ]
        resource = ConfigResource(ResourceType.TOPIC, args.topic, incremental_configs=entries)
        futures = admin.incremental_alter_configs(
            [resource], request_timeout=args.timeout, validate_only=args.validate_only
        )
        for future in futures.values():
            try:
                wait(future, args)
            except Exception as exc:
                raise ToolError(
                    f"cannot alter configs of topic {args.topic!r}: {describe_error(exc)}"
                ) from exc
        changes = [f"{k}={v}" for k, v in args.config] + [f"-{k}" for k in args.delete_config]
        verb = "Validated" if args.validate_only else "Altered"
        print(f"{verb} configs of topic {args.topic}: {' '.join(changes)}.")
    if args.partitions:
        current = len(meta.topics[args.topic].partitions)
        if args.partitions < current:
            raise ToolError(
                f"topic {args.topic!r} has {current} partitions; the count can only grow"
            )
        if args.partitions == current:
            print(f"Topic {args.topic} already has {current} partitions.", file=sys.stderr)
            return 0
        added = admin.create_partitions(
            [NewPartitions(args.topic, args.partitions)],
            operation_timeout=args.timeout,
            request_timeout=args.timeout,
            validate_only=args.validate_only,
        )
        for future in added.values():
            try:
                wait(future, args)
            except Exception as exc:
                raise ToolError(
                    f"cannot add partitions to topic {args.topic!r}: {describe_error(exc)}"
                ) from exc
        verb = "Validated" if args.validate_only else "Raised"
        print(f"{verb} partition count of topic {args.topic} from {current} to {args.partitions}.")
    return 0
