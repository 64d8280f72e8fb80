"""FP16 inside the ONNX graph: the mixed precision a strongly typed TensorRT network builds from.

TensorRT 11 removed weak typing (``BuilderFlag.FP16``, layer precision constraints, the
``OBEY_PRECISION_CONSTRAINTS`` flag; deprecated since 10.12): precision now lives in the graph. This
pass rewrites an FP32 graph so that arithmetic ops run in FP16, with FP16 copies of their weights and
``Cast`` nodes where FP32 and FP16 meet. Nodes named in ``keep_fp32`` stay FP32: by default
:func:`sensitive_nodes`, the normalisation ops and the last convolution with everything after it,
where FP16 has degraded GAN generators (DESIGN.md). Inputs and outputs stay FP32.

The same graph runs in ONNX Runtime on the CPU, which is how it is tested without a GPU.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ALL = None
# op type -> indices of the inputs that carry the data type (ALL: every input)
HALF_OPS: dict[str, tuple[int, ...] | None] = {
    "Conv": ALL,
    "ConvTranspose": ALL,
    "Gemm": ALL,
    "MatMul": ALL,
    "Add": ALL,
    "Sub": ALL,
    "Mul": ALL,
    "Div": ALL,
    "Relu": ALL,
    "LeakyRelu": ALL,
    "Tanh": ALL,
    "Sigmoid": ALL,
    "Concat": ALL,
    "Split": (0,),
    "Resize": (0,),
    "Reshape": (0,),
    "Identity": (0,),
    "Transpose": (0,),
    "Flatten": (0,),
    "BatchNormalization": (0,),  # opset 15+: FP16 data with FP32 statistics
    "InstanceNormalization": ALL,
}
ANY_TYPE_OPS = {"Shape", "Size"}  # read only the shape of their input
NORM_OPS = {
    "BatchNormalization",
    "InstanceNormalization",
    "LayerNormalization",
    "GroupNormalization",
    "ReduceMean",
    "ReduceSumSquare",
    "Sqrt",
    "Reciprocal",
    "Pow",
}
CONV_OPS = {"Conv", "ConvTranspose"}
FLOATS = {TensorProto.FLOAT, TensorProto.FLOAT16}


def name_nodes(model: onnx.ModelProto) -> None:
    """Give every unnamed node a unique name (the pass addresses nodes by name)."""
    used = {n.name for n in model.graph.node if n.name}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{i}"
            while node.name in used:
                node.name += "_"
            used.add(node.name)


def sensitive_nodes(model: onnx.ModelProto) -> set[str]:
    """Normalisation nodes, and the last convolution with every node downstream of it."""
    nodes = list(model.graph.node)
    keep = {n.name for n in nodes if n.op_type in NORM_OPS}
    last = max((i for i, n in enumerate(nodes) if n.op_type in CONV_OPS), default=None)
    if last is None:
        return keep
    tainted = set(nodes[last].output)
    keep.add(nodes[last].name)
    for node in nodes[last + 1 :]:
        if tainted.intersection(node.input):
            keep.add(node.name)
            tainted.update(node.output)
    return keep


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*g.input, *g.value_info, *g.output)}
    types |= {t.name: t.data_type for t in g.initializer}
    for node in g.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            types[node.output[0]] = node.attribute[0].t.data_type
    return types


def to_mixed_precision(model: onnx.ModelProto, keep_fp32: Iterable[str] | None = None) -> onnx.ModelProto:
    """A copy of FP32 ``model`` with FP16 arithmetic except in ``keep_fp32`` nodes (default: sensitive ones)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    name_nodes(model)
    keep = sensitive_nodes(model) if keep_fp32 is None else set(keep_fp32)
    types = _elem_types(model)
    g = model.graph
    initializers = {t.name: t for t in g.initializer}
    current = {name: t for name, t in types.items() if t in FLOATS}
    converted: dict[tuple[str, int], str] = {}
    new_nodes: list[onnx.NodeProto] = []

    def as_type(name: str, target: int) -> str:
        if current.get(name, target) == target or name == "":
            return name
        key = (name, target)
        if key not in converted:
            suffix = "fp16" if target == TensorProto.FLOAT16 else "fp32"
            new = f"{name}__{suffix}"
            if name in initializers:
                dtype = np.float16 if target == TensorProto.FLOAT16 else np.float32
                g.initializer.append(
                    numpy_helper.from_array(numpy_helper.to_array(initializers[name]).astype(dtype), new)
                )
            else:
                new_nodes.append(helper.make_node("Cast", [name], [new], name=f"cast_{new}", to=target))
            current[new] = target
            converted[key] = new
        return converted[key]

    for node in list(g.node):
        if node.op_type in ANY_TYPE_OPS:
            new_nodes.append(node)
            continue
        half = node.op_type in HALF_OPS and node.name not in keep
        target = TensorProto.FLOAT16 if half else TensorProto.FLOAT
        data_inputs = HALF_OPS.get(node.op_type) if half else ALL
        for i, name in enumerate(node.input):
            if data_inputs is ALL or i in data_inputs:
                node.input[i] = as_type(name, target)
        for name in node.output:
            if name in current:
                current[name] = target
        new_nodes.append(node)

    for out in g.output:  # outputs keep their FP32 type: rename the producer's tensor, cast back
        if current.get(out.name) == TensorProto.FLOAT16:
            inner = f"{out.name}__fp16"
            for node in new_nodes:
                node.output[:] = [inner if o == out.name else o for o in node.output]
                node.input[:] = [inner if i == out.name else i for i in node.input]
            new_nodes.append(
                helper.make_node("Cast", [inner], [out.name], name=f"cast_{out.name}", to=TensorProto.FLOAT)
            )

    del g.node[:]
    g.node.extend(new_nodes)
    del g.value_info[:]  # stale element types; shape inference rebuilds what is needed
    used = {i for n in g.node for i in n.input}
    kept = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(kept)
    return model


def node_precisions(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of the first output of each node (after shape inference): for checks and tests."""
    types = _elem_types(model)
    return {n.name: types.get(n.output[0], TensorProto.UNDEFINED) for n in model.graph.node if n.output}
