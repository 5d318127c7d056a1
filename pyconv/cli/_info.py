"""`pyconv info`: per-node table of op, output shape, parameters and MACs."""
import math

import onnx
from onnx import shape_inference

from pyconv.errors import InvalidModel


def _dims(value_info):
    t = value_info.type.tensor_type
    if not t.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                 for d in t.shape.dim)


def _attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def node_macs(node, shapes, init_dims):
    """Multiply-accumulates of one node, or 0 when it has none worth counting."""
    def shape(i):
        if i >= len(node.input) or not node.input[i]:
            return None
        s = shapes.get(node.input[i]) or init_dims.get(node.input[i])
        return s if s and all(isinstance(d, int) for d in s) else None
    out = shapes.get(node.output[0]) if node.output else None
    if out is None or not all(isinstance(d, int) for d in out):
        return 0
    w = shape(1)
    if node.op_type == "Conv" and w:
        return math.prod(out) * math.prod(w[1:])
    if node.op_type == "ConvTranspose" and w and shape(0):
        return math.prod(shape(0)) * math.prod(w[1:])
    if node.op_type in ("Gemm", "MatMul") and shape(0):
        a = shape(0)
        k = a[0] if node.op_type == "Gemm" and _attr(node, "transA", 0) else a[-1]
        return math.prod(out) * k
    return 0


class ModelSummary:
    """Static facts about a model: per-node rows and totals."""

    def __init__(self, model, input_shapes):
        graph = model.graph
        init_dims = {t.name: tuple(t.dims) for t in graph.initializer}
        self.params = {t.name: math.prod(t.dims) for t in graph.initializer}
        # Fix the inputs to concrete shapes so inference yields concrete output dims.
        model = onnx.ModelProto.FromString(model.SerializeToString())
        for vi in model.graph.input:
            if vi.name in input_shapes:
                dims = vi.type.tensor_type.shape.dim
                for d, v in zip(dims, input_shapes[vi.name]):
                    d.Clear()
                    d.dim_value = v
        try:
            inferred = shape_inference.infer_shapes(model, data_prop=True)
        except Exception as exc:  # onnx raises several types for malformed graphs
            raise InvalidModel(f"shape inference failed: {exc}") from None
        shapes = {}
        for vi in (list(inferred.graph.value_info) + list(inferred.graph.output)
                   + list(inferred.graph.input)):
            d = _dims(vi)
            if d is not None:
                shapes[vi.name] = d
        # Weights made by constant nodes (the onnx "light" zoo fills them with
        # ConstantOfShape) count as parameters of the nodes that consume them.
        constant_ops = ("Constant", "ConstantOfShape")
        for node in graph.node:
            if node.op_type in constant_ops:
                for name in node.output:
                    s = shapes.get(name)
                    if s is not None and all(isinstance(d, int) for d in s):
                        self.params[name] = math.prod(s)
        self.rows = []
        for i, node in enumerate(graph.node):
            params = 0 if node.op_type in constant_ops else sum(
                self.params.get(name, 0) for name in node.input)
            out = shapes.get(node.output[0]) if node.output else None
            self.rows.append(dict(
                name=node.name or f"{node.op_type}_{i}", op=node.op_type, shape=out,
                params=params, macs=node_macs(node, shapes, init_dims)))
        consumed = {name for node in graph.node if node.op_type not in constant_ops
                    for name in node.input}
        self.total_params = sum(n for name, n in self.params.items() if name in consumed)
        self.total_macs = sum(r["macs"] for r in self.rows)
        self.macs_by_node = {r["name"]: r["macs"] for r in self.rows}


def unsupported_ops(model):
    """{op type: [node names]} of the nodes pyconv has no operator for (domain-qualified
    outside the default domain), in model order."""
    from pyconv.ops import lookup
    missing = {}
    for i, node in enumerate(model.graph.node):
        if lookup(node.op_type, node.domain) is None:
            key = node.op_type if node.domain in ("", "ai.onnx") else \
                f"{node.domain}::{node.op_type}"
            missing.setdefault(key, []).append(node.name or f"{node.op_type}_{i}")
    return missing


def _fmt_count(n):
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def format_table(headers, rows, aligns=None):
    """A plain-text table; aligns is a string of 'l'/'r' per column."""
    aligns = aligns or "l" * len(headers)
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(row):
        return "  ".join(c.ljust(w) if a == "l" else c.rjust(w)
                         for c, w, a in zip(row, widths, aligns)).rstrip()
    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), sep] + [line(r) for r in cells])


def print_info(model, input_shapes, path):
    s = ModelSummary(model, input_shapes)
    ops = {}
    for r in s.rows:
        ops[r["op"]] = ops.get(r["op"], 0) + 1
    opsets = ", ".join(f"{o.domain or 'ai.onnx'} {o.version}" for o in model.opset_import)
    print(f"{path}: opset {opsets}, {len(s.rows)} nodes, "
          f"producer {model.producer_name or '?'} {model.producer_version}".rstrip())
    for name, shape in input_shapes.items():
        print(f"input  {name}: {'x'.join(map(str, shape))}")
    rows = []
    for r in s.rows:
        shape = "x".join(map(str, r["shape"])) if r["shape"] else "?"
        rows.append([r["name"], r["op"], shape, _fmt_count(r["params"]) if r["params"] else "",
                     _fmt_count(r["macs"]) if r["macs"] else "",
                     f"{100 * r['macs'] / s.total_macs:.1f}" if r["macs"] and s.total_macs else ""])
    print(format_table(["node", "op", "output shape", "params", "MACs", "MAC %"], rows,
                       "lllrrr"))
    print(f"\ntotal: {s.total_params:,} parameters ({s.total_params * 4 / 2**20:.2f} MiB float32), "
          f"{s.total_macs:,} MACs ({2 * s.total_macs / 1e9:.3f} GFLOP per run)")
    print("ops: " + ", ".join(f"{op} x{n}" for op, n in sorted(ops.items(), key=lambda kv: -kv[1])))
    return 0
