"""Draw a :class:`~flowkit._plot_model.Picture`: inline SVG in one offline HTML page, or
Mermaid text for Markdown. Pure: strings in, strings out."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from datetime import timezone

from ._plot_model import Edge, Node, Picture, method_id
from ._run_path import RunPath

__all__ = ["render_html", "render_mermaid", "render_svg"]

CHAR_W = 7.6
NODE_H = 36
JOIN_D = 34
LAYER_GAP = 74
NODE_GAP = 30
MARGIN = 30
LOOP_ROOM = 130

_STOP_COLOUR = {"finished": "#0b8043", "next": "#e37400"}
_FILL = {
    "start": ("#e6f4ea", "#1e8e3e"),
    "listen": ("#e8f0fe", "#1a73e8"),
    "router": ("#fef7e0", "#e37400"),
    "label": ("#ffffff", "#80868b"),
    "and": ("#fce8e6", "#c5221f"),
    "or": ("#f3e8fd", "#8430ce"),
}


@dataclass
class _Box:
    x: float  # centre
    y: float  # centre
    w: float
    h: float


def _size(node: Node) -> tuple[float, float]:
    if node.kind in ("and", "or"):
        return JOIN_D + 12, JOIN_D
    pad = 34 if node.kind == "router" else 24
    return max(64.0, len(node.text) * CHAR_W + pad), (28.0 if node.kind == "label" else NODE_H)


def _place(picture: Picture) -> tuple[dict[str, _Box], float, float]:
    layers = picture.layers()
    rows: list[tuple[list[Node], float]] = []
    widest = 0.0
    for layer in layers:
        width = sum(_size(n)[0] for n in layer) + NODE_GAP * max(0, len(layer) - 1)
        rows.append((layer, width))
        widest = max(widest, width)
    boxes: dict[str, _Box] = {}
    for depth, (layer, width) in enumerate(rows):
        x = MARGIN + (widest - width) / 2
        y = MARGIN + depth * LAYER_GAP + NODE_H / 2
        for node in layer:
            w, h = _size(node)
            boxes[node.id] = _Box(x + w / 2, y, w, h)
            x += w + NODE_GAP
    height = MARGIN * 2 + max(0, len(rows) - 1) * LAYER_GAP + NODE_H
    return boxes, MARGIN * 2 + widest + LOOP_ROOM, height


class _Overlay:
    """Which nodes and edges a run touched."""

    def __init__(self, picture: Picture, path: RunPath | None) -> None:
        self.path = path
        self.counts = {method_id(m): n for m, n in (path.counts if path else {}).items()}
        self.stops: dict[str, str] = {}
        for method, what in path.stops if path else []:
            self.stops.setdefault(method_id(method), what)
        self.visited = set(self.counts)
        if path is None:
            return
        # A label or join was passed through when it lies between executed methods:
        # reachable from one and leading to one (or to where the run stopped), through
        # other labels and joins only.
        helpers = {nid for nid, n in picture.nodes.items() if n.kind in ("label", "and", "or")}
        ends = self.visited | set(self.stops)
        forward = self._spread(picture, self.visited, helpers, downstream=True)
        backward = self._spread(picture, ends, helpers, downstream=False)
        self.visited |= forward & backward

    @staticmethod
    def _spread(
        picture: Picture, seeds: set[str], helpers: set[str], *, downstream: bool
    ) -> set[str]:
        reached: set[str] = set()
        frontier = set(seeds)
        while frontier:
            step = {
                (e.dst if downstream else e.src)
                for e in picture.edges
                if (e.src if downstream else e.dst) in frontier
            }
            frontier = (step & helpers) - reached
            reached |= frontier
        return reached

    def edge_taken(self, edge: Edge) -> bool:
        return edge.src in self.visited and (edge.dst in self.visited or edge.dst in self.stops)


def _shape(node: Node, box: _Box, stroke: str, fill: str, width: float, dash: str) -> str:
    x0, y0 = box.x - box.w / 2, box.y - box.h / 2
    common = f'fill="{fill}" stroke="{stroke}" stroke-width="{width}"{dash}'
    if node.kind in ("and", "or"):
        return (
            f'<ellipse cx="{box.x:.1f}" cy="{box.y:.1f}" rx="{box.w / 2:.1f}" '
            f'ry="{box.h / 2:.1f}" {common}/>'
        )
    if node.kind == "router":
        cut = 12
        pts = [
            (x0, box.y),
            (x0 + cut, y0),
            (x0 + box.w - cut, y0),
            (x0 + box.w, box.y),
            (x0 + box.w - cut, y0 + box.h),
            (x0 + cut, y0 + box.h),
        ]
        points = " ".join(f"{px:.1f},{py:.1f}" for px, py in pts)
        return f'<polygon points="{points}" {common}/>'
    radius = box.h / 2 if node.kind in ("start", "label") else 5
    return (
        f'<rect x="{x0:.1f}" y="{y0:.1f}" width="{box.w:.1f}" height="{box.h:.1f}" '
        f'rx="{radius:.1f}" {common}/>'
    )


def _edge_path(edge: Edge, boxes: dict[str, _Box], right: float) -> str:
    a, b = boxes[edge.src], boxes[edge.dst]
    if edge.back or b.y <= a.y:
        x1, y1 = a.x + a.w / 2, a.y
        x2, y2 = b.x + b.w / 2, b.y
        bend = max(x1, x2) + 40 + (abs(y1 - y2) / LAYER_GAP) * 8
        bend = min(bend, right - 8)
        return f"M{x1:.1f},{y1:.1f} C{bend:.1f},{y1:.1f} {bend:.1f},{y2:.1f} {x2 + 6:.1f},{y2:.1f}"
    x1, y1 = a.x, a.y + a.h / 2
    x2, y2 = b.x, b.y - b.h / 2 - 4
    mid = (y1 + y2) / 2
    return f"M{x1:.1f},{y1:.1f} C{x1:.1f},{mid:.1f} {x2:.1f},{mid:.1f} {x2:.1f},{y2:.1f}"


def _tooltip(node: Node) -> str:
    what = {
        "start": "start" + (" (conditional)" if node.conditional else ""),
        "listen": "listener",
        "router": "router",
        "label": "router label",
        "and": "and_: fires when every part has fired",
        "or": "or_: fires on the first part",
    }[node.kind]
    if node.also_router:
        what += " and router"
    return f"{node.text}: {what}"


def render_svg(picture: Picture, path: RunPath | None = None) -> str:
    """The flow as an SVG element (no external references)."""
    boxes, width, height = _place(picture)
    overlay = _Overlay(picture, path)
    out = [
        f'<svg class="flowkit-plot" width="{width:.0f}" '
        f'height="{height + 20:.0f}" viewBox="0 0 {width:.0f} {height + 20:.0f}" '
        'font-family="DejaVu Sans Mono, Menlo, Consolas, monospace" font-size="13">',
        "<defs>"
        '<marker id="fk-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="9" '
        'markerHeight="9" markerUnits="userSpaceOnUse" orient="auto-start-reverse">'
        '<path d="M0,0 L10,5 L0,10 z" '
        'fill="context-stroke"/></marker></defs>',
    ]
    for edge in picture.edges:
        taken = path is not None and overlay.edge_taken(edge)
        colour = "#0b8043" if taken else ("#5f6368" if path is None else "#bdc1c6")
        dash = ' stroke-dasharray="5,4"' if edge.kind == "maybe" else ""
        out.append(
            f'<path class="fk-edge{" fk-taken" if taken else ""}{" fk-loop" if edge.back else ""}"'
            f' data-src="{html.escape(edge.src)}" data-dst="{html.escape(edge.dst)}"'
            f' d="{_edge_path(edge, boxes, width)}" fill="none" stroke="{colour}"'
            f' stroke-width="{2.6 if taken else 1.6}"{dash} marker-end="url(#fk-arrow)"/>'
        )
    for node in picture.nodes.values():
        box = boxes[node.id]
        fill, stroke = _FILL[node.kind]
        width_ = 1.6
        dash = ' stroke-dasharray="4,3"' if node.kind == "label" or node.conditional else ""
        opacity = ""
        if path is not None:
            if node.id in overlay.visited:
                width_ = 2.8
            elif node.id not in overlay.stops:
                opacity = ' opacity="0.45"'
        stop_colour = _STOP_COLOUR.get(overlay.stops.get(node.id, ""), "#d93025")
        if node.id in overlay.stops and overlay.stops[node.id] != "finished":
            stroke, width_, dash = stop_colour, 3.2, ' stroke-dasharray="7,3"'
        style = "font-style:italic;" if node.kind == "label" else ""
        weight = ' font-weight="bold"' if node.kind in ("and", "or") else ""
        out.append(
            f'<g class="fk-node" data-id="{html.escape(node.id)}"{opacity}>'
            f"<title>{html.escape(_tooltip(node))}</title>"
            + _shape(node, box, stroke, fill, width_, dash)
            + f'<text x="{box.x:.1f}" y="{box.y + 4.5:.1f}" text-anchor="middle"{weight}'
            f' style="{style}" fill="#202124">{html.escape(node.text)}</text>'
        )
        count = overlay.counts.get(node.id)
        if count:
            bx, by = box.x + box.w / 2 - 2, box.y - box.h / 2 + 1
            out.append(
                f'<circle cx="{bx:.1f}" cy="{by:.1f}" r="11" fill="#0b8043"/>'
                f'<text x="{bx:.1f}" y="{by + 4:.1f}" text-anchor="middle" font-size="11" '
                f'fill="#ffffff">\u00d7{count}</text>'
            )
        if node.id in overlay.stops:
            out.append(
                f'<text x="{box.x + box.w / 2 + 14:.1f}" y="{box.y + 4:.1f}" text-anchor="start" '
                f'font-size="11" fill="{stop_colour}">{html.escape(overlay.stops[node.id])}</text>'
            )
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out)


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#202124;
background:#fff}
h1{font-size:20px;margin:0 0 4px}p.sub{margin:0 0 16px;color:#5f6368}
.legend span{display:inline-block;margin-right:14px;font-size:13px}
.legend i{display:inline-block;width:14px;height:14px;border:2px solid;margin-right:5px;
vertical-align:-3px;border-radius:3px}
.canvas{overflow:auto;border:1px solid #dadce0;border-radius:8px;padding:8px;margin:12px 0}
.fk-node{cursor:pointer}.fk-edge.fk-focus{stroke:#1a73e8 !important;stroke-width:3.2 !important}
table{border-collapse:collapse;font-size:13px}td,th{padding:3px 10px;border-bottom:1px solid
#e8eaed;text-align:left}tr.edit td{color:#c5221f}
"""

# Clicking a node highlights the edges that touch it; nothing is fetched.
_SCRIPT = """
document.querySelectorAll('.fk-node').forEach(function(node){
  node.addEventListener('click', function(){
    var id = node.getAttribute('data-id');
    document.querySelectorAll('.fk-edge').forEach(function(edge){
      var on = edge.getAttribute('data-src') === id || edge.getAttribute('data-dst') === id;
      edge.classList.toggle('fk-focus', on);
    });
  });
});
"""


def _legend() -> str:
    items = [
        ("start", "start"),
        ("listen", "listener"),
        ("router", "router"),
        ("label", "router label"),
        ("and", "and_ join"),
        ("or", "or_ join"),
    ]
    spans = "".join(
        f'<span><i style="background:{_FILL[k][0]};border-color:{_FILL[k][1]}"></i>{t}</span>'
        for k, t in items
    )
    return (
        f'<div class="legend">{spans}<span>- - \u25b6 a router may return this label</span>'
        "<span>curved edge on the right: a loop</span></div>"
    )


def _run_table(path: RunPath) -> str:
    rows = []
    for step in path.steps:
        when = step.created_at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
        cls = ' class="edit"' if step.edit else ""
        rows.append(
            f"<tr{cls}><td>{step.seq}</td><td>{html.escape(step.method)}</td><td>{when}</td></tr>"
        )
    pruned = (
        f"<p>Checkpoints 1..{path.pruned_before - 1} were pruned.</p>" if path.pruned_before else ""
    )
    stops = "; ".join(f"{html.escape(m)}: {html.escape(w)}" for m, w in path.stops) or "-"
    return (
        f"<h2>Run {html.escape(path.run_id)} ({html.escape(path.status)})</h2>"
        f"<p>Stopped at: {stops}</p>{pruned}"
        "<table><tr><th>seq</th><th>method</th><th>time (UTC)</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def render_html(picture: Picture, path: RunPath | None = None) -> str:
    """One self-contained HTML page: inline CSS, SVG and script, no network access."""
    title = f"{picture.flow_name} - flowkit"
    sub = (
        "Green: the methods this run executed (\u00d7 how often); red: where it stopped."
        if path is not None
        else "Click a method to highlight its edges."
    )
    data = json.dumps({"flow": picture.flow_name, "run": path.run_id if path else None})
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        f'<h1>{html.escape(picture.flow_name)}</h1><p class="sub">{sub}</p>{_legend()}'
        f'<div class="canvas">{render_svg(picture, path)}</div>'
        + (_run_table(path) if path is not None else "")
        + f'<script type="application/json" id="flowkit-data">{html.escape(data)}</script>'
        f"<script>{_SCRIPT}</script></body></html>\n"
    )


def _mermaid_text(text: str) -> str:
    return '"' + text.replace('"', "#quot;") + '"'


def render_mermaid(picture: Picture, path: RunPath | None = None) -> str:
    """A Mermaid ``flowchart`` for Markdown (GitHub, mkdocs-material render it)."""
    overlay = _Overlay(picture, path)
    ids = {nid: f"n{i}" for i, nid in enumerate(picture.nodes)}
    lines = ["flowchart TD"]
    for nid, node in picture.nodes.items():
        text = node.text
        if overlay.counts.get(nid):
            text += f" \u00d7{overlay.counts[nid]}"
        if nid in overlay.stops:
            text += f" ({overlay.stops[nid]})"
        label = _mermaid_text(text)
        shape = {
            "start": f"([{label}])",
            "listen": f"[{label}]",
            "router": f"{{{{{label}}}}}",
            "label": f">{label}]",
            "and": f"(({label}))",
            "or": f"(({label}))",
        }[node.kind]
        css: str = node.kind
        if path is not None:
            stopped = overlay.stops.get(nid, "finished") != "finished"
            css = "stop" if stopped else ("done" if nid in overlay.visited else "idle")
        lines.append(f"    {ids[nid]}{shape}:::{css}")
    for edge in picture.edges:
        arrow = "-.->" if edge.kind == "maybe" else "-->"
        lines.append(f"    {ids[edge.src]} {arrow} {ids[edge.dst]}")
    classes = {
        "start": "fill:#e6f4ea,stroke:#1e8e3e",
        "listen": "fill:#e8f0fe,stroke:#1a73e8",
        "router": "fill:#fef7e0,stroke:#e37400",
        "label": "fill:#ffffff,stroke:#80868b,stroke-dasharray:4 3",
        "and": "fill:#fce8e6,stroke:#c5221f",
        "or": "fill:#f3e8fd,stroke:#8430ce",
        "done": "fill:#e6f4ea,stroke:#0b8043,stroke-width:3px",
        "stop": "fill:#fce8e6,stroke:#d93025,stroke-width:3px",
        "idle": "fill:#f1f3f4,stroke:#bdc1c6,color:#80868b",
    }
    lines += [f"    classDef {name} {style}" for name, style in classes.items()]
    return "\n".join(lines) + "\n"
