"""DescribeConfigs, AlterConfigs and IncrementalAlterConfigs for topics (and, read-only, the
broker).

Topic configs are the storage engine's (Kafka's names plus ``sluice.*``); a value's source says
whether it is a topic override, a broker-wide default from the TOML file or ``--set``, or the
built-in default, with the broker's synonyms when asked. Broker configs are static: they are
described but changing them over the wire is refused with INVALID_REQUEST, never ignored.

Each DescribeConfigs version gets the fields Kafka fills at that version: v0 ``is_default``
(no source), v1+ the source and, when asked, the synonyms, v3+ the type and, when asked, the
documentation.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping

from sluice.broker.context import BrokerContext, turn_after
from sluice.config import TOPIC_TO_BROKER, BrokerConfig, ConfigType, LogConfig, describe
from sluice.dataclass import dataclass
from sluice.errors import ErrorCode, InvalidConfigError, Refused, SluiceError
from sluice.protocol import Request
from sluice.protocol import messages as m
from sluice.protocol.messages import ConfigOperation, ConfigResourceType

# Kafka's ConfigSource values.
DYNAMIC_TOPIC_CONFIG = 1
STATIC_BROKER_CONFIG = 4
DEFAULT_CONFIG = 5

@dataclass(slots=True)
class ConfigEntry:
    name: str
    value: str
    config_source: int
    read_only: bool
    synonyms: list[tuple[str, str, int]]
    """(name, value, source) in precedence order; the first is where ``value`` comes from."""
    is_default: bool
    """v0's flag: not set on this resource (a topic without an override, a broker setting not
    given), as Kafka defined it when v0 was current."""


def config_entries(
    broker: BrokerContext, overrides: Mapping[str, str], values: Mapping[str, str]
) -> list[ConfigEntry]:
    """Every topic config with its value and where the value comes from: the topic's override,
    else the broker-wide default if the broker's settings give one (even if equal to the
    built-in value: Kafka reports what was set), else the built-in default."""
    builtin = LogConfig().to_dict()
    broker_defaults = broker.config.topic_defaults.to_dict()
    static = broker.config.static_keys
    entries = []
    for name, value in sorted(values.items()):
        synonyms: list[tuple[str, str, int]] = []
        if name in overrides:
            synonyms.append((name, overrides[name], DYNAMIC_TOPIC_CONFIG))
        broker_key = TOPIC_TO_BROKER.get(name)
        if broker_key is not None and broker_key in static:
            synonyms.append((broker_key, broker_defaults[name], STATIC_BROKER_CONFIG))
        synonyms.append((broker_key or name, builtin[name], DEFAULT_CONFIG))
        entries.append(
            ConfigEntry(name, value, synonyms[0][2], False, synonyms, is_default=name not in overrides)
        )
    return entries


def broker_entries(config: BrokerConfig) -> list[ConfigEntry]:
    """This broker's settings: STATIC_BROKER_CONFIG for those given (then the default as a
    synonym), DEFAULT_CONFIG for the rest; all read-only, since none can change at runtime."""
    defaults = BrokerConfig().settings()
    entries = []
    for name, value in sorted(config.settings().items()):
        synonyms = [(name, value, STATIC_BROKER_CONFIG)] if name in config.static_keys else []
        synonyms.append((name, defaults[name], DEFAULT_CONFIG))
        source = synonyms[0][2]
        entries.append(
            ConfigEntry(name, value, source, True, synonyms, is_default=source == DEFAULT_CONFIG)
        )
    return entries


def _result(
    entry: ConfigEntry, synonyms: bool, docs: bool
) -> m.DescribeConfigsResourceResult:
    # Every field is filled; the codec writes those the request's version has.
    kind, doc = describe(entry.name)
    return m.DescribeConfigsResourceResult(
        name=entry.name,
        value=entry.value,
        read_only=entry.read_only,
        is_default=entry.is_default,
        config_source=entry.config_source,
        is_sensitive=False,
        synonyms=[m.DescribeConfigsSynonym(name=n, value=v, source=s) for n, v, s in entry.synonyms]
        if synonyms
        else [],
        config_type=kind,
        documentation=doc if docs else None,
    )


def _is_this_broker(broker: BrokerContext, name: str) -> bool:
    return name in ("", str(broker.config.node_id))


async def describe_configs(broker: BrokerContext, request: Request) -> m.DescribeConfigsResponse:
    body = request.body
    assert isinstance(body, m.DescribeConfigsRequest)
    results = []
    # Each resource once, however often it is named (admin clients never repeat one): a
    # resource's answer is ~100 times its mention, so repeats made a small request a big,
    # slow answer.
    distinct = {
        (r.resource_type, r.resource_name, None if r.configuration_keys is None else tuple(r.configuration_keys)): r
        for r in body.resources
    }
    for done, res in enumerate(distinct.values(), 1):
        await turn_after(done)
        result = m.DescribeConfigsResult(
            error_code=ErrorCode.NONE,
            error_message=None,
            resource_type=res.resource_type,
            resource_name=res.resource_name,
            configs=[],
        )
        try:
            if res.resource_type == ConfigResourceType.TOPIC:
                topic = broker.logs.topic(res.resource_name)
                entries = config_entries(broker, topic.config_overrides, topic.config.to_dict())
            elif res.resource_type == ConfigResourceType.BROKER:
                if not _is_this_broker(broker, res.resource_name):
                    raise Refused(ErrorCode.INVALID_REQUEST, f"no broker {res.resource_name!r} here")
                entries = broker_entries(broker.config)
            else:
                raise Refused(ErrorCode.INVALID_REQUEST, f"resource type {res.resource_type} is not supported")
            keys = set(res.configuration_keys or ())
            # None or empty: every config, as Kafka does.
            result.configs = [
                _result(e, body.include_synonyms, body.include_documentation)
                for e in entries
                if not keys or e.name in keys
            ]
        except SluiceError as exc:
            result.error_code = exc.code
            result.error_message = str(exc)
        results.append(result)
    return m.DescribeConfigsResponse(throttle_time_ms=0, results=results)


async def _alter(
    broker: BrokerContext,
    resource_type: int,
    name: str,
    set_configs: dict[str, str],
    delete: list[str],
    *,
    derive: dict[str, Callable[[str], str]] | None = None,
    replace: bool,
    validate_only: bool,
) -> m.AlterConfigsResourceResponse:
    response = m.AlterConfigsResourceResponse(
        error_code=ErrorCode.NONE, error_message=None, resource_type=resource_type, resource_name=name
    )
    try:
        if resource_type == ConfigResourceType.TOPIC:
            await broker.logs.alter_topic_config(
                name,
                set_configs,
                delete,
                derive_configs=derive,
                replace=replace,
                validate_only=validate_only,
            )
        elif resource_type == ConfigResourceType.BROKER:
            raise Refused(
                ErrorCode.INVALID_REQUEST,
                "broker configs are static: set them in the TOML file or with --set and restart",
            )
        else:
            raise Refused(ErrorCode.INVALID_REQUEST, f"resource type {resource_type} is not supported")
    except SluiceError as exc:
        response.error_code = exc.code
        response.error_message = str(exc)
    return response


NAMED_TWICE = "Each resource must appear at most once."


def _named_twice(
    resources: list[m.AlterConfigsResource] | list[m.IncrementalAlterConfigsResource],
) -> set[tuple[int, str]]:
    """Resources a request names more than once. Kafka refuses every mention of them
    (ConfigAdminManager.preprocess): applied one after the other, the second would silently
    undo the first (AlterConfigs replaces the whole override set) while both were answered
    success."""
    counts = Counter((r.resource_type, r.resource_name) for r in resources)
    return {key for key, n in counts.items() if n > 1}


def _refused(
    res: m.AlterConfigsResource | m.IncrementalAlterConfigsResource, problem: SluiceError
) -> m.AlterConfigsResourceResponse:
    return m.AlterConfigsResourceResponse(
        error_code=problem.code,
        error_message=str(problem),
        resource_type=res.resource_type,
        resource_name=res.resource_name,
    )


def _keys_problem(names: list[str], nulls: list[str]) -> SluiceError | None:
    """Kafka's checks of a resource's configs before anything is applied, in both APIs
    (ConfigAdminManager.preprocess), in its words: a key given twice (which value would win?)
    and a null value where the API cannot mean one (``nulls``: AlterConfigs used to drop such
    a key from the override set, and an incremental APPEND of nothing to succeed, both
    answered as a success)."""
    dupes = [k for k, n in Counter(names).items() if n > 1]
    if dupes:
        return Refused(ErrorCode.INVALID_REQUEST, f"Error due to duplicate config keys: {', '.join(dupes)}")
    if nulls:
        return Refused(ErrorCode.INVALID_REQUEST, f"Null value not supported for : {', '.join(nulls)}")
    return None


async def alter_configs(broker: BrokerContext, request: Request) -> m.AlterConfigsResponse:
    body = request.body
    assert isinstance(body, m.AlterConfigsRequest)
    responses = []
    twice = _named_twice(body.resources)
    for done, res in enumerate(body.resources, 1):
        await turn_after(done)
        if (res.resource_type, res.resource_name) in twice:
            responses.append(_refused(res, Refused(ErrorCode.INVALID_REQUEST, NAMED_TWICE)))
            continue
        problem = _keys_problem([c.name for c in res.configs], [c.name for c in res.configs if c.value is None])
        if problem is not None:
            responses.append(_refused(res, problem))
            continue
        set_configs = {c.name: c.value for c in res.configs if c.value is not None}
        responses.append(
            await _alter(
                broker,
                res.resource_type,
                res.resource_name,
                set_configs,
                [],
                replace=True,
                validate_only=body.validate_only,
            )
        )
    return m.AlterConfigsResponse(throttle_time_ms=0, responses=responses)


def _list_operation(
    res: m.IncrementalAlterConfigsResource, c: m.IncrementalAlterableConfig
) -> Callable[[str], str]:
    """APPEND or SUBTRACT on a list-typed topic config (``cleanup.policy``), as Kafka: from the
    topic's current value (read under the topic's lock), the given items added (those not yet
    in it) or removed."""
    kind, _ = describe(c.name)
    if kind != ConfigType.LIST:
        raise InvalidConfigError(f"config {c.name!r} is not a list: APPEND/SUBTRACT do not apply")
    if res.resource_type != ConfigResourceType.TOPIC:
        raise Refused(ErrorCode.INVALID_REQUEST, "only topic configs can be changed over the wire")
    given = [item.strip() for item in (c.value or "").split(",") if item.strip()]
    append = c.config_operation == ConfigOperation.APPEND

    def derive(current: str) -> str:
        items = [item for item in current.split(",") if item]
        if append:
            return ",".join(items + [item for item in given if item not in items])
        return ",".join(item for item in items if item not in given)

    return derive


async def incremental_alter_configs(
    broker: BrokerContext, request: Request
) -> m.IncrementalAlterConfigsResponse:
    body = request.body
    assert isinstance(body, m.IncrementalAlterConfigsRequest)
    responses = []
    twice = _named_twice(body.resources)
    for done, res in enumerate(body.resources, 1):
        await turn_after(done)
        if (res.resource_type, res.resource_name) in twice:
            responses.append(_refused(res, Refused(ErrorCode.INVALID_REQUEST, NAMED_TWICE)))
            continue
        set_configs: dict[str, str] = {}
        derive: dict[str, Callable[[str], str]] = {}
        delete: list[str] = []
        nulls = [c.name for c in res.configs if c.value is None and c.config_operation != ConfigOperation.DELETE]
        problem = _keys_problem([c.name for c in res.configs], nulls)
        for c in res.configs:
            if problem is not None:
                break
            if c.config_operation == ConfigOperation.SET and c.value is not None:  # null: above
                set_configs[c.name] = c.value
            elif c.config_operation == ConfigOperation.DELETE:
                delete.append(c.name)
            elif c.config_operation in (ConfigOperation.APPEND, ConfigOperation.SUBTRACT):
                try:
                    derive[c.name] = _list_operation(res, c)
                except SluiceError as exc:
                    problem = exc
            else:
                problem = Refused(ErrorCode.INVALID_REQUEST, f"unknown config operation {c.config_operation}")
        if problem is not None:
            responses.append(_refused(res, problem))
            continue
        responses.append(
            await _alter(
                broker,
                res.resource_type,
                res.resource_name,
                set_configs,
                delete,
                derive=derive,
                replace=False,
                validate_only=body.validate_only,
            )
        )
    return m.IncrementalAlterConfigsResponse(throttle_time_ms=0, responses=responses)
