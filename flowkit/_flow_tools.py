"""The tools half of :class:`flowkit.Flow`: draw the flow (``plot``, ``to_mermaid``) and
change a stored run's state with an audit record (``update_state``). A base class of
``Flow``, so that ``_flow.py`` keeps to the flow's definition, state and front doors."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from ._flow import Flow
    from .persistence import Checkpoint, FlowPersistence

__all__ = ["FlowTools"]


class FlowTools:
    """``plot``, ``to_mermaid`` and ``update_state`` (documented on :class:`flowkit.Flow`)."""

    if TYPE_CHECKING:

        def _backend(self) -> FlowPersistence | None: ...

    def plot(
        self,
        filename: str | Path = "flowkit_flow.html",
        show: bool = False,
        *,
        run_id: str | None = None,
    ) -> Path:
        """Write the flow as one self-contained HTML page (inline SVG, works offline).

        Starts, listeners, routers with the labels they return, ``and_`` / ``or_`` joins
        and loops are drawn. With ``run_id``, the path that stored run took is drawn on
        top: the methods it ran (and how often) and where it stopped or waits.
        ``.html`` is added to a ``filename`` without a suffix; ``show=True`` opens the
        page in the browser. Returns the path written.

        Example::

            Triage().plot("triage.html")
            Triage().plot("run.html", run_id=run_id)   # the path run_id took
        """
        from ._plot import write_plot

        backend = self._backend() if run_id is not None else None
        return write_plot(
            cast("type[Flow[Any]]", type(self)), filename, backend=backend, run_id=run_id, show=show
        )

    def to_mermaid(self, *, run_id: str | None = None) -> str:
        """The flow as a Mermaid ``flowchart`` for Markdown (with run ``run_id``'s path
        when given): what :meth:`plot` draws, as text."""
        from ._plot import flow_mermaid

        backend = self._backend() if run_id is not None else None
        return flow_mermaid(cast("type[Flow[Any]]", type(self)), backend, run_id)

    def update_state(
        self,
        run_id: str,
        values: Mapping[str, Any],
        *,
        reason: str,
        actor: str | None = None,
    ) -> Checkpoint:
        """Change a stored run's state by hand, with an audit record; return the new
        checkpoint.

        ``values`` maps fields (or dotted paths into nested data, ``"address.city"``,
        ``"items.3.title"``) to new values; the result is validated by the flow's state
        model. A new checkpoint (method name ``<edit>``) is appended -- nothing is
        changed in place -- carrying ``actor`` (default: the operating-system user),
        ``reason`` and the field-level diff, and keeping the execution position, so
        the run resumes where it stood. A run being executed (its lease is held) is
        refused with ``RunLockedError``; a checkpoint written meanwhile makes the edit
        fail with ``ConcurrentUpdateError``.

        Example::

            Triage().update_state(run_id, {"category": "refund"}, reason="misrouted",
                                  actor="alice")
            Triage().resume(run_id)
        """
        from ._concurrency import run_sync

        return run_sync(
            self.aupdate_state(run_id, values, reason=reason, actor=actor), graceful=True
        )

    async def aupdate_state(
        self,
        run_id: str,
        values: Mapping[str, Any],
        *,
        reason: str,
        actor: str | None = None,
    ) -> Checkpoint:
        """Awaitable form of :meth:`update_state`."""
        from ._edit import update_state

        return await update_state(
            cast("Flow[Any]", self), run_id, values, reason=reason, actor=actor
        )
