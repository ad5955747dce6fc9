// run_tfjs.mjs runs a TF.js graph model on one input with TF.js's pure-JavaScript CPU backend
// and writes its outputs as JSON, {"outputs": [{"name", "shape", "data"}...]} in the order of
// the model's signature, to out.json (TF.js prints a notice on stdout). It is the reference
// tfjs_to_onnx.py's output is checked against.
//
//   node run_tfjs.mjs model.json input.bin int32|float32 1,192,192,3 out.json [output,...]
//
// The optional last argument names the outputs to compute (default: the signature's).
import fs from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';

const [modelPath, inputPath, dtype, shapeArg, outPath, only] = process.argv.slice(2);
if (!outPath) {
  console.error('usage: node run_tfjs.mjs model.json input.bin int32|float32 d0,d1,... out.json');
  process.exit(2);
}
await tf.setBackend('cpu');
const graph = JSON.parse(fs.readFileSync(modelPath, 'utf8'));
const dir = path.dirname(modelPath);
const specs = [];
const shards = [];
for (const group of graph.weightsManifest) {
  specs.push(...group.weights);
  for (const p of group.paths) shards.push(fs.readFileSync(path.join(dir, p)));
}
const weights = Buffer.concat(shards);
const model = await tf.loadGraphModel(tf.io.fromMemory({
  modelTopology: graph.modelTopology,
  weightSpecs: specs,
  weightData: weights.buffer.slice(weights.byteOffset, weights.byteOffset + weights.byteLength),
  format: graph.format,
  generatedBy: graph.generatedBy,
  convertedBy: graph.convertedBy,
  signature: graph.signature,
}));
const shape = shapeArg.split(',').map(Number);
const raw = fs.readFileSync(inputPath);
const buf = raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength);
const values = dtype === 'int32' ? new Int32Array(buf) : new Float32Array(buf);
const input = tf.tensor(values, shape, dtype);
const names = only ? only.split(',') : Object.values(graph.signature.outputs).map((o) => o.name.replace(/:0$/, ''));
let results = await model.executeAsync(input, names);
if (!Array.isArray(results)) results = [results];
const outputs = [];
for (let i = 0; i < results.length; i++) {
  outputs.push({ name: names[i], shape: results[i].shape, data: Array.from(await results[i].data()) });
}
fs.writeFileSync(outPath, JSON.stringify({ outputs }));
