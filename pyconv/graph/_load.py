"""Loading: bytes / path / ModelProto -> a validated :class:`Graph`.

Untrusted files: any parse failure is :class:`InvalidModel`; external tensor data is read
only from inside the model's directory (absolute paths, ``..`` and symlinks that leave
it are refused) and only as many bytes as the tensor declares.
"""
from __future__ import annotations

import functools
import math
import os
import stat

import numpy as np

from pyconv.errors import InvalidModel, PyconvError
from pyconv.ops import Node

# Elements a declared tensor may have before we refuse it (2**34 float32 = 64 GiB).
MAX_TENSOR_ELEMENTS = 1 << 34


class ValueInfo:
    """Name, ONNX element type and shape (ints, symbolic names as str, or None).

    As in onnxruntime, a dim is free (None) when it has no value, a negative value
    (Paddle and tf2onnx write -1) or an empty name; a named dim (``'batch'``, ``'?'``)
    keeps its name for reporting and is free too: sizes are not checked against it.
    """

    __slots__ = ("name", "elem_type", "shape")

    def __init__(self, name, elem_type=0, shape=None):
        self.name, self.elem_type, self.shape = name, elem_type, shape

    @classmethod
    def from_proto(cls, vi):
        t = vi.type
        if not t.HasField("tensor_type"):
            return cls(_s(vi.name), 0, None)
        tt = t.tensor_type
        shape = None
        if tt.HasField("shape"):
            shape = []
            for d in tt.shape.dim:
                if d.HasField("dim_value") and d.dim_value >= 0:
                    shape.append(int(d.dim_value))
                elif d.HasField("dim_param") and d.dim_param:
                    shape.append(_s(d.dim_param))
                else:
                    shape.append(None)
        return cls(_s(vi.name), int(tt.elem_type), shape)

    @property
    def type_str(self):
        from onnx import TensorProto
        if not self.elem_type:
            return "tensor(undefined)"
        if self.elem_type not in TensorProto.DataType.values():
            return f"tensor(unknown type {self.elem_type})"    # a corrupt or newer model
        name = TensorProto.DataType.Name(self.elem_type).lower()
        return "tensor(" + {"float": "float", "double": "double"}.get(name, name) + ")"

    @property
    def dtype(self):
        if not self.elem_type:
            return None
        from onnx import helper
        try:
            return np.dtype(helper.tensor_dtype_to_np_dtype(self.elem_type))
        except Exception:
            return None


class Graph:
    """A flat ONNX graph: nodes (in topological order once sorted), graph inputs (not
    initializers), outputs, constants (name -> read-only ndarray), value infos, opset."""

    def __init__(self, nodes, inputs, outputs, constants, value_info, opset, name=""):
        self.nodes = nodes
        self.inputs = inputs
        self.outputs = outputs
        self.constants = constants
        self.value_info = value_info
        self.opset = opset
        self.name = name

    @property
    def output_names(self):
        return [o.name for o in self.outputs]


def _parse(model):
    import onnx
    from google.protobuf.message import DecodeError
    base_dir = None
    if isinstance(model, onnx.ModelProto):
        return model, None
    if isinstance(model, (bytes, bytearray, memoryview)):
        data = bytes(model)
    elif isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise InvalidModel(f"cannot read model file {path!r}: {exc}") from None
        base_dir = os.path.dirname(os.path.abspath(path))
    else:
        raise InvalidModel(f"expected a path, bytes or onnx.ModelProto, got "
                           f"{type(model).__name__}")
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise InvalidModel(f"not a valid ONNX model (protobuf parse failed: {exc})") from None
    except Exception as exc:  # protobuf backends raise assorted types on garbage
        raise InvalidModel(f"not a valid ONNX model ({type(exc).__name__}: {exc})") from None
    if not proto.HasField("graph") or proto.ir_version <= 0:
        raise InvalidModel("not a valid ONNX model: no graph or no ir_version (truncated or "
                           "not an ONNX file?)")
    return proto, base_dir


def _safe_external_path(base_dir, location, tensor_name):
    if base_dir is None:
        raise InvalidModel(f"tensor '{tensor_name}' has external data '{location}', but the "
                           f"model was not loaded from a file (no directory to read from)")
    if not location or os.path.isabs(location) or location.startswith(("/", "\\")) or \
            os.path.splitdrive(location)[0]:
        raise InvalidModel(f"tensor '{tensor_name}': external data location {location!r} "
                           f"must be a relative path inside the model's directory")
    parts = location.replace("\\", "/").split("/")
    if ".." in parts:
        raise InvalidModel(f"tensor '{tensor_name}': external data location {location!r} "
                           f"contains '..'")
    real_base = os.path.realpath(base_dir)
    path = os.path.realpath(os.path.join(real_base, location))
    if os.path.commonpath([real_base, path]) != real_base:
        raise InvalidModel(f"tensor '{tensor_name}': external data location {location!r} "
                           f"resolves outside the model's directory")
    return path


def _read_regular_file(path, offset, length, tensor_name, location):
    """``length`` bytes at ``offset`` of a regular file. Opened non-blocking and checked
    on the open descriptor (no race with a swap after the check): a FIFO, socket or
    device inside the model's directory would block or never end."""
    where = f"tensor '{tensor_name}': external data {location!r}"
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) |
                     getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        raise InvalidModel(f"{where}: cannot open: {exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InvalidModel(f"{where} is not a regular file (a FIFO, socket, device or "
                               f"directory); external data is read from regular files only")
        if offset + length > st.st_size:
            raise InvalidModel(f"{where}: the file has {st.st_size} bytes, the tensor "
                               f"needs {offset + length}")
        os.lseek(fd, offset, os.SEEK_SET)
        chunks, left = [], length
        while left:
            chunk = os.read(fd, min(left, 1 << 30))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        raw = b"".join(chunks)
    except OSError as exc:
        raise InvalidModel(f"{where}: cannot read: {exc}") from None
    finally:
        os.close(fd)
    if len(raw) != length:
        raise InvalidModel(f"{where}: read {len(raw)} bytes, the tensor needs {length}")
    return raw


def _tensor_to_array(t, base_dir):
    from onnx import TensorProto, numpy_helper
    dims = [int(d) for d in t.dims]
    if any(d < 0 for d in dims):
        raise InvalidModel(f"tensor '{t.name}' has a negative dim {dims}")
    if math.prod(dims) > MAX_TENSOR_ELEMENTS:
        raise InvalidModel(f"tensor '{t.name}' declares {math.prod(dims)} elements, more "
                           f"than the limit {MAX_TENSOR_ELEMENTS}")
    if t.data_location == TensorProto.EXTERNAL:
        info = {e.key: e.value for e in t.external_data}
        path = _safe_external_path(base_dir, info.get("location", ""), t.name)
        offset = int(info.get("offset", 0) or 0)
        from onnx import helper
        itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
        need = math.prod(dims) * itemsize
        length = int(info.get("length", need) or need)
        if length != need or offset < 0:
            raise InvalidModel(f"tensor '{t.name}': external data length {length} does not "
                               f"match its shape {dims} ({need} bytes)")
        raw = _read_regular_file(path, offset, length, t.name, info.get("location"))
        t2 = TensorProto()
        t2.CopyFrom(t)
        del t2.external_data[:]
        t2.data_location = TensorProto.DEFAULT
        t2.raw_data = raw
        t = t2
    try:
        arr = numpy_helper.to_array(t)
    except Exception as exc:
        raise InvalidModel(f"tensor '{t.name}' cannot be decoded: {exc}") from None
    if arr.shape != tuple(dims):
        raise InvalidModel(f"tensor '{t.name}' holds {arr.size} values, its shape {dims} "
                           f"needs {math.prod(dims)}")
    return arr


def _s(v):
    """A protobuf string field as str (invalid UTF-8 comes back as bytes)."""
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def _attr_value(attr, base_dir, node_label):
    from onnx import AttributeProto, helper
    if attr.type == AttributeProto.TENSOR:
        return _tensor_to_array(attr.t, base_dir)
    if attr.type == AttributeProto.TENSORS:
        return [_tensor_to_array(t, base_dir) for t in attr.tensors]
    if attr.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS):
        return attr   # subgraphs: no supported op uses them
    try:
        v = helper.get_attribute_value(attr)
    except Exception as exc:
        raise InvalidModel(f"{node_label}: attribute '{attr.name}' is malformed: {exc}") \
            from None
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, list) and v and isinstance(v[0], bytes):
        return [b.decode("utf-8", "replace") for b in v]
    return v


# Versions a custom domain (com.microsoft, pyconv, ...) may import: onnx defines none.
MAX_CUSTOM_OPSET = (1 << 31) - 1


@functools.lru_cache(maxsize=None)
def _defined_opsets():
    """domain -> (first, last) operator-set version the installed onnx defines."""
    from onnx import defs
    try:
        return dict(defs.C.schema_version_map())
    except AttributeError:      # an onnx without the map: the two main domains
        return {"": (1, defs.onnx_opset_version()),
                "ai.onnx.ml": (1, defs.onnx_ml_opset_version())}


def _check_opset_imports(proto):
    """Domain ("" for ai.onnx) -> imported version, each checked against what the
    installed onnx defines; the default domain must be imported (as onnxruntime
    requires). Raises InvalidModel."""
    defined = _defined_opsets()
    versions = {}
    for imp in proto.opset_import:
        domain = _s(imp.domain)
        domain = "" if domain == "ai.onnx" else domain
        shown = domain or "ai.onnx (default domain)"
        version = int(imp.version)
        if domain in versions:
            raise InvalidModel(f"the model imports operator set {shown} twice (versions "
                               f"{versions[domain]} and {version})")
        first, last = defined.get(domain, (1, MAX_CUSTOM_OPSET))
        if not first <= version <= last:
            where = "the installed onnx defines" if domain in defined else \
                "a custom domain takes"
            raise InvalidModel(f"opset import {shown} version {version} does not exist: "
                               f"{where} versions {first} to {last}")
        versions[domain] = version
    if "" not in versions:
        raise InvalidModel("the model imports no version of the default ONNX domain "
                           "(opset_import has no entry for domain '' / 'ai.onnx'), so its "
                           "operators have no defined meaning")
    return versions


@functools.lru_cache(maxsize=4096)
def _schema(op_type, domain, version):
    """onnx's schema of ``op_type`` at opset ``version`` of ``domain``, or None (a custom
    domain, or an op onnx does not define there: the op registry decides)."""
    from onnx import defs
    try:
        return defs.get_schema(op_type, version, domain)
    except Exception:
        return None


@functools.lru_cache(maxsize=None)
def _single():
    from onnx.defs import OpSchema
    return OpSchema.FormalParameterOption.Single


def _check_arity(node, versions):
    """Input and output counts of ``node`` against its onnx schema, and its required
    (non-optional) inputs present: a node that cannot mean anything is InvalidModel at
    load, before any pass or kernel meets it."""
    domain = "" if node.domain == "ai.onnx" else node.domain
    version = versions.get(domain)
    if version is None:
        return      # the domain is not imported: check_supported reports the op
    schema = _schema(node.op_type, domain, version)
    if schema is None:
        return
    op = f"{node.op_type}-{schema.since_version}"
    for kind, names, low, high in (("inputs", node.inputs, schema.min_input, schema.max_input),
                                   ("outputs", node.outputs, schema.min_output,
                                    schema.max_output)):
        if not low <= len(names) <= high:
            span = f"{low}" if low == high else f"{low} to {high}" if high < 1 << 30 \
                else f"at least {low}"
            raise InvalidModel(f"{node.label} has {len(names)} {kind} {names}; {op} "
                               f"(opset {version}) takes {span}")
    for i, formal in enumerate(schema.inputs):
        if formal.option == _single() and (i >= len(node.inputs) or not node.inputs[i]):
            raise InvalidModel(f"{node.label}: required input {i} ('{formal.name}' of {op}) "
                               f"is missing; its inputs are {node.inputs}")


def load(model):
    """Parses ``model`` into a :class:`Graph` (see :func:`_load`); any unexpected failure
    while decoding a malformed model is reported as InvalidModel."""
    try:
        return _load(model)
    except PyconvError:
        raise
    except RecursionError:
        raise InvalidModel("the model is nested too deeply to decode") from None
    except Exception as exc:
        raise InvalidModel(f"malformed model ({type(exc).__name__}: {exc})") from exc


def _load(model):
    """Parses ``model`` (path, bytes or ModelProto) into a :class:`Graph`.

    Raises
    ------
    InvalidModel
        Unreadable file, bad protobuf, missing graph, operator sets the installed onnx
        does not define, nodes whose input / output counts their schema refuses,
        malformed tensors, unsafe or non-regular external data.
    """
    proto, base_dir = _parse(model)
    versions = _check_opset_imports(proto)
    opset = versions[""]
    g = proto.graph
    constants = {}
    for t in g.initializer:
        if not t.name:
            raise InvalidModel("an initializer has no name")
        arr = _tensor_to_array(t, base_dir)
        arr.flags.writeable = False
        constants[_s(t.name)] = arr
    inputs = [ValueInfo.from_proto(v) for v in g.input if _s(v.name) not in constants]
    outputs = [ValueInfo.from_proto(v) for v in g.output]
    if not outputs:
        raise InvalidModel("the graph declares no outputs")
    value_info = {v.name: ValueInfo.from_proto(v) for v in g.value_info}
    for v in list(g.input) + list(g.output):
        value_info[v.name] = ValueInfo.from_proto(v)
    nodes = []
    for i, n in enumerate(g.node):
        op_type = _s(n.op_type)
        name = _s(n.name) or f"{op_type}_{i}"
        label = f"{op_type} node '{name}'"
        attrs = {_s(a.name): _attr_value(a, base_dir, label) for a in n.attribute}
        node = Node(op_type, [_s(x) for x in n.input], [_s(x) for x in n.output],
                    attrs, name, _s(n.domain))
        _check_arity(node, versions)
        nodes.append(node)
    names = [v.name for v in inputs]
    if len(set(names)) != len(names):
        raise InvalidModel(f"duplicate graph input names: {names}")
    return Graph(nodes, inputs, outputs, constants, value_info, opset, g.name), proto
