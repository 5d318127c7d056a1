"""The ONNX conformance suite (onnx.backend.test) over pyconv.backend.

Node tests: every case whose model uses only operators pyconv registers is included
(the list comes from the registry, so a new op brings its cases in); pytorch-converted
and pytorch-operator cases for the conv / pool / activation family. Every exclusion
below carries its reason.
"""
import re
import warnings

import onnx.backend.test
from onnx.backend.test.loader import load_model_tests

import pyconv.backend
from pyconv.ops import lookup

warnings.filterwarnings("ignore", category=RuntimeWarning)


def _supported_node_cases():
    """Name -> op types of every node case whose ops pyconv registers."""
    cases = {}
    for case in load_model_tests(kind="node"):
        model = case.model
        if model is None:
            continue
        if all(lookup(n.op_type, n.domain) is not None for n in model.graph.node):
            cases[case.name] = {n.op_type for n in model.graph.node}
    return cases


_SUPPORTED = _supported_node_cases()


_PYTORCH = [
    # pytorch-converted: convolutions, pooling, batch norm, activations, padding.
    "test_Conv1d", "test_Conv2d", "test_Conv3d", "test_ConvTranspose2d", "test_MaxPool",
    "test_AvgPool", "test_BatchNorm", "test_ELU", "test_LeakyReLU", "test_ReLU",
    "test_PReLU", "test_SELU", "test_Sigmoid", "test_Tanh", "test_Softmax",
    "test_LogSoftmax", "test_log_softmax", "test_softmax", "test_Softplus",
    "test_ConstantPad2d", "test_ZeroPad2d", "test_ReflectionPad2d",
    "test_ReplicationPad2d", "test_PixelShuffle", "test_Linear",
    # pytorch-operator
    "test_operator_conv", "test_operator_convtranspose", "test_operator_maxpool",
    "test_operator_add", "test_operator_basic", "test_operator_clip",
    "test_operator_concat2", "test_operator_exp", "test_operator_flatten",
    "test_operator_max", "test_operator_min", "test_operator_mm", "test_operator_pad",
    "test_operator_params", "test_operator_permute2", "test_operator_pow",
    "test_operator_reduced", "test_operator_selu", "test_operator_sqrt",
    "test_operator_view", "test_operator_addmm", "test_operator_chunk",
    "test_operator_index", "test_operator_symbolic_override",
]

# name pattern -> why it is excluded
EXCLUDED = {
    # dtypes
    r"BFLOAT16|bfloat16": "bfloat16 has no NumPy dtype",
    r"test_flexattention_(double|fp16)": "MatMul / Softmax on double or float16: the "
                                          "compute kernels are float32-only",
    r"FLOAT8|FLOAT4|INT4|UINT4|E4M3|E5M2|e4m3|e5m2|float8|float4|int4|INT2|UINT2|_u?int2_|"
    r"FLOAT8E8M0":
        "8/4/2-bit types are not supported",
    r"STRING|_string": "string tensors are not supported",
    r"test_identity_opt|test_identity_sequence|_optional|_sequence":
        "optional and sequence values are not supported (tensors only)",
    # training
    r"test_training_dropout(?!_zero_ratio)": "training-mode dropout (random mask): "
                                              "pyconv is inference-only",
    r"test_batchnorm_.*training": "training-mode batch norm: pyconv is inference-only",
}


def _excluded_pattern():
    return "|".join(f"(?:{p})" for p in EXCLUDED)


backend_test = onnx.backend.test.BackendTest(pyconv.backend, __name__)
for name in _SUPPORTED:
    backend_test.include(f"^{re.escape(name)}_cpu$")
for prefix in _PYTORCH:
    backend_test.include(f"^{prefix}.*_cpu$")
backend_test.exclude(_excluded_pattern())

globals().update(backend_test.test_cases)

# Ops added for real exports (issue 14) whose conformance cases must keep running: a
# registry or pattern change that drops them all fails here instead of going unnoticed.
COVERED = ["LayerNormalization", "GroupNormalization", "Tile", "Range", "ArgMax", "ArgMin",
           "TopK", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceSumSquare",
           "ReduceLogSum", "ReduceLogSumExp", "Floor", "Ceil", "Round", "Sign", "Less",
           "Greater", "LessOrEqual", "GreaterOrEqual", "Not", "And", "Or", "Xor", "NonZero",
           "Einsum", "CumSum", "GatherElements", "GatherND", "OneHot", "Mod", "IsNaN",
           "IsInf",
           # one implementation with pyconv.functional (issue 15)
           "InstanceNormalization", "DepthToSpace", "SpaceToDepth", "Resize"]


def test_new_ops_have_conformance_cases():
    excluded = re.compile(_excluded_pattern())
    counts = {op: 0 for op in COVERED}
    for name, op_types in _SUPPORTED.items():
        if not excluded.search(name):
            for t in op_types & counts.keys():
                counts[t] += 1
    assert not [op for op, k in counts.items() if k == 0], counts

