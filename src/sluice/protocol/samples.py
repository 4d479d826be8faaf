"""Populated message instances for any (class, version), derived from the schema declarations:
round-trip and robustness tests cover every field of every API without hand-writing each
message, and :mod:`sluice.bench.codec` checks interoperability with kio on them. Not used by the
broker."""

from __future__ import annotations

import dataclasses
import random
import uuid
from typing import Any

from sluice.protocol.schema import (
    BOOL,
    BYTES,
    FLOAT64,
    INT8,
    INT16,
    INT32,
    INT64,
    RECORDS,
    STRING,
    UINT16,
    UINT32,
    UUID,
    Array,
    FieldMeta,
)

_RANGES = {
    INT8: (-(2**7), 2**7 - 1),
    INT16: (-(2**15), 2**15 - 1),
    INT32: (-(2**31), 2**31 - 1),
    INT64: (-(2**63), 2**63 - 1),
    UINT16: (0, 2**16 - 1),
    UINT32: (0, 2**32 - 1),
}


def _value(
    t: str | type | Array, version: int, rnd: random.Random, nullable: bool, tame: bool
) -> Any:
    if nullable and rnd.random() < 0.2:
        return None
    if isinstance(t, Array):
        return [_value(t.of, version, rnd, False, tame) for _ in range(rnd.randint(0, 3))]
    if isinstance(t, type):
        return sample(t, version, rnd, tame)
    if t in _RANGES and tame:
        return rnd.randint(0, 3)
    if t in _RANGES:
        lo, hi = _RANGES[t]
        return rnd.choice([lo, hi, -1, 0, 1, rnd.randint(lo, hi)])
    if t == BOOL:
        return rnd.random() < 0.5
    if t == FLOAT64:
        return rnd.random()
    if t == STRING:
        return rnd.choice(["", "a", "topic-ü", "x" * rnd.randint(0, 300)])
    if t in (BYTES, RECORDS):
        return bytes(rnd.getrandbits(8) for _ in range(rnd.choice([0, 1, 17, 200])))
    if t == UUID:
        return uuid.UUID(int=rnd.getrandbits(128))
    raise AssertionError(t)


def sample(cls: type, version: int, rnd: random.Random | None = None, tame: bool = False) -> Any:
    """An instance of ``cls`` with every field present at ``version`` set to a random value
    (nullable ones sometimes None) and every other field at its default. ``tame`` keeps
    integers in 0..3, for implementations that check error codes and durations."""
    rnd = rnd or random.Random(version)
    kwargs = {}
    for fld in dataclasses.fields(cls):
        meta: FieldMeta = fld.metadata["kafka"]
        if version in meta.versions:
            kwargs[fld.name] = _value(meta.type, version, rnd, version in meta.nullable, tame)
    return cls(**kwargs)
