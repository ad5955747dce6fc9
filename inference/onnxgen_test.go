package inference

import (
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

// writeReluModel writes a one-node ONNX model, y = Relu(x), whose input and output are float32
// with the given dims: a positive number is fixed, 0 is a named dynamic dimension. It is built
// field by field from the ONNX protobuf schema (onnx.proto), so the tests need no Python.
func writeReluModel(t testing.TB, dims ...int64) string {
	t.Helper()
	str := func(b []byte, field protowire.Number, s string) []byte {
		b = protowire.AppendTag(b, field, protowire.BytesType)
		return protowire.AppendString(b, s)
	}
	msg := func(b []byte, field protowire.Number, m []byte) []byte {
		b = protowire.AppendTag(b, field, protowire.BytesType)
		return protowire.AppendBytes(b, m)
	}
	varint := func(b []byte, field protowire.Number, v int64) []byte {
		b = protowire.AppendTag(b, field, protowire.VarintType)
		return protowire.AppendVarint(b, uint64(v))
	}
	valueInfo := func(name string) []byte {
		var shape []byte
		for i, d := range dims {
			var dim []byte
			if d > 0 {
				dim = varint(dim, 1, d) // dim_value
			} else {
				dim = str(dim, 2, string(rune('a'+i))) // dim_param
			}
			shape = msg(shape, 1, dim) // TensorShapeProto.dim
		}
		var tensor []byte
		tensor = varint(tensor, 1, 1)  // elem_type FLOAT
		tensor = msg(tensor, 2, shape) // shape
		typ := msg(nil, 1, tensor)     // TypeProto.tensor_type
		info := str(nil, 1, name)      // ValueInfoProto.name
		return msg(info, 2, typ)       // ValueInfoProto.type
	}
	var node []byte
	node = str(node, 1, "x")    // input
	node = str(node, 2, "y")    // output
	node = str(node, 3, "relu") // name
	node = str(node, 4, "Relu") // op_type
	var graph []byte
	graph = msg(graph, 1, node)
	graph = str(graph, 2, "relu-test")
	graph = msg(graph, 11, valueInfo("x"))
	graph = msg(graph, 12, valueInfo("y"))
	var opset []byte
	opset = str(opset, 1, "")
	opset = varint(opset, 2, 13)
	var model []byte
	model = varint(model, 1, 8) // ir_version
	model = str(model, 2, "vigil-test")
	model = msg(model, 7, graph)
	model = msg(model, 8, opset)

	path := filepath.Join(t.TempDir(), "relu.onnx")
	if err := os.WriteFile(path, model, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}
