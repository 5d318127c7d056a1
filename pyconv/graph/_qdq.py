"""Static QDQ models (onnxruntime.quantization's QuantFormat.QDQ) rewritten to run in
integers, as onnxruntime's QDQ transformers do:

- DequantizeLinear(x) and DequantizeLinear(int8 constant weight, zero point 0, per tensor
  or per output channel), optionally DequantizeLinear(int32 constant bias at scale
  x_scale * w_scale) -> Conv -> [Relu | Clip] -> QuantizeLinear becomes one QLinearConv
  (uint8 in, uint8 / int8 out; a Relu or Clip becomes a clamp of the quantized output,
  exact since quantization is monotonic: ``_pyconv_qmin`` / ``_pyconv_qmax``);
- the same around a Gemm (x of shape (m, k), int8 weights per output column): a 1x1
  QLinearConv over m images between two Reshapes;
- DequantizeLinear(a), DequantizeLinear(b) -> Add -> QuantizeLinear becomes
  ``com.microsoft.QLinearAdd``; DequantizeLinear -> GlobalAveragePool -> QuantizeLinear
  ``com.microsoft.QLinearGlobalAveragePool``;
- DequantizeLinear -> MaxPool / Flatten / Reshape -> QuantizeLinear with the same scale
  and zero point runs the middle op on the integers (it commutes with both).

Then the integer layers run channels last (NHWC), as onnxruntime's NHWC transformer runs
them: each packed QLinearConv becomes ``com.microsoft.QLinearConv`` with
``channels_last``, and the 8-bit MaxPool, QLinearAdd and QLinearGlobalAveragePool that read
its outputs follow (``com.microsoft.NhwcMaxPool`` ...). A chain of them passes NHWC values
from one to the next; a Transpose goes in where a chain starts and one restores the
NCHW value for any other reader (the unread ones are removed as dead), so a chain costs
two transposes instead of two per layer. A residual block's last conv and the QLinearAdd
that alone reads it then run as one node (``pyconv.QLinearConvAdd``).

What the fused nodes compute is onnxruntime's integer arithmetic (int32 sums, float32
requantization rounded half to even), which can differ from the float graph by a
rounding step, as onnxruntime's own optimised run does. Runs before constant folding,
which would turn the weights' DequantizeLinear into float constants; the Q/DQ nodes left
without readers are removed as dead.
"""
from __future__ import annotations

import numpy as np

from pyconv.graph._idioms import visiting
from pyconv.ops._base import Node
from pyconv.ops.quant import packed_qconv_form

_ONNX = ("", "ai.onnx")
_MS = "com.microsoft"


class _Context:
    def __init__(self, graph):
        self.graph = graph
        self.outs = set(graph.output_names)
        self.producer = {o: n for n in graph.nodes for o in n.outputs if o}
        self.users = {}
        for n in graph.nodes:
            for x in n.inputs:
                if x:
                    self.users.setdefault(x, []).append(n)

    def const(self, name):
        """A constant's value (an initializer, or a Constant node's), or None."""
        if not name:
            return None
        if name in self.graph.constants:
            return self.graph.constants[name]
        n = self.producer.get(name)
        if n is not None and n.op_type == "Constant" and n.domain in _ONNX \
                and isinstance(n.attrs.get("value"), np.ndarray):
            return n.attrs["value"]
        return None

    def only_user(self, name):
        """The one node reading ``name`` (not a graph output), or None."""
        users = self.users.get(name, ())
        return users[0] if len(users) == 1 and name not in self.outs else None

    def op(self, name, op_type):
        """The producer of ``name`` if it is an ONNX ``op_type`` node."""
        n = self.producer.get(name)
        return n if n is not None and n.op_type == op_type and n.domain in _ONNX else None


def _qparams(ctx, node):
    """(scale, zero point) of a per-tensor Q / DQ node with constant uint8 / int8
    parameters, or None."""
    if len(node.inputs) < 3 or int(node.attrs.get("block_size", 0) or 0):
        return None
    scale, zp = ctx.const(node.inputs[1]), ctx.const(node.inputs[2])
    if scale is None or zp is None or scale.size != 1 or zp.size != 1 \
            or scale.dtype != np.float32 or zp.dtype not in (np.uint8, np.int8) \
            or not np.isfinite(scale).all() or float(scale.reshape(())) <= 0:
        return None
    return float(scale.reshape(())), int(zp.reshape(())), zp.dtype


def _dq_activation(ctx, name):
    """The per-tensor DequantizeLinear producing ``name``, or None."""
    dq = ctx.op(name, "DequantizeLinear")
    return dq if dq is not None and _qparams(ctx, dq) is not None else None


def _quantized_output(ctx, node):
    """The QuantizeLinear reading ``node``'s output alone, through at most one Relu or
    Clip with constant bounds, and the clamp those imply: (q, [nodes between], qmin,
    qmax), or None."""
    between = []
    cur = node
    lo, hi = -np.inf, np.inf
    while True:
        nxt = ctx.only_user(cur.outputs[0])
        if nxt is None or nxt.domain not in _ONNX:
            return None
        if nxt.op_type == "QuantizeLinear":
            break
        if len(between) == 1 or nxt.op_type not in ("Relu", "Clip"):
            return None
        if nxt.op_type == "Relu":
            lo = max(lo, 0.0)
        else:
            bounds = [nxt.attrs.get("min"), nxt.attrs.get("max")]
            for i in (1, 2):
                if len(nxt.inputs) > i and nxt.inputs[i]:
                    c = ctx.const(nxt.inputs[i])
                    if c is None or c.size != 1:
                        return None
                    bounds[i - 1] = float(c.reshape(()))
            lo = max(lo, bounds[0]) if bounds[0] is not None else lo
            hi = min(hi, bounds[1]) if bounds[1] is not None else hi
        between.append(nxt)
        cur = nxt
    params = _qparams(ctx, nxt)
    if params is None or int(nxt.attrs.get("output_dtype", 0) or 0) not in (0, 2, 3):
        return None
    scale, zp, dtype = params
    info = np.iinfo(dtype)

    def quantized(v):       # QuantizeLinear of a bound (monotonic: clamps commute)
        q = np.rint(np.float32(v) / np.float32(scale)) + zp
        return int(np.clip(q, info.min, info.max))
    qmin = quantized(lo) if np.isfinite(lo) else int(info.min)
    qmax = quantized(hi) if np.isfinite(hi) else int(info.max)
    return nxt, between, qmin, qmax


def _fuse_conv(ctx, conv):
    if conv.op_type != "Conv" or conv.domain not in _ONNX or len(conv.inputs) < 2:
        return None
    dq_x = _dq_activation(ctx, conv.inputs[0])
    dq_w = ctx.op(conv.inputs[1], "DequantizeLinear")
    if dq_x is None or dq_w is None or len(dq_w.inputs) < 3:
        return None
    w = ctx.const(dq_w.inputs[0])
    w_scale, w_zp = ctx.const(dq_w.inputs[1]), ctx.const(dq_w.inputs[2])
    if w is None or w_scale is None or w_zp is None or w.dtype != np.int8 or w.ndim != 4 \
            or w_zp.dtype != np.int8 or np.any(w_zp) or w_scale.dtype != np.float32 \
            or int(dq_w.attrs.get("block_size", 0) or 0) \
            or w_scale.size not in (1, w.shape[0]) or w_zp.size not in (1, w.shape[0]) \
            or w_scale.size > 1 and int(dq_w.attrs.get("axis", 1)) not in (0, -4):
        return None
    x_scale, _, x_dtype = _qparams(ctx, dq_x)
    if x_dtype != np.uint8:
        return None
    bias = ""
    if len(conv.inputs) > 2 and conv.inputs[2]:
        dq_b = ctx.op(conv.inputs[2], "DequantizeLinear")
        if dq_b is None:
            return None
        b = ctx.const(dq_b.inputs[0])
        b_scale = ctx.const(dq_b.inputs[1]) if len(dq_b.inputs) > 1 else None
        b_zp = ctx.const(dq_b.inputs[2]) if len(dq_b.inputs) > 2 and dq_b.inputs[2] \
            else np.zeros((), np.int32)
        # The int32 bias is added to the integer sums as is: only where its scale is the
        # sums' own (what onnxruntime's quantizer writes).
        if b is None or b_scale is None or b_zp is None or b.dtype != np.int32 \
                or b.shape != (w.shape[0],) or np.any(b_zp) \
                or not np.allclose(np.broadcast_to(b_scale.reshape(-1), (w.shape[0],)),
                                   np.float32(x_scale) * w_scale.reshape(-1),
                                   rtol=1e-6, atol=0):
            return None
        bias = dq_b.inputs[0]
    found = _quantized_output(ctx, conv)
    if found is None:
        return None
    q, between, qmin, qmax = found
    attrs = {k: v for k, v in conv.attrs.items()}
    y_info = np.iinfo(_qparams(ctx, q)[2])
    if qmin > y_info.min:
        attrs["_pyconv_qmin"] = qmin
    if qmax < y_info.max:
        attrs["_pyconv_qmax"] = qmax
    fused = Node("QLinearConv", [dq_x.inputs[0], dq_x.inputs[1], dq_x.inputs[2],
                                 dq_w.inputs[0], dq_w.inputs[1], dq_w.inputs[2],
                                 q.inputs[1], q.inputs[2]] + ([bias] if bias else []),
                 [q.outputs[0]], attrs, name=conv.name)
    return fused, [conv, q] + between


def _fresh_constant(graph, base, value):
    """A new read-only constant of ``graph`` (any dtype) named after ``base``; its name."""
    name, k = base, 0
    while name in graph.constants:
        k += 1
        name = f"{base}__{k}"
    value = np.ascontiguousarray(value)
    value.flags.writeable = False
    graph.constants[name] = value
    return name


def _fuse_gemm(ctx, gemm):
    """DQ(x) -> Gemm(DQ(int8 weight), DQ(int32 bias)) -> Q, x of shape (m, k): a 1x1
    QLinearConv over m images of k channels, between two Reshapes (which onnxruntime runs
    as QGemm: the same int32 sums and requantization)."""
    if gemm.op_type != "Gemm" or gemm.domain not in _ONNX or len(gemm.inputs) < 2 \
            or float(gemm.attrs.get("alpha", 1.0)) != 1.0 \
            or float(gemm.attrs.get("beta", 1.0)) != 1.0 or int(gemm.attrs.get("transA", 0)):
        return None
    dq_w = ctx.op(gemm.inputs[1], "DequantizeLinear")
    if dq_w is None or len(dq_w.inputs) < 3:
        return None
    w = ctx.const(dq_w.inputs[0])
    if w is None or w.ndim != 2:
        return None
    trans_b = int(gemm.attrs.get("transB", 0))
    w_scale = ctx.const(dq_w.inputs[1])
    if w_scale is None or w_scale.size > 1 and \
            int(dq_w.attrs.get("axis", 1)) % 2 != (0 if trans_b else 1):
        return None             # per-channel scales must run along the output columns
    # The conv's view of the weights: (n, k, 1, 1); its DequantizeLinear per axis 0.
    w4 = (w if trans_b else w.T).reshape(w.shape[0] if trans_b else w.shape[1], -1, 1, 1)
    graph = ctx.graph
    w_name = _fresh_constant(graph, dq_w.inputs[0] + "_conv", w4)
    view = Node("DequantizeLinear", [w_name] + list(dq_w.inputs[1:3]), [w_name + "_dq"],
                {"axis": 0}, name=dq_w.name + "_conv")
    ctx.producer[view.outputs[0]] = view
    conv = Node("Conv", [gemm.inputs[0], view.outputs[0]] + list(gemm.inputs[2:3]),
                gemm.outputs, {}, name=gemm.name)
    found = _fuse_conv(ctx, conv)
    if found is None:
        del graph.constants[w_name]
        return None
    fused, removed = found
    x4 = gemm.name + "_x4"
    y4 = gemm.name + "_y4"
    to4 = _fresh_constant(graph, gemm.name + "_shape4", np.array([0, -1, 1, 1], np.int64))
    to2 = _fresh_constant(graph, gemm.name + "_shape2", np.array([0, -1], np.int64))
    x, y = fused.inputs[0], fused.outputs[0]
    fused.inputs[0] = x4
    fused.outputs = [y4]
    return [Node("Reshape", [x, to4], [x4], {}, name=gemm.name + "_to4"), fused,
            Node("Reshape", [y4, to2], [y], {}, name=gemm.name + "_to2")], \
        [gemm] + removed[1:]


def _same_params(ctx, dq, q):
    a, b = _qparams(ctx, dq), _qparams(ctx, q)
    return a is not None and b is not None and a[1:] == b[1:] \
        and np.float32(a[0]) == np.float32(b[0])


def _fuse_elementwise(ctx, n):
    """Add, GlobalAveragePool, and the ops that commute with quantization."""
    if n.domain not in _ONNX or not n.inputs:
        return None
    if n.op_type == "Add" and len(n.inputs) == 2:
        dqs = [_dq_activation(ctx, x) for x in n.inputs]
        found = _quantized_output(ctx, n)
        if None in dqs or found is None or found[1]:
            return None
        q = found[0]
        dtypes = {_qparams(ctx, d)[2] for d in dqs} | {_qparams(ctx, q)[2]}
        if len(dtypes) != 1:
            return None
        a, b = dqs
        return Node("QLinearAdd", list(a.inputs[:3]) + list(b.inputs[:3])
                    + list(q.inputs[1:3]), [q.outputs[0]], {}, name=n.name,
                    domain="com.microsoft"), [n, q]
    dq = _dq_activation(ctx, n.inputs[0])
    if dq is None:
        return None
    found = _quantized_output(ctx, n)
    if found is None or found[1]:
        return None
    q = found[0]
    if n.op_type == "GlobalAveragePool":
        if _qparams(ctx, dq)[2] != _qparams(ctx, q)[2]:
            return None
        return Node("QLinearGlobalAveragePool", list(dq.inputs[:3]) + list(q.inputs[1:3]),
                    [q.outputs[0]], {"channels_last": 0}, name=n.name,
                    domain="com.microsoft"), [n, q]
    if n.op_type in ("MaxPool", "Flatten", "Reshape") and _same_params(ctx, dq, q) \
            and len(n.outputs) == 1:
        return Node(n.op_type, [dq.inputs[0]] + list(n.inputs[1:]), [q.outputs[0]],
                    dict(n.attrs), name=n.name), [n, q]
    return None


_TO_NHWC = [0, 2, 3, 1]
_TO_NCHW = [0, 3, 1, 2]


def _packed_conv(ctx, n):
    """Whether ``n`` is a 2-D QLinearConv that runs packed (constant parameters of
    qgemm.QConv2d's form)."""
    if n.op_type != "QLinearConv" or n.domain not in _ONNX or len(n.outputs) != 1 \
            or len(n.inputs) < 8:
        return False
    params = [ctx.const(x) for x in n.inputs[1:8]]
    bias = n.inputs[8] if len(n.inputs) > 8 and n.inputs[8] else None
    b = ctx.const(bias) if bias else None
    if bias and b is None or not packed_qconv_form(*params, b):
        return False
    group = int(n.attrs.get("group", 1) or 1)
    ks = n.attrs.get("kernel_shape")
    return group >= 1 and params[2].shape[0] % group == 0 \
        and (ks is None or len(ks) == 2)


def to_channels_last(graph):
    """The NHWC chains of the module docstring; returns ``graph``."""
    ctx = _Context(graph)
    taken = set(graph.constants) | {v.name for v in graph.inputs} | set(ctx.producer)
    nhwc = {}           # NCHW value -> its NHWC twin
    nodes = []

    def fresh(base):
        name, k = base, 0
        while name in taken:
            k += 1
            name = f"{base}__{k}"
        taken.add(name)
        return name

    def twin(name):
        """The NHWC twin of ``name``, transposed here where there is none yet."""
        if name not in nhwc:
            nhwc[name] = fresh(name + "_nhwc")
            nodes.append(Node("Transpose", [name], [nhwc[name]], {"perm": _TO_NHWC},
                              name=fresh(name + "_to_nhwc")))
        return nhwc[name]

    def emit(n, op_type, inputs, attrs, domain):
        """``n`` as ``op_type`` writing the NHWC twin of its output, which a Transpose
        restores for the readers of the NCHW value."""
        y = n.outputs[0]
        nhwc[y] = fresh(y + "_nhwc")
        nodes.append(Node(op_type, inputs, [nhwc[y]], attrs, name=n.name, domain=domain))
        nodes.append(Node("Transpose", [nhwc[y]], [y], {"perm": _TO_NCHW},
                          name=fresh(y + "_to_nchw")))

    for n in graph.nodes:
        single = len(n.outputs) == 1 or len(n.outputs) > 1 and not any(n.outputs[1:])
        x = n.inputs[0] if n.inputs else ""
        if _packed_conv(ctx, n):
            emit(n, "QLinearConv", [twin(x)] + list(n.inputs[1:]),
                 dict(n.attrs, channels_last=1), "com.microsoft")
        elif n.op_type == "QLinearAdd" and n.domain == "com.microsoft" and single \
                and len(n.inputs) >= 4 and x in nhwc and n.inputs[3] in nhwc:
            # Both inputs 4-D (from chain layers), so broadcasting commutes with the
            # transpose.
            inputs = list(n.inputs)
            inputs[0], inputs[3] = nhwc[x], nhwc[n.inputs[3]]
            emit(n, "QLinearAdd", inputs, dict(n.attrs), "com.microsoft")
        elif n.op_type == "MaxPool" and n.domain in _ONNX and single and x in nhwc \
                and len(n.attrs.get("kernel_shape") or ()) == 2:
            emit(n, "NhwcMaxPool", [nhwc[x]], dict(n.attrs), "com.microsoft")
        elif n.op_type == "QLinearGlobalAveragePool" and n.domain == "com.microsoft" \
                and x in nhwc and not int(n.attrs.get("channels_last", 0) or 0):
            emit(n, "QLinearGlobalAveragePool", [nhwc[x]] + list(n.inputs[1:]),
                 dict(n.attrs, channels_last=1), "com.microsoft")
        else:
            nodes.append(n)
    graph.nodes = nodes
    return graph


def fuse_conv_add(graph):
    """A channels-last QLinearConv of one group with uint8 output whose output only a
    QLinearAdd of constant per-tensor uint8 parameters reads (a residual block's last
    conv) becomes ``pyconv.QLinearConvAdd`` at the add's place: the conv adds the residual
    to its outputs as it finishes them. Returns ``graph``."""
    ctx = _Context(graph)
    live, stack = set(), [ctx.producer[o] for o in ctx.outs if o in ctx.producer]
    while stack:        # the nodes the outputs need (the others are dead, removed later)
        n = stack.pop()
        if id(n) not in live:
            live.add(id(n))
            stack.extend(ctx.producer[x] for x in n.inputs if x in ctx.producer)

    def dead_readers(name):
        """The dead nodes reading ``name``, and theirs (the NCHW twin's Transpose and
        the DequantizeLinear the fusions left): they go with the conv."""
        found, todo = [], [u for u in ctx.users.get(name, ()) if id(u) not in live]
        while todo:
            n = todo.pop()
            if all(n is not f for f in found):
                found.append(n)
                todo.extend(u for o in n.outputs for u in ctx.users.get(o, ()))
        return found

    def conv_for(name):
        conv = ctx.producer.get(name)
        if conv is None or conv.op_type != "QLinearConv" or conv.domain != _MS \
                or not int(conv.attrs.get("channels_last", 0) or 0) \
                or int(conv.attrs.get("group", 1) or 1) != 1 or name in ctx.outs:
            return None
        yz = ctx.const(conv.inputs[7])
        if yz is None or yz.dtype != np.uint8:
            return None
        readers = [u for u in ctx.users.get(name, ()) if id(u) in live]
        return (conv, dead_readers(name)) if len(readers) == 1 else None

    fused_at, dropped = {}, set()
    for n in graph.nodes:
        if n.op_type != "QLinearAdd" or n.domain != _MS or len(n.inputs) != 8 \
                or len(n.outputs) != 1:
            continue
        params = [ctx.const(n.inputs[i]) for i in (1, 2, 4, 5, 6, 7)]
        if any(p is None or p.size != 1 for p in params) \
                or any(z.dtype != np.uint8 for z in params[1::2]):
            continue
        for side in (0, 1):
            found = conv_for(n.inputs[3 * side])
            if found is None or id(found[0]) in dropped:
                continue
            conv, dead = found
            inputs = list(conv.inputs[:9]) + [""] * (9 - len(conv.inputs[:9]))
            inputs += [n.inputs[3 - 3 * side]] + [n.inputs[i] for i in (1, 2, 4, 5, 6, 7)]
            fused_at[id(n)] = Node("QLinearConvAdd", inputs, list(n.outputs),
                                   dict(conv.attrs, _pyconv_conv_operand=side),
                                   name=n.name, domain="pyconv")
            dropped.update(id(x) for x in [conv] + dead)
            break
    if fused_at:
        graph.nodes = [fused_at.get(id(n), n) for n in graph.nodes if id(n) not in dropped]
    return graph


def fuse_qdq(graph):
    """The rewrites of the module docstring; returns ``graph``."""
    for fuse in (_fuse_conv, _fuse_gemm, _fuse_elementwise):
        ctx = _Context(graph)
        replaced = {}       # id of a node removed -> the fused node taking its place
        dropped = set()
        for n in visiting(list(graph.nodes)):
            if id(n) in dropped:
                continue
            result = fuse(ctx, n)
            if result is None:
                continue
            fused, removed = result
            if any(id(r) in dropped for r in removed):
                continue
            # The fused node takes the place of the last node it replaces (the
            # QuantizeLinear): every input it reads is ready there.
            replaced[id(removed[1])] = fused
            dropped.update(id(r) for r in removed)
        if not dropped:
            continue
        nodes = []
        for n in graph.nodes:
            if id(n) in replaced:
                new = replaced[id(n)]
                nodes.extend(new if isinstance(new, list) else [new])
            elif id(n) not in dropped:
                nodes.append(n)
        graph.nodes = nodes
    return fuse_conv_add(to_channels_last(graph))
