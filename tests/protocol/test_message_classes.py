"""``schema.message`` builds what ``@dataclass(slots=True, kw_only=True)`` would (the messages
were dataclasses before import time mattered): these pin the behaviour code and users rely on."""

from __future__ import annotations

import dataclasses

import pytest

from sluice.protocol import messages as m
from sluice.protocol.schema import INT32, STRING, arr, f, message


@message
class _Sample:
    """A docstring stays."""

    name: str = f(STRING)
    count: int = f(INT32, default=7)
    items: list[int] = f(arr(INT32))


def test_keyword_only_init_with_defaults_and_fresh_factories() -> None:
    a = _Sample(name="x")
    b = _Sample(name="y", count=1, items=[1])
    assert (a.name, a.count, a.items) == ("x", 7, [])
    assert (b.name, b.count, b.items) == ("y", 1, [1])
    assert _Sample().items is not _Sample().items  # one list per instance, like default_factory
    with pytest.raises(TypeError):
        _Sample("x")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument 'nmae'"):
        _Sample(nmae="x")  # type: ignore[call-arg]


def test_slots_eq_repr_and_no_hash() -> None:
    a = _Sample(name="x", items=[1, 2])
    assert a == _Sample(name="x", items=[1, 2])
    assert a != _Sample(name="x", items=[1])
    assert a != m.ApiVersion(api_key=0, min_version=0, max_version=0)  # type: ignore[comparison-overlap]
    assert repr(a) == "_Sample(name='x', count=7, items=[1, 2])"
    assert _Sample.__doc__ == "A docstring stays."
    with pytest.raises(AttributeError):
        a.other = 1  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        hash(a)


def test_the_dataclasses_module_sees_a_dataclass() -> None:
    names = [fld.name for fld in dataclasses.fields(m.ProduceRequest)]
    assert names == ["transactional_id", "acks", "timeout_ms", "topic_data"]
    request = m.ProduceRequest(acks=1, timeout_ms=100)
    assert dataclasses.replace(request, acks=-1).acks == -1
    assert dataclasses.asdict(request) == {
        "transactional_id": None,
        "acks": 1,
        "timeout_ms": 100,
        "topic_data": [],
    }
    assert dataclasses.is_dataclass(request)


def test_the_admin_apis_messages_are_reached_through_messages() -> None:
    """``messages`` hands out the classes :mod:`sluice.protocol.admin_messages` builds on first use,
    by name and through ``APIS``; a name neither module has is an AttributeError as ever."""
    from sluice.protocol import admin_messages
    from sluice.protocol.messages import APIS

    assert m.DescribeConfigsRequest is admin_messages.DescribeConfigsRequest
    for spec in APIS.values():
        assert (spec.request.__name__, spec.response.__name__) == (
            spec.request_class,
            spec.response_class,
        )
        assert getattr(m, spec.request_class) is spec.request
    with pytest.raises(AttributeError, match="no attribute 'NoSuchRequest'"):
        _ = m.NoSuchRequest  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        _ = m.__wrapped__  # type: ignore[attr-defined]


@pytest.mark.parametrize("module_name", ["group_messages", "admin_messages"])
def test_every_class_built_on_first_use_is_reached_through_messages(module_name: str) -> None:
    """Each class the lazily built modules declare is listed in their ``__all__`` (what
    ``messages`` looks names up in), so ``m.<Name>`` finds nested structs as well as requests."""
    import importlib
    import inspect

    module = importlib.import_module(f"sluice.protocol.{module_name}")
    declared = {
        name
        for name, value in vars(module).items()
        if inspect.isclass(value) and value.__module__ == module.__name__
    }
    assert declared == set(module.__all__)
    for name in declared:
        assert getattr(m, name) is getattr(module, name)
