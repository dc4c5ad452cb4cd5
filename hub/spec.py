"""Child specifications and the results of start/stop requests.

A :class:`ChildSpec` is plain data (strings, numbers, lists, maps) so it can travel between nodes
as msgpack; the code to run is named by ``"package.module:Name"`` and resolved where it starts.
Its ``args``, ``kwargs`` and ``metadata`` are checked at construction with the wire's own msgpack
rules (:func:`check_travels`): a value that could not reach another node (a set, an object, a
map key the decoder refuses...) is an :class:`~hub.errors.InvalidSpec` at once, not a failure
later on some peer.
"""

from __future__ import annotations

import contextvars
import importlib
import math
import reprlib
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal, NamedTuple

import msgpack  # type: ignore[import-untyped]

from .errors import HubError, InvalidSpec
from .pid import Pid

__all__ = [
    "ChildSpec",
    "RegistryRecord",
    "RestartPolicy",
    "StartResult",
    "StopResult",
    "check_travels",
    "resolve_start",
]

RestartPolicy = Literal["permanent", "transient", "temporary"]
_POLICIES = frozenset(("permanent", "transient", "temporary"))
_POLICY_NAMES = {name: name for name in _POLICIES}
_EMPTY: Mapping[str, Any] = MappingProxyType({})
MAX_CHILD_ID_LENGTH = 512
_MAX_DEPTH = 511  # msgpack's default nesting limit when packing
#: Set while :meth:`ChildSpec.from_wire` builds a spec: data that arrived as msgpack travels.
_FROM_WIRE: contextvars.ContextVar[bool] = contextvars.ContextVar("from_wire", default=False)


def check_travels(value: Any, what: str) -> None:
    """Raise :class:`~hub.errors.InvalidSpec` unless ``value`` can travel between nodes.

    The rules are the wire's: it must pack with msgpack (``use_bin_type=True``) and unpack again
    as the links decode (``raw=False, strict_map_key=False``). Tuples become lists on the way,
    which is fine; sets, arbitrary objects, integers beyond 64 bits, strings with lone
    surrogates and map keys that cannot be decoded (a tuple key arrives as an unhashable list)
    are refused. The message names ``what``, the offending type and where it is, e.g.
    ``ChildSpec 'c1': args cannot travel between nodes (msgpack): set is not serializable (at
    [0])``.
    """
    try:
        msgpack.unpackb(msgpack.packb(value, use_bin_type=True), raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types
        why = _offender(value, "", 0) or str(exc)
        raise InvalidSpec(f"{what} cannot travel between nodes (msgpack): {why}") from None


def _short(value: Any) -> str:
    return reprlib.repr(value)


def _offender(value: Any, path: str, depth: int) -> str | None:
    """Why (and where) ``value`` cannot travel, or ``None`` if this walk finds nothing."""
    if depth > _MAX_DEPTH:
        return f"nested deeper than {_MAX_DEPTH} levels"
    at = f" (at {path})" if path else ""
    if value is None or isinstance(value, bool | float | bytes | bytearray | memoryview):
        return None
    if isinstance(value, int):
        return None if -(2**63) <= value < 2**64 else f"int {_short(value)} is out of range{at}"
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"str {_short(value)} is not valid UTF-8{at}"
        return None
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            if why := _offender(item, f"{path}[{i}]", depth + 1):
                return why
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, tuple):  # packs as an array, which cannot be a key on arrival
                return f"map key {_short(key)} is a tuple{at} (keys must be scalars)"
            if why := _offender(key, f"{path} key {_short(key)}".lstrip(), depth + 1):
                return why
            if why := _offender(item, f"{path}[{_short(key)}]", depth + 1):
                return why
        return None
    if isinstance(value, msgpack.ExtType | msgpack.Timestamp):
        return None
    return f"{type(value).__name__} is not serializable{at}"


def _start_ref(start: Any) -> str:
    if isinstance(start, str):
        module, sep, attr = start.partition(":")
        if not sep or not module or not attr:
            raise InvalidSpec(f"start must look like 'package.module:Name', got {start!r}")
        return start
    if callable(start):
        module_name = getattr(start, "__module__", None)
        qualname = getattr(start, "__qualname__", None)
        if not isinstance(module_name, str) or not isinstance(qualname, str) or "<" in qualname:
            raise InvalidSpec(
                f"start {start!r} is not importable by name (lambdas and local functions cannot "
                "travel between nodes): define it at module level or pass 'module:Name'"
            )
        return f"{module_name}:{qualname}"
    raise InvalidSpec(f"start must be a 'module:Name' string or a callable, got {type(start)!r}")


@dataclass(frozen=True, slots=True, init=False)
class ChildSpec:
    """What to run under a cluster-unique ``id``.

    ``start`` names a :class:`~hub.Process` subclass or an ``async def fn(ctx, *args)``; a
    callable is turned into its ``"module:qualname"`` string. ``restart`` follows Erlang:
    ``permanent`` always restarts, ``transient`` only after an abnormal exit, ``temporary``
    never. More than ``max_restarts`` crashes within ``max_seconds`` bury the child.
    """

    id: str
    start: str
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    metadata: Mapping[str, Any]
    #: ``(restart, shutdown_timeout, max_restarts, max_seconds)``, one tuple shared by the
    #: specs that have the same (a node holds a spec for every child of the cluster)
    policy: tuple[RestartPolicy, float, int, float]

    @property
    def restart(self) -> RestartPolicy:
        return self.policy[0]

    @property
    def shutdown_timeout(self) -> float:
        return self.policy[1]

    @property
    def max_restarts(self) -> int:
        return self.policy[2]

    @property
    def max_seconds(self) -> float:
        return self.policy[3]

    def __init__(
        self,
        id: str,
        start: str | Callable[..., Any],
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        restart: RestartPolicy = "permanent",
        shutdown_timeout: float = 5.0,
        metadata: Mapping[str, Any] | None = None,
        max_restarts: int = 3,
        max_seconds: float = 5.0,
    ) -> None:
        if not isinstance(id, str) or not id:
            raise InvalidSpec(f"child id must be a non-empty string, got {id!r}")
        if len(id) > MAX_CHILD_ID_LENGTH:
            raise InvalidSpec(f"child id longer than {MAX_CHILD_ID_LENGTH} characters")
        if restart not in _POLICIES:
            raise InvalidSpec(f"{id}: restart must be one of {sorted(_POLICIES)}, got {restart!r}")
        if isinstance(args, str | bytes) or not isinstance(args, Sequence):
            raise InvalidSpec(f"{id}: args must be a list or tuple, got {type(args).__name__}")
        if kwargs is not None and not isinstance(kwargs, Mapping):
            raise InvalidSpec(f"{id}: kwargs must be a mapping, got {type(kwargs).__name__}")
        if metadata is not None and not isinstance(metadata, Mapping):
            raise InvalidSpec(f"{id}: metadata must be a mapping, got {type(metadata).__name__}")
        if not _positive(shutdown_timeout):
            raise InvalidSpec(f"{id}: shutdown_timeout must be a positive number")
        if type(max_restarts) is not int or max_restarts < 0:
            raise InvalidSpec(f"{id}: max_restarts must be an int >= 0")
        if not _positive(max_seconds):
            raise InvalidSpec(f"{id}: max_seconds must be a positive number")
        try:
            ref = _start_ref(start)
        except InvalidSpec as exc:
            raise InvalidSpec(f"{id}: {exc}") from None
        if kwargs and not all(isinstance(key, str) for key in kwargs):
            raise InvalidSpec(f"{id}: kwargs keys must be strings (argument names)")
        plain_args = tuple(args) if args else ()
        plain_kwargs = dict(kwargs) if kwargs else _EMPTY
        plain_metadata = dict(metadata) if metadata else _EMPTY
        # What to_wire sends: each non-empty field is packed once (and unpacked) to be sure.
        if not _FROM_WIRE.get():
            for name, value in (
                ("args", plain_args),
                ("kwargs", plain_kwargs),
                ("metadata", plain_metadata),
            ):
                if value:
                    check_travels(value, f"ChildSpec {id!r}: {name}")
        self._fill(
            id,
            ref,
            plain_args,
            plain_kwargs,
            restart,
            shutdown_timeout,
            plain_metadata,
            max_restarts,
            max_seconds,
        )

    def _fill(
        self,
        id: str,
        ref: str,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        restart: str,
        shutdown_timeout: float,
        metadata: Mapping[str, Any],
        max_restarts: int,
        max_seconds: float,
    ) -> None:
        # one start string and one policy tuple for the many specs of one kind (a node holds
        # a spec for every child of the cluster)
        policy = (_POLICY_NAMES[restart], float(shutdown_timeout), max_restarts, float(max_seconds))
        self._store(id, sys.intern(ref), args, kwargs, metadata, _shared_policy(policy))

    def _store(
        self,
        id: str,
        start: str,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        metadata: Mapping[str, Any],
        policy: tuple[Any, float, int, float],
    ) -> None:
        """Set the (frozen) fields through their slot descriptors: twice as fast as
        ``object.__setattr__``, and a node builds a spec for every child of the cluster."""
        set_ = _SETTERS
        set_[0](self, id)
        set_[1](self, start)
        set_[2](self, args)
        set_[3](self, kwargs)
        set_[4](self, metadata)
        set_[5](self, policy)

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        extra = "".join(
            f", {name}={value!r}"
            for name in ("args", "kwargs", "restart", "metadata")
            if (value := _plain(getattr(self, name)))
            and (name != "restart" or value != "permanent")
        )
        return f"ChildSpec({self.id!r}, {self.start!r}{extra})"

    def replace(self, **changes: Any) -> ChildSpec:
        """A copy with ``changes`` applied (validated like a new spec)."""
        fields = {name: getattr(self, name) for name in _WIRE_FIELDS}
        fields.update(changes)
        return ChildSpec(**fields)

    def to_wire(self) -> dict[str, Any]:
        """The spec as msgpack-able data: ``id``, ``start`` and the fields that differ from
        their defaults."""
        extras = self.extras()
        wire = {"id": self.id, "start": self.start}
        if extras is not None:
            wire.update(extras)
        return wire

    def extras(self) -> dict[str, Any] | None:
        """The fields other than ``id`` and ``start`` that differ from their defaults, as
        msgpack data (``None`` when all are defaults: most specs)."""
        out: dict[str, Any] = {}
        if self.args:
            out["args"] = list(self.args)
        if self.kwargs:
            out["kwargs"] = dict(self.kwargs)
        if self.metadata:
            out["metadata"] = dict(self.metadata)
        if self.policy != _DEFAULT_POLICY:
            for name, value, default in zip(
                _POLICY_FIELDS, self.policy, _DEFAULT_POLICY, strict=True
            ):
                if value != default:
                    out[name] = value
        return out or None

    @classmethod
    def from_extras(cls, id: Any, start: Any, extras: Any) -> ChildSpec:
        """The spec whose :attr:`id`, :attr:`start` and :meth:`extras` these are, refusing
        anything malformed like :meth:`from_wire`."""
        if extras is None:
            if _plain_identity(id, start):  # most specs: every option is its default
                spec = object.__new__(cls)
                spec._store(id, sys.intern(start), (), _EMPTY, _EMPTY, _DEFAULT_POLICY)
                return spec
            return cls.from_wire({"id": id, "start": start})
        if type(extras) is not dict or "id" in extras or "start" in extras:
            raise InvalidSpec("malformed child spec extras")
        plain = cls._from_plain(id, start, extras)
        return plain if plain is not None else cls.from_wire({"id": id, "start": start, **extras})

    @classmethod
    def from_wire(cls, data: Any) -> ChildSpec:
        """Rebuild a spec from :meth:`to_wire` data, refusing anything malformed."""
        if type(data) is dict:
            spec = cls._from_plain(data.get("id"), data.get("start"), data)
            if spec is not None:
                return spec
        if not isinstance(data, Mapping):
            raise InvalidSpec(f"child spec must be a map, got {type(data).__name__}")
        unknown = set(data) - _WIRE_FIELDS
        if unknown:
            raise InvalidSpec(f"child spec has unknown fields {sorted(unknown)}")
        token = _FROM_WIRE.set(True)
        try:
            return cls(**data)
        except TypeError as exc:
            raise InvalidSpec(f"malformed child spec: {exc}") from None
        finally:
            _FROM_WIRE.reset(token)

    @classmethod
    def _from_plain(cls, cid: Any, start: Any, data: dict[str, Any]) -> ChildSpec | None:
        """:meth:`from_wire` for what :meth:`to_wire` sends (``data``: its fields, ``id`` and
        ``start`` aside), with exact type checks (a node decodes a spec for every child of the
        cluster); ``None`` for anything else, which the full constructor then accepts or
        refuses with its reason."""
        if not _WIRE_FIELDS.issuperset(data):
            return None
        args = data.get("args", ())
        kwargs = data.get("kwargs")
        restart = data.get("restart", "permanent")
        timeout = data.get("shutdown_timeout", 5.0)
        metadata = data.get("metadata")
        max_restarts = data.get("max_restarts", 3)
        max_seconds = data.get("max_seconds", 5.0)
        if not (
            _plain_identity(cid, start)
            and type(args) in (list, tuple)
            and (kwargs is None or type(kwargs) is dict)
            and (metadata is None or type(metadata) is dict)
            and type(restart) is str
            and restart in _POLICY_NAMES
            and type(max_restarts) is int
            and max_restarts >= 0
            and _plain_positive(timeout)
            and _plain_positive(max_seconds)
        ):
            return None
        if kwargs and not all(type(key) is str for key in kwargs):
            return None
        spec = object.__new__(cls)
        spec._fill(
            cid,
            start,
            tuple(args) if args else (),
            kwargs or _EMPTY,
            restart,
            timeout,
            metadata or _EMPTY,
            max_restarts,
            max_seconds,
        )
        return spec


_SETTERS: Final = tuple(getattr(ChildSpec, name).__set__ for name in ChildSpec.__slots__)
_POLICIES_SEEN: dict[tuple[Any, float, int, float], tuple[Any, float, int, float]] = {}
_DEFAULT_POLICY: Final[tuple[RestartPolicy, float, int, float]] = ("permanent", 5.0, 3, 5.0)
_POLICY_FIELDS: Final = ("restart", "shutdown_timeout", "max_restarts", "max_seconds")
_POLICIES_SEEN[_DEFAULT_POLICY] = _DEFAULT_POLICY


def _shared_policy(policy: tuple[Any, float, int, float]) -> tuple[Any, float, int, float]:
    """One tuple per distinct policy (bounded), so that many specs share it."""
    if len(_POLICIES_SEEN) < 1024:
        return _POLICIES_SEEN.setdefault(policy, policy)
    return _POLICIES_SEEN.get(policy, policy)


_WIRE_FIELDS = frozenset(
    (
        "id",
        "start",
        "args",
        "kwargs",
        "restart",
        "shutdown_timeout",
        "metadata",
        "max_restarts",
        "max_seconds",
    )
)


def _plain_identity(cid: object, start: object) -> bool:
    """A valid id and ``"module:Name"`` start, both exactly ``str`` (the wire's fast paths)."""
    if type(cid) is not str or not 0 < len(cid) <= MAX_CHILD_ID_LENGTH or type(start) is not str:
        return False
    module, sep, attr = start.partition(":")
    return bool(sep and module and attr)


def _plain_positive(x: object) -> bool:
    """A positive finite number that is exactly a float or an int (never a bool)."""
    if type(x) is float or type(x) is int:
        return x > 0 and math.isfinite(x)
    return False


def _plain(value: Any) -> Any:
    return dict(value) if isinstance(value, MappingProxyType) else value


def _positive(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and x > 0 and math.isfinite(x)


def resolve_start(ref: str) -> Any:
    """Import the object named by ``"package.module:Name"`` (dotted attributes allowed)."""
    module_name, _, attr_path = ref.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr_path.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise LookupError(f"cannot resolve {ref!r}: {exc}") from None
    return obj


class RegistryRecord(NamedTuple):
    """One child in :meth:`Hub.registry_dump`: its spec, where it runs, its start metadata."""

    spec: ChildSpec
    nodes: list[tuple[str, Pid]]
    metadata: Mapping[str, Any]


@dataclass(slots=True)
class StartResult:
    """Outcome of :meth:`Hub.start_children`.

    ``status`` is ``"ok"`` (every child started), ``"error"`` (at least one failed; the
    others started unless rolled back) or ``"accepted"`` (``wait=False``: validated and under
    way). ``started`` lists ``(child_id, [(node, pid)])``; ``errors`` lists
    ``(child_id, HubError)``; ``rolled_back`` lists the ids stopped again by
    ``on_failure="rollback"``.
    """

    status: Literal["ok", "error", "accepted"]
    started: list[tuple[str, list[tuple[str, Pid]]]] = field(default_factory=list)
    errors: list[tuple[str, HubError]] = field(default_factory=list)
    rolled_back: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status != "error"

    def raise_for_errors(self) -> StartResult:
        """Raise the first error, if any; return ``self`` otherwise (for chaining)."""
        if self.errors:
            raise self.errors[0][1]
        return self


@dataclass(slots=True)
class StopResult:
    """Outcome of :meth:`Hub.stop_children`: ``stopped`` lists ``(child_id, [node])``."""

    status: Literal["ok", "error", "accepted"]
    stopped: list[tuple[str, list[str]]] = field(default_factory=list)
    errors: list[tuple[str, HubError]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status != "error"

    def raise_for_errors(self) -> StopResult:
        if self.errors:
            raise self.errors[0][1]
        return self
