"""The console's JSON API (``/api/...``): what its pages show, and its actions.

Every answer is JSON built from the broker's state (:mod:`.state`), its records
(:mod:`.browse`) or an action's result (:mod:`.actions`). User data (topic names, keys,
values, headers, member ids) travels as JSON strings or base64 and the page puts it in the
document as text, never as markup. Errors are ``{"error": NAME, "message": ...}`` with 400
(the broker refused: the Kafka error's name), 403 (read-only), 404 or 503 (starting up).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from sluice.broker.broker import Broker
from sluice.errors import SluiceError
from sluice.protocol import messages as m
from sluice.server.admin import browse, state
from sluice.server.admin.actions import ActionError, Actions, ReadOnly
from sluice.server.admin.context import AdminView

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

BODY_TIMEOUT_S = 10.0
"""How long a write's JSON body may take to arrive (then 408): a connection handling a request
is never closed to make room for another, so this bounds how long a body that never comes
holds one."""


class NotFound(Exception):
    pass


class BadInput(Exception):
    pass


class SlowBody(Exception):
    pass


class Gone(Exception):
    """The client closed its connection before its body arrived."""


def routes(admin: AdminView) -> list[web.RouteDef]:
    api = _Api(admin)
    return [
        web.get("/api/overview", api.wrap(api.overview)),
        web.get("/api/topics", api.wrap(api.topics)),
        web.post("/api/topics", api.wrap(api.create_topic)),
        web.get("/api/topics/{name}", api.wrap(api.topic)),
        web.delete("/api/topics/{name}", api.wrap(api.delete_topic)),
        web.post("/api/topics/{name}/configs", api.wrap(api.alter_configs)),
        web.get("/api/topics/{name}/records", api.wrap(api.records)),
        web.post("/api/topics/{name}/records", api.wrap(api.produce)),
        web.get("/api/groups", api.wrap(api.groups)),
        web.get("/api/groups/{group}", api.wrap(api.group)),
        web.post("/api/groups/{group}/reset", api.wrap(api.reset_offsets)),
        web.delete("/api/groups/{group}", api.wrap(api.delete_group)),
        # The same with the id in the query: a group may be named "." or "..", which no URL
        # path can carry (browsers and HTTP clients resolve those segments, %2E%2E too).
        web.get("/api/group", api.wrap(api.group)),
        web.post("/api/group/reset", api.wrap(api.reset_offsets)),
        web.delete("/api/group", api.wrap(api.delete_group)),
        web.get("/api/settings", api.wrap(api.settings)),
    ]


class _Api:
    def __init__(self, admin: AdminView) -> None:
        self.admin = admin

    def wrap(self, fn: Callable[[web.Request, Broker], Awaitable[Any]]) -> Handler:
        """JSON in and out, the broker looked up per request (None while starting or stopping),
        errors as JSON with a status."""

        async def handle(request: web.Request) -> web.StreamResponse:
            broker = self.admin.server.broker
            if broker is None:
                return _error(503, "UNAVAILABLE", "the broker is starting or stopping")
            try:
                result = await fn(request, broker)
            except ReadOnly as exc:
                return _error(403, "READ_ONLY", str(exc))
            except ActionError as exc:
                return _error(400, exc.error, str(exc))
            except SluiceError as exc:
                return _error(400, exc.code.name, str(exc))
            except NotFound as exc:
                return _error(404, "NOT_FOUND", str(exc))
            except BadInput as exc:
                return _error(400, "BAD_REQUEST", str(exc))
            except SlowBody as exc:
                return _error(408, "REQUEST_TIMEOUT", str(exc), close=True)
            except Gone as exc:
                # Answered to no one (aiohttp drops it quietly); raised on, aiohttp would log
                # a traceback per dropped connection, a log any client could flood.
                return _error(400, "BAD_REQUEST", str(exc), close=True)
            if isinstance(result, web.Response):  # encoded by the endpoint itself
                return result
            return web.json_response(result)

        return handle

    def _actions(self, broker: Broker) -> Actions:
        return Actions(broker, read_only=self.admin.read_only)

    # -- overview -----------------------------------------------------------------------------------

    async def overview(self, request: web.Request, broker: Broker) -> Any:
        server = self.admin.server
        config = broker.config
        topics = await state.topics(broker)
        disk: dict[str, int] = {}
        try:
            found = os.statvfs(broker.logs.data_dir)
            disk = {
                "total": found.f_blocks * found.f_frsize,
                "free": found.f_bavail * found.f_frsize,
            }
        except OSError:
            pass
        fetched = _fetched(broker)
        return {
            "broker": {
                "node_id": config.node_id,
                "cluster_id": config.cluster_id,
                "listener": str(server.bound) if server.bound else "",
                "advertised": str(config.advertised_listener),
            },
            "version": self.admin.version,
            "uptime": time.monotonic() - server.started_at,
            "data_dir": str(broker.logs.data_dir),
            "disk": {**disk, "logs": sum(t.size for t in topics), "full": broker.logs.disk.full},
            "topics": [
                {
                    "name": t.name,
                    "partitions": len(t.partitions),
                    "size": t.size,
                    "records": t.records,
                }
                for t in topics
            ],
            "partitions": sum(len(t.partitions) for t in topics),
            "connections": len(server.connections),
            "groups": state.group_count(broker),
            "traffic": {
                "time": time.time(),
                "bytes_in": sum(t.appended_bytes for t in topics),
                "records_in": sum(t.appended_records for t in topics),
                "bytes_out": sum(b for b, _ in fetched.values()),
                "records_out": sum(r for _, r in fetched.values()),
            },
            "read_only": self.admin.read_only,
        }

    # -- topics ---------------------------------------------------------------------------------------

    async def topics(self, request: web.Request, broker: Broker) -> Any:
        fetched = _fetched(broker)
        return {
            "time": time.time(),
            "read_only": self.admin.read_only,
            "topics": [
                {
                    "name": t.name,
                    "partitions": len(t.partitions),
                    "size": t.size,
                    "records": t.records,
                    "records_in": t.appended_records,
                    "records_out": fetched.get(t.name, (0, 0))[1],
                }
                for t in await state.topics(broker)
            ],
        }

    async def topic(self, request: web.Request, broker: Broker) -> Any:
        name = request.match_info["name"]
        found = await state.topics(broker, [name])
        if not found:
            raise NotFound(f"no topic {name!r}")
        topic = found[0]
        configs = await self._actions(broker).describe_configs(m.ConfigResourceType.TOPIC, name)
        return {
            "name": topic.name,
            "topic_id": topic.topic_id,
            "read_only": self.admin.read_only,
            "size": topic.size,
            "records": topic.records,
            "partitions": [
                {
                    "partition": p.partition,
                    "start": p.start,
                    "end": p.end,
                    "records": p.records,
                    "size": p.size,
                    "segments": p.segments,
                }
                for p in topic.partitions
            ],
            "configs": [c.to_json() for c in configs],
            "overrides": topic.overrides,
        }

    async def create_topic(self, request: web.Request, broker: Broker) -> Any:
        body = await _json(request)
        name = _str(body, "name")
        partitions = _int(body, "partitions", -1)
        configs = body.get("configs") or {}
        if not isinstance(configs, dict):
            raise BadInput("configs must be an object of name: value")
        await self._actions(broker).create_topic(
            name, partitions, {str(k): str(v) for k, v in configs.items()}
        )
        return {"created": name}

    async def delete_topic(self, request: web.Request, broker: Broker) -> Any:
        name = request.match_info["name"]
        await self._actions(broker).delete_topic(name)
        return {"deleted": name}

    async def alter_configs(self, request: web.Request, broker: Broker) -> Any:
        name = request.match_info["name"]
        body = await _json(request)
        set_configs = body.get("set") or {}
        delete = body.get("delete") or []
        if not isinstance(set_configs, dict) or not isinstance(delete, list):
            raise BadInput("give set (an object of name: value) and delete (a list of names)")
        await self._actions(broker).alter_topic_configs(
            name, {str(k): str(v) for k, v in set_configs.items()}, [str(k) for k in delete]
        )
        return {"altered": name}

    async def records(self, request: web.Request, broker: Broker) -> Any:
        name = request.match_info["name"]
        topic = broker.logs.topics.get(name)
        if topic is None:
            raise NotFound(f"no topic {name!r}")
        query = request.query
        which = query.get("partition", "all")
        if which == "all":
            partitions = list(range(len(topic.partitions)))
        else:
            partitions = [_query_int(query, "partition")]
        cursor = browse.parse_cursor(query["cursor"]) if query.get("cursor") else None
        page = await browse.page(
            topic,
            partitions,
            query.get("mode", "newest"),
            _query_int(query, "limit", 20),
            offset=_query_int(query, "offset") if query.get("offset") else None,
            timestamp=_query_int(query, "timestamp") if query.get("timestamp") else None,
            cursor=cursor,
            executor=self.admin.browse_executor,
        )
        return page.to_json()

    async def produce(self, request: web.Request, broker: Broker) -> Any:
        name = request.match_info["name"]
        body = await _json(request)
        raw_partition = body.get("partition")
        partition = (
            None if raw_partition in (None, "", "auto") else _as_int(raw_partition, "partition")
        )
        key = _bytes_or_none(body.get("key"))
        value = _bytes_or_none(body.get("value"))
        headers: list[tuple[str, bytes | None]] = []
        for item in body.get("headers") or []:
            if not isinstance(item, list | tuple) or len(item) != 2 or not isinstance(item[0], str):
                raise BadInput("headers must be a list of [key, value] pairs, each key a string")
            headers.append((item[0], _bytes_or_none(item[1])))
        chosen, offset = await self._actions(broker).produce(name, partition, key, value, headers)
        return {"partition": chosen, "offset": offset}

    # -- groups ---------------------------------------------------------------------------------------

    async def groups(self, request: web.Request, broker: Broker) -> Any:
        """Encoded :data:`state.SLICE` groups at a time (tens of thousands of groups are
        megabytes of JSON, which one ``json.dumps`` would write while the loop waited)."""
        found = await state.groups_with_offsets(broker)
        parts = []
        for start in range(0, len(found), state.SLICE):
            parts.append(
                ",".join(json.dumps(_group_json(g)) for g in found[start : start + state.SLICE])
            )
            await asyncio.sleep(0)
        text = f'{{"read_only": {json.dumps(self.admin.read_only)}, "groups": [{",".join(parts)}]}}'
        return web.Response(text=text, content_type="application/json")

    async def group(self, request: web.Request, broker: Broker) -> Any:
        group_id = _group_id(request)
        found = state.group(broker, group_id)
        if found is None:
            raise NotFound(f"no group {group_id!r}")
        return {
            **_group_json(found),
            "time": time.time(),
            "read_only": self.admin.read_only,
            "members": [
                {
                    "member_id": member.member_id,
                    "group_instance_id": member.group_instance_id,
                    "client_id": member.client_id,
                    "client_host": member.client_host,
                    "assignment": member.assignment,
                }
                for member in found.members
            ],
            "offsets": [
                {
                    "topic": o.topic,
                    "partition": o.partition,
                    "committed": o.committed,
                    "end": o.end,
                    "lag": o.lag,
                }
                for o in found.offsets
            ],
        }

    async def reset_offsets(self, request: web.Request, broker: Broker) -> Any:
        group_id = _group_id(request)
        body = await _json(request)
        topic = body.get("topic") or None
        raw = body.get("value")
        value = None if raw in (None, "") else _as_int(raw, "value")
        actions = self._actions(broker)
        plan = await actions.reset_plan(
            group_id, None if topic is None else str(topic), _str(body, "target"), value
        )
        executed = bool(body.get("execute"))
        if executed:
            await actions.reset_offsets(group_id, plan)
        return {"plan": plan, "executed": executed}

    async def delete_group(self, request: web.Request, broker: Broker) -> Any:
        group_id = _group_id(request)
        await self._actions(broker).delete_group(group_id)
        return {"deleted": group_id}

    # -- settings -------------------------------------------------------------------------------------

    async def settings(self, request: web.Request, broker: Broker) -> Any:
        configs = await self._actions(broker).describe_configs(
            m.ConfigResourceType.BROKER, str(broker.config.node_id)
        )
        return {"configs": [c.to_json() for c in configs], "read_only": self.admin.read_only}


def _group_json(g: state.GroupView) -> dict[str, Any]:
    return {
        "group_id": g.group_id,
        "state": g.state,
        "protocol_type": g.protocol_type,
        "protocol": g.protocol,
        "generation": g.generation,
        "leader": g.leader,
        "rebalances": g.rebalances,
        "member_count": len(g.members),
        "topics": sorted({o.topic for o in g.offsets}),
        "lag": g.lag,
    }


def _fetched(broker: Broker) -> dict[str, tuple[int, int]]:
    """Topic -> (bytes, records) sent to consumers."""
    stats = broker.stats
    if stats is None:
        return {}
    return {
        name: (t.bytes_out, t.records_out)
        for name, t in stats.topics.items()
        if name in broker.logs.topics
    }


def _error(status: int, error: str, message: str, *, close: bool = False) -> web.Response:
    response = web.json_response({"error": error, "message": message}, status=status)
    if close:  # the rest of an unread body would be read as the next request
        response.force_close()
    return response


async def _json(request: web.Request) -> dict[str, Any]:
    try:
        async with asyncio.timeout(BODY_TIMEOUT_S):
            raw = await request.read()
    except TimeoutError:
        raise SlowBody(f"the request body did not arrive within {BODY_TIMEOUT_S:g} s") from None
    except ConnectionError:
        raise Gone("the connection closed before the request body arrived") from None
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than Python recurses
        raise BadInput("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise BadInput("the body must be a JSON object")
    return body


def _group_id(request: web.Request) -> str:
    """From the path (``/api/groups/ID``) or the query (``/api/group?id=ID``)."""
    found = request.match_info.get("group")
    if found is None:
        found = request.query.get("id")
        if not found:
            raise BadInput("id is required: /api/group?id=GROUP")
    return found


def _str(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise BadInput(f"{key} is required")
    return value


def _as_int(value: Any, what: str) -> int:
    """An integer, or its text; JSON's true or 2.5 is refused, not read as 1 or 2 (an offset
    reset to 2 for 2.5 would commit where nobody asked)."""
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise BadInput(f"{what} must be an integer, not {value!r}")
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        raise BadInput(f"{what} must be an integer, not {value!r}") from None


def _int(body: dict[str, Any], key: str, default: int) -> int:
    value = body.get(key)
    return default if value in (None, "") else _as_int(value, key)


def _query_int(query: Any, key: str, default: int | None = None) -> int:
    value = query.get(key)
    if value in (None, ""):
        if default is None:
            raise BadInput(f"{key} is required")
        return default
    return _as_int(value, key)


def _bytes_or_none(value: Any) -> bytes | None:
    """A string is sent as UTF-8; ``{"b64": ...}`` as the bytes it encodes; null stays null."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, dict) and isinstance(value.get("b64"), str):
        try:
            return base64.b64decode(value["b64"], validate=True)
        except ValueError:
            raise BadInput("bad base64") from None
    raise BadInput("keys, values and header values are strings, {b64: ...} or null")
