"""``dataclass``: what :func:`dataclasses.dataclass` makes of a slotted class, built at a
fraction of the cost.

Python 3.11's ``dataclasses`` compiles three to six functions per class with ``exec`` and formats
a signature for the docstring; for sluice's ~200 classes (the protocol's messages, the
settings, the group and storage records) that was over half of what ``import sluice.testing``
took, and a test suite or a tool pays it on every start. This builds the same class (``__slots__``,
``__init__`` with the defaults and ``default_factory`` values, ``__eq__``, ``__repr__``,
``__hash__``, frozen ``__setattr__``/``__delattr__``, ``__match_args__``, ``__post_init__`` called
last, pickling of frozen slotted instances, and ``__dataclass_fields__``, so :func:`dataclasses.fields`, ``replace`` and
``asdict`` work) without compiling anything at import: each ``__init__`` is compiled on the
class's first instantiation, the other methods are shared functions.

Only the plain case is built here: ``slots=True``, fields with at most a default or a
``default_factory``, no ``ClassVar``, ``InitVar`` or dataclass base. Anything
else goes to :func:`dataclasses.dataclass` unchanged, so the semantics are never different,
only sometimes slower.
"""

from __future__ import annotations

import dataclasses
import operator
import reprlib
from collections.abc import Callable
from typing import Any, TypeVar, dataclass_transform, overload

T = TypeVar("T")

_FIELD_KIND = getattr(dataclasses, "_FIELD")  # noqa: B009 -- the kind dataclasses.fields() keeps
_HAS_FACTORY: Any = object()
_UNSUPPORTED_ANNOTATIONS = ("ClassVar", "InitVar", "dataclasses.", "typing.ClassVar")


@overload
def dataclass(cls: type[T], /) -> type[T]: ...


@overload
def dataclass(
    *, frozen: bool = False, slots: bool = False, kw_only: bool = False
) -> Callable[[type[T]], type[T]]: ...


@dataclass_transform(field_specifiers=(dataclasses.field, dataclasses.Field))
def dataclass(
    cls: type[T] | None = None,
    /,
    *,
    frozen: bool = False,
    slots: bool = False,
    kw_only: bool = False,
) -> type[T] | Callable[[type[T]], type[T]]:
    """``@dataclass(slots=True)``, ``@dataclass(frozen=True, slots=True)``: as the standard
    decorator with the same arguments."""

    def wrap(c: type[T]) -> type[T]:
        built = build(c, frozen=frozen, kw_only=kw_only) if slots else None
        if built is None:
            return dataclasses.dataclass(c, frozen=frozen, slots=slots, kw_only=kw_only)
        return built

    return wrap if cls is None else wrap(cls)


def build(cls: type[T], *, frozen: bool = False, kw_only: bool = False) -> type[T] | None:
    """The slotted dataclass of ``cls``, or None when it needs more than this module builds
    (the caller then uses :func:`dataclasses.dataclass`)."""
    if type(cls) is not type or any(
        hasattr(base, "__dataclass_fields__") for base in cls.__mro__[1:]
    ):
        return None
    namespace = dict(cls.__dict__)
    fields: dict[str, dataclasses.Field[Any]] = {}
    seen_default = False
    own = cls.__dict__.get("__annotations__", {})  # noqa: RUF063 -- what inspect's would read, faster
    for name, annotation in own.items():
        if isinstance(annotation, str) and annotation.startswith(_UNSUPPORTED_ANNOTATIONS):
            return None
        value = namespace.pop(name, dataclasses.MISSING)
        fld = value if isinstance(value, dataclasses.Field) else dataclasses.field(default=value)
        if not (fld.init and fld.repr and fld.compare and fld.hash is None):
            return None
        if fld.kw_only not in (dataclasses.MISSING, kw_only):
            return None
        has_default = (
            fld.default is not dataclasses.MISSING or fld.default_factory is not dataclasses.MISSING
        )
        if not kw_only and seen_default and not has_default:
            raise TypeError(f"non-default argument {name!r} follows default argument")
        seen_default = seen_default or has_default
        fld.name = name
        fld.type = annotation
        fld.kw_only = kw_only
        fld._field_type = _FIELD_KIND  # type: ignore[union-attr]
        fields[name] = fld
    names = tuple(fields)
    namespace.pop("__dict__", None)
    namespace.pop("__weakref__", None)
    namespace["__slots__"] = names
    namespace["__dataclass_fields__"] = fields
    namespace["__match_args__"] = () if kw_only else names
    namespace["__init__"] = _first_init
    namespace.setdefault("__repr__", _repr)
    values = _values_of(names)
    namespace.setdefault("__eq__", _eq_of(values))
    class_hash = cls.__dict__.get("__hash__", dataclasses.MISSING)
    explicit_hash = not (
        class_hash is dataclasses.MISSING or (class_hash is None and "__eq__" in cls.__dict__)
    )
    if not explicit_hash:  # the standard decorator's rule for eq=True, unsafe_hash=False
        namespace["__hash__"] = _hash_of(values) if frozen else None
    if frozen:
        namespace["__setattr__"] = _frozen_setattr
        namespace["__delattr__"] = _frozen_delattr
        namespace["__getstate__"] = _getstate
        namespace["__setstate__"] = _frozen_setstate
    namespace["_dataclass_frozen"] = frozen
    if namespace.get("__doc__") is None:
        namespace["__doc__"] = f"{cls.__name__}({', '.join(names)})"
    built: type[T] = type(cls.__name__, cls.__bases__, namespace)
    built.__qualname__ = cls.__qualname__
    return built


def _first_init(self: Any, *args: Any, **kwargs: Any) -> None:
    cls = type(self)
    for owner in cls.__mro__:  # the class that was built (a subclass may inherit it)
        if owner.__dict__.get("__init__") is _first_init:
            owner.__init__ = _compile_init(owner)  # type: ignore[misc]
            break
    cls.__init__(self, *args, **kwargs)


def _compile_init(cls: type) -> Callable[..., None]:
    fields: dict[str, dataclasses.Field[Any]] = cls.__dataclass_fields__  # type: ignore[attr-defined]
    frozen: bool = cls._dataclass_frozen  # type: ignore[attr-defined]
    scope: dict[str, Any] = {"_HAS_FACTORY": _HAS_FACTORY, "_setattr": object.__setattr__}
    params, body = [], []
    for name, fld in fields.items():
        value = name
        if fld.default_factory is not dataclasses.MISSING:
            scope[f"_factory_{name}"] = fld.default_factory
            params.append(f"{name}=_HAS_FACTORY")
            value = f"_factory_{name}() if {name} is _HAS_FACTORY else {name}"
        elif fld.default is not dataclasses.MISSING:
            scope[f"_default_{name}"] = fld.default
            params.append(f"{name}=_default_{name}")
        else:
            params.append(name)
        body.append(f"    _setattr(self, {name!r}, {value})" if frozen else f"    self.{name} = {value}")
    kw_only = next(iter(fields.values())).kw_only if fields else False
    signature = ", ".join(["self", *(["*"] if kw_only and params else []), *params])
    if hasattr(cls, "__post_init__"):  # as the standard decorator: last, with no arguments
        body.append("    self.__post_init__()")
    source = f"def __init__({signature}):\n" + ("\n".join(body) or "    pass") + "\n"
    exec(source, scope)
    init: Callable[..., None] = scope["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    return init


@reprlib.recursive_repr()
def _repr(self: Any) -> str:
    fields = type(self).__dataclass_fields__
    values = ", ".join(f"{name}={getattr(self, name)!r}" for name in fields)
    return f"{type(self).__qualname__}({values})"


def _values_of(names: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    if len(names) > 1:
        return operator.attrgetter(*names)
    if names:
        (name,) = names
        return lambda obj: (getattr(obj, name),)
    return lambda obj: ()


def _eq_of(values: Callable[[Any], tuple[Any, ...]]) -> Callable[[Any, Any], Any]:
    def __eq__(self: Any, other: Any) -> Any:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return values(self) == values(other)

    return __eq__


def _hash_of(values: Callable[[Any], tuple[Any, ...]]) -> Callable[[Any], int]:
    def __hash__(self: Any) -> int:
        return hash(values(self))

    return __hash__


def _frozen_setattr(self: Any, name: str, value: Any) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")


def _frozen_delattr(self: Any, name: str) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")


def _getstate(self: Any) -> list[Any]:
    return [getattr(self, name) for name in type(self).__dataclass_fields__]


def _frozen_setstate(self: Any, state: list[Any]) -> None:
    for name, value in zip(type(self).__dataclass_fields__, state, strict=True):
        object.__setattr__(self, name, value)
