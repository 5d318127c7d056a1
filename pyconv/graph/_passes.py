"""Graph passes. Each takes a :class:`Graph`, rewrites it in place and returns it.

Order (see :func:`optimize`): validate + topological sort, then by level
basic:    remove Identity / inference Dropout, fold constants, remove dead nodes;
all:      static QDQ patterns as integer nodes (QLinearConv, QLinearAdd, ...:
          pyconv/graph/_qdq.py) before the folding, then
          + exporter idioms as one node (SiLU, HardSwish, GELU, Mish, pixel shuffle:
          pyconv/graph/_idioms.py), the decomposed layer norm as one LayerNormalization,
          BatchNormalization folded into Conv / ConvTranspose
          weights, standalone BatchNormalization (and per-channel Mul / Add after it or
          after a Conv) as one ChannelAffine, constant Mul / Add before a Conv folded into
          it, residual Add fused into the Conv epilogue, activations fused into Conv /
          ConvTranspose / ChannelAffine, squeeze-and-excitation blocks as one node, then
          dead nodes again.
"""
from __future__ import annotations

from collections import defaultdict, deque

import numpy as np

from pyconv._activations import onnx_activation
from pyconv.errors import InvalidModel, PyconvError, UnsupportedOperator
from pyconv.graph._qdq import fuse_qdq
from pyconv.graph._idioms import (fuse_activation_idioms, fuse_pixel_shuffle,
                                  fuse_squeeze_excite, new_constant, visited, visiting)
from pyconv.ops import lookup


def _act_params(node, opset, constants):
    """(name, alpha, beta) of the epilogue computing an activation node, or None."""
    if node.op_type == "Activation" and node.domain == "pyconv":
        return (node.attrs["_pyconv_activation"], float(node.attrs.get("_pyconv_alpha", 0.0)),
                float(node.attrs.get("_pyconv_beta", 0.0)))
    if node.domain not in ("", "ai.onnx"):
        return None
    act = onnx_activation(node.op_type, node.attrs)
    if act is None:
        return None
    values = node.attrs
    if act.takes_inputs(opset):
        values = {}
        for param, name in zip((act.alpha, act.beta), node.inputs[1:]):
            if name:
                c = constants.get(name)
                if c is None or c.size != 1 or c.dtype != np.float32:
                    return None     # a bound known only at run time: not fusable
                values[param[0]] = float(c.reshape(()))
    return (act.name,) + act.params(values)


# ---------------------------------------------------------------------------------------
# Validation and order.

def check_supported(graph):
    """Raises UnsupportedOperator listing every missing op type and its nodes."""
    missing = defaultdict(list)
    for n in graph.nodes:
        if lookup(n.op_type, n.domain) is None:
            key = n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}::{n.op_type}"
            missing[key].append(n.name)
    if missing:
        parts = [f"{t} (nodes: {', '.join(repr(x) for x in names[:10])}"
                 f"{', ...' if len(names) > 10 else ''})" for t, names in sorted(missing.items())]
        raise UnsupportedOperator(f"the model uses {len(missing)} operator type(s) pyconv does "
                                  f"not implement: " + "; ".join(parts))


def toposort(graph):
    """Orders nodes so that every input is produced before use; checks wiring.

    Raises InvalidModel on a dangling input, a value produced twice, or a cycle."""
    available = set(graph.constants) | {v.name for v in graph.inputs} | {""}
    producer = {}
    for i, n in enumerate(graph.nodes):
        for o in n.outputs:
            if not o:
                continue
            if o in producer or o in available:
                raise InvalidModel(f"{n.label}: output '{o}' is produced more than once (also "
                                   f"by {graph.nodes[producer[o]].label if o in producer else 'a graph input or initializer'})")
            producer[o] = i
    deps = []
    users = defaultdict(list)
    for i, n in enumerate(graph.nodes):
        need = set()
        for x in n.inputs:
            if x in available:
                continue
            if x not in producer:
                raise InvalidModel(f"{n.label}: input '{x}' is not a graph input, an "
                                   f"initializer or any node's output")
            need.add(producer[x])
        deps.append(len(need))
        for p in need:
            users[p].append(i)
    ready = deque(i for i, d in enumerate(deps) if d == 0)
    order = []
    while ready:
        i = ready.popleft()
        order.append(i)
        for u in users[i]:
            deps[u] -= 1
            if deps[u] == 0:
                ready.append(u)
    if len(order) != len(graph.nodes):
        stuck = [graph.nodes[i].label for i, d in enumerate(deps) if d > 0][:5]
        raise InvalidModel(f"the graph has a cycle (through {', '.join(stuck)})")
    graph.nodes = [graph.nodes[i] for i in order]
    for o in graph.output_names:
        if o not in producer and o not in available:
            raise InvalidModel(f"graph output '{o}' is not produced by any node")
    return graph


def _consumers(graph):
    users = defaultdict(list)
    for n in graph.nodes:
        for x in n.inputs:
            if x:
                users[x].append(n)
    return users


# ---------------------------------------------------------------------------------------
# Basic passes.

def eliminate_identity(graph):
    """Removes Identity and inference Dropout whose outputs are not graph outputs."""
    outs = set(graph.output_names)
    used = {x for n in graph.nodes for x in n.inputs} | outs
    # Removed output -> the value it stands for (already resolved: nodes are in
    # topological order), applied to every input in one sweep at the end.
    renamed = {}
    keep = []
    for n in visiting(graph.nodes):
        # Dropout at inference is the identity when training_mode is absent and its mask
        # output is not read.
        drop = n.op_type == "Identity" or (
            n.op_type == "Dropout" and (len(n.outputs) < 2 or n.outputs[1] not in used)
            and (len(n.inputs) < 3 or not n.inputs[2]))
        if drop and n.domain in ("", "ai.onnx") and n.inputs and n.inputs[0] and \
                n.outputs and n.outputs[0] and n.outputs[0] not in outs:
            renamed[n.outputs[0]] = renamed.get(n.inputs[0], n.inputs[0])
        else:
            keep.append(n)
    if renamed:
        for n in keep:
            n.inputs = [renamed.get(x, x) for x in n.inputs]
    graph.nodes = keep
    return graph


def fold_constants(graph, max_elements=1 << 28):
    """Evaluates nodes whose inputs are all constants (once, at session creation)."""
    keep = []
    outs = set(graph.output_names)
    for n in visiting(graph.nodes):
        cls = lookup(n.op_type, n.domain)
        if (cls is None or not cls.deterministic
                or not all(x == "" or x in graph.constants for x in n.inputs)
                or any(o in outs for o in n.outputs)):
            keep.append(n)
            continue
        consts = {i: graph.constants[x] for i, x in enumerate(n.inputs) if x}
        try:
            op = cls(n, graph.opset, consts)
            res = op.run([graph.constants[x] if x else None for x in n.inputs])
            res = [np.asarray(r) for r in res]
        except (PyconvError, ArithmeticError, ValueError, TypeError, IndexError, KeyError,
                AttributeError, MemoryError):
            keep.append(n)      # the error will surface, naming the node, at run time
            continue
        if any(np.asarray(r).size > max_elements for r in res):
            keep.append(n)
            continue
        for name, r in zip(n.outputs, res):
            if name:
                r = np.asarray(r)
                if not r.flags.owndata:     # a view (of a constant): own the bytes
                    r = np.array(r)
                r.flags.writeable = False
                graph.constants[name] = r
    graph.nodes = keep
    return graph


def eliminate_dead(graph):
    """Removes nodes none of whose outputs is used, and unused constants."""
    # What the outputs need, found from them through the producers (one visit per node).
    producer = {o: n for n in graph.nodes for o in n.outputs if o}
    live = set()
    used = set(graph.output_names)
    todo = list(used)
    while todo:
        n = producer.get(todo.pop())
        if n is None or id(n) in live:
            continue
        live.add(id(n))
        for x in n.inputs:
            if x and x not in used:
                used.add(x)
                todo.append(x)
    graph.nodes = [n for n in graph.nodes if id(n) in live]
    graph.constants = {k: v for k, v in graph.constants.items() if k in used}
    return graph


# ---------------------------------------------------------------------------------------
# Fusions.

def _single_use(outs, users, name):
    """``name`` has one reader and is not a graph output (``outs``, a set)."""
    return len(users.get(name, ())) == 1 and name not in outs


def _channel_vector(c, channels, rank):
    """A constant (float32, or float64 from the passes' own arithmetic) that broadcasts
    as one value per channel (axis 1) -> (C,) float64."""
    if c is None or c.dtype not in (np.float32, np.float64) or c.ndim > rank:
        return None     # more dims than the tensor: the product would have c's rank
    if c.size == 1:
        return np.full(channels, c.reshape(()), np.float64)
    shape = c.shape
    # (C, 1, ..., 1) aligned to the trailing dims of an (N, C, *spatial) tensor,
    # optionally with a leading 1.
    trail = rank - 2
    if c.size == channels and len(shape) <= rank and len(shape) >= trail + 1 and \
            shape[len(shape) - trail - 1] == channels and \
            all(s == 1 for i, s in enumerate(shape) if i != len(shape) - trail - 1):
        return c.reshape(-1).astype(np.float64)
    return None


def _is_conv(n):
    return (n.op_type in ("Conv", "ConvTranspose") and n.domain in ("", "ai.onnx")) or (
        n.op_type in ("FusedConv", "FusedConvTranspose") and n.domain == "pyconv")


def _is_transposed(n):
    return n.op_type in ("ConvTranspose", "FusedConvTranspose")


def _conv_params(graph, n):
    """(weight, bias) constants of a conv node, or None when not constant."""
    w = graph.constants.get(n.inputs[1]) if len(n.inputs) > 1 else None
    if w is None or w.dtype != np.float32 or w.ndim < 3:
        return None
    b = None
    if len(n.inputs) > 2 and n.inputs[2]:
        b = graph.constants.get(n.inputs[2])
        if b is None:
            return None
    return w, b


def _out_channels(n, w):
    if _is_transposed(n):
        return w.shape[1] * int(n.attrs.get("group", 1))
    return w.shape[0]


def _folded(name):
    """The base name of a constant folded from ``name`` (once: a chain of folds does
    not grow the name; new_constant numbers the versions)."""
    head, _, number = name.rpartition("__")
    base = head if head.endswith("_folded") and number.isdigit() else name
    return base if base.endswith("_folded") else base + "_folded"


def _scale_conv(graph, n, scale, shift):
    """conv(x) * scale + shift folded into the conv's weight and bias (float64 math)."""
    w, b = _conv_params(graph, n)
    cout = _out_channels(n, w)
    s64 = scale.astype(np.float64)
    if _is_transposed(n):
        g = int(n.attrs.get("group", 1))
        cin, cog = w.shape[0], w.shape[1]
        w2 = w.astype(np.float64).reshape(g, cin // g, cog, -1) * \
            s64.reshape(g, 1, cog, 1)
        w2 = w2.reshape(w.shape)
    else:
        w2 = w.astype(np.float64) * s64.reshape((-1,) + (1,) * (w.ndim - 1))
    b0 = np.zeros(cout) if b is None else b.astype(np.float64)
    b2 = b0 * s64 + shift.astype(np.float64)
    inputs = list(n.inputs) + [""] * (3 - len(n.inputs))
    inputs[1] = new_constant(graph, _folded(inputs[1]), w2)
    inputs[2] = new_constant(graph, _folded(inputs[2] or n.name + "_bias"), b2)
    n.inputs = inputs


def _bn_scale_shift(graph, n):
    params = [graph.constants.get(x) for x in n.inputs[1:5]]
    if len(params) < 4 or any(p is None or p.dtype != np.float32 or p.ndim != 1
                              for p in params):
        return None
    if int(n.attrs.get("training_mode", 0)) or int(n.attrs.get("spatial", 1)) != 1:
        return None
    if len([o for o in n.outputs if o]) != 1:
        return None
    scale, bias, mean, var = (p.astype(np.float64) for p in params)
    eps = float(n.attrs.get("epsilon", 1e-5))
    s = scale / np.sqrt(var + eps)
    return s, bias - mean * s


def fold_batchnorm(graph):
    """Conv -> BatchNormalization with constant parameters: BN folded into the weights;
    any other inference BN becomes a ChannelAffine."""
    outs = set(graph.output_names)
    users = _consumers(graph)
    producer = {o: n for n in graph.nodes for o in n.outputs}
    remove = set()
    for n in visiting(graph.nodes):
        if n.op_type != "BatchNormalization" or n.domain not in ("", "ai.onnx"):
            continue
        ss = _bn_scale_shift(graph, n)
        if ss is None:
            continue
        p = producer.get(n.inputs[0])
        if p is not None and _is_conv(p) and _conv_params(graph, p) is not None and \
                _single_use(outs, users, n.inputs[0]) and len(p.inputs) <= 3 and \
                not p.attrs.get("_pyconv_activation") and \
                _out_channels(p, graph.constants[p.inputs[1]]) == ss[0].shape[0]:
            _scale_conv(graph, p, *ss)
            p.outputs = [n.outputs[0]]
            remove.add(id(n))
            continue
        scale = new_constant(graph, n.name + "_scale", ss[0])
        shift = new_constant(graph, n.name + "_shift", ss[1])
        n.op_type, n.domain = "ChannelAffine", "pyconv"
        n.inputs = [n.inputs[0], scale, shift]
        n.outputs = n.outputs[:1]
        n.attrs = {}
    graph.nodes = [n for n in graph.nodes if id(n) not in remove]
    return graph


def _constant_operand(graph, n):
    """(value input, "mul" or "add", float64 constant) when ``n`` multiplies or adds a
    float32 constant (Sub and Div by a constant read as Add and Mul), else None."""
    if n.domain not in ("", "ai.onnx") or len(n.inputs) != 2 or \
            n.op_type not in ("Mul", "Add", "Sub", "Div"):
        return None
    for vi, ci in ((0, 1), (1, 0)):
        c = graph.constants.get(n.inputs[ci])
        if c is None or c.dtype != np.float32 or n.inputs[vi] in graph.constants:
            continue
        if n.op_type in ("Sub", "Div") and ci != 1:
            return None
        c = c.astype(np.float64)
        if n.op_type == "Sub":
            return n.inputs[vi], "add", -c
        if n.op_type == "Div":
            return (n.inputs[vi], "mul", 1.0 / c) if np.all(c != 0) else None
        return n.inputs[vi], n.op_type.lower(), c
    return None


def fold_channel_ops(graph, shapes=None):
    """Per-channel constant Mul / Add (Sub, Div) after a Conv or ChannelAffine folded
    into it (the Caffe2 'BN then Scale' pattern of DenseNet / Inception v2).

    One pass in topological order: a folded node's output becomes its producer's, so a
    chain of such nodes folds link by link into the same producer."""
    outs = set(graph.output_names)
    users = _consumers(graph)
    producer = {o: n for n in graph.nodes for o in n.outputs}
    remove = set()
    for n in visiting(graph.nodes):
        operand = _constant_operand(graph, n)
        if operand is None:
            continue
        value, kind, c = operand
        p = producer.get(value)
        if p is None or not _single_use(outs, users, value):
            continue
        if p.attrs.get("_pyconv_activation") or (
                p.op_type == "FusedConv" and len(p.inputs) > 3):
            continue
        if _is_conv(p) and _conv_params(graph, p) is not None:
            w = graph.constants[p.inputs[1]]
            vec = _channel_vector(c, _out_channels(p, w), w.ndim)
            if vec is None:
                continue
            if kind == "mul":
                _scale_conv(graph, p, vec, np.zeros_like(vec))
            else:
                _scale_conv(graph, p, np.ones_like(vec), vec)
        elif p.op_type == "ChannelAffine" and p.domain == "pyconv":
            s, t = graph.constants[p.inputs[1]], graph.constants[p.inputs[2]]
            rank = len(shapes.get(p.outputs[0]) or ()) if shapes else 0
            if not rank and not (c.size == 1 and c.ndim <= 2):
                continue    # unknown rank: only a scalar of rank <= 2 surely fits
            vec = _channel_vector(c, s.shape[0], rank or 2)
            if vec is None:
                continue
            if kind == "mul":
                s2, t2 = s.astype(np.float64) * vec, t.astype(np.float64) * vec
            else:
                s2, t2 = s, t.astype(np.float64) + vec
            p.inputs = [p.inputs[0], new_constant(graph, p.name + "_scale", s2),
                        new_constant(graph, p.name + "_shift", t2)]
        else:
            continue
        p.outputs = [n.outputs[0]]
        producer[n.outputs[0]] = p
        remove.add(id(n))
    graph.nodes = [n for n in graph.nodes if id(n) not in remove]
    return graph


def _unpadded(n):
    return not any(int(p) for p in n.attrs.get("pads") or ()) and \
        str(n.attrs.get("auto_pad", "NOTSET")) in ("NOTSET", "VALID")


def fold_input_channel_ops(graph, shapes=None):
    """Per-channel (or scalar) constant Mul / Add (Sub, Div) whose result only a Conv
    reads folded into that conv's weights / bias: ``conv(x * s) = conv'(x)`` with each
    input channel's weights scaled (exact with zero padding too); ``conv(x + t)`` adds
    ``sum(w * t)`` to the bias, only without padding (padding reads 0, not t).

    Per conv, its input's producers are folded one after another while they fit (a
    chain of them folds in one visit each)."""
    shapes = shapes or {}
    outs = set(graph.output_names)
    users = _consumers(graph)
    producer = {o: n for n in graph.nodes for o in n.outputs if o}
    remove = set()
    for conv in visiting(graph.nodes):
        if not (_is_conv(conv) and not _is_transposed(conv)) or id(conv) in remove:
            continue
        while conv.inputs:
            n = producer.get(conv.inputs[0])
            if n is None or not _fold_into_conv(graph, n, conv, outs, users, shapes):
                break
            value = conv.inputs[0]
            users[value] = [conv if u is n else u for u in users.get(value, ())]
            remove.add(id(n))
    graph.nodes = [n for n in graph.nodes if id(n) not in remove]
    return graph


def _fold_into_conv(graph, n, conv, outs, users, shapes):
    """Folds constant Mul / Add node ``n``, read only by ``conv``, into the conv's
    weights or bias (see :func:`fold_input_channel_ops`); False when it does not fit."""
    operand = _constant_operand(graph, n)
    if operand is None or not _single_use(outs, users, n.outputs[0]):
        return False
    value, kind, c = operand
    if conv.inputs[0] != n.outputs[0] or n.outputs[0] in conv.inputs[1:] or \
            _conv_params(graph, conv) is None or (kind == "add" and not _unpadded(conv)):
        return False
    w, b = _conv_params(graph, conv)
    groups = int(conv.attrs.get("group", 1))
    cin = w.shape[1] * groups
    x_shape = shapes.get(value)
    if c.size != 1 and (x_shape is None or len(x_shape) != w.ndim or x_shape[1] != cin):
        return False        # the constant might broadcast x to more channels
    vec = _channel_vector(c, cin, w.ndim)
    if vec is None or w.shape[0] % groups:
        return False
    # per (output channel, input channel of its group): the folded constant
    per = vec.reshape(groups, 1, w.shape[1]).repeat(w.shape[0] // groups, axis=1)
    per = per.reshape(w.shape[0], w.shape[1], *([1] * (w.ndim - 2)))
    w64 = w.astype(np.float64)
    inputs = list(conv.inputs) + [""] * (3 - len(conv.inputs))
    if kind == "mul":
        inputs[1] = new_constant(graph, _folded(inputs[1]), w64 * per)
    else:
        b0 = np.zeros(w.shape[0]) if b is None else b.astype(np.float64)
        shift = (w64 * per).reshape(w.shape[0], -1).sum(axis=1)
        inputs[2] = new_constant(graph, _folded(inputs[2] or conv.name + "_bias"),
                                 b0 + shift)
    inputs[0] = value
    conv.inputs = inputs
    return True


def fuse_residual(graph):
    """Add(conv(x), r) -> FusedConv(x, w, b, residual=r) when the conv output has no other
    user and r is computed before the conv."""
    outs = set(graph.output_names)
    users = _consumers(graph)
    producer = {o: n for n in graph.nodes for o in n.outputs}
    position = {id(n): i for i, n in enumerate(graph.nodes)}
    remove = set()
    for n in visiting(graph.nodes):
        if not ((n.op_type == "Add" or (n.op_type == "Sum" and len(n.inputs) == 2))
                and n.domain in ("", "ai.onnx")) or len(n.inputs) != 2:
            continue
        cands = []
        for vi, ri in ((0, 1), (1, 0)):
            p = producer.get(n.inputs[vi])
            if p is None or id(p) in remove or not _is_conv(p) or \
                    _is_transposed(p) or n.inputs[ri] in graph.constants or \
                    not _single_use(outs, users, n.inputs[vi]) or \
                    p.attrs.get("_pyconv_activation") or len(p.inputs) > 3 or \
                    n.inputs[0] == n.inputs[1]:
                continue
            rp = producer.get(n.inputs[ri])
            if rp is not None and position[id(rp)] >= position[id(p)]:
                continue
            cands.append((position[id(p)], p, n.inputs[ri]))
        if not cands:
            continue
        _, p, r = max(cands, key=lambda c: c[0])
        inputs = list(p.inputs) + [""] * (3 - len(p.inputs))
        p.inputs = inputs + [r]
        p.op_type, p.domain = "FusedConv", "pyconv"
        p.outputs = [n.outputs[0]]
        remove.add(id(n))
    graph.nodes = [n for n in graph.nodes if id(n) not in remove]
    return graph


def fuse_activation(graph):
    """Conv / ConvTranspose / ChannelAffine -> activation: the activation runs in the
    producer's epilogue (FusedConv / FusedConvTranspose)."""
    outs = set(graph.output_names)
    users = _consumers(graph)
    producer = {o: n for n in graph.nodes for o in n.outputs}
    remove = set()
    for n in visiting(graph.nodes):
        if not n.inputs:
            continue
        params = _act_params(n, graph.opset, graph.constants)
        if params is None:
            continue
        p = producer.get(n.inputs[0])
        if p is None or id(p) in remove or not _single_use(outs, users, n.inputs[0]):
            continue
        if p.attrs.get("_pyconv_activation"):
            continue
        if _is_conv(p):
            p.op_type = "FusedConvTranspose" if _is_transposed(p) else "FusedConv"
            p.domain = "pyconv"
        elif not (p.op_type == "ChannelAffine" and p.domain == "pyconv"):
            continue
        p.attrs = dict(p.attrs, _pyconv_activation=params[0], _pyconv_alpha=params[1],
                       _pyconv_beta=params[2])
        p.outputs = [n.outputs[0]]
        remove.add(id(n))
    graph.nodes = [n for n in graph.nodes if id(n) not in remove]
    return graph


def _scalar_const(graph, name):
    """The value of a one-element float constant, or None."""
    c = graph.constants.get(name)
    if c is None or c.size != 1 or c.dtype.kind != "f":
        return None
    return float(c.reshape(()))


def _reduce_mean_axis(graph, n, rank):
    """For a ReduceMean that keeps dims and reduces the trailing axes, the first of them
    as a negative axis (LayerNormalization's ``axis``); else None."""
    if n.op_type != "ReduceMean" or n.domain not in ("", "ai.onnx") or \
            not int(n.attrs.get("keepdims", 1)):
        return None
    if graph.opset >= 18:
        c = graph.constants.get(n.inputs[1]) if len(n.inputs) > 1 and n.inputs[1] else None
        axes = None if c is None or c.dtype.kind not in "iu" else c.reshape(-1).tolist()
    else:
        axes = n.attrs.get("axes")
    if not axes:
        return None
    axes = [int(a) for a in axes]
    if any(a >= 0 for a in axes):
        if rank is None or any(not -rank <= a < rank for a in axes):
            return None
        axes = [a - rank if a >= 0 else a for a in axes]
    if sorted(axes) != list(range(-len(axes), 0)) or len(set(axes)) != len(axes):
        return None
    return -len(axes)


def _broadcasts_to(c, shape):
    """True when constant ``c`` broadcasts to the (partly known) ``shape`` without
    enlarging it, as LayerNormalization's Scale and B must."""
    if shape is None or c.ndim > len(shape):
        return False
    return all(s == 1 or s == d for s, d in zip(c.shape[::-1], shape[::-1]))


def fuse_layer_norm(graph, shapes=None):
    """The layer norm exporters write out (ReduceMean -> Sub -> Pow 2 or Mul(d, d) ->
    ReduceMean -> Add eps -> Sqrt -> Div, or Reciprocal -> Mul; then optionally Mul by a
    constant scale and Add a constant bias) -> one LayerNormalization.

    Only when it computes the same thing: float32 constants, exponent exactly 2, both
    means over the same trailing axes (keepdims), eps a constant, and every intermediate
    value used only inside the pattern."""
    shapes = shapes or {}
    users = _consumers(graph)
    producer = {o: n for n in graph.nodes for o in n.outputs}
    outs = set(graph.output_names)

    def only_user(name):
        """The one node reading ``name`` (it may read it twice), or None."""
        readers = {id(u): u for u in users.get(name, ())}
        if name in outs or len(readers) != 1:
            return None
        return next(iter(readers.values()))

    def is_op(n, op_type):
        return n is not None and n.op_type == op_type and n.domain in ("", "ai.onnx")

    def other_input(n, name):
        return n.inputs[1] if n.inputs[0] == name else n.inputs[0]

    remove = set()
    for mean_node in visiting(list(graph.nodes)):
        if mean_node.op_type != "ReduceMean" or id(mean_node) in remove:
            continue
        x = mean_node.inputs[0]
        x_shape = shapes.get(x)
        rank = len(x_shape) if x_shape is not None else None
        axis = _reduce_mean_axis(graph, mean_node, rank)
        if axis is None:
            continue
        sub = only_user(mean_node.outputs[0])
        if not is_op(sub, "Sub") or sub.inputs != [x, mean_node.outputs[0]]:
            continue
        d = sub.outputs[0]
        readers = {id(u): u for u in users.get(d, ())}
        if d in outs or len(readers) != 2:
            continue
        square = next((u for u in readers.values() if (
            is_op(u, "Pow") and u.inputs[0] == d and _scalar_const(graph, u.inputs[1]) == 2.0)
            or (is_op(u, "Mul") and u.inputs == [d, d])), None)
        if square is None:
            continue
        divide = next(u for u in readers.values() if u is not square)
        var_node = only_user(square.outputs[0])
        if var_node is None or _reduce_mean_axis(graph, var_node, rank) != axis or \
                var_node.inputs[0] != square.outputs[0]:
            continue
        add_eps = only_user(var_node.outputs[0])
        if not is_op(add_eps, "Add") or len(add_eps.inputs) != 2:
            continue
        eps_name = other_input(add_eps, var_node.outputs[0])
        eps = _scalar_const(graph, eps_name)
        if eps is None or graph.constants[eps_name].dtype != np.float32:
            continue
        sqrt = only_user(add_eps.outputs[0])
        if not is_op(sqrt, "Sqrt"):
            continue
        chain = [mean_node, sub, square, var_node, add_eps, sqrt]
        if is_op(divide, "Div") and divide.inputs == [d, sqrt.outputs[0]]:
            if only_user(sqrt.outputs[0]) is not divide:
                continue
        elif is_op(divide, "Mul"):
            recip = only_user(sqrt.outputs[0])
            if not is_op(recip, "Reciprocal") or sorted(divide.inputs) != \
                    sorted([d, recip.outputs[0]]) or only_user(recip.outputs[0]) is not divide:
                continue
            chain.append(recip)
        else:
            continue
        chain.append(divide)
        last, scale, bias = divide, None, None
        nxt = only_user(last.outputs[0])
        if is_op(nxt, "Mul") and len(nxt.inputs) == 2:
            c = graph.constants.get(other_input(nxt, last.outputs[0]))
            if c is not None and c.dtype == np.float32 and _broadcasts_to(c, x_shape):
                scale, last = other_input(nxt, last.outputs[0]), nxt
                chain.append(nxt)
                nxt = only_user(last.outputs[0])
        if is_op(nxt, "Add") and len(nxt.inputs) == 2:
            c = graph.constants.get(other_input(nxt, last.outputs[0]))
            if c is not None and c.dtype == np.float32 and _broadcasts_to(c, x_shape):
                bias, last = other_input(nxt, last.outputs[0]), nxt
                chain.append(nxt)
        if scale is None:
            scale = new_constant(graph, mean_node.name + "_ln_scale", np.ones(1))
        mean_node.op_type, mean_node.domain = "LayerNormalization", ""
        mean_node.inputs = [x, scale] + ([bias] if bias else [])
        mean_node.outputs = [last.outputs[0]]
        mean_node.attrs = {"axis": axis, "epsilon": eps}
        remove.update(id(n) for n in chain[1:])
    graph.nodes = [n for n in graph.nodes if id(n) not in remove]
    return graph


LEVEL_BASIC = 1
LEVEL_ALL = 99


def optimize(graph, level, shapes=None):
    """Runs the passes of ``level`` (0: none, 1: basic, >= 2: all) after validation."""
    toposort(graph)
    check_supported(graph)
    for name, run in _pass_list(level, shapes):
        for _ in visiting(()):     # (none) forgets where an earlier pass stopped
            pass
        try:
            run(graph)
        except PyconvError:
            raise
        except (ArithmeticError, ValueError, TypeError, IndexError, KeyError, AttributeError,
                RecursionError) as exc:
            # A malformed model (e.g. parameters of inconsistent shapes) met in a rewrite.
            node = visited()
            where = f" at {node.label} (inputs {node.inputs}, outputs {node.outputs})" \
                if node is not None else ""
            raise InvalidModel(f"the graph optimizer's pass '{name}' cannot rewrite this "
                               f"model{where}: the node's inputs, attributes or constants do "
                               f"not fit its operator ({type(exc).__name__}: {exc})") from exc
    return graph


def _pass_list(level, shapes):
    """(name, pass as a one-argument call) of ``level``, in order."""
    passes = []
    if level >= LEVEL_BASIC:
        passes += [eliminate_identity]
    if level > LEVEL_BASIC:
        passes += [fuse_qdq]       # before folding turns the weights' DequantizeLinear
    if level >= LEVEL_BASIC:       # into float constants
        passes += [fold_constants, eliminate_dead]
    if level > LEVEL_BASIC:
        passes += [fuse_activation_idioms, (fuse_pixel_shuffle, shapes),
                   (fuse_layer_norm, shapes), fold_batchnorm, (fold_channel_ops, shapes),
                   (fold_input_channel_ops, shapes), fuse_residual, fuse_activation,
                   (fuse_squeeze_excite, shapes), eliminate_dead]
    result = []
    for p in passes:
        fn, args = (p[0], p[1:]) if isinstance(p, tuple) else (p, ())
        result.append((fn.__name__, lambda g, fn=fn, args=args: fn(g, *args)))
    return result
