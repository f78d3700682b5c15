"""Pydantic-vs-dict state adapter: creating, validating, encoding and migrating state."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any, ClassVar, TypeVar, cast, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from ._graph import TRIGGER_PAYLOAD
from .exceptions import (
    CorruptCheckpointError,
    FlowConfigurationError,
    MigrationError,
    StateValidationError,
)

__all__ = [
    "FlowState",
    "StateAdapter",
    "migration",
]

F = TypeVar("F", bound=Callable[..., Any])
_MIGRATES_FROM = "__flowkit_migrates_from__"


def _new_id() -> str:
    """A random UUID (version 4) in its canonical text form, as ``str(uuid.uuid4())``
    makes it, without building the UUID object first (half the cost of a small flow's
    construction went there)."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # the RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class FlowState(BaseModel):
    """Base for structured flow state: a Pydantic model with an ``id`` (a UUID4 string).

    Declare ``flowkit_version: ClassVar[int] = 2`` and :func:`migration` functions to
    upgrade states stored by older versions of the model.

    Example::

        class Counter(FlowState):
            count: int = 0

        class CountFlow(Flow[Counter]):
            @start()
            def bump(self):
                self.state.count += 1
    """

    # Build the validator on first use, not at ``import flowkit`` (saves ~60 ms).
    model_config = ConfigDict(defer_build=True)

    id: str = Field(default_factory=_new_id)
    flowkit_version: ClassVar[int] = 1


def migration(*, from_version: int) -> Callable[[F], F]:
    """Mark a function in a state model's body as the upgrade from ``from_version`` to
    ``from_version + 1``. It takes the stored state as a dict and returns the new dict.

    Example::

        class Order(FlowState):
            flowkit_version: ClassVar[int] = 2
            total_cents: int = 0

            @migration(from_version=1)
            @staticmethod
            def euros_to_cents(data: dict) -> dict:
                data["total_cents"] = round(data.pop("total") * 100)
                return data
    """

    def decorate(func: F) -> F:
        target = func.__func__ if isinstance(func, staticmethod) else func
        setattr(target, _MIGRATES_FROM, from_version)
        return func

    return decorate


@cache
def _with_id(model: type[BaseModel]) -> type[BaseModel]:
    """``model`` itself if it has an ``id`` field, else a subclass that adds one."""
    if "id" in model.model_fields:
        return model
    return create_model(
        model.__name__,
        __base__=model,
        __module__=model.__module__,
        id=(str, Field(default_factory=_new_id)),
    )


def _format_validation(exc: ValidationError, root: str) -> str:
    parts = []
    for err in exc.errors():
        loc = root + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
        parts.append(f"{loc}: {err['msg']} (got {err.get('input')!r})")
    return "; ".join(parts)


class StateAdapter:
    """Everything the flow needs to know about one state type, decided once per class."""

    def __init__(self, flow_name: str, state_type: Any, initial: Any) -> None:
        self.flow_name = flow_name
        self.model: type[BaseModel] | None = None
        self.initial_dict: dict[str, Any] = {}
        self.initial_instance: BaseModel | None = None
        if isinstance(initial, BaseModel):
            self.model = _with_id(type(initial))
            self.initial_instance = initial
        elif isinstance(initial, type) and issubclass(initial, BaseModel):
            self.model = _with_id(initial)
        elif isinstance(initial, Mapping):
            self.initial_dict = dict(initial)
        elif initial is not None:
            raise FlowConfigurationError(
                f"{flow_name}.initial_state must be a Pydantic model class or instance, or a "
                f"dict; got {initial!r}."
            )
        elif isinstance(state_type, type) and issubclass(state_type, BaseModel):
            self.model = _with_id(state_type)
        elif state_type not in (None, dict, Any) and not _is_dict_type(state_type):
            raise FlowConfigurationError(
                f"{flow_name}: Flow[{state_type!r}] is not supported; use a Pydantic model "
                "(e.g. a FlowState subclass) or dict."
            )
        self.version: int = getattr(self.model, "flowkit_version", 1) if self.model else 1
        self.migrations = _collect_migrations(self.model) if self.model else {}

    @property
    def type_name(self) -> str:
        return self.model.__name__ if self.model else "dict"

    # -- creating ------------------------------------------------------------------

    def new(self) -> Any:
        """A fresh state with a new id."""
        if self.model is None:
            state = copy.deepcopy(self.initial_dict)
            state["id"] = _new_id() if "id" not in state else state["id"]
            return state
        if self.initial_instance is not None:
            # A copy per flow object, with its own run id: two flows built from one
            # initial_state instance are two runs.
            data = self.initial_instance.model_dump()
            data["id"] = _new_id()
            return self._validate(data, "initial_state")
        try:
            return self.model()
        except ValidationError as exc:
            raise StateValidationError(
                f"{self.flow_name}: the state model {self.model.__name__} cannot be created "
                f"without arguments ({_format_validation(exc, 'state')}); give every field a "
                "default."
            ) from None

    def for_initial(self, initial: Any) -> tuple[StateAdapter, Any]:
        """The adapter and starting state for ``Flow(initial_state=initial)``: a dict for
        a typed flow fills its model; otherwise the value's own type decides (as in
        CrewAI, where a model instance keeps its id if it has one)."""
        if isinstance(initial, Mapping) and self.model is not None:
            return self, self.apply_inputs(self.new(), initial)
        adapter = StateAdapter(self.flow_name, None, initial)
        state = adapter.new()
        given_id = getattr(initial, "id", None)
        if isinstance(given_id, str) and given_id and not isinstance(initial, type):
            state.id = given_id
        # the class's adapter when the type is the same (its migrations, its version)
        return (self if adapter.model is self.model else adapter), state

    def snapshot(self, state: Any) -> Any:
        """A copy of ``state`` as plain data (for events): later changes do not show."""
        data = self.dump(state)
        try:
            return copy.deepcopy(data)
        except Exception:  # an uncopyable value: a shallow copy still freezes the keys
            return dict(data)

    def _validate(self, data: Mapping[str, Any], what: str) -> Any:
        assert self.model is not None
        try:
            return self.model.model_validate(data)
        except ValidationError as exc:
            raise StateValidationError(
                f"{self.flow_name}: {what} do not fit {self.model.__name__}: "
                f"{_format_validation(exc, 'state')}. Fix the value(s) named here."
            ) from None

    def apply_inputs(self, state: Any, inputs: Mapping[str, Any]) -> Any:
        """State with ``inputs`` set on top, validated; returns the (possibly new) state."""
        if self.model is None:
            state.update(inputs)
            return state
        if TRIGGER_PAYLOAD in inputs and TRIGGER_PAYLOAD not in self.model.model_fields:
            # CrewAI's trigger input goes to start methods; a model without such a
            # field does not store it (as in CrewAI)
            inputs = {k: v for k, v in inputs.items() if k != TRIGGER_PAYLOAD}
        unknown = [k for k in inputs if k not in self.model.model_fields]
        if unknown and self.model.model_config.get("extra") != "allow":
            raise StateValidationError(
                f"{self.flow_name}: kickoff inputs {sorted(unknown)} are not fields of "
                f"{self.model.__name__} (fields: {sorted(self.model.model_fields)}). Remove "
                "them or add the fields to the state model."
            )
        data = dict(state)  # shallow: field values keep their types for validation
        data.update(inputs)
        return self._validate(data, "kickoff inputs")

    def state_id(self, state: Any) -> str:
        return str(state["id"] if self.model is None else state.id)

    # -- storing -------------------------------------------------------------------

    def dump(self, state: Any) -> Any:
        """Python-mode data for the codec (models -> dicts, rich values kept)."""
        if self.model is None:
            return state
        return state.model_dump(mode="python")

    def dump_for_codec(self, state: Any) -> Any:
        """:meth:`dump` for data handed straight to the codec, which builds new
        containers for everything it encodes (so nothing it returns is the state's own):
        a field declared as a list or dict of plain values (``list[str]``,
        ``dict[str, int]``, ...) is given as it is, not copied item by item by pydantic
        first (38 us for 2,000 strings at every checkpoint, against about 1 us). The
        result may share those containers with ``state``: never change it."""
        if self.model is None:
            return state
        plain = _plain_fields(self.model)
        if plain:
            for name, kind in plain.items():
                if type(getattr(state, name)) is not kind:
                    break
            else:
                data = state.model_dump(mode="python", exclude=plain.keys())
                return {
                    name: getattr(state, name) if name in plain else data[name]
                    for name in self.model.model_fields
                }
        return state.model_dump(mode="python")

    def load(self, data: Any, *, version: int | None, run_id: str, seq: int | None) -> Any:
        """State from decoded stored data, migrated to the current version."""
        if not isinstance(data, dict):
            raise CorruptCheckpointError(
                f"run {run_id!r} checkpoint {seq}: stored state is a {type(data).__name__}, "
                "not an object; the row is corrupt. Fork from an earlier checkpoint.",
                run_id=run_id,
                seq=seq,
            )
        if self.model is None:
            return data
        data = self._migrate(data, version or 1, run_id, seq)
        try:
            return self.model.model_validate(data)
        except ValidationError as exc:
            raise CorruptCheckpointError(
                f"run {run_id!r} checkpoint {seq} is no longer valid for "
                f"{self.model.__name__}: {_format_validation(exc, 'state')}. If the model "
                "changed, raise its flowkit_version and add a @migration.",
                run_id=run_id,
                seq=seq,
            ) from None

    def _migrate(
        self, data: dict[str, Any], stored: int, run_id: str, seq: int | None
    ) -> dict[str, Any]:
        assert self.model is not None
        if stored > self.version:
            raise MigrationError(
                f"run {run_id!r} checkpoint {seq} was stored by {self.model.__name__} version "
                f"{stored}, newer than this code's version {self.version}; deploy the newer "
                "code to read it."
            )
        while stored < self.version:
            step = self.migrations.get(stored)
            if step is None:
                raise MigrationError(
                    f"run {run_id!r} checkpoint {seq} holds {self.model.__name__} version "
                    f"{stored} and there is no @migration(from_version={stored}) to reach "
                    f"version {self.version}. Add one to {self.model.__name__}."
                )
            result = step(dict(data))
            if not isinstance(result, dict):
                raise MigrationError(
                    f"{self.model.__name__} migration from version {stored} returned "
                    f"{type(result).__name__}; a migration must return the new state dict."
                )
            data = result
            stored += 1
        return data


def _is_dict_type(tp: Any) -> bool:
    return getattr(tp, "__origin__", None) is dict


def _collect_migrations(
    model: type[BaseModel],
) -> dict[int, Callable[[dict[str, Any]], dict[str, Any]]]:
    found: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}
    for klass in reversed(model.__mro__):
        if klass in (BaseModel, FlowState, object):
            continue
        for attr in list(vars(klass).values()):
            func = attr.__func__ if isinstance(attr, (staticmethod, classmethod)) else attr
            version = getattr(func, _MIGRATES_FROM, None)
            if isinstance(version, int):
                found[version] = cast(Callable[[dict[str, Any]], dict[str, Any]], func)
    return found


_PLAIN_ITEMS = (str, int, float, bool)


@cache
def _plain_fields(model: type[BaseModel]) -> dict[str, type]:
    """Fields of ``model`` whose python-mode dump is a plain copy of the container
    (declared ``list[X]`` or ``dict[str, X]`` with X a str, int, float or bool, no
    serializer or other metadata), by name, with the container type; {} when the model
    has serializers, computed fields or extra fields (their dump is not a field-by-field
    copy)."""
    decorators = model.__pydantic_decorators__
    if (
        decorators.model_serializers
        or model.model_computed_fields
        or model.model_config.get("extra") == "allow"
    ):
        return {}
    serialized = {
        name for info in decorators.field_serializers.values() for name in info.info.fields
    }
    found: dict[str, type] = {}
    for name, field in model.model_fields.items():
        if name in serialized or field.metadata or field.exclude:
            continue
        origin, args = get_origin(field.annotation), get_args(field.annotation)
        if origin is list and len(args) == 1 and args[0] in _PLAIN_ITEMS:
            found[name] = list
        elif origin is dict and len(args) == 2 and args[0] is str and args[1] in _PLAIN_ITEMS:
            found[name] = dict
    return found
