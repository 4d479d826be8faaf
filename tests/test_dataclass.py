"""``sluice.dataclass`` must build what ``dataclasses.dataclass`` builds, for the cases it takes
on (the rest it hands to the standard decorator): each test states one behaviour and checks the
standard decorator has it too, so a difference shows as a failure here."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from collections import Counter
from typing import Any, ClassVar

import pytest

from sluice.dataclass import dataclass


@dataclass(slots=True)
class Point:
    x: int
    y: int = 2
    tags: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(slots=True)
class StdPoint:
    x: int
    y: int = 2
    tags: list[str] = dataclasses.field(default_factory=list)


@dataclass(frozen=True, slots=True)
class FrozenPoint:
    x: int
    y: int = 2
    tags: Any = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True, slots=True)
class StdFrozenPoint:
    x: int
    y: int = 2
    tags: Any = dataclasses.field(default_factory=list)


def _both(frozen: bool) -> list[Any]:
    """The same declaration through sluice's decorator and the standard one."""
    return [FrozenPoint, StdFrozenPoint] if frozen else [Point, StdPoint]


@pytest.mark.parametrize("frozen", [False, True])
def test_init_defaults_factories_eq_repr(frozen: bool) -> None:
    for cls in _both(frozen):
        p = cls(1)
        assert (p.x, p.y, p.tags) == (1, 2, [])
        assert cls(1, 3, ["a"]) == cls(x=1, y=3, tags=["a"])
        assert cls(1) != cls(2)
        assert cls(1).tags is not cls(1).tags
        assert repr(cls(1, tags=["t"])) == f"{cls.__name__}(x=1, y=2, tags=['t'])"
        assert cls.__match_args__ == ("x", "y", "tags")
        match cls(5):
            case cls(x, y):
                assert (x, y) == (5, 2)
        with pytest.raises(TypeError):
            cls()
        with pytest.raises((AttributeError, TypeError)):  # the standard one: TypeError if frozen
            cls(1).z = 0
        assert not hasattr(cls(1), "__dict__")


def test_frozen_instances_refuse_changes_and_hash_by_value() -> None:
    for cls in _both(frozen=True):
        p = cls(1, 2, ())
        with pytest.raises(dataclasses.FrozenInstanceError):
            p.x = 5
        with pytest.raises(dataclasses.FrozenInstanceError):
            del p.x
        assert hash(p) == hash(cls(1, 2, ()))
        assert {p, cls(1, 2, ())} == {p}
        assert copy.deepcopy(p) == p
        assert pickle.loads(pickle.dumps(p)) == p
    for cls in _both(frozen=False):
        with pytest.raises(TypeError):
            hash(cls(1))


def test_the_dataclasses_module_works_on_them() -> None:
    for cls in _both(frozen=True):
        p = cls(1, 2, ["a"])
        assert [f.name for f in dataclasses.fields(p)] == ["x", "y", "tags"]
        assert dataclasses.replace(p, y=7) == cls(1, 7, ["a"])
        assert dataclasses.asdict(p) == {"x": 1, "y": 2, "tags": ["a"]}
        assert dataclasses.is_dataclass(cls)


def test_a_required_field_after_a_default_is_refused() -> None:
    with pytest.raises(TypeError, match="non-default argument"):

        @dataclass(slots=True)
        class Bad:
            a: int = 0
            b: int  # type: ignore[misc]


def _check_span(self: Any) -> None:
    if self.lo > self.hi:
        raise ValueError(f"lo {self.lo} > hi {self.hi}")
    object.__setattr__(self, "width", self.hi - self.lo)


@dataclass(frozen=True, slots=True)
class Span:
    lo: int
    hi: int = 10
    width: int = -1

    def __post_init__(self) -> None:
        _check_span(self)


@dataclasses.dataclass(frozen=True, slots=True)
class StdSpan:
    lo: int
    hi: int = 10
    width: int = -1

    def __post_init__(self) -> None:
        _check_span(self)


@dataclass(slots=True)
class MutableSpan:
    lo: int
    hi: int = 10
    width: int = -1

    def __post_init__(self) -> None:
        _check_span(self)


def test_post_init_runs_last_and_may_refuse() -> None:
    classes: list[Any] = [Span, StdSpan, MutableSpan]
    for cls in classes:
        assert cls(3).width == 7
        assert cls(lo=1, hi=4) == cls(1, 4, 3)
        assert dataclasses.replace(cls(1), hi=2).width == 1
        with pytest.raises(ValueError, match="lo 5 > hi 4"):
            cls(5, 4)
    assert "_dataclass_frozen" in Span.__dict__  # built by sluice's, not handed over
    assert "_dataclass_frozen" in MutableSpan.__dict__


def test_what_it_does_not_build_goes_to_the_standard_decorator() -> None:
    @dataclass(slots=True)
    class WithClassVar:
        a: int
        counter: ClassVar[Counter[str]] = Counter()

    @dataclass(slots=True)
    class WithOptions:
        a: int
        b: int = dataclasses.field(default=0, compare=False)

    assert WithClassVar(1).counter is WithClassVar.counter
    assert [f.name for f in dataclasses.fields(WithClassVar)] == ["a"]
    assert WithOptions(1, 2) == WithOptions(1, 3)
