"""``Flow.plot`` / ``Flow.to_mermaid`` and ``flowkit plot``: the flow as a picture, and the
path a stored run took through it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._plot_model import build_picture
from ._plot_render import render_html, render_mermaid
from ._run_path import RunPath, read_run_path

if TYPE_CHECKING:
    from ._flow import Flow
    from .persistence import FlowPersistence

__all__ = ["flow_html", "flow_mermaid", "write_plot"]


def _run_path(
    cls: type[Flow[Any]], backend: FlowPersistence | None, run_id: str | None
) -> RunPath | None:
    if run_id is None:
        return None
    if backend is None:
        from .exceptions import FlowConfigurationError

        raise FlowConfigurationError(
            f"{cls.__qualname__}: drawing run {run_id!r} needs the backend the run is stored "
            "in; add @persist or pass Flow(persistence=...)."
        )
    return read_run_path(backend, run_id, cls._graph.flow_name)


def flow_html(
    cls: type[Flow[Any]], backend: FlowPersistence | None = None, run_id: str | None = None
) -> str:
    """The self-contained HTML page of ``cls`` (with run ``run_id``'s path if given)."""
    return render_html(build_picture(cls._graph, cls), _run_path(cls, backend, run_id))


def flow_mermaid(
    cls: type[Flow[Any]], backend: FlowPersistence | None = None, run_id: str | None = None
) -> str:
    """The Mermaid flowchart of ``cls`` (with run ``run_id``'s path if given)."""
    return render_mermaid(build_picture(cls._graph, cls), _run_path(cls, backend, run_id))


def write_plot(
    cls: type[Flow[Any]],
    filename: str | Path,
    *,
    backend: FlowPersistence | None = None,
    run_id: str | None = None,
    show: bool = False,
) -> Path:
    """Write the HTML page to ``filename`` (``.html`` added when it has no suffix);
    open it in the browser when ``show``. Returns the path written."""
    path = Path(filename)
    if not path.suffix:
        path = path.with_suffix(".html")
    path.write_text(flow_html(cls, backend, run_id), encoding="utf-8")
    if show:
        import webbrowser

        webbrowser.open(path.resolve().as_uri())
    return path
