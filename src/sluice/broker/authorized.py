"""What clients are told they may do, when they ask (Metadata v8+, DescribeCluster).

sluice has no authorizer, so, as Kafka without one answers, every operation on a resource is
authorized: the bit of each operation Kafka supports on that resource type
(AclEntry.supportedOperations), by Kafka's AclOperation codes. An operation sluice does not
implement is refused by its API, not here.
"""

from __future__ import annotations

NOT_REQUESTED = -(2**31)
"""The schema default of the ``*_authorized_operations`` fields: not asked for."""

_READ, _WRITE, _CREATE, _DELETE, _ALTER, _DESCRIBE = 3, 4, 5, 6, 7, 8
_CLUSTER_ACTION, _DESCRIBE_CONFIGS, _ALTER_CONFIGS, _IDEMPOTENT_WRITE = 9, 10, 11, 12


def _bits(*operations: int) -> int:
    return sum(1 << op for op in operations)


CLUSTER_OPERATIONS = _bits(
    _CREATE,
    _CLUSTER_ACTION,
    _DESCRIBE_CONFIGS,
    _ALTER_CONFIGS,
    _IDEMPOTENT_WRITE,
    _ALTER,
    _DESCRIBE,
)
TOPIC_OPERATIONS = _bits(
    _READ, _WRITE, _CREATE, _DESCRIBE, _DELETE, _ALTER, _DESCRIBE_CONFIGS, _ALTER_CONFIGS
)
