"""Every error flowkit raises.

All of them derive from :class:`FlowkitError`; each leaf also subclasses the builtin
that matches its meaning, so ``except TypeError`` keeps working for code that does not
know flowkit::

    FlowkitError(Exception)
    ├── FlowDefinitionError(TypeError, ValueError)  a flow class is wired wrongly (at class
    │                                         creation; ValueError too, as CrewAI raises)
    ├── FlowConfigurationError(TypeError)     bad arguments to Flow(...) / @persist / a backend
    ├── InvalidArgumentError(ValueError)      an argument's value is out of range
    │                                         (keep_last=0, lease_ttl<=0, limit=-1, ...)
    ├── StateError
    │   ├── StateValidationError(ValueError)      kickoff inputs do not fit the state model
    │   ├── StateAssignmentError(AttributeError)  ``self.state = ...``
    │   ├── UnserializableStateError(TypeError)   a value cannot be stored (names its path)
    │   └── StateConflictError(RuntimeError)      two methods that ran at the same time both
    │                                             changed one field (names it and both methods)
    ├── MethodCallLimitError(RuntimeError)    a method ran more than max_method_calls times
    ├── FlowUsageError(RuntimeError)          a flow object used wrongly (two kickoffs at once,
    │                                         self.interrupt() outside a running method)
    ├── PersistenceError(RuntimeError)
    │   ├── UnsupportedOperationError(NotImplementedError)  the backend lacks an optional method
    │   ├── CorruptCheckpointError(ValueError)    a stored checkpoint cannot be read back
    │   ├── CorruptRunError(ValueError)           a stored run record cannot be read back
    │   ├── RunNotFoundError(LookupError)         no run / checkpoint with that id
    │   ├── RunExistsError(ValueError)            creating a run whose id is taken
    │   ├── ConcurrentUpdateError(RuntimeError)   compare-and-set on ``seq`` failed
    │   ├── RunLockedError(RuntimeError)          another owner holds the run's lease
    │   ├── LeaseLostError(RuntimeError)          our lease expired and was taken over
    │   └── SecretKeyError(ValueError)            secret fields without (or with a wrong) key
    ├── ResumeError(RuntimeError)             the run cannot be resumed (finished, other flow, ...)
    │   └── DefinitionChangedError            the flow definition changed since the run started
    └── MigrationError(ValueError)            no migration path for a stored state version

Every message says what went wrong, names the thing (method, run id, field path) and
what to do about it.
"""

from __future__ import annotations

__all__ = [
    "ConcurrentUpdateError",
    "CorruptCheckpointError",
    "CorruptRunError",
    "DefinitionChangedError",
    "FlowConfigurationError",
    "FlowDefinitionError",
    "FlowUsageError",
    "FlowkitError",
    "InvalidArgumentError",
    "LeaseLostError",
    "MethodCallLimitError",
    "MigrationError",
    "PersistenceError",
    "ResumeError",
    "RunExistsError",
    "RunLockedError",
    "RunNotFoundError",
    "SecretKeyError",
    "StateAssignmentError",
    "StateConflictError",
    "StateError",
    "StateValidationError",
    "UnserializableStateError",
    "UnsupportedOperationError",
]


class FlowkitError(Exception):
    """Root of every error flowkit raises."""


class FlowDefinitionError(FlowkitError, TypeError, ValueError):
    """A flow class is wired wrongly; raised when the class is created.

    Also a ``ValueError``: CrewAI raises ``ValueError`` for an invalid condition, and
    code written for it keeps catching these."""


class FlowConfigurationError(FlowkitError, TypeError):
    """Bad arguments to ``Flow(...)``, ``@persist`` or a persistence backend."""


class InvalidArgumentError(FlowkitError, ValueError):
    """An argument has an acceptable type but a value outside what is accepted
    (``prune(keep_last=0)``, ``Flow(lease_ttl=0)``, ``list_runs(limit=-1)``, ...); the
    message names the argument and the values it takes."""


class StateError(FlowkitError):
    """Base for problems with a flow's state."""


class StateValidationError(StateError, ValueError):
    """Inputs or stored data do not fit the state model."""


class StateAssignmentError(StateError, AttributeError):
    """``self.state`` was assigned; mutate its fields instead."""


class UnserializableStateError(StateError, TypeError):
    """A value in the state cannot be stored; the message names its path."""

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


class StateConflictError(StateError, RuntimeError):
    """Two methods that ran at the same time both changed one state field.

    A ``RuntimeError`` rather than a ``ValueError``: no single value is wrong, the
    conflict comes from what ran concurrently. ``path`` names the field
    (``state.total``), ``methods`` the method whose changes were being merged and, when
    known, the one that changed the field first.
    """

    def __init__(self, message: str, *, path: str, methods: tuple[str, ...]) -> None:
        super().__init__(message)
        self.path = path
        self.methods = methods


class MethodCallLimitError(FlowkitError, RuntimeError):
    """A method ran more than ``max_method_calls`` times in one kickoff."""


class FlowUsageError(FlowkitError, RuntimeError):
    """A flow object was used wrongly: two kickoffs at once on one instance, or
    ``self.interrupt()`` outside a running flow method."""


class PersistenceError(FlowkitError, RuntimeError):
    """Base for storage problems."""


class UnsupportedOperationError(PersistenceError, NotImplementedError):
    """The persistence backend does not implement an optional operation."""


class CorruptCheckpointError(PersistenceError, ValueError):
    """A stored checkpoint cannot be read back; names the run id and seq."""

    def __init__(self, message: str, *, run_id: str, seq: int | None) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.seq = seq


class CorruptRunError(PersistenceError, ValueError):
    """A stored run record (status, timestamps, info, ...) cannot be read back; names the
    run id. ``list_runs`` skips such runs and reports each through the ``flowkit`` logger."""

    def __init__(self, message: str, *, run_id: str) -> None:
        super().__init__(message)
        self.run_id = run_id


class RunNotFoundError(PersistenceError, LookupError):
    """No run (or no checkpoint) with the given id."""


class RunExistsError(PersistenceError, ValueError):
    """A run with that id already exists."""


class ConcurrentUpdateError(PersistenceError):
    """Compare-and-set on a run's ``seq`` failed: someone else wrote to the run."""


class RunLockedError(PersistenceError):
    """Another owner holds the run's lease."""


class LeaseLostError(PersistenceError):
    """The lease this process held on a run expired and was taken by another owner."""


class SecretKeyError(PersistenceError, ValueError):
    """A secret field cannot be stored or read: no key, or the wrong key."""


class ResumeError(FlowkitError, RuntimeError):
    """The run cannot be resumed (finished, unknown, or belongs to another flow)."""


class DefinitionChangedError(ResumeError):
    """The flow's definition changed since the run was stored."""


class MigrationError(FlowkitError, ValueError):
    """A stored state version has no migration path to the current one."""
