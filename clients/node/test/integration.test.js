// Integration tests against live latentwire servers, driven by tests/test_node_client.py:
// it trains the packages, starts the servers, writes the inputs and a plan (JSON) and sets
// LATENTWIRE_NODE_PLAN to it; this file encodes, decodes, scores, fetches and provokes the
// errors the plan names, checks what it can here and writes everything it got under the
// plan's `out` folder, where the Python test compares it with what Python's runtime and
// client get (Codes bytes, reconstructions, scores, error statuses and classes).
// Without LATENTWIRE_NODE_PLAN every test here is skipped.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { Client } from '../src/client.js';
import { readCodesFile, writeCodesFile } from '../src/codes.js';
import { LatentwireError, PackageError } from '../src/errors.js';
import { EdgeModel } from '../src/model.js';
import { readNpy, writeNpy } from '../src/npy.js';
import { concat } from '../src/client.js';

const PLAN = process.env.LATENTWIRE_NODE_PLAN;
const skip = PLAN ? false : 'LATENTWIRE_NODE_PLAN is not set (tests/test_node_client.py sets it)';
/** @type {any} */
const plan = PLAN ? JSON.parse(readFileSync(PLAN, 'utf8')) : {};
/** @type {Record<string, any>} */
const results = { encode: {}, errors: {}, timings: {} };
/** @type {Client} */
let client;

before(() => {
  if (!PLAN) return;
  mkdirSync(plan.out, { recursive: true });
  client = new Client(plan.server, { timeout: 20 });
});

after(() => {
  if (!PLAN) return;
  client.close();
  writeFileSync(join(plan.out, 'results.json'), JSON.stringify(results, null, 2));
});

/**
 * Run `fn`, recording the error it throws (status and class) or "ok".
 * @param {string} name @param {() => Promise<unknown>} fn
 */
async function outcome(name, fn) {
  try {
    await fn();
    results.errors[name] = { status: 'OK', kind: null, message: '' };
  } catch (err) {
    if (!(err instanceof LatentwireError)) throw err;
    results.errors[name] = { status: err.status, kind: err.name, message: err.message };
  }
  return results.errors[name];
}

test('encode: Codes messages for every format and package, written as codes files', { skip }, async () => {
  for (const c of plan.encode) {
    const model = await EdgeModel.load(c.package);
    const x = readNpy(c.input);
    const t0 = performance.now();
    const messages = await model.encodeCodes(x, c.options);
    results.timings[c.name] = { ms: performance.now() - t0, samples: x.shape[0], shape: x.shape };
    writeCodesFile(join(plan.out, `${c.name}.lwc`), messages);
    results.encode[c.name] = { messages: messages.length, counts: messages.map((m) => m.count) };
    assert.equal(messages.reduce((a, m) => a + m.count, 0), x.shape[0]);
    for (const m of messages) {
      assert.equal(m.fingerprint, model.fingerprint);
      assert.equal(m.format, model.format);
    }
    await model.close();
  }
});

test('decode: reconstructions from the server, unary and over a DecodeStream', { skip }, async () => {
  for (const c of plan.decode) {
    const messages = readCodesFile(join(plan.out, `${c.name}.lwc`));
    const r = await client.decode(messages, { outputDtype: c.output_dtype ?? 'float32' });
    assert.equal(r.modelName, c.served);
    assert.equal(r.x.shape[0], messages.reduce((a, m) => a + m.count, 0));
    writeNpy(join(plan.out, `${c.name}.decode.npy`), r.x);
    const parts = [];
    for await (const s of client.decodeStream(messages, { outputDtype: c.output_dtype ?? 'float32' })) parts.push(s);
    assert.deepEqual(parts.map((s) => s.id).sort(), messages.map((_, i) => String(i)).sort());
    parts.sort((a, b) => Number(a.id) - Number(b.id));
    writeNpy(join(plan.out, `${c.name}.stream.npy`), concat(parts.map((s) => s.unwrap())));
  }
});

test('score: anomaly scores of the codes', { skip }, async () => {
  const messages = readCodesFile(join(plan.out, `${plan.score.codes}.lwc`));
  const r = await client.score(messages);
  const fpr = await client.score(messages, { fpr: 0.2 });
  const zero = await client.score(messages, { threshold: 0 }); // present, though 0
  results.score = {
    score: r.score, scores: [...r.scores], flags: r.flags, threshold: r.threshold, p_values: [...r.pValues],
    model: r.modelName, fpr_threshold: fpr.threshold, zero_threshold: zero.threshold, zero_flags: zero.flags,
  };
  assert.equal(zero.threshold, 0);
  assert.equal(r.scores.length, messages.reduce((a, m) => a + m.count, 0));
});

test('fetch-encoder: an edge package from the server, loaded and used', { skip }, async () => {
  const out = join(plan.out, 'fetched');
  await client.fetchEncoder(plan.fetch.model, out);
  const model = await EdgeModel.load(out);
  writeCodesFile(join(plan.out, 'fetched.lwc'), await model.encodeCodes(readNpy(plan.fetch.input)));
  await model.close();
  await assert.rejects(client.fetchEncoder(plan.fetch.model, out), (e) => e instanceof PackageError && /not empty/.test(e.message));
  // codes of the fetched encoder decode on the server
  const r = await client.decode(readCodesFile(join(plan.out, 'fetched.lwc')));
  assert.equal(r.modelName, plan.fetch.model);
  // an anomaly package's edge scorer and calibration come along when asked for
  await client.fetchEncoder(plan.fetch.scorer, join(plan.out, 'fetched-scorer'), { includeScorer: true });
  // or straight into memory, nothing written
  const inMemory = await client.fetchModel(plan.fetch.model);
  writeCodesFile(join(plan.out, 'fetched-in-memory.lwc'), await inMemory.encodeCodes(readNpy(plan.fetch.input)));
  await inMemory.close();
});

test('errors: every status and class the Python client gets', { skip }, async () => {
  const e = plan.errors;
  const codesOf = (/** @type {string} */ name) => readCodesFile(e.codes[name]);
  for (const name of Object.keys(e.codes)) {
    await outcome(`decode_${name}`, () => client.decode(codesOf(name)));
  }
  const good = codesOf('good');
  const streamed = [];
  for await (const s of client.decodeStream([good[0], ...codesOf('fingerprint'), good[0]])) streamed.push(s);
  streamed.sort((a, b) => Number(a.id) - Number(b.id));
  results.errors.stream_fingerprint = { status: streamed[1].error?.status ?? 'OK', kind: streamed[1].error?.name ?? null, message: streamed[1].error?.message ?? '' };
  assert.ok(streamed[0].ok && streamed[2].ok);
  await outcome('decode_output_dtype', () => client.decode(good, { outputDtype: 'float64' }));
  await outcome('get_model_unknown', () => client.getModel('nope'));
  await outcome('get_model_version_unknown', () => client.getModel(e.served, { version: '7' }));
  await outcome('encode_unknown', () => client.encode('nope', readNpy(e.input)));
  const x = readNpy(e.input);
  const narrow = { dtype: 'float32', shape: [x.shape[0], x.shape[1] - 1], data: new Float32Array(x.shape[0] * (x.shape[1] - 1)) };
  await outcome('encode_wrong_shape', () => client.encode(e.served, narrow));
  await outcome('fetch_unknown', () => client.fetchEncoder('nope', join(plan.out, 'nope')));
  await outcome('score_not_anomaly', () => client.score(good));
  await outcome('score_unknown_name', () => client.score(readCodesFile(join(plan.out, `${plan.score.codes}.lwc`)), { score: 'nope' }));
  // the strict server: a token, a 64 KiB receive limit and a 0.5 s batching delay
  const s = plan.strict;
  const strict = (/** @type {string | null} */ token, /** @type {import('../src/client.js').ClientOptions} */ more = {}) =>
    new Client(s.address, { token, timeout: 10, ...more });
  for (const [name, token, fn] of /** @type {[string, string | null, (c: Client) => Promise<unknown>][]} */ ([
    ['token_missing', null, (c) => c.listModels()],
    ['token_wrong', 'wrong', (c) => c.listModels()],
    ['token_ok', s.token, (c) => c.listModels()],
    ['token_stream_missing', null, async (c) => {
      for await (const r of c.decodeStream(good)) void r;
    }],
    ['token_decode_ok', s.token, (c) => c.decode(good)],
    ['deadline', s.token, (c) => c.decode(good, { timeout: 0.05 })],
    ['too_big', s.token, (c) => c.decode(readCodesFile(s.big))],
  ])) {
    const c = strict(token);
    await outcome(name, () => fn(c));
    c.close();
  }
  // TLS with a client certificate (mutual TLS) and a token, on the grpcio front
  const t = plan.tls;
  const pem = (/** @type {string} */ f) => readFileSync(f);
  const tlsBase = { rootCertificates: pem(t.ca), serverNameOverride: t.server_name, timeout: 10, retries: 0 };
  const mtls = { ...tlsBase, certificateChain: pem(t.cert), privateKey: pem(t.key) };
  for (const [name, options] of /** @type {[string, import('../src/client.js').ClientOptions][]} */ ([
    ['tls_ok', { ...mtls, token: t.token }],
    ['tls_no_token', mtls],
    ['tls_plaintext', { timeout: 10, retries: 0, token: t.token }],
  ])) {
    const c = new Client(t.address, options);
    await outcome(name, () => c.decode(good));
    c.close();
  }
  const gone = new Client(e.unused, { retries: 2, backoff: 0.05, timeout: 10 });
  /** @type {number[]} */
  const delays = [];
  gone.sleep = async (sec) => {
    delays.push(sec);
    await new Promise((r) => setTimeout(r, sec * 1000));
  };
  await outcome('unavailable', () => gone.listModels());
  results.unavailable_retries = delays.length;
  gone.close();
  for (const [name, dir] of Object.entries(plan.tampered)) {
    await outcome(`load_${name}`, () => EdgeModel.load(/** @type {string} */ (dir)));
  }
  // what the Python client reports for each (tests/test_node_client.py compares them all)
  const want = {
    decode_fingerprint: ['FAILED_PRECONDITION', 'FingerprintMismatch'],
    decode_other_encoder: ['NOT_FOUND', 'ModelNotFound'], // its own name, which is not served
    decode_other_encoder_named: ['FAILED_PRECONDITION', 'FingerprintMismatch'],
    stream_fingerprint: ['FAILED_PRECONDITION', 'FingerprintMismatch'],
    decode_short: ['INVALID_ARGUMENT', 'CodesError'],
    decode_width: ['INVALID_ARGUMENT', 'InputError'],
    decode_empty: ['INVALID_ARGUMENT', 'InputError'],
    decode_entropy_cut: ['INVALID_ARGUMENT', 'CodesError'],
    decode_output_dtype: ['INVALID_ARGUMENT', 'InputError'],
    get_model_unknown: ['NOT_FOUND', 'ModelNotFound'],
    encode_unknown: ['NOT_FOUND', 'ModelNotFound'],
    fetch_unknown: ['NOT_FOUND', 'ModelNotFound'],
    token_missing: ['UNAUTHENTICATED', 'Unauthenticated'],
    token_wrong: ['UNAUTHENTICATED', 'Unauthenticated'],
    token_stream_missing: ['UNAUTHENTICATED', 'Unauthenticated'],
    token_ok: ['OK', null],
    token_decode_ok: ['OK', null],
    deadline: ['DEADLINE_EXCEEDED', 'DeadlineExceeded'],
    too_big: ['RESOURCE_EXHAUSTED', 'Overloaded'],
    unavailable: ['UNAVAILABLE', 'Unavailable'],
    tls_ok: ['OK', null],
    tls_no_token: ['UNAUTHENTICATED', 'Unauthenticated'],
    tls_plaintext: ['UNAVAILABLE', 'Unavailable'],
    load_encoder_changed: ['FAILED_PRECONDITION', 'IntegrityError'],
    load_manifest_edited: ['FAILED_PRECONDITION', 'IntegrityError'],
    load_metadata_fingerprint: ['FAILED_PRECONDITION', 'IntegrityError'],
  };
  for (const [name, [status, kind]] of Object.entries(want)) {
    const got = results.errors[name];
    assert.deepEqual([got.status, got.kind], [status, kind], `${name}: ${got.message}`);
  }
  assert.equal(results.unavailable_retries, 2);
});
