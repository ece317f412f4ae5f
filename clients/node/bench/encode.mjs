// Encode timings of latentwire-edge:
//   node bench/encode.mjs PACKAGE_DIR INPUT.npy [--repeat N] [--threads N] [--server ADDR]
// prints JSON: load time, encode time (median of N runs) per batch and per sample, split into
// checks + normalisation + ONNX Runtime and the rest (padding, entropy coding, messages), the bytes
// of the Codes messages, and with --server the time of a Decode round trip.
import { arch, cpus, platform } from 'node:os';
import { parseArgs } from 'node:util';

import { Client, EdgeModel, readNpy, serializeCodes } from '../src/index.js';

const { values: v, positionals } = parseArgs({
  allowPositionals: true,
  options: { repeat: { type: 'string', default: '20' }, threads: { type: 'string', default: '1' }, server: { type: 'string' } },
});
if (positionals.length !== 2) {
  console.error('usage: node bench/encode.mjs PACKAGE_DIR INPUT.npy [--repeat N] [--threads N] [--server ADDR]');
  process.exit(2);
}
const median = (/** @type {number[]} */ xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const t0 = performance.now();
const model = await EdgeModel.load(positionals[0], { threads: Number(v.threads) });
const loadMs = performance.now() - t0;
const x = readNpy(positionals[1]);
const repeat = Number(v.repeat);
const total = [];
const ort = [];
let messages = await model.encodeCodes(x); // warm-up
for (let i = 0; i < repeat; i++) {
  const { x: padded } = model.padInputs(x);
  const a = performance.now();
  await model.runEncoder(model.prepareInputs(padded), padded.shape);
  ort.push(performance.now() - a);
  const b = performance.now();
  messages = await model.encodeCodes(x);
  messages.map(serializeCodes);
  total.push(performance.now() - b);
}
const n = x.shape[0];
/** @type {Record<string, any>} */
const out = {
  package: model.name,
  format: model.format,
  input_shape: x.shape,
  dtype: x.dtype,
  threads: Number(v.threads),
  load_ms: +loadMs.toFixed(1),
  encode_ms_median: +median(total).toFixed(3),
  encode_us_per_sample: +((median(total) * 1000) / n).toFixed(1),
  prepare_and_onnxruntime_ms_median: +median(ort).toFixed(3),
  codes_bytes: messages.reduce((a, m) => a + serializeCodes(m).length, 0),
  messages: messages.length,
  machine: `${platform()} ${arch()}, ${cpus().length} x ${cpus()[0]?.model ?? '?'}`,
  node: process.version,
  date: new Date().toISOString().slice(0, 10),
};
if (v.server) {
  const c = new Client(v.server);
  await c.decode(messages);
  const rt = [];
  for (let i = 0; i < Math.min(repeat, 10); i++) {
    const a = performance.now();
    await c.decode(messages);
    rt.push(performance.now() - a);
  }
  out.decode_roundtrip_ms_median = +median(rt).toFixed(2);
  c.close();
}
await model.close();
console.log(JSON.stringify(out));
