"""Exporter idioms recognised as one operator (graph passes, see ``_passes.optimize``).

Exporters write activations without an ONNX operator of their own, or newer than the
opset they target, as arithmetic: SiLU as ``x * Sigmoid(x)``, HardSwish as
``x * Clip(x + 3, 0, 6) / 6``, GELU as ``0.5 * x * (1 + Erf(x / sqrt(2)))`` with the
constants in any order. :func:`fuse_activation_idioms` reads each such expression as a
polynomial over its leaves (every value that is not a single-use arithmetic result)
and, when the polynomial is the activation's, replaces the expression by one node,
which the activation fusion can then put into a conv's epilogue. The rewrites are exact
(constants compared to float32 precision) and never remove a value read elsewhere or a
graph output.
"""
from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
from onnx import TensorProto

from pyconv.ops import Node

_ARITHMETIC = ("Add", "Sub", "Mul", "Div", "Neg", "Pow")
_MAX_NODES = 16         # arithmetic nodes one expression may span
_MAX_TERMS = 8
_RTOL = 2e-6            # float32 constants written with 6-7 significant digits


def _close(a, b):
    return abs(a - b) <= _RTOL * max(abs(a), abs(b))


class _Poly(dict):
    """A polynomial: monomial (sorted tuple of leaf names, with repeats) -> coefficient."""

    def __add__(self, other):
        r = _Poly(self)
        for k, v in other.items():
            r[k] = r.get(k, 0.0) + v
        return _Poly({k: v for k, v in r.items() if v != 0.0})

    def scaled(self, s):
        return _Poly({k: v * s for k, v in self.items()} if s else {})

    def __mul__(self, other):
        r = _Poly()
        for k1, v1 in self.items():
            for k2, v2 in other.items():
                k = tuple(sorted(k1 + k2))
                r[k] = r.get(k, 0.0) + v1 * v2
        return _Poly({k: v for k, v in r.items() if v != 0.0})

    def matches(self, want):
        """Same monomials, coefficients equal to float32 precision."""
        return set(self) == set(want) and all(_close(self[k], want[k]) for k in want)

    @property
    def leaves(self):
        return {x for k in self for x in k}


class _Graph:
    """Producers, consumers and constants of a graph, for pattern matching."""

    def __init__(self, graph):
        self.graph = graph
        self.users = defaultdict(list)
        for n in graph.nodes:
            for x in n.inputs:
                if x:
                    self.users[x].append(n)
        self.producer = {o: n for n in graph.nodes for o in n.outputs if o}
        self.outputs = set(graph.output_names)

    def single_use(self, name):
        return len(self.users.get(name, ())) == 1 and name not in self.outputs

    def scalar(self, name):
        """The value of a float32 one-element constant, else None."""
        c = self.graph.constants.get(name)
        if c is None or c.size != 1 or c.dtype != np.float32:
            return None
        return float(c.reshape(()))

    def node(self, name, op_type):
        """The producer of ``name`` when it is an ONNX ``op_type`` node, else None."""
        p = self.producer.get(name)
        if p is None or p.op_type != op_type or p.domain not in ("", "ai.onnx"):
            return None
        return p

    def is_float32(self, name):
        info = self.graph.value_info.get(name)
        if info is None:
            info = next((v for v in self.graph.inputs if v.name == name), None)
        return info is not None and info.elem_type == TensorProto.FLOAT

    def poly(self, name, nodes, top=False):
        """``name`` as a polynomial over its leaves; the arithmetic nodes expanded are
        appended to ``nodes``. None when a constant is not a float32 scalar."""
        s = self.scalar(name)
        if s is not None:
            return _Poly({(): s} if s else {})
        if name in self.graph.constants:
            return None
        p = self.producer.get(name)
        if (p is None or p.op_type not in _ARITHMETIC or p.domain not in ("", "ai.onnx")
                or (not top and not self.single_use(name)) or len(nodes) >= _MAX_NODES
                or len([o for o in p.outputs if o]) != 1):
            return _Poly({(name,): 1.0})
        mark = len(nodes)
        nodes.append(p)
        r = self._expand(p, nodes)
        if r is None or len(r) > _MAX_TERMS:
            del nodes[mark:]
            return None if r is None else _Poly({(name,): 1.0})
        return r

    def _expand(self, p, nodes):
        t = p.op_type
        if t == "Neg":
            a = self.poly(p.inputs[0], nodes)
            return None if a is None else a.scaled(-1.0)
        if len(p.inputs) != 2:
            return None
        if t == "Pow":
            e = self.graph.constants.get(p.inputs[1])
            if e is None or e.size != 1 or float(e.reshape(())) not in (1.0, 2.0, 3.0, 4.0):
                return None
            a = self.poly(p.inputs[0], nodes)
            if a is None:
                return None
            r = _Poly({(): 1.0})
            for _ in range(int(e.reshape(()))):
                r = r * a
            return r
        if t == "Div":
            d = self.scalar(p.inputs[1])
            a = self.poly(p.inputs[0], nodes) if d else None
            return None if a is None else a.scaled(1.0 / d)
        a = self.poly(p.inputs[0], nodes)
        b = self.poly(p.inputs[1], nodes) if a is not None else None
        if b is None:
            return None
        if t == "Add":
            return a + b
        if t == "Sub":
            return a + b.scaled(-1.0)
        return a * b


def _gate_patterns(g, gate, x):
    """How ``x * <gate>``-shaped expressions read, for a nonlinear node ``gate`` over x:
    [(wanted polynomial over x and gate output, replacement (op_type, domain, attrs)),
    ...], with the nodes of the gate's argument; None when ``gate`` fits no idiom."""
    y = gate.outputs[0]
    inner = []
    arg = g.poly(gate.inputs[0], inner, top=False) if gate.inputs else None
    if arg is None:
        return None
    times_x = _Poly({tuple(sorted((x, y))): 1.0})
    t = gate.op_type
    if t == "Sigmoid" and arg.matches({(x,): 1.0}):
        return [(times_x, ("Activation", "pyconv", {"_pyconv_activation": "silu"}))], inner
    if t == "HardSigmoid" and arg.matches({(x,): 1.0}) and len(gate.inputs) == 1 \
            and _close(float(gate.attrs.get("alpha", 0.2)), 1 / 6) \
            and _close(float(gate.attrs.get("beta", 0.5)), 0.5):
        return [(times_x, ("HardSwish", "", {}))], inner
    if t == "Clip" and arg.matches({(x,): 1.0, (): 3.0}) and _clip_bounds(g, gate) == (0, 6):
        return [(times_x.scaled(1 / 6), ("HardSwish", "", {}))], inner
    half = _Poly({(x,): 0.5}) + times_x.scaled(0.5)
    if t == "Erf" and arg.matches({(x,): 1 / math.sqrt(2)}):
        return [(half, ("Gelu", "", {"approximate": "none"}))], inner
    c = math.sqrt(2 / math.pi)
    if t == "Tanh" and arg.matches({(x,): c, (x, x, x): c * 0.044715}):
        return [(half, ("Gelu", "", {"approximate": "tanh"}))], inner
    if t == "Tanh" and len(arg) == 1 and next(iter(arg)) != (x,):
        # Mish: x * Tanh(Softplus(x)).
        sp = g.node(gate.inputs[0], "Softplus")
        if sp is not None and sp.inputs[0] == x and g.single_use(gate.inputs[0]) \
                and arg.matches({(sp.outputs[0],): 1.0}):
            return [(times_x, ("Mish", "", {}))], [sp]
    return None


def _clip_bounds(g, clip):
    """(min, max) of a Clip node when both are known constants, else None."""
    if g.graph.opset >= 11:     # bounds are optional inputs from opset 11
        lo = g.scalar(clip.inputs[1]) if len(clip.inputs) > 1 and clip.inputs[1] else None
        hi = g.scalar(clip.inputs[2]) if len(clip.inputs) > 2 and clip.inputs[2] else None
    else:
        lo, hi = clip.attrs.get("min"), clip.attrs.get("max")
    if lo is None or hi is None:
        return None
    return float(lo), float(hi)


_GATES = ("Sigmoid", "HardSigmoid", "Clip", "Erf", "Tanh")


def fuse_activation_idioms(graph):
    """Rewrites exporters' arithmetic forms of SiLU, HardSwish, GELU (erf and tanh forms)
    and Mish into one node each: pyconv ``Activation`` (silu), ``HardSwish``, ``Gelu``
    (``approximate``), ``Mish``. Float32 values only."""
    changed = True
    while changed:
        changed = False
        g = _Graph(graph)
        for root in graph.nodes:
            if root.op_type not in ("Mul", "Div") or root.domain not in ("", "ai.onnx"):
                continue
            nodes = []
            poly = g.poly(root.outputs[0], nodes, top=True)
            if poly is None or len(poly.leaves) != 2:
                continue
            found = _match(g, poly, nodes)
            if found is None:
                continue
            x, remove, (op_type, domain, attrs) = found
            root_out = root.outputs[0]
            replaced = Node(op_type, [x], [root_out], attrs, name=root.name, domain=domain)
            drop = {id(n) for n in remove}
            graph.nodes = [replaced if n is root else n for n in graph.nodes
                           if id(n) not in drop or n is root]
            changed = True
            break
    return graph


def _match(g, poly, nodes):
    """(x, nodes to remove, replacement) when ``poly`` is a gate idiom over x."""
    for gate_out in poly.leaves:
        gate = g.producer.get(gate_out)
        if gate is None or gate.op_type not in _GATES or gate.domain not in ("", "ai.onnx") \
                or not g.single_use(gate_out) or not gate.inputs:
            continue
        (x,) = poly.leaves - {gate_out}
        if not g.is_float32(x):
            continue
        found = _gate_patterns(g, gate, x)
        if found is None:
            continue
        patterns, inner = found
        for want, replacement in patterns:
            if poly.matches(want):
                return x, nodes + [gate] + inner, replacement
    return None
