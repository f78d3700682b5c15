"""What a flow picture shows, before any drawing: nodes, edges and layers (pure).

Built from the class's validated :class:`~flowkit._graph.FlowGraph`. Three kinds of
node besides the methods themselves:

* a *label* node for each router label (a trigger string that is not a method name),
  with an edge from each router that can return it. Which router returns which label is
  read from the router's source (``return "label"`` and ``return SomeEnum.MEMBER``); a
  label no router visibly returns gets a dashed edge from every router.
* a *join* node for each ``and_`` / ``or_`` condition (nested ones too), so a listener
  waiting for all of its parts looks different from one waiting for any.

Layers come from the longest path from the starts once the back edges (loops) are set
aside; back edges are kept and drawn as loops.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal

from ._graph import Cond, FlowGraph

__all__ = ["Edge", "Node", "Picture", "build_picture", "router_returns"]

NodeKind = Literal["start", "listen", "router", "label", "and", "or"]
EdgeKind = Literal["trigger", "route", "maybe"]


@dataclass
class Node:
    id: str
    kind: NodeKind
    text: str
    #: a start that is also a router, or a conditional start
    also_router: bool = False
    conditional: bool = False
    layer: int = 0
    order: float = 0.0


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    #: trigger: a method's completion; route: a router returns this label;
    #: maybe: a router might return it (not visible in its source)
    kind: EdgeKind = "trigger"
    back: bool = False


@dataclass
class Picture:
    flow_name: str
    nodes: dict[str, Node] = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)

    def layers(self) -> list[list[Node]]:
        """Nodes grouped by layer, each layer in drawing order."""
        count = max((n.layer for n in self.nodes.values()), default=-1) + 1
        grouped: list[list[Node]] = [[] for _ in range(count)]
        for node in self.nodes.values():
            grouped[node.layer].append(node)
        for layer in grouped:
            layer.sort(key=lambda n: n.order)
        return grouped


def method_id(name: str) -> str:
    return f"m:{name}"


def label_id(label: str) -> str:
    return f"l:{label}"


def router_returns(func: Callable[..., Any]) -> set[str] | None:
    """The labels a router visibly returns, read from its source; None if unreadable.

    Only literal strings and ``Enum`` members looked up by name in the function's module
    globals are recognised; nothing is evaluated.
    """
    try:
        source = textwrap.dedent(inspect.getsource(func))
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError):
        return None
    if not tree.body or not isinstance(tree.body[0], (ast.FunctionDef, ast.AsyncFunctionDef)):
        return None
    found: set[str] = set()
    namespace = getattr(func, "__globals__", {})
    for node in _own_returns(tree.body[0]):
        found |= _labels_of(node.value, namespace)
    return found


def _own_returns(func: ast.AST) -> Iterable[ast.Return]:
    """Return statements of ``func`` itself, not of functions nested in it."""
    stack = list(ast.iter_child_nodes(func))
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        if isinstance(node, ast.Return):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _labels_of(value: ast.expr | None, namespace: dict[str, Any]) -> set[str]:
    if isinstance(value, ast.Constant) and isinstance(value.value, str):
        return {value.value}
    if isinstance(value, ast.IfExp):  # "a" if cond else "b": both are labels
        return _labels_of(value.body, namespace) | _labels_of(value.orelse, namespace)
    if (
        isinstance(value, ast.Attribute)
        and isinstance(value.value, ast.Name)
        and isinstance(owner := namespace.get(value.value.id), type)
        and issubclass(owner, Enum)
    ):
        member = owner.__members__.get(value.attr)
        return set() if member is None else {str(member.value)}
    return set()


class _Builder:
    def __init__(self, graph: FlowGraph, cls: type) -> None:
        self.graph = graph
        self.cls = cls
        self.picture = Picture(graph.flow_name)
        self.joins = 0
        self.emitted: dict[str, set[str]] = {}  # label -> routers that visibly return it
        self.unknown_routers: list[str] = []

    def build(self) -> Picture:
        nodes = self.picture.nodes
        for node in self.graph.nodes.values():
            kind: NodeKind = (
                "start" if node.is_start else ("router" if node.is_router else "listen")
            )
            nodes[method_id(node.name)] = Node(
                method_id(node.name),
                kind,
                node.name,
                also_router=node.is_start and node.is_router,
                conditional=node.is_start and node.condition is not None,
            )
        self._router_labels()
        for node in self.graph.nodes.values():
            if node.condition is not None:
                self._wire(node.condition, method_id(node.name))
        _layer(self.picture, [method_id(n) for n in self.graph.initial])
        return self.picture

    def _router_labels(self) -> None:
        listened = {t for t in self.graph.index if t not in self.graph.nodes}
        for node in self.graph.nodes.values():
            if not node.is_router:
                continue
            func = getattr(self.cls, node.name, None)
            labels = router_returns(func) if func is not None else None
            if labels is None:
                self.unknown_routers.append(node.name)
                continue
            for label in labels:
                self.emitted.setdefault(label, set()).add(node.name)
        for label in sorted(listened | set(self.emitted)):
            self._label_node(label)

    def _label_node(self, label: str) -> str:
        lid = label_id(label)
        if lid in self.picture.nodes:
            return lid
        self.picture.nodes[lid] = Node(lid, "label", label)
        routers = self.emitted.get(label)
        if routers:
            for router in sorted(routers):
                self.picture.edges.append(Edge(method_id(router), lid, "route"))
        for router in self.unknown_routers:
            self.picture.edges.append(Edge(method_id(router), lid, "maybe"))
        if not routers and not self.unknown_routers:
            for node in self.graph.nodes.values():
                if node.is_router:
                    self.picture.edges.append(Edge(method_id(node.name), lid, "maybe"))
        return lid

    def _sources(self, trigger: str) -> list[str]:
        out = []
        if trigger in self.graph.nodes:
            out.append(method_id(trigger))
        if trigger not in self.graph.nodes or trigger in self.emitted:
            out.append(self._label_node(trigger))
        return out

    def _wire(self, cond: Cond, target: str) -> None:
        if isinstance(cond, str):
            for src in self._sources(cond):
                self.picture.edges.append(Edge(src, target))
            return
        kind, parts = cond
        self.joins += 1
        jid = f"j:{self.joins}"
        self.picture.nodes[jid] = Node(jid, "and" if kind == "and" else "or", kind.upper())
        self.picture.edges.append(Edge(jid, target))
        for part in parts:
            self._wire(part, jid)


def build_picture(graph: FlowGraph, cls: type) -> Picture:
    """The nodes and edges of ``cls``'s flow, layered for drawing."""
    return _Builder(graph, cls).build()


def _layer(picture: Picture, roots: list[str]) -> None:
    """Mark back edges (found by depth-first search from the roots), give every node the
    longest-path layer over the remaining edges, then order each layer by barycentre."""
    out: dict[str, list[int]] = {nid: [] for nid in picture.nodes}
    for i, edge in enumerate(picture.edges):
        out[edge.src].append(i)
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    back: set[int] = set()
    starts = roots + [nid for nid in picture.nodes if nid not in roots]
    for root in starts:
        if root in state:
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        state[root] = 1
        while stack:
            nid, pos = stack[-1]
            if pos < len(out[nid]):
                stack[-1] = (nid, pos + 1)
                i = out[nid][pos]
                dst = picture.edges[i].dst
                if state.get(dst) == 1:
                    back.add(i)
                elif dst not in state:
                    state[dst] = 1
                    stack.append((dst, 0))
            else:
                state[nid] = 2
                stack.pop()
    picture.edges = [
        Edge(e.src, e.dst, e.kind, back=i in back) for i, e in enumerate(picture.edges)
    ]
    forward = [e for e in picture.edges if not e.back]
    layer = {nid: 0 for nid in picture.nodes}
    for _ in range(len(picture.nodes)):  # Bellman-Ford style: the graph is small
        changed = False
        for edge in forward:
            if layer[edge.dst] < layer[edge.src] + 1:
                layer[edge.dst] = layer[edge.src] + 1
                changed = True
        if not changed:
            break
    for nid, node in picture.nodes.items():
        node.layer = layer[nid]
    for i, node in enumerate(picture.nodes.values()):
        node.order = float(i)
    _order(picture, forward)


def _order(picture: Picture, forward: list[Edge]) -> None:
    ups: dict[str, list[str]] = {nid: [] for nid in picture.nodes}
    downs: dict[str, list[str]] = {nid: [] for nid in picture.nodes}
    for edge in forward:
        ups[edge.dst].append(edge.src)
        downs[edge.src].append(edge.dst)
    for sweep in range(4):
        neighbours = ups if sweep % 2 == 0 else downs
        for layer in picture.layers():
            for node in layer:
                near = [picture.nodes[n].order for n in neighbours[node.id]]
                if near:
                    node.order = sum(near) / len(near)
            for i, node in enumerate(sorted(layer, key=lambda n: n.order)):
                node.order = float(i)
