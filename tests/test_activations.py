"""The activation registry (pyconv._activations) agrees with the C enum of the kernels,
and the ONNX operators and the ConvPlan take their names and defaults from it. (Every
entry fused vs unfused: tests/graph/test_passes.py.)"""
import os
import re

import numpy as np
import pytest
from onnx import helper

import pyconv
import pyconv.functional as F
from pyconv._activations import ACTIVATIONS, ONNX_ACTIVATIONS
from pyconv._ext import gemm
from pyconv.errors import InvalidArgument
from pyconv.ops import lookup
from tests.graph import _build as B

SGEMM_H = os.path.join(os.path.dirname(__file__), "..", "src", "kernels", "sgemm.h")


def c_enum():
    """``enum pyconv_act`` as written in sgemm.h: {'relu': 1, ...}, without the count."""
    with open(SGEMM_H) as f:
        body = re.search(r"enum pyconv_act\s*\{(.*?)\};", f.read(), re.S).group(1)
    members = dict(re.findall(r"PYCONV_ACT_(\w+)\s*=\s*(\d+)", body))
    count = int(members.pop("COUNT"))
    enum = {name.lower(): int(value) for name, value in members.items()}
    assert sorted(enum.values()) == list(range(count))
    return enum


def test_registry_and_c_enum_agree():
    enum = c_enum()
    assert {a.name: a.code for a in ACTIVATIONS.values()} == enum
    assert gemm.ACTIVATIONS == enum        # the Cython mirror, by name from the extern enum


@pytest.mark.parametrize("act", ONNX_ACTIVATIONS.values(), ids=lambda a: a.onnx_type)
def test_onnx_operators_take_the_registry_defaults(rng, act):
    op = lookup(act.onnx_type)
    if not act.takes_inputs(99):
        assert op.attributes == act.onnx_attributes
    x = B.rand(rng, 2, 3, 4)
    m = B.model([helper.make_node(act.onnx_type, ["x"], ["y"])], [("x", [2, 3, 4])],
                [("y", [2, 3, 4])])
    got = pyconv.InferenceSession(m.SerializeToString()).run(None, {"x": x})[0]
    want = gemm.apply_activation(x.copy(), act.name, *act.params())
    np.testing.assert_array_equal(got, want)


def test_params_take_onnx_defaults_for_absent_or_none_values():
    act = ACTIVATIONS["hardsigmoid"]
    assert act.params() == (0.2, 0.5)
    assert act.params({"alpha": 0.3, "beta": None}) == (0.3, 0.5)
    assert ACTIVATIONS["clip"].params({"max": 6}) == (-np.inf, 6.0)
    assert ACTIVATIONS["relu"].params({"alpha": 3.0}) == (0.0, 0.0)


def test_conv_plan_checks_the_activation_name(rng):
    with pytest.raises(InvalidArgument, match=r"conv: activation must be one of .*'gelu'"):
        F.ConvPlan(B.rand(rng, 2, 2, 1, 1), activation="gelu")
