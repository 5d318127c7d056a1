"""Recurrent layers: RNN, GRU and LSTM (the heads of CRNN-style OCR models).

The input projection of every time step is one GEMM (``X W^T`` over all steps at once);
the recurrence then costs one small ``H R^T`` product per step and direction. Gate
activations run on the element-wise engine. Semantics follow the ONNX operator spec and
onnxruntime where the spec is silent: steps past a batch entry's ``sequence_lens`` give
zeros in ``Y`` and leave that entry's state unchanged, so ``Y_h`` / ``Y_c`` hold the
state after its last valid step (for the reverse direction, the steps run from
``sequence_lens[b] - 1`` down to 0), and zeros for an empty sequence.
"""
from __future__ import annotations

import numpy as np

from pyconv._ext import eltwise
from pyconv.arithmetic import check_tensor_size
from pyconv.errors import InvalidModel
from pyconv.ops._base import REQUIRED, Op, register

__all__ = ["RNN", "GRU", "LSTM"]

_DIRECTIONS = {"forward": 1, "reverse": 1, "bidirectional": 2}


def _engine(op, a=0.0, b=0.0):
    return lambda x: eltwise.unary(np.ascontiguousarray(x), op, a, b)


def _numpy(fn):
    return lambda x: np.asarray(fn(x), np.float32)


#: ONNX activation name (lower case) -> (number of alpha, beta values it takes, their
#: defaults, factory of the function).
_ACTIVATIONS = {
    "relu": (0, (), lambda: _engine("relu")),
    "tanh": (0, (), lambda: _engine("tanh")),
    "sigmoid": (0, (), lambda: _engine("sigmoid")),
    "softplus": (0, (), lambda: _engine("softplus")),
    "softsign": (0, (), lambda: _numpy(lambda x: x / (1 + np.abs(x)))),
    "leakyrelu": (1, (0.01,), lambda a: _engine("leaky_relu", a)),
    "elu": (1, (1.0,), lambda a: _engine("elu", a)),
    "thresholdedrelu": (1, (1.0,), lambda a: _numpy(lambda x: np.where(x > a, x, 0))),
    "hardsigmoid": (2, (0.2, 0.5), lambda a, b: _engine("hardsigmoid", a, b)),
    "affine": (2, (1.0, 0.0), lambda a, b: _numpy(lambda x: a * x + b)),
    "scaledtanh": (2, (1.0, 1.0), lambda a, b: _numpy(lambda x: a * np.tanh(b * x))),
}


class _Recurrent(Op):
    """What RNN, GRU and LSTM share: attributes, shapes, directions, sequence lengths,
    initial states, layouts and the loop over time; a subclass gives its gates."""

    attributes = {"activation_alpha": None, "activation_beta": None, "activations": None,
                  "clip": None, "direction": "forward", "hidden_size": REQUIRED,
                  "layout": 0}
    required_inputs = 3
    first_output_optional = True
    #: Gates per cell, the default activations of one direction, states (h, or h and c).
    gates = 1
    default_activations = ()
    states = 1

    def setup(self, consts):
        a = self.attrs
        direction = a["direction"]
        if isinstance(direction, bytes):
            direction = direction.decode()
        if direction not in _DIRECTIONS:
            self.fail(f"direction {direction!r} is not one of {sorted(_DIRECTIONS)}",
                      InvalidModel)
        self.direction = direction
        self.num_directions = _DIRECTIONS[direction]
        self.hidden = int(a["hidden_size"])
        if self.hidden <= 0:
            self.fail(f"hidden_size must be positive, got {self.hidden}", InvalidModel)
        if a["layout"] not in (0, 1):
            self.fail(f"layout must be 0 or 1, got {a['layout']}", InvalidModel)
        self.clip = None if a["clip"] is None else float(a["clip"])
        if self.clip is not None and not self.clip > 0:
            self.fail(f"clip must be positive, got {self.clip}", InvalidModel)
        self.functions = self._activations()

    def _activations(self):
        """Per direction, the cell's activation functions (f, g[, h])."""
        per = len(self.default_activations)
        names = self.attrs["activations"]
        if names is None:
            names = list(self.default_activations) * self.num_directions
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
        if len(names) == per and self.num_directions == 2:
            names = names * 2
        if len(names) != per * self.num_directions:
            self.fail(f"activations has {len(names)} names {names}, expected "
                      f"{per * self.num_directions} ({per} per direction)", InvalidModel)
        alphas = list(self.attrs["activation_alpha"] or [])
        betas = list(self.attrs["activation_beta"] or [])
        functions = []
        for name in names:
            entry = _ACTIVATIONS.get(name.lower())
            if entry is None:
                self.fail(f"activation {name!r} is not one of "
                          f"{sorted(_ACTIVATIONS)} (case-insensitive)", InvalidModel)
            count, defaults, factory = entry
            params = []
            for k in range(count):
                source = alphas if k == 0 else betas
                params.append(float(source.pop(0)) if source else defaults[k])
            functions.append(factory(*params))
        return [functions[d * per:(d + 1) * per] for d in range(self.num_directions)]

    # -- shapes --------------------------------------------------------------------------
    def _weights(self, inputs):
        x = self.float32(inputs[0], 0)
        w = self.float32(inputs[1], 1)
        r = self.float32(inputs[2], 2)
        if x.ndim != 3:
            self.fail(f"input X must have rank 3, got shape {x.shape}")
        if self.attrs["layout"] == 1:
            x = x.transpose(1, 0, 2)
        steps, batch, size = x.shape
        nd, gh, hidden = self.num_directions, self.gates * self.hidden, self.hidden
        for name, arr, shape in (("W", w, (nd, gh, size)), ("R", r, (nd, gh, hidden))):
            if arr.shape != shape:
                self.fail(f"input {name} has shape {arr.shape}, expected {shape} "
                          f"(num_directions, {self.gates}*hidden_size, "
                          f"{'input_size' if name == 'W' else 'hidden_size'}) for X of "
                          f"shape {inputs[0].shape}")
        b = self._optional(inputs, 3, (nd, 2 * gh), "B")
        if b is None:
            b = np.zeros((nd, 2 * gh), np.float32)
        return x, w, r, b

    def _optional(self, inputs, i, shape, name):
        if len(inputs) <= i or inputs[i] is None:
            return None
        arr = self.float32(inputs[i], i)
        if arr.shape != tuple(shape):
            self.fail(f"input {name} has shape {arr.shape}, expected {tuple(shape)}")
        return arr

    def _lengths(self, inputs, steps, batch):
        if len(inputs) <= 4 or inputs[4] is None:
            return None
        lens = np.asarray(inputs[4])
        if lens.shape != (batch,) or lens.dtype.kind not in "iu":
            self.fail(f"input sequence_lens must be integers of shape ({batch},), got "
                      f"{lens.dtype} {lens.shape}")
        if lens.size and (lens.min() < 0 or lens.max() > steps):
            self.fail(f"sequence_lens {lens.tolist()} must lie in [0, {steps}] "
                      f"(the sequence length of X)")
        return lens.astype(np.int64)

    def _initial(self, inputs, i, name, batch):
        nd, hidden = self.num_directions, self.hidden
        shape = (batch, nd, hidden) if self.attrs["layout"] == 1 else (nd, batch, hidden)
        arr = self._optional(inputs, i, shape, name)
        if arr is None:
            return np.zeros((nd, batch, hidden), np.float32)
        return np.ascontiguousarray(arr.transpose(1, 0, 2) if self.attrs["layout"] == 1
                                    else arr)

    # -- the loop over time -----------------------------------------------------------------
    def run(self, inputs, out=None):
        x, w, r, b = self._weights(inputs)
        steps, batch, _ = x.shape
        nd, hidden = self.num_directions, self.hidden
        check_tensor_size((steps, nd, batch, hidden))
        check_tensor_size((steps, batch, self.gates * hidden))
        lens = self._lengths(inputs, steps, batch)
        initial = [self._initial(inputs, 5, "initial_h", batch)]
        if self.states == 2:
            initial.append(self._initial(inputs, 6, "initial_c", batch))
        extra = self._extra_inputs(inputs)
        y = np.zeros((steps, nd, batch, hidden), np.float32)
        finals = [np.empty((nd, batch, hidden), np.float32) for _ in range(self.states)]
        for d in range(nd):
            reverse = self.direction == "reverse" or d == 1
            # All steps' input projections at once; bias of W, and of R where it adds.
            projected = x.reshape(steps * batch, -1) @ w[d].T
            projected = projected.reshape(steps, batch, -1)
            projected += self._input_bias(b[d])
            state = [s[d].copy() for s in initial]
            for t in (range(steps - 1, -1, -1) if reverse else range(steps)):
                new = self._cell(projected[t], state, r[d], b[d], self.functions[d],
                                 extra, d)
                if lens is None:
                    state = new
                    y[t, d] = new[0]
                else:
                    active = (t < lens)[:, None]
                    state = [np.where(active, n, s) for n, s in zip(new, state)]
                    y[t, d] = np.where(active, new[0], 0)
            for f, s in zip(finals, state):
                f[d] = s
        if lens is not None:
            for f in finals:        # onnxruntime: an empty sequence has no final state
                f[:, lens == 0] = 0
        if self.attrs["layout"] == 1:
            y = y.transpose(2, 0, 1, 3)
            finals = [f.transpose(1, 0, 2) for f in finals]
        outputs = [np.ascontiguousarray(y)] + [np.ascontiguousarray(f) for f in finals]
        return outputs[:len(self.node.outputs)]

    def _extra_inputs(self, inputs):
        return None

    def _gate_inputs(self, g):
        if self.clip is not None:
            np.clip(g, -self.clip, self.clip, out=g)
        return g

    def _input_bias(self, b):
        gh = self.gates * self.hidden
        return b[:gh] + b[gh:]


@register("RNN")
class RNN(_Recurrent):
    """``H_t = f(X_t W^T + H_{t-1} R^T + Wb + Rb)``."""

    gates = 1
    default_activations = ("Tanh",)

    def _cell(self, projected, state, r, b, fns, extra, d):
        g = self._gate_inputs(projected + state[0] @ r.T)
        return [fns[0](g)]


@register("GRU")
class GRU(_Recurrent):
    """Gates z, r, h (that order in W, R, B); ``linear_before_reset`` chooses where the
    reset gate applies."""

    attributes = dict(_Recurrent.attributes, linear_before_reset=0)
    gates = 3
    default_activations = ("Sigmoid", "Tanh")

    def _input_bias(self, b):
        h = self.hidden
        bias = b[:3 * h].copy()
        bias[:2 * h] += b[3 * h:5 * h]      # Rb of z and r adds like Wb; Rb of h does not
        return bias

    def _cell(self, projected, state, r, b, fns, extra, d):
        h = self.hidden
        f, g = fns
        prev = state[0]
        rb_h = b[5 * h:]
        zr = f(self._gate_inputs(projected[:, :2 * h] + prev @ r[:2 * h].T))
        z, reset = zr[:, :h], zr[:, h:]
        if self.attrs["linear_before_reset"]:
            hidden_in = projected[:, 2 * h:] + reset * (prev @ r[2 * h:].T + rb_h)
        else:
            hidden_in = projected[:, 2 * h:] + (reset * prev) @ r[2 * h:].T + rb_h
        candidate = g(self._gate_inputs(hidden_in))
        return [(1 - z) * candidate + z * prev]


@register("LSTM")
class LSTM(_Recurrent):
    """Gates i, o, f, c (that order in W, R, B); optional peepholes P (i, o, f);
    ``input_forget`` couples the forget gate to the input gate (f = 1 - i)."""

    attributes = dict(_Recurrent.attributes, input_forget=0)
    gates = 4
    default_activations = ("Sigmoid", "Tanh", "Tanh")
    states = 2

    def _extra_inputs(self, inputs):
        return self._optional(inputs, 7, (self.num_directions, 3 * self.hidden), "P")

    def _cell(self, projected, state, r, b, fns, extra, d):
        h = self.hidden
        f, g, act_h = fns
        prev_h, prev_c = state
        gates = projected + prev_h @ r.T
        i, o, forget, c = (gates[:, k * h:(k + 1) * h] for k in range(4))
        if extra is not None:       # peepholes: before the clip, as onnxruntime does
            i += extra[d, :h] * prev_c
            forget += extra[d, 2 * h:] * prev_c
        i = f(self._gate_inputs(i))
        forget = 1 - i if self.attrs["input_forget"] else f(self._gate_inputs(forget))
        cell = forget * prev_c + i * g(self._gate_inputs(c))
        if extra is not None:
            o += extra[d, h:2 * h] * cell
        o = f(self._gate_inputs(o))
        return [o * act_h(cell), cell]


@register("DynamicQuantizeLSTM", domain="com.microsoft")
class DynamicQuantizeLSTM(LSTM):
    """onnxruntime's quantized LSTM: int8/uint8 weights W (num_directions, input_size,
    4*hidden_size) and R (num_directions, hidden_size, 4*hidden_size), transposed against
    LSTM's, with scales and zero points per direction or per gate column (inputs 8-11).
    The weights are dequantized once and the layer runs in float32; onnxruntime also
    quantizes X and H at run time, so the two agree within that quantization's error."""

    attributes = {k: v for k, v in LSTM.attributes.items() if k != "layout"}
    required_inputs = 3

    def setup(self, consts):
        self.attrs["layout"] = 0
        super().setup(consts)
        self._dequantized = {}      # name -> (q, scale, zero point, float32 weights)
        # only constants: a computed tensor may come in the same (reused) array again
        self._constant = {name: all(i in consts for i in idx)
                          for name, idx in (("W", (1, 8, 9)), ("R", (2, 10, 11)))}

    def _weights(self, inputs):
        if len(inputs) < 12 or any(inputs[i] is None for i in range(8, 12)):
            self.fail("inputs W_scale, W_zero_point, R_scale and R_zero_point (8-11) are "
                      "required", InvalidModel)
        inputs = list(inputs)
        for i, (scale_i, zp_i, name) in ((1, (8, 9, "W")), (2, (10, 11, "R"))):
            q, scale, zp = inputs[i], inputs[scale_i], inputs[zp_i]
            # Constant weights are the same arrays on every run: dequantized once (a
            # bidirectional 512-wide layer's are 4 M values, milliseconds per run).
            cached = self._dequantized.get(name)
            if cached is not None and cached[0] is q and cached[1] is scale \
                    and cached[2] is zp:
                inputs[i] = cached[3]
                continue
            inputs[i] = self._dequantize(q, scale, zp, name)
            if self._constant[name]:
                self._dequantized[name] = (q, scale, zp, inputs[i])
        return super()._weights(inputs)

    def _dequantize(self, q, scale, zp, name):
        if not isinstance(q, np.ndarray) or q.dtype not in (np.int8, np.uint8) or \
                q.ndim != 3:
            self.fail(f"input {name} must be an int8 or uint8 tensor of rank 3, got "
                      f"{getattr(q, 'dtype', None)} {getattr(q, 'shape', None)}")
        columns = q.shape[2]
        scale = np.asarray(scale, np.float32)
        zp = np.asarray(zp)
        for what, arr in (("scale", scale), ("zero point", zp)):
            if arr.shape not in ((q.shape[0],), (q.shape[0], columns)):
                self.fail(f"{name} {what} has shape {arr.shape}, expected "
                          f"({q.shape[0]},) or ({q.shape[0]}, {columns})")
        scale = scale.reshape(q.shape[0], 1, -1)
        zp = zp.reshape(q.shape[0], 1, -1).astype(np.float32)
        return np.ascontiguousarray(((q.astype(np.float32) - zp) * scale).transpose(0, 2, 1))
