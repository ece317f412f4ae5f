#!/usr/bin/env node
// latentwire-edge: the command line of the Node.js edge client.
//
//   latentwire-edge fetch-encoder --server HOST:PORT --model NAME --out DIR
//   latentwire-edge encode --model DIR INPUT.npy --out CODES.lwc
//   latentwire-edge send   --server HOST:PORT --model DIR INPUT.npy [--out RECON.npy] [--stream]
//   latentwire-edge send   --server HOST:PORT --codes CODES.lwc [--out RECON.npy]
//   latentwire-edge score  --server HOST:PORT --model DIR INPUT.npy [--score gmm] [--fpr 0.01]
//   latentwire-edge models --server HOST:PORT
//
// Errors print one line `latentwire-edge: error: ...` and exit 1; usage errors exit 2.

import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

import { Client } from '../src/client.js';
import { readCodesFile, writeCodesFile } from '../src/codes.js';
import { LatentwireError } from '../src/errors.js';
import { EdgeModel, serializeCodes } from '../src/model.js';
import { readNpy, writeNpy } from '../src/npy.js';
import { valuesOf } from '../src/arrays.js';

const USAGE = `usage: latentwire-edge <command> [options]

commands:
  fetch-encoder  --server ADDR --model NAME --out DIR [--version V] [--include-scorer]
                 provision an edge package (encoder.onnx + manifest.json) from a server
  encode         --model DIR INPUT.npy --out CODES.lwc [--chunk N] [--max-message-bytes N]
                 encode samples into a codes file (what \`latentwire decode\` reads)
  send           --server ADDR (--model DIR INPUT.npy | --codes CODES.lwc) [--out RECON.npy]
                 [--stream] [--output-dtype float32|float16] [--chunk N]
                 encode locally, decode on the server, report size and quality
  score          --server ADDR --model DIR INPUT.npy [--score NAME] [--fpr F | --threshold T]
                 encode locally, get anomaly scores and flags from the server (JSON)
  models         --server ADDR    list the server's models (JSON)

connection:
  --server ADDR      host:port, or dns:///host:port, ipv4:a:p,b:p
  --token TOKEN      bearer token (default: $LATENTWIRE_TOKEN)
  --tls              TLS (implied by --ca/--cert); --ca FILE, --cert FILE --key FILE (mutual TLS)
  --server-name NAME TLS name to check instead of the address's
  --timeout S        deadline of each call in seconds (default 30)
  --retries N        retries of a call the server answers UNAVAILABLE (default 3)
  --lb POLICY        auto | pick_first | round_robin (default auto)
  --threads N        ONNX Runtime intra-op threads (default 1)
`;

const OPTIONS = /** @type {const} */ ({
  server: { type: 'string' },
  model: { type: 'string' },
  codes: { type: 'string' },
  out: { type: 'string', short: 'o' },
  version: { type: 'string', default: '' },
  'include-scorer': { type: 'boolean', default: false },
  chunk: { type: 'string' },
  'max-message-bytes': { type: 'string' },
  stream: { type: 'boolean', default: false },
  'output-dtype': { type: 'string', default: 'float32' },
  score: { type: 'string', default: '' },
  fpr: { type: 'string' },
  threshold: { type: 'string' },
  token: { type: 'string' },
  tls: { type: 'boolean', default: false },
  ca: { type: 'string' },
  cert: { type: 'string' },
  key: { type: 'string' },
  'server-name': { type: 'string' },
  timeout: { type: 'string', default: '30' },
  retries: { type: 'string', default: '3' },
  lb: { type: 'string', default: 'auto' },
  threads: { type: 'string', default: '1' },
  help: { type: 'boolean', short: 'h', default: false },
});

class Usage extends Error {}

/** @param {Record<string, any>} v @param {string} name */
function need(v, name) {
  if (v[name] === undefined) throw new Usage(`--${name} is required`);
  return v[name];
}

/** @param {string | undefined} text @param {string} name */
function number(text, name) {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (!Number.isFinite(n)) throw new Usage(`--${name} must be a number, got '${text}'`);
  return n;
}

/** @param {Record<string, any>} v */
function client(v) {
  const read = (/** @type {string | undefined} */ p) => (p === undefined ? null : readFileSync(p));
  return new Client(need(v, 'server'), {
    token: v.token ?? process.env.LATENTWIRE_TOKEN ?? null,
    tls: v.tls,
    rootCertificates: read(v.ca),
    certificateChain: read(v.cert),
    privateKey: read(v.key),
    serverNameOverride: v['server-name'] ?? null,
    timeout: number(v.timeout, 'timeout'),
    retries: number(v.retries, 'retries'),
    lbPolicy: v.lb === 'auto' ? null : v.lb,
  });
}

/** @param {Record<string, any>} v @param {string[]} args */
async function encodeInput(v, args) {
  if (args.length !== 1) throw new Usage('give one INPUT.npy');
  const model = await EdgeModel.load(need(v, 'model'), { threads: number(v.threads, 'threads') });
  const x = readNpy(args[0]);
  const t0 = performance.now();
  const messages = await model.encodeCodes(x, {
    chunk: number(v.chunk, 'chunk'),
    maxMessageBytes: number(v['max-message-bytes'], 'max-message-bytes'),
  });
  return { model, x, messages, ms: performance.now() - t0 };
}

/** @param {import('../src/arrays.js').NDArray} x @param {import('../src/arrays.js').NDArray} y */
function psnr(x, y) {
  const a = valuesOf(x);
  const b = valuesOf(y);
  let mse = 0;
  let lo = Infinity;
  let hi = -Infinity;
  for (let i = 0; i < a.length; i++) {
    const d = Number(b[i]) - Number(a[i]);
    mse += d * d;
    lo = Math.min(lo, Number(a[i]));
    hi = Math.max(hi, Number(a[i]));
  }
  mse /= a.length || 1;
  if (mse === 0) return Infinity;
  return 10 * Math.log10((hi - lo) ** 2 / mse);
}

/** @param {string[]} argv */
async function main(argv) {
  const [command, ...rest] = argv;
  if (!command || command === '-h' || command === '--help') {
    process.stdout.write(USAGE);
    return command ? 0 : 2;
  }
  const { values: v, positionals } = parseArgs({ args: rest, options: OPTIONS, allowPositionals: true, strict: true });
  if (v.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (command === 'fetch-encoder') {
    const c = client(v);
    try {
      const out = await c.fetchEncoder(need(v, 'model'), need(v, 'out'), { version: v.version, includeScorer: v['include-scorer'] });
      const model = await EdgeModel.load(out);
      console.log(`wrote ${out}: model ${model.name}, fingerprint ${model.fingerprint}, codes ${model.format}`);
      await model.close();
    } finally {
      c.close();
    }
    return 0;
  }
  if (command === 'encode') {
    const { x, messages, ms } = await encodeInput(v, positionals);
    const bytes = writeCodesFile(need(v, 'out'), messages);
    console.log(`encoded ${x.shape[0]} samples in ${ms.toFixed(1)} ms: ${messages.length} message(s), ${bytes} bytes -> ${v.out}`);
    return 0;
  }
  if (command === 'send') {
    const c = client(v);
    try {
      let messages;
      /** @type {import('../src/arrays.js').NDArray | null} */
      let x = null;
      if (v.codes !== undefined) {
        if (positionals.length) throw new Usage('give --codes or INPUT.npy, not both');
        messages = readCodesFile(v.codes);
      } else {
        const enc = await encodeInput(v, positionals);
        messages = enc.messages;
        x = enc.x;
      }
      const t0 = performance.now();
      let result;
      if (v.stream) {
        const parts = [];
        for await (const r of c.decodeStream(messages, { outputDtype: v['output-dtype'] })) parts.push(r);
        parts.sort((a, b) => Number(a.id) - Number(b.id));
        const { concat } = await import('../src/client.js');
        result = { x: concat(parts.map((r) => r.unwrap())), modelName: parts[0].modelName, modelVersion: parts[0].modelVersion };
      } else {
        result = await c.decode(messages, { outputDtype: v['output-dtype'] });
      }
      const ms = performance.now() - t0;
      const wire = messages.reduce((a, m) => a + serializeCodes(m).length, 0);
      const n = result.x.shape[0];
      let line = `${n} samples, ${messages.length} message(s), ${wire} bytes on the wire (${(wire / n).toFixed(1)} bytes/sample); ` +
        `decoded by ${result.modelName} version ${result.modelVersion} in ${ms.toFixed(1)} ms`;
      if (x !== null && x.data.length === result.x.data.length) line += `; PSNR ${psnr(x, result.x).toFixed(2)} dB`;
      console.log(line);
      if (v.out !== undefined) writeNpy(v.out, result.x);
    } finally {
      c.close();
    }
    return 0;
  }
  if (command === 'score') {
    const c = client(v);
    try {
      const { messages } = await encodeInput(v, positionals);
      const r = await c.score(messages, { score: v.score, fpr: number(v.fpr, 'fpr'), threshold: number(v.threshold, 'threshold') });
      console.log(JSON.stringify({ score: r.score, threshold: r.threshold, scores: [...r.scores], flags: r.flags, p_values: [...r.pValues], model: r.modelName, version: r.modelVersion }));
    } finally {
      c.close();
    }
    return 0;
  }
  if (command === 'models') {
    const c = client(v);
    try {
      const models = await c.listModels();
      console.log(JSON.stringify(models.map((m) => ({ name: m.name, version: m.version, fingerprint: m.fingerprint, latest: m.latest })), null, 2));
    } finally {
      c.close();
    }
    return 0;
  }
  throw new Usage(`unknown command '${command}'`);
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    if (err instanceof Usage || /** @type {any} */ (err)?.code?.startsWith?.('ERR_PARSE_ARGS')) {
      process.stderr.write(`latentwire-edge: error: ${err.message}\n(see latentwire-edge --help)\n`);
      process.exitCode = 2;
    } else if (err instanceof LatentwireError || /** @type {any} */ (err)?.code === 'ENOENT') {
      process.stderr.write(`latentwire-edge: error: ${err.message}\n`);
      process.exitCode = 1;
    } else {
      process.stderr.write(`latentwire-edge: error: ${err?.stack ?? err}\n`);
      process.exitCode = 1;
    }
  },
);
