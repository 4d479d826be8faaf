"""The declarations in messages.py against Apache Kafka's message JSON, field by field, at every
supported version: names, types, presence, nullability, tags and defaults.

The JSON of every supported API is vendored in ``kafka_schemas/`` (see its README for the
commit), so this always runs. SLUICE_KAFKA_SCHEMAS overrides it with other directories of
Kafka's clients/src/main/resources/common/message JSON (``os.pathsep``-separated, e.g. an older
and a newer Kafka, since newer ones drop old versions): each version is checked against the
first directory whose JSON has it, and a version that none has fails.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from sluice.protocol.api_versions import SUPPORTED
from sluice.protocol.messages import APIS, ApiKey
from sluice.protocol.schema import Array, FieldMeta, Versions

VENDORED = Path(__file__).with_name("kafka_schemas")
SCHEMAS = os.environ.get("SLUICE_KAFKA_SCHEMAS") or str(VENDORED)
PRIMITIVES = {"int8", "int16", "int32", "int64", "uint16", "uint32", "float64", "bool"}
PRIMITIVES |= {"string", "bytes", "uuid", "records"}


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def _json_type(t: str) -> Any:
    if t.startswith("[]"):
        return ("array", _json_type(t[2:]))
    return t if t in PRIMITIVES else "struct"


def _our_type(t: Any) -> Any:
    if isinstance(t, Array):
        return ("array", _our_type(t.of))
    return t if isinstance(t, str) else "struct"


def _default(raw: Any, jtype: Any) -> Any:
    if isinstance(raw, str) and raw in ("null", "true", "false"):
        return {"null": None, "true": True, "false": False}[raw]
    if isinstance(raw, str) and jtype in ("int8", "int16", "int32", "int64"):
        return int(raw, 0)
    return raw


def _compare(
    path: str, jfields: list[Any], cls: type, v: int, common: dict[str, Any], flex: bool
) -> None:
    theirs = []
    for jf in jfields:
        if v in Versions.parse(jf["versions"]):
            tagged = flex and "tag" in jf and v in Versions.parse(jf.get("taggedVersions"))
            jt = _json_type(jf["type"])
            key = (_snake(jf["name"]), jt, v in Versions.parse(jf.get("nullableVersions")))
            theirs.append((*key, jf["tag"] if tagged else None, jf))
    ours = []
    for fld in dataclasses.fields(cls):
        meta: FieldMeta = fld.metadata["kafka"]
        if v in meta.versions:
            tagged = flex and meta.tag is not None and v in meta.tagged
            key = (fld.name, _our_type(meta.type), v in meta.nullable)
            ours.append((*key, meta.tag if tagged else None, fld))
    assert [t[:4] for t in ours] == [t[:4] for t in theirs], f"{path} v{v}"
    for (name, jt, _, _, jf), (*_, fld) in zip(theirs, ours, strict=True):
        if "default" in jf:
            assert fld.default == _default(jf["default"], jt), f"{path}.{name} default"
        sub = jf.get("fields")
        if sub is None and "struct" in str(jt):
            sub = common[jf["type"].removeprefix("[]")]
        if sub is not None:
            t = fld.metadata["kafka"].type
            sub_cls = t.of if isinstance(t, Array) else t
            assert isinstance(sub_cls, type)
            _compare(f"{path}.{name}", sub, sub_cls, v, common, flex)


def _schema(name: str, version: int) -> dict[str, Any]:
    """The JSON of message ``name`` from the first SLUICE_KAFKA_SCHEMAS directory that has
    ``version``."""
    for directory in SCHEMAS.split(os.pathsep):
        path = Path(directory, f"{name}.json")
        if path.exists():
            schema: dict[str, Any] = json.loads(re.sub(r"^\s*//.*$", "", path.read_text(), flags=re.M))
            if version in Versions.parse(schema["validVersions"]):
                return schema
    raise AssertionError(f"no schema directory ({SCHEMAS}) has {name} v{version}")


@pytest.mark.parametrize("key", sorted(SUPPORTED), ids=lambda k: ApiKey(k).name)
def test_declarations_match_kafka_json(key: int) -> None:
    spec = APIS[key]
    base = "".join(w.capitalize() for w in ApiKey(key).name.split("_"))
    lo, hi = SUPPORTED[key]
    for kind, cls in (("Request", spec.request), ("Response", spec.response)):
        for v in range(lo, hi + 1):
            schema = _schema(f"{base}{kind}", v)
            common = {s["name"]: s["fields"] for s in schema.get("commonStructs", [])}
            flexible = Versions.parse(schema.get("flexibleVersions"))
            assert (v in flexible) == spec.flexible(v)
            _compare(f"{base}{kind}", schema["fields"], cls, v, common, v in flexible)
