#!/usr/bin/env python3
"""Generate the committed ONNX test fixtures for distill.

    python3 tools/make_fixtures.py                 # regenerate everything under Tests/Fixtures/
    python3 tools/make_fixtures.py --only NAME     # regenerate the valid model NAME (build_NAME) alone

Writes (after deleting them first):
  Tests/Fixtures/models/NAME/model.onnx              valid models
  Tests/Fixtures/models/NAME/test_data_set_N/*.pb    reference inputs/outputs (ONNX backend-test layout,
                                                     outputs computed by onnxruntime)
  Tests/Fixtures/hostile/*.onnx                      crafted files the importer must reject
  Tests/Fixtures/hostile/manifest.json               [{"file", "rule", "expect", ["setup"]}]

Requires onnx, onnxruntime and numpy. Output is deterministic (fixed seeds, no timestamps).
"""

import json
import os
import shutil
import struct
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
FIXTURES = os.path.join(ROOT, "Tests", "Fixtures")
MODELS = os.path.join(FIXTURES, "models")
HOSTILE = os.path.join(FIXTURES, "hostile")

OPSET = 17
IR_VERSION = 8
PRODUCER = "distill-fixtures"
PRODUCER_VERSION = "1.0"


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------

def rng_for(name):
    """A generator seeded from the fixture name, so fixtures don't depend on generation order."""
    seed = sum((i + 1) * b for i, b in enumerate(name.encode())) % (2**31)
    return np.random.default_rng(seed)


def f32(rng, *shape, scale=0.2):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def init(name, array):
    return numpy_helper.from_array(np.ascontiguousarray(array), name=name)


def vi(name, elem_type, shape):
    return helper.make_tensor_value_info(name, elem_type, shape)


def make_model(graph, opsets=None, **kw):
    opsets = opsets or [helper.make_opsetid("", OPSET)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name=PRODUCER, **kw)
    model.ir_version = IR_VERSION
    model.producer_version = PRODUCER_VERSION
    return model


def ort_run(model_path, feeds):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(model_path, so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return names, sess.run(names, feeds)


def save_test_data(model_dir, model, inputs, index=0):
    """inputs: list of numpy arrays in graph-input order (graph inputs that are not initializers)."""
    init_names = {t.name for t in model.graph.initializer}
    in_names = [i.name for i in model.graph.input if i.name not in init_names]
    assert len(in_names) == len(inputs), (in_names, len(inputs))
    feeds = dict(zip(in_names, inputs))
    out_names, outs = ort_run(os.path.join(model_dir, "model.onnx"), feeds)
    assert out_names == [o.name for o in model.graph.output]
    ds = os.path.join(model_dir, "test_data_set_%d" % index)
    os.makedirs(ds, exist_ok=True)
    for i, (n, a) in enumerate(zip(in_names, inputs)):
        with open(os.path.join(ds, "input_%d.pb" % i), "wb") as fh:
            fh.write(numpy_helper.from_array(a, name=n).SerializeToString())
    for i, (n, a) in enumerate(zip(out_names, outs)):
        with open(os.path.join(ds, "output_%d.pb" % i), "wb") as fh:
            fh.write(numpy_helper.from_array(np.asarray(a), name=n).SerializeToString())
    return outs


def write_valid(name, model, inputs_list, full_check=True, external=False):
    """Check, save and (optionally) produce reference data for a valid model."""
    model_dir = os.path.join(MODELS, name)
    os.makedirs(model_dir, exist_ok=True)
    path = os.path.join(model_dir, "model.onnx")
    onnx.checker.check_model(model, full_check=full_check)
    if external:
        onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                        location="external_data.bin", size_threshold=0, convert_attribute=False)
        onnx.checker.check_model(path, full_check=full_check)
    else:
        with open(path, "wb") as fh:
            fh.write(model.SerializeToString())
    for i, inputs in enumerate(inputs_list):
        save_test_data(model_dir, model, inputs, i)
    return path


# ----------------------------------------------------------------------------------------------
# valid models
# ----------------------------------------------------------------------------------------------

def build_tiny_fpn():
    rng = rng_for("tiny_fpn")
    nodes, inits, vinfo = [], [], []
    F = TensorProto.FLOAT

    def conv_bn_relu(prefix, x, cin, cout, stride):
        w, g, b, m, v = (prefix + s for s in ("/conv/weight", "/bn/scale", "/bn/bias", "/bn/mean", "/bn/var"))
        inits.extend([
            init(w, f32(rng, cout, cin, 3, 3, scale=0.3)),
            init(g, (1.0 + f32(rng, cout, scale=0.1))),
            init(b, f32(rng, cout, scale=0.1)),
            init(m, f32(rng, cout, scale=0.1)),
            init(v, (0.5 + rng.random(cout)).astype(np.float32)),
        ])
        nodes.append(helper.make_node("Conv", [x, w], [prefix + "/conv_out"], name=prefix + "/conv",
                                      kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[stride, stride]))
        nodes.append(helper.make_node("BatchNormalization", [prefix + "/conv_out", g, b, m, v],
                                      [prefix + "/bn_out"], name=prefix + "/bn", epsilon=1e-5))
        nodes.append(helper.make_node("Relu", [prefix + "/bn_out"], [prefix + "/out"], name=prefix + "/relu"))
        return prefix + "/out"

    # backbone: stem (stride 2) then three stages at strides 4, 8, 16
    stem = conv_bn_relu("backbone/stem", "images", 3, 8, 2)          # 32x32
    c3 = conv_bn_relu("backbone/conv1", stem, 8, 16, 2)               # 16x16, stride 4
    c4 = conv_bn_relu("backbone/conv2", c3, 16, 24, 2)                # 8x8,  stride 8
    c5 = conv_bn_relu("backbone/conv3", c4, 24, 32, 2)                # 4x4,  stride 16
    vinfo += [vi(stem, F, [1, 8, 32, 32]), vi(c3, F, [1, 16, 16, 16]),
              vi(c4, F, [1, 24, 8, 8]), vi(c5, F, [1, 32, 4, 4])]

    # laterals
    lat = {}
    for lvl, (c, cin) in {3: (c3, 16), 4: (c4, 24), 5: (c5, 32)}.items():
        w, b = "fpn/lateral%d/weight" % lvl, "fpn/lateral%d/bias" % lvl
        inits += [init(w, f32(rng, 16, cin, 1, 1, scale=0.3)), init(b, f32(rng, 16, scale=0.05))]
        lat[lvl] = "fpn/lateral%d_out" % lvl
        nodes.append(helper.make_node("Conv", [c, w, b], [lat[lvl]], name="fpn/lateral%d" % lvl, kernel_shape=[1, 1]))

    # top-down
    inits.append(init("fpn/upsample_scales", np.array([1, 1, 2, 2], np.float32)))
    merged = {5: lat[5]}
    for lvl in (4, 3):
        up = "fpn/up%d_out" % lvl
        nodes.append(helper.make_node("Resize", [merged[lvl + 1], "", "fpn/upsample_scales"], [up],
                                      name="fpn/up%d" % lvl, mode="nearest"))
        merged[lvl] = "fpn/merge%d_out" % lvl
        nodes.append(helper.make_node("Add", [lat[lvl], up], [merged[lvl]], name="fpn/merge%d" % lvl))
    vinfo += [vi("fpn/up3_out", F, [1, 16, 16, 16]), vi("fpn/merge4_out", F, [1, 16, 8, 8])]

    pyramid = {}
    for lvl in (3, 4, 5):
        w, b = "fpn/p%d/weight" % lvl, "fpn/p%d/bias" % lvl
        inits += [init(w, f32(rng, 16, 16, 3, 3, scale=0.15)), init(b, f32(rng, 16, scale=0.05))]
        pyramid[lvl] = "fpn/p%d_out" % lvl
        nodes.append(helper.make_node("Conv", [merged[lvl], w, b], [pyramid[lvl]], name="fpn/p%d" % lvl,
                                      kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
    vinfo += [vi(pyramid[3], F, [1, 16, 16, 16]), vi(pyramid[4], F, [1, 16, 8, 8]), vi(pyramid[5], F, [1, 16, 4, 4])]

    # shared head: the same initializers are used by every level
    inits += [init("head/cls/weight", f32(rng, 3, 16, 3, 3, scale=0.1)),
              init("head/cls/bias", np.full(3, -1.0, np.float32)),
              init("head/reg/weight", f32(rng, 4, 16, 3, 3, scale=0.1)),
              init("head/reg/bias", np.zeros(4, np.float32)),
              init("head/cls_shape", np.array([1, -1, 3], np.int64)),
              init("head/reg_shape", np.array([1, -1, 4], np.int64))]
    cls_flat, reg_flat = [], []
    for lvl in (3, 4, 5):
        for kind, c in (("cls", 3), ("reg", 4)):
            base = "head/%s/p%d" % (kind, lvl)
            nodes.append(helper.make_node("Conv", [pyramid[lvl], "head/%s/weight" % kind, "head/%s/bias" % kind],
                                          [base + "_out"], name=base, kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
            nodes.append(helper.make_node("Transpose", [base + "_out"], [base + "_nhwc"], name=base + "/transpose",
                                          perm=[0, 2, 3, 1]))
            nodes.append(helper.make_node("Reshape", [base + "_nhwc", "head/%s_shape" % kind], [base + "_flat"],
                                          name=base + "/reshape"))
            (cls_flat if kind == "cls" else reg_flat).append(base + "_flat")
    nodes.append(helper.make_node("Concat", cls_flat, ["head/cls_logits"], name="head/cls_concat", axis=1))
    nodes.append(helper.make_node("Sigmoid", ["head/cls_logits"], ["scores"], name="head/sigmoid",
                                  doc_string="Per-anchor class probabilities."))
    nodes.append(helper.make_node("Concat", reg_flat, ["boxes"], name="head/reg_concat", axis=1))
    vinfo.append(vi("head/cls_logits", F, [1, 336, 3]))

    graph = helper.make_graph(nodes, "tiny_fpn",
                              [vi("images", F, [1, 3, 64, 64])],
                              [vi("scores", F, [1, 336, 3]), vi("boxes", F, [1, 336, 4])],
                              initializer=inits, value_info=vinfo,
                              doc_string="Tiny FPN detector: stem + 3 stages, top-down FPN, shared head.")
    model = make_model(graph, doc_string="distill test fixture: FPN-like detector with a shared head.")
    model.domain = "dev.distill.fixtures"
    model.model_version = 3
    helper.set_model_props(model, {"author": "distill", "task": "detection", "strides": "4,8,16",
                                   "classes": "cat,dog,bird"})
    x = rng.random((1, 3, 64, 64), dtype=np.float32)
    return model, [[x]]


def build_constant_weights():
    rng = rng_for("constant_weights")
    F = TensorProto.FLOAT

    def const(out, array):
        return helper.make_node("Constant", [], [out], name=out + "/const",
                                value=numpy_helper.from_array(np.ascontiguousarray(array), name=out))

    nodes = [
        const("conv_w", f32(rng, 8, 3, 3, 3, scale=0.4)),
        const("conv_b", f32(rng, 8, scale=0.1)),
        helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["conv_out"], name="conv",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("HardSwish", ["conv_out"], ["hswish_out"], name="hardswish"),
        # Clip min via value_float (scalar), max via a scalar tensor
        helper.make_node("Constant", [], ["clip_min"], name="clip_min/const", value_float=0.0),
        const("clip_max", np.array(6.0, np.float32)),
        helper.make_node("Clip", ["hswish_out", "clip_min", "clip_max"], ["clip_out"], name="clip"),
        helper.make_node("GlobalAveragePool", ["clip_out"], ["se_pool"], name="se/pool"),
        helper.make_node("HardSigmoid", ["se_pool"], ["se_gate"], name="se/hardsigmoid", alpha=0.2, beta=0.5),
        helper.make_node("Mul", ["clip_out", "se_gate"], ["se_out"], name="se/mul"),
        helper.make_node("GlobalAveragePool", ["se_out"], ["pool_out"], name="pool"),
        helper.make_node("Flatten", ["pool_out"], ["flat"], name="flatten", axis=1),
        const("fc_w", f32(rng, 5, 8, scale=0.5)),
        const("fc_b", f32(rng, 5, scale=0.1)),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["fc_out"], name="fc", transB=1, alpha=1.0, beta=1.0),
        helper.make_node("Constant", [], ["out_shape"], name="out_shape/const", value_ints=[1, -1]),
        helper.make_node("Reshape", ["fc_out", "out_shape"], ["logits"], name="reshape"),
    ]
    graph = helper.make_graph(nodes, "constant_weights", [vi("x", F, [1, 3, 16, 16])], [vi("logits", F, [1, 5])])
    model = make_model(graph)
    x = rng.standard_normal((1, 3, 16, 16)).astype(np.float32)
    return model, [[x]]


def build_external_data():
    rng = rng_for("external_data")
    F = TensorProto.FLOAT
    inits = [init("conv1.weight", f32(rng, 4, 3, 3, 3)), init("conv1.bias", f32(rng, 4, scale=0.1)),
             init("conv2.weight", f32(rng, 2, 4, 1, 1)), init("conv2.bias", f32(rng, 2, scale=0.1))]
    nodes = [helper.make_node("Conv", ["x", "conv1.weight", "conv1.bias"], ["c1"], name="conv1",
                              kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "conv2.weight", "conv2.bias"], ["y"], name="conv2", kernel_shape=[1, 1])]
    graph = helper.make_graph(nodes, "external_data", [vi("x", F, [1, 3, 8, 8])], [vi("y", F, [1, 2, 8, 8])],
                              initializer=inits)
    model = make_model(graph)
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    return model, [[x]]


def build_if_subgraph():
    F = TensorProto.FLOAT
    # then: x + outer_bias (outer-scope initializer); else: x * else_scale (branch-local initializer)
    then_g = helper.make_graph(
        [helper.make_node("Add", ["x", "outer_bias"], ["then_out"], name="then/add")],
        "then_branch", [], [vi("then_out", F, [2, 3])])
    else_g = helper.make_graph(
        [helper.make_node("Mul", ["x", "else_scale"], ["else_out"], name="else/mul")],
        "else_branch", [], [vi("else_out", F, [2, 3])],
        initializer=[init("else_scale", np.array([-1.0, 0.5, 2.0], np.float32))])
    nodes = [
        helper.make_node("ReduceSum", ["x"], ["sum"], name="sum", keepdims=0),
        helper.make_node("Greater", ["sum", "zero"], ["cond"], name="positive"),
        helper.make_node("If", ["cond"], ["y"], name="branch", then_branch=then_g, else_branch=else_g),
    ]
    graph = helper.make_graph(nodes, "if_subgraph", [vi("x", F, [2, 3])], [vi("y", F, [2, 3])],
                              initializer=[init("zero", np.array(0.0, np.float32)),
                                           init("outer_bias", np.array([[1, 2, 3], [4, 5, 6]], np.float32))])
    model = make_model(graph)
    pos = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 0.25]], np.float32)   # sum > 0 -> then branch
    neg = -pos                                                          # sum < 0 -> else branch
    return model, [[pos], [neg]]


def build_float16_init():
    rng = rng_for("float16_init")
    F = TensorProto.FLOAT
    w16 = (rng.standard_normal((4, 3)) * 0.5).astype(np.float16)
    b16_vals = [0.5, -1.25, 3.0]
    inits = [
        numpy_helper.from_array(w16, name="w_f16_raw"),                                          # raw_data
        helper.make_tensor("b_f16_typed", TensorProto.FLOAT16, [3], b16_vals, raw=False),       # int32_data
    ]
    assert inits[0].HasField("raw_data") and len(inits[1].int32_data) == 3
    nodes = [helper.make_node("Cast", ["w_f16_raw"], ["w"], name="cast_w", to=TensorProto.FLOAT),
             helper.make_node("Cast", ["b_f16_typed"], ["b"], name="cast_b", to=TensorProto.FLOAT),
             helper.make_node("MatMul", ["x", "w"], ["xw"], name="matmul"),
             helper.make_node("Add", ["xw", "b"], ["y"], name="add")]
    graph = helper.make_graph(nodes, "float16_init", [vi("x", F, [2, 4])], [vi("y", F, [2, 3])], initializer=inits)
    model = make_model(graph)
    x = rng.standard_normal((2, 4)).astype(np.float32)
    return model, [[x]]


def bf16_bits(values):
    """float32 -> bfloat16 bit patterns (values chosen exactly representable, so truncation is exact)."""
    bits = np.array(values, np.float32).view(np.uint32) >> 16
    return bits.astype(np.uint16)


ALL_DTYPE_VALUES = [
    # (suffix, TensorProto type, numpy dtype or None, values [2,3])
    ("float32", TensorProto.FLOAT, np.float32, [1.5, -2.25, 0.0, 3.4028235e38, -1e-7, 100.0]),
    ("float16", TensorProto.FLOAT16, np.float16, [1.5, -2.25, 0.0, 65504.0, -0.0009765625, 100.0]),
    ("float64", TensorProto.DOUBLE, np.float64, [1.5, -2.25, 0.0, 1e300, -1e-300, 3.141592653589793]),
    ("bfloat16", TensorProto.BFLOAT16, None, [1.5, -2.25, 0.0, 3.0, -0.15625, 256.0]),
    ("int8", TensorProto.INT8, np.int8, [-128, 127, 0, -1, 1, 42]),
    ("int16", TensorProto.INT16, np.int16, [-32768, 32767, 0, -1, 1, 1234]),
    ("int32", TensorProto.INT32, np.int32, [-2147483648, 2147483647, 0, -1, 1, 123456]),
    ("int64", TensorProto.INT64, np.int64, [-9223372036854775808, 9223372036854775807, 0, -1, 1, 1 << 40]),
    ("uint8", TensorProto.UINT8, np.uint8, [0, 255, 1, 128, 7, 42]),
    ("uint16", TensorProto.UINT16, np.uint16, [0, 65535, 1, 32768, 7, 4242]),
    ("uint32", TensorProto.UINT32, np.uint32, [0, 4294967295, 1, 2147483648, 7, 424242]),
    ("uint64", TensorProto.UINT64, np.uint64, [0, 18446744073709551615, 1, 9223372036854775808, 7, 1 << 50]),
    ("bool", TensorProto.BOOL, np.bool_, [True, False, True, True, False, False]),
]


def build_all_dtypes():
    F = TensorProto.FLOAT
    inits = []
    for suffix, ttype, dtype, vals in ALL_DTYPE_VALUES:
        if dtype is None:  # bfloat16
            raw = helper.make_tensor("raw_" + suffix, ttype, [2, 3], bf16_bits(vals).tobytes(), raw=True)
        else:
            raw = numpy_helper.from_array(np.array(vals, dtype=dtype).reshape(2, 3), name="raw_" + suffix)
        typed = helper.make_tensor("typed_" + suffix, ttype, [2, 3], vals, raw=False)
        assert raw.HasField("raw_data") and not typed.HasField("raw_data"), suffix
        assert raw.data_type == ttype and typed.data_type == ttype
        inits += [raw, typed]
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"], name="identity")], "all_dtypes",
                              [vi("x", F, [2])], [vi("y", F, [2])], initializer=inits)
    model = make_model(graph, opsets=[helper.make_opsetid("", OPSET), helper.make_opsetid("com.example", 1)])
    helper.set_model_props(model, {"purpose": "dtype coverage", "note": "initializers are intentionally unused"})
    x = np.array([1.0, -2.0], np.float32)
    return model, [[x]]


def build_attributes_custom_op():
    F = TensorProto.FLOAT
    sub_a = helper.make_graph([helper.make_node("Neg", ["a_in"], ["a_out"])], "sub_a",
                              [vi("a_in", F, [1])], [vi("a_out", F, [1])])
    sub_b = helper.make_graph([helper.make_node("Abs", ["b_in"], ["b_out"])], "sub_b",
                              [vi("b_in", F, [1])], [vi("b_out", F, [1])])
    sub_c = helper.make_graph([helper.make_node("Relu", ["c_in"], ["c_out"])], "sub_c",
                              [vi("c_in", F, [1])], [vi("c_out", F, [1])])
    tensor = helper.make_tensor("attr_t", TensorProto.FLOAT, [2], [1.0, 2.0])
    tensors = [helper.make_tensor("attr_ts0", TensorProto.INT64, [3], [1, 2, 3]),
               numpy_helper.from_array(np.array([[0.5, 0.25]], np.float32), name="attr_ts1")]

    def sparse(name, values, indices, dims):
        return helper.make_sparse_tensor(
            helper.make_tensor(name + "_values", TensorProto.FLOAT, [len(values)], values),
            helper.make_tensor(name + "_indices", TensorProto.INT64, [len(indices)], indices), dims)

    attrs = [
        helper.make_attribute("alpha", 0.125),
        helper.make_attribute("count", -7),
        helper.make_attribute("mode", "nearest"),
        helper.make_attribute("weights", tensor),
        helper.make_attribute("body", sub_a),
        helper.make_attribute("scales", [1.0, 0.5, -2.0]),
        helper.make_attribute("axes", [0, -1, 3]),
        helper.make_attribute("labels", ["cat", "dog", ""]),
        helper.make_attribute("tables", tensors),
        helper.make_attribute("branches", [sub_b, sub_c]),
        helper.make_attribute("mask", sparse("attr_sp", [3.0, 4.0], [1, 5], [8])),
        helper.make_attribute("masks", [sparse("attr_sps0", [1.0], [0], [4]),
                                        sparse("attr_sps1", [2.0, 5.0], [0, 2], [3])]),
        helper.make_attribute("out_type", helper.make_tensor_type_proto(TensorProto.FLOAT, [2, 2])),
        helper.make_attribute("in_types", [helper.make_tensor_type_proto(TensorProto.INT64, ["n"]),
                                           helper.make_tensor_type_proto(TensorProto.BOOL, [])]),
    ]
    my_op = helper.make_node("MyOp", ["x"], ["m"], name="custom", domain="com.example",
                             doc_string="Carries one attribute of every AttributeProto kind.")
    my_op.attribute.extend(attrs)
    kinds = {a.type for a in my_op.attribute}
    assert kinds == set(range(1, 15)), sorted(kinds)
    attrs[0].doc_string = "a float attribute with its own doc_string"

    # model-local function: LeakyRelu(X + X) with alpha forwarded from the caller (ref_attr_name)
    leaky = helper.make_node("LeakyRelu", ["t"], ["Y"])
    ref = onnx.AttributeProto()
    ref.name, ref.ref_attr_name, ref.type = "alpha", "alpha", onnx.AttributeProto.FLOAT
    leaky.attribute.append(ref)
    default_alpha = helper.make_attribute("alpha", 0.01)
    fn = helper.make_function("com.example.fn", "DoubleLeaky", ["X"], ["Y"],
                              [helper.make_node("Add", ["X", "X"], ["t"]), leaky],
                              [helper.make_opsetid("", OPSET)], attribute_protos=[default_alpha],
                              doc_string="Y = LeakyRelu(2X)")
    call = helper.make_node("DoubleLeaky", ["m"], ["y"], name="call_fn", domain="com.example.fn", alpha=0.2)

    graph = helper.make_graph([my_op, call], "attributes_custom_op", [vi("x", F, [2, 2])], [vi("y", F, [2, 2])])
    model = make_model(graph, opsets=[helper.make_opsetid("", OPSET), helper.make_opsetid("com.example", 1),
                                      helper.make_opsetid("com.example.fn", 1)])
    model.functions.append(fn)
    return model


def build_symbolic_dims():
    rng = rng_for("symbolic_dims")
    F = TensorProto.FLOAT
    inits = [init("c1.w", f32(rng, 8, 3, 3, 3)), init("c1.b", f32(rng, 8, scale=0.1)),
             init("c2.w", f32(rng, 8, 8, 3, 3, scale=0.15)), init("c2.b", f32(rng, 8, scale=0.1)),
             init("c3.w", f32(rng, 4, 8, 1, 1, scale=0.3)), init("c3.b", f32(rng, 4, scale=0.1)),
             init("up_scales", np.array([1, 1, 2, 2], np.float32))]
    nodes = [helper.make_node("Conv", ["input", "c1.w", "c1.b"], ["c1"], name="conv1", kernel_shape=[3, 3],
                              pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "c2.w", "c2.b"], ["c2"], name="conv2", kernel_shape=[3, 3],
                              pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             helper.make_node("Resize", ["r2", "", "up_scales"], ["up"], name="upsample", mode="linear",
                              coordinate_transformation_mode="half_pixel"),
             helper.make_node("Conv", ["up", "c3.w", "c3.b"], ["output"], name="conv3", kernel_shape=[1, 1])]
    graph = helper.make_graph(nodes, "symbolic_dims", [vi("input", F, ["batch", 3, "height", "width"])],
                              [vi("output", F, ["batch", 4, "out_height", "out_width"])], initializer=inits,
                              value_info=[vi("r1", F, ["batch", 8, "height", "width"])])
    model = make_model(graph)
    x = rng.standard_normal((2, 3, 12, 16)).astype(np.float32)
    return model, [[x]]


def build_negative_dims():
    """A PP-OCR-style direction classifier as older paddle2onnx exports it: opset 11, and -1 written
    as dim_value for every dynamic dimension of the declared input, output and value_info."""
    rng = rng_for("negative_dims")
    F = TensorProto.FLOAT
    inits = [init("conv1_weights", f32(rng, 8, 3, 3, 3, scale=0.3)),
             init("bn_scale", (1 + f32(rng, 8, scale=0.1)).astype(np.float32)), init("bn_offset", f32(rng, 8, scale=0.1)),
             init("bn_mean", f32(rng, 8, scale=0.1)), init("bn_variance", (1 + np.abs(f32(rng, 8, scale=0.2))).astype(np.float32)),
             init("fc_weights", f32(rng, 8, 2, scale=0.5)), init("fc_offset", f32(rng, 2, scale=0.1))]
    nodes = [helper.make_node("Conv", ["x", "conv1_weights"], ["conv1_out"], name="conv2d_0", kernel_shape=[3, 3],
                              pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("BatchNormalization", ["conv1_out", "bn_scale", "bn_offset", "bn_mean", "bn_variance"],
                              ["bn_out"], name="batch_norm_0", epsilon=1e-5),
             helper.make_node("Relu", ["bn_out"], ["act_out"], name="relu_0"),
             helper.make_node("GlobalAveragePool", ["act_out"], ["pool_out"], name="pool2d_0"),
             helper.make_node("Flatten", ["pool_out"], ["flat"], name="flatten_0", axis=1),
             helper.make_node("Gemm", ["flat", "fc_weights", "fc_offset"], ["logits"], name="linear_0"),
             helper.make_node("Softmax", ["logits"], ["softmax_0.tmp_0"], name="softmax_0", axis=1)]
    graph = helper.make_graph(nodes, "paddle-onnx", [vi("x", F, [-1, 3, -1, -1])],
                              [vi("softmax_0.tmp_0", F, [-1, 2])], initializer=inits,
                              value_info=[vi("act_out", F, [-1, 8, -1, -1])])
    model = make_model(graph, opsets=[helper.make_opsetid("", 11)])
    model.producer_name = "PaddlePaddle"
    x = rng.random((2, 3, 48, 96), dtype=np.float32)
    return model, [[x]]


def make_models():
    if os.path.isdir(MODELS):
        shutil.rmtree(MODELS)
    os.makedirs(MODELS)
    for name, builder in [("tiny_fpn", build_tiny_fpn), ("constant_weights", build_constant_weights),
                          ("if_subgraph", build_if_subgraph), ("float16_init", build_float16_init),
                          ("all_dtypes", build_all_dtypes), ("symbolic_dims", build_symbolic_dims),
                          ("negative_dims", build_negative_dims)]:
        model, inputs = builder()
        write_valid(name, model, inputs, full_check=name != "negative_dims")

    model, inputs = build_external_data()
    write_valid("external_data", model, inputs, external=True)
    check_external_layout()

    model = build_attributes_custom_op()
    model_dir = os.path.join(MODELS, "attributes_custom_op")
    os.makedirs(model_dir)
    onnx.checker.check_model(model)  # full_check would need a schema for com.example::MyOp
    with open(os.path.join(model_dir, "model.onnx"), "wb") as fh:
        fh.write(model.SerializeToString())
    # round-trip sanity
    again = onnx.load(os.path.join(model_dir, "model.onnx"))
    assert again == model


def check_external_layout():
    d = os.path.join(MODELS, "external_data")
    m = onnx.load(os.path.join(d, "model.onnx"), load_external_data=False)
    offsets = []
    for t in m.graph.initializer:
        assert t.data_location == TensorProto.EXTERNAL and not t.raw_data, t.name
        kv = {e.key: e.value for e in t.external_data}
        assert kv["location"] == "external_data.bin", kv
        offsets.append(int(kv.get("offset", "0")))
    assert sum(1 for o in offsets if o > 0) >= 2, offsets
    assert os.path.getsize(os.path.join(d, "external_data.bin")) > 0


# ----------------------------------------------------------------------------------------------
# hostile files
# ----------------------------------------------------------------------------------------------

def varint(n):
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def key(field, wire):
    return varint((field << 3) | wire)


def fld_varint(field, n):
    return key(field, 0) + varint(n)


def fld_bytes(field, data):
    if isinstance(data, str):
        data = data.encode()
    return key(field, 2) + varint(len(data)) + data


def simple_model(nodes=None, inputs=None, outputs=None, inits=None, name="hostile"):
    F = TensorProto.FLOAT
    nodes = nodes if nodes is not None else [helper.make_node("Relu", ["x"], ["y"], name="relu")]
    inputs = inputs if inputs is not None else [vi("x", F, [1, 4])]
    outputs = outputs if outputs is not None else [vi("y", F, [1, 4])]
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=inits or [])
    return make_model(graph)


def model_with_initializer(tensor):
    """x + tensor; the tensor itself carries the defect."""
    F = TensorProto.FLOAT
    return simple_model(nodes=[helper.make_node("Add", ["x", tensor.name], ["y"], name="add")],
                        inputs=[vi("x", F, [1])], outputs=[vi("y", F, ["d%d" % i for i in range(len(tensor.dims))])],
                        inits=[tensor])


def external_model(entries):
    t = TensorProto()
    t.name = "w"
    t.data_type = TensorProto.FLOAT
    t.dims.extend([4])
    t.data_location = TensorProto.EXTERNAL
    for k, v in entries:
        e = t.external_data.add()
        e.key, e.value = k, v
    F = TensorProto.FLOAT
    return simple_model(nodes=[helper.make_node("Add", ["x", "w"], ["y"], name="add")],
                        inputs=[vi("x", F, [4])], outputs=[vi("y", F, [4])], inits=[t])


def deep_nesting_bytes(depth):
    """ModelProto{ir_version, opset, graph{node{If, attribute{then_branch: graph{node{...}}}}}} nested `depth` deep.

    Apart from the depth the model is well formed: graph inputs c (bool scalar) and x (float [1]); every If
    reads the outer-scope c, every branch produces its own output name, the innermost graph is Identity(x).
    """
    def value_info(name, elem_type, dims):
        shape = b"".join(fld_bytes(1, fld_varint(1, d)) for d in dims)            # TensorShapeProto.dim
        tensor_type = fld_varint(1, elem_type) + fld_bytes(2, shape)              # TypeProto.Tensor
        return fld_bytes(1, name) + fld_bytes(2, fld_bytes(1, tensor_type))       # ValueInfoProto{name, type}

    def node(inputs, outputs, name, op_type, attrs=b""):
        return b"".join(fld_bytes(1, i) for i in inputs) + b"".join(fld_bytes(2, o) for o in outputs) + \
            fld_bytes(3, name) + fld_bytes(4, op_type) + attrs

    def graph_attr(name, g):
        return fld_bytes(5, fld_bytes(1, name) + fld_bytes(6, g) + fld_varint(20, 5))  # type = GRAPH

    F, B = TensorProto.FLOAT, TensorProto.BOOL
    out = "v%d" % depth
    graph = fld_bytes(1, node(["x"], [out], "leaf", "Identity")) + fld_bytes(2, "g%d" % depth) + \
        fld_bytes(12, value_info(out, F, [1]))
    for level in range(depth - 1, -1, -1):
        out = "v%d" % level
        else_out = "e%d" % (level + 1)
        else_graph = fld_bytes(1, node(["x"], [else_out], "else_%d" % level, "Identity")) + \
            fld_bytes(2, "else_%d" % level) + fld_bytes(12, value_info(else_out, F, [1]))
        attrs = graph_attr("then_branch", graph) + graph_attr("else_branch", else_graph)
        graph = fld_bytes(1, node(["c"], [out], "if_%d" % level, "If", attrs)) + fld_bytes(2, "level_%d" % level)
        if level == 0:
            graph += fld_bytes(11, value_info("c", B, [])) + fld_bytes(11, value_info("x", F, [1]))
        graph += fld_bytes(12, value_info(out, F, [1]))
    opset = fld_bytes(1, "") + fld_varint(2, OPSET)
    return fld_varint(1, IR_VERSION) + fld_bytes(2, PRODUCER) + fld_bytes(7, graph) + fld_bytes(8, opset)


def make_hostile():
    if os.path.isdir(HOSTILE):
        shutil.rmtree(HOSTILE)
    os.makedirs(HOSTILE)
    manifest = []
    F = TensorProto.FLOAT

    def emit(fname, data, rule, expect, setup=None):
        if isinstance(data, onnx.ModelProto):
            data = data.SerializeToString()
        with open(os.path.join(HOSTILE, fname), "wb") as fh:
            fh.write(data)
        entry = {"file": fname, "rule": rule, "expect": expect}
        if setup:
            entry["setup"] = setup
        manifest.append(entry)

    # --- byte-level damage -------------------------------------------------------------------
    rng = rng_for("truncated")
    big = simple_model(nodes=[helper.make_node("Add", ["x", "w"], ["y"], name="add")],
                       inputs=[vi("x", F, [64])], outputs=[vi("y", F, [64])],
                       inits=[init("w", f32(rng, 64))])
    full = big.SerializeToString()
    emit("truncated.onnx", full[: len(full) // 2], "valid model cut in half (inside the graph field)", "truncated")

    png = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + \
        b"This is a picture, not an ONNX model. Nothing in here is a protobuf message.\n"
    emit("not_protobuf.onnx", png, "PNG signature followed by English text", "not a valid onnx protobuf")

    opset_bytes = fld_bytes(8, fld_bytes(1, "") + fld_varint(2, OPSET))
    emit("wrong_wire_type.onnx", fld_varint(1, IR_VERSION) + fld_varint(7, 1) + opset_bytes,
         "ModelProto.graph (field 7) encoded as a varint", "wire type")

    emit("huge_length.onnx",
         fld_varint(1, IR_VERSION) + key(7, 2) + varint(0x80000000) + fld_bytes(1, "n") + opset_bytes,
         "graph field declares a 2 GiB length in a tiny file", "truncated")

    emit("deep_nesting.onnx", deep_nesting_bytes(200),
         "If subgraphs nested 200 levels deep (600+ protobuf message levels), otherwise well formed", "nesting depth")

    # --- tensor defects ----------------------------------------------------------------------
    t = TensorProto()
    t.name, t.data_type = "w", TensorProto.FLOAT
    t.dims.extend([3, 4])
    t.raw_data = bytes(range(10))
    emit("short_raw_data.onnx", model_with_initializer(t), "float32 [3,4] initializer with 10 bytes of raw_data",
         "raw_data")

    t = TensorProto()
    t.name, t.data_type = "w", TensorProto.FLOAT
    t.dims.extend([-2, 3])
    t.raw_data = b"\x00" * 24
    emit("negative_dims.onnx", model_with_initializer(t), "initializer dims [-2, 3]", "negative")

    t = TensorProto()
    t.name, t.data_type = "w", TensorProto.FLOAT
    t.dims.extend([2**62, 2**62, 16])
    t.raw_data = b""
    emit("overflow_dims.onnx", model_with_initializer(t), "initializer dims [2^62, 2^62, 16], element count overflows",
         "overflow")

    t = TensorProto()
    t.name, t.data_type = "w", TensorProto.FLOAT
    t.dims.extend([2, 3])
    t.float_data.extend([1.0, 2.0, 3.0, 4.0])
    emit("typed_count_mismatch.onnx", model_with_initializer(t), "float32 [2,3] initializer with 4 float_data values",
         "float_data")

    # --- graph structure defects ---------------------------------------------------------------
    emit("cycle.onnx", simple_model(nodes=[helper.make_node("Relu", ["b"], ["a"], name="relu_a"),
                                           helper.make_node("Relu", ["a"], ["b"], name="relu_b"),
                                           helper.make_node("Add", ["x", "b"], ["y"], name="add")]),
         "two Relu nodes feed each other (a -> b -> a)", "cycle")

    emit("undefined_input.onnx", simple_model(nodes=[helper.make_node("Add", ["x", "ghost"], ["y"], name="add")]),
         "node input 'ghost' is never defined", "undefined")

    emit("duplicate_output.onnx", simple_model(nodes=[helper.make_node("Relu", ["x"], ["y"], name="relu"),
                                                      helper.make_node("Neg", ["x"], ["y"], name="neg")]),
         "two nodes both produce 'y'", "defined twice")

    emit("empty_graph.onnx", simple_model(nodes=[], inputs=[], outputs=[]),
         "graph with no nodes and no outputs", "no outputs")

    m = simple_model()
    m.ClearField("graph")
    emit("no_graph.onnx", m, "ModelProto with ir_version and opset_import but no graph", "no graph")

    m = simple_model()
    m.ClearField("ir_version")
    emit("no_ir_version.onnx", m, "valid graph, ir_version missing", "ir_version")

    m = simple_model()
    del m.opset_import[:]
    emit("no_opset.onnx", m, "valid graph, no opset_import", "opset")

    emit("bad_arity.onnx", simple_model(nodes=[helper.make_node("Relu", ["x", "x"], ["y"], name="relu")]),
         "Relu node with 2 inputs", "schema allows")

    emit("output_not_produced.onnx",
         simple_model(outputs=[vi("y", F, [1, 4]), vi("z", F, [1, 4])]),
         "graph output 'z' is produced by no node", "not produced")

    # --- external data escapes -------------------------------------------------------------------
    emit("ext_absolute.onnx", external_model([("location", "/etc/passwd"), ("offset", "0"), ("length", "16")]),
         "external data location is an absolute path", "absolute")
    emit("ext_dotdot.onnx", external_model([("location", "../secret.bin")]),
         "external data location escapes the model directory via ..", "outside", setup="secret:../secret.bin")
    emit("ext_symlink.onnx", external_model([("location", "link.bin")]),
         "external data location is a symlink", "symlink", setup="symlink:link.bin")
    emit("ext_missing.onnx", external_model([("location", "missing.bin")]),
         "external data file does not exist", "not found")
    emit("ext_offset_beyond.onnx", external_model([("location", "small.bin"), ("offset", "1000")]),
         "external data offset 1000 beyond a 16-byte file", "beyond", setup="file:small.bin:16")
    emit("ext_negative_offset.onnx", external_model([("location", "small.bin"), ("offset", "-5")]),
         "external data offset is negative", "negative", setup="file:small.bin:16")
    emit("ext_length_mismatch.onnx", external_model([("location", "small.bin"), ("offset", "0"), ("length", "8")]),
         "external data length 8 but float32 [4] needs 16 bytes", "length", setup="file:small.bin:16")

    with open(os.path.join(HOSTILE, "manifest.json"), "w") as fh:
        json.dump(manifest, fh, indent=2)
        fh.write("\n")
    return manifest


def report_hostile(manifest):
    print("\n%-28s %7s  %-44s %s" % ("hostile file", "bytes", "onnx.load (no external data)", "expect"))
    for e in manifest:
        path = os.path.join(HOSTILE, e["file"])
        try:
            m = onnx.load(path, load_external_data=False)
            outcome = "loads (graph nodes=%d)" % len(m.graph.node)
        except Exception as exc:  # noqa: BLE001 - reporting only
            outcome = "raises %s" % type(exc).__name__
        print("%-28s %7d  %-44s %s" % (e["file"], os.path.getsize(path), outcome[:44], e["expect"]))


def report_sizes():
    total = 0
    print("\n%-70s %8s" % ("fixture", "bytes"))
    for d, _, files in sorted(os.walk(FIXTURES)):
        for f in sorted(files):
            p = os.path.join(d, f)
            size = os.path.getsize(p)
            total += size
            assert size < 200 * 1024, "fixture too large: %s (%d bytes)" % (p, size)
            print("%-70s %8d" % (os.path.relpath(p, ROOT), size))
    print("%-70s %8d" % ("TOTAL", total))
    assert total < 2 * 1024 * 1024, total


def main():
    np.random.seed(0)
    if sys.argv[1:2] == ["--only"]:  # regenerate one valid model, leaving the others as they are
        builder = globals()["build_" + sys.argv[2]]
        model, inputs = builder()
        write_valid(sys.argv[2], model, inputs, full_check=sys.argv[2] != "negative_dims")
        return 0
    make_models()
    manifest = make_hostile()
    report_sizes()
    report_hostile(manifest)


if __name__ == "__main__":
    sys.exit(main())
