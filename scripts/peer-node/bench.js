// The peer: one ONNX model run by onnxruntime-node on a constant input.
//
//   node bench.js MODEL.onnx SHAPE(1,3,352,352) DTYPE(float32|int32) THREADS RUNS
//     warms up, times RUNS runs and prints one JSON line: every run's milliseconds and
//     their median.
//   node bench.js MODEL.onnx SHAPE DTYPE THREADS serve
//     warms up, prints {"ready":true}, then for each line N read from stdin times N runs and
//     prints them as a JSON line, so that a caller can interleave its own runs with these.
const ort = require('onnxruntime-node');
const readline = require('readline');

async function timeRuns(session, feeds, n) {
  const times = [];
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint();
    await session.run(feeds);
    times.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  return times;
}

async function main() {
  const [model, shapeText, dtype, threads, runs] = process.argv.slice(2);
  const shape = shapeText.split(',').map(Number);
  const n = shape.reduce((a, b) => a * b, 1);
  const data = dtype === 'int32' ? new Int32Array(n).fill(128) : new Float32Array(n).fill(0.5);
  const session = await ort.InferenceSession.create(model, {
    intraOpNumThreads: Number(threads), interOpNumThreads: 1, executionProviders: ['cpu'],
  });
  const feeds = { [session.inputNames[0]]: new ort.Tensor(dtype, data, shape) };
  await timeRuns(session, feeds, 20);
  const runtime = 'onnxruntime-node ' + require('onnxruntime-node/package.json').version;
  if (runs === 'serve') {
    console.log(JSON.stringify({ ready: true, runtime }));
    for await (const line of readline.createInterface({ input: process.stdin })) {
      console.log(JSON.stringify({ times_ms: await timeRuns(session, feeds, Number(line)) }));
    }
    return;
  }
  const times = await timeRuns(session, feeds, Number(runs));
  const sorted = [...times].sort((a, b) => a - b);
  console.log(JSON.stringify({ runtime, model, threads: Number(threads), runs: times.length,
    median_ms: sorted[sorted.length >> 1], times_ms: times }));
}

main().catch((e) => { console.error(e); process.exit(1); });
