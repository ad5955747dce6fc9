// The peer: one ONNX model run by onnxruntime-node on a constant input, the median of the
// runs after a warm-up, printed as one JSON line.
// usage: node bench.js MODEL.onnx SHAPE(1,3,352,352) DTYPE(float32|int32) THREADS RUNS
const ort = require('onnxruntime-node');

async function main() {
  const [model, shapeText, dtype, threads, runs] = process.argv.slice(2);
  const shape = shapeText.split(',').map(Number);
  const n = shape.reduce((a, b) => a * b, 1);
  const data = dtype === 'int32' ? new Int32Array(n).fill(128) : new Float32Array(n).fill(0.5);
  const session = await ort.InferenceSession.create(model, {
    intraOpNumThreads: Number(threads), interOpNumThreads: 1, executionProviders: ['cpu'],
  });
  const feeds = { [session.inputNames[0]]: new ort.Tensor(dtype, data, shape) };
  for (let i = 0; i < 20; i++) await session.run(feeds);
  const times = [];
  for (let i = 0; i < Number(runs); i++) {
    const t0 = process.hrtime.bigint();
    await session.run(feeds);
    times.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  times.sort((a, b) => a - b);
  console.log(JSON.stringify({ runtime: 'onnxruntime-node ' + require('onnxruntime-node/package.json').version,
    model, threads: Number(threads), runs: times.length, median_ms: times[times.length >> 1] }));
}

main().catch((e) => { console.error(e); process.exit(1); });
