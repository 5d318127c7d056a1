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
import threading
from collections import defaultdict

import numpy as np

from pyconv.ops import Node

_ARITHMETIC = ("Add", "Sub", "Mul", "Div", "Neg", "Pow")
_MAX_NODES = 16         # arithmetic nodes one expression may span
_MAX_TERMS = 8
_RTOL = 1e-5            # constants written with 5-7 significant digits (1.41421)
_ONNX_FLOAT = 1         # TensorProto.FLOAT (onnx itself is imported only with a model)


_visit = threading.local()


def visiting(nodes):
    """Iterates ``nodes`` remembering the current one (per thread), so that a pass
    failing on a malformed node can be reported naming it (:func:`visited`)."""
    for n in nodes:
        _visit.node = n
        yield n
    _visit.node = None


def visited():
    """The node the last :func:`visiting` loop of this thread stopped at, or None."""
    return getattr(_visit, "node", None)


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
        return info is not None and info.elem_type == _ONNX_FLOAT

    def poly(self, name, nodes, top=False):
        """``name`` as a polynomial over its leaves; the arithmetic nodes expanded are
        appended to ``nodes``. None for a constant that is not a float32 scalar (the
        node reading it then stays a leaf)."""
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
            del nodes[mark:]        # not a polynomial over scalars: an opaque value
            return _Poly({(name,): 1.0})
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
    while True:     # one pass finds every disjoint match; a second, what they uncover
        g = _Graph(graph)
        taken, replaced = set(), {}
        for root in visiting(graph.nodes):
            if root.op_type not in ("Mul", "Div") or root.domain not in ("", "ai.onnx") \
                    or id(root) in taken:
                continue
            nodes = []
            poly = g.poly(root.outputs[0], nodes, top=True)
            if poly is None or len(poly.leaves) != 2:
                continue
            found = _match(g, poly, nodes)
            if found is None or any(id(n) in taken for n in found[1]):
                continue
            x, remove, (op_type, domain, attrs) = found
            taken.update(id(n) for n in remove)
            replaced[id(root)] = Node(op_type, [x], [root.outputs[0]], attrs, name=root.name,
                                      domain=domain)
        if not replaced:
            return graph
        graph.nodes = [replaced.get(id(n), n) for n in graph.nodes
                       if id(n) not in taken or id(n) in replaced]


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


# ---------------------------------------------------------------------------------------
# Squeeze-and-excitation.

def _pointwise_conv(g, n, mid_shape=None):
    """(weight, bias or None, (activation, alpha, beta)) of a 1x1 Conv / FusedConv
    without padding, groups or residual whose weight is constant, else None."""
    if n is None or not ((n.op_type == "Conv" and n.domain in ("", "ai.onnx")) or
                         (n.op_type == "FusedConv" and n.domain == "pyconv")):
        return None
    if len(n.inputs) > 3 or int(n.attrs.get("group", 1)) != 1 or \
            any(int(p) for p in n.attrs.get("pads") or ()) or \
            str(n.attrs.get("auto_pad", "NOTSET")) not in ("NOTSET", "VALID"):
        return None
    w = g.graph.constants.get(n.inputs[1])
    if w is None or w.dtype != np.float32 or w.ndim < 3 or any(k != 1 for k in w.shape[2:]):
        return None
    b = None
    if len(n.inputs) > 2 and n.inputs[2]:
        b = g.graph.constants.get(n.inputs[2])
        if b is None or b.dtype != np.float32 or b.shape != w.shape[:1]:
            return None
    act = (n.attrs.get("_pyconv_activation") or "none",
           float(n.attrs.get("_pyconv_alpha", 0.0)), float(n.attrs.get("_pyconv_beta", 0.0)))
    return w, b, act


def _global_mean_of(g, pool, rank):
    """The input of a GlobalAveragePool, or of a ReduceMean over every spatial axis
    keeping dims, else None."""
    if pool is None or pool.domain not in ("", "ai.onnx"):
        return None
    if pool.op_type == "GlobalAveragePool":
        return pool.inputs[0]
    if pool.op_type != "ReduceMean" or not int(pool.attrs.get("keepdims", 1)):
        return None
    if g.graph.opset >= 18:
        axes = g.graph.constants.get(pool.inputs[1]) if len(pool.inputs) > 1 and \
            pool.inputs[1] else None
    else:
        axes = pool.attrs.get("axes")
    if axes is None:
        return None
    axes = sorted(int(a) % rank for a in np.asarray(axes).reshape(-1))
    return pool.inputs[0] if axes == list(range(2, rank)) else None


def fuse_squeeze_excite(graph, shapes=None):
    """``x * gate(conv1x1(act(conv1x1(mean(x)))))`` (global average pool or ReduceMean
    over the spatial axes, the activations already in the convs' epilogues) -> one
    pyconv ``SqueezeExcite`` node, when the pooled, hidden and gate values are read by
    nothing else."""
    shapes = shapes or {}
    g = _Graph(graph)
    remove = set()
    for n in visiting(graph.nodes):
        if n.op_type != "Mul" or n.domain not in ("", "ai.onnx") or len(n.inputs) != 2:
            continue
        for xi in (0, 1):
            x, s = n.inputs[xi], n.inputs[1 - xi]
            shape = shapes.get(x)
            if shape is None or len(shape) < 3 or not g.is_float32(x) or \
                    not g.single_use(s):
                continue
            expand = g.producer.get(s)
            second = _pointwise_conv(g, expand)
            if second is None or not g.single_use(expand.inputs[0]):
                continue
            reduce = g.producer.get(expand.inputs[0])
            first = _pointwise_conv(g, reduce)
            if first is None or not g.single_use(reduce.inputs[0]) or \
                    _global_mean_of(g, g.producer.get(reduce.inputs[0]), len(shape)) != x:
                continue
            (w1, b1, act1), (w2, b2, act2) = first, second
            mid, channels = w1.shape[:2]
            if w1.ndim != len(shape) or w2.shape[:2] != (channels, mid) or \
                    (isinstance(shape[1], int) and shape[1] != channels):
                continue
            w1, w2 = w1.reshape(mid, channels), w2.reshape(channels, mid)
            pool = g.producer[reduce.inputs[0]]
            names = []
            for tag, value in (("w1", w1), ("b1", b1), ("w2", w2), ("b2", b2)):
                names.append("" if value is None else
                             new_constant(graph, f"{n.name or n.outputs[0]}_se_{tag}", value))
            attrs = {}
            for prefix, (act, alpha, beta) in (("reduce_", act1), ("gate_", act2)):
                attrs.update({f"_pyconv_{prefix}activation": act,
                              f"_pyconv_{prefix}alpha": alpha, f"_pyconv_{prefix}beta": beta})
            n.op_type, n.domain, n.attrs = "SqueezeExcite", "pyconv", attrs
            n.inputs = [x] + names
            remove.update((id(pool), id(reduce), id(expand)))
            break
    graph.nodes = [n for n in graph.nodes if id(n) not in remove]
    return graph


def new_constant(graph, base, value):
    """A fresh read-only float32 constant of ``graph`` named after ``base``; its name."""
    # The next free number per base, kept on the graph: a thousand constants made from
    # one base cost a thousand lookups, not half a million.
    counters = graph.__dict__.setdefault("_constant_counters", {})
    k = counters.get(base, 0)
    name = base if k == 0 else f"{base}__{k}"
    while name in graph.constants:
        k += 1
        name = f"{base}__{k}"
    counters[base] = k + 1
    value = np.ascontiguousarray(value, np.float32)
    value.flags.writeable = False
    graph.constants[name] = value
    return name


# ---------------------------------------------------------------------------------------
# PixelShuffle / PixelUnshuffle written as Reshape -> Transpose -> Reshape.

# perm of the Transpose -> (op type, mode): the 6-D views are (N, C', b, b, H, W) for
# DepthToSpace CRD (torch's pixel_shuffle), (N, b, b, C', H, W) for DCR, and
# (N, C, H', b, W', b) for SpaceToDepth.
_BLOCK_PERMS = {(0, 1, 4, 2, 5, 3): ("DepthToSpace", "CRD"),
                (0, 3, 4, 1, 5, 2): ("DepthToSpace", "DCR"),
                (0, 1, 3, 5, 2, 4): ("SpaceToDepth", "CRD"),
                (0, 3, 5, 1, 2, 4): ("SpaceToDepth", "DCR")}


def _reshape_fits(target, want):
    """Whether Reshape's ``target`` gives ``want`` (dim 0 may be unknown: None) for an
    input whose dim 0 is ``want[0]``: equal dims, a 0 copying dim 0, one -1."""
    if target is None or len(target) != len(want) or list(target).count(-1) > 1:
        return False
    for i, (t, w) in enumerate(zip(target, want)):
        if t == -1 or (i == 0 and t == 0) or (w is not None and t == w):
            continue
        return False
    return True


def fuse_pixel_shuffle(graph, shapes=None):
    """Reshape -> Transpose -> Reshape that moves channel blocks to space (torch's
    pixel_shuffle as the dynamo exporter writes it) or back -> DepthToSpace or
    SpaceToDepth, when the input shape is known and the intermediate values are read
    by nothing else."""
    shapes = shapes or {}
    g = _Graph(graph)
    remove = set()

    def shape_of(reshape):
        if reshape is None or len(reshape.inputs) < 2 or int(reshape.attrs.get("allowzero", 0)):
            return None
        s = graph.constants.get(reshape.inputs[1])
        return None if s is None or s.dtype.kind not in "iu" else [int(v) for v in s.reshape(-1)]

    for last in visiting(graph.nodes):
        if last.op_type != "Reshape" or last.domain not in ("", "ai.onnx"):
            continue
        t = g.node(last.inputs[0], "Transpose")
        if t is None or not g.single_use(t.outputs[0]):
            continue
        kind = _BLOCK_PERMS.get(tuple(int(p) for p in t.attrs.get("perm") or ()))
        first = g.node(t.inputs[0], "Reshape")
        if kind is None or first is None or not g.single_use(first.outputs[0]):
            continue
        x = first.inputs[0]
        shape = shapes.get(x)
        if shape is None or len(shape) != 4 or \
                not all(isinstance(d, int) and d > 0 for d in shape[1:]):
            continue
        n = shape[0] if isinstance(shape[0], int) else None
        _, c, h, w = shape
        s1, s2 = shape_of(first), shape_of(last)
        if s1 is None or s2 is None or len(s1) != 6:
            continue
        op_type, mode = kind
        if op_type == "DepthToSpace":
            b = s1[2] if mode == "CRD" else s1[1]
            if b < 1 or c % (b * b):
                continue
            cb = c // (b * b)
            view = [n, cb, b, b, h, w] if mode == "CRD" else [n, b, b, cb, h, w]
            result = [n, cb, h * b, w * b]
        else:
            b = s1[3]
            if b < 1 or h % b or w % b:
                continue
            view = [n, c, h // b, b, w // b, b]
            result = [n, c * b * b, h // b, w // b]
        if not (_reshape_fits(s1, view) and _reshape_fits(s2, result)):
            continue
        last.op_type, last.domain = op_type, ""
        last.inputs = [x]
        last.attrs = {"blocksize": b, "mode": mode}
        remove.update((id(first), id(t)))
    graph.nodes = [n for n in graph.nodes if id(n) not in remove]
    return graph
