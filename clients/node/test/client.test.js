// The client against a stand-in Codec server in this process (grpc-js): retries with
// backoff on UNAVAILABLE, deadlines, error classes from the "latentwire-error" trailer, the
// DecodeStream replay after a break, and the error class table of runtime/errors.py.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';

import grpc from '@grpc/grpc-js';

import { Client, StreamRequests, lbPolicyFor } from '../src/client.js';
import {
  CodesError,
  DeadlineExceeded,
  FingerprintMismatch,
  InputError,
  IntegrityError,
  LatentwireError,
  ModelNotFound,
  Overloaded,
  PackageError,
  ServerError,
  Unauthenticated,
  Unavailable,
  errorFromStatus,
} from '../src/errors.js';
import { codecPackageDefinition } from '../src/proto.js';

test('errorFromStatus: the named class when its status matches, else by status', () => {
  assert.ok(errorFromStatus('FAILED_PRECONDITION', 'm', 'FingerprintMismatch') instanceof FingerprintMismatch);
  assert.ok(errorFromStatus('FAILED_PRECONDITION', 'm', 'IntegrityError') instanceof IntegrityError);
  assert.ok(errorFromStatus('FAILED_PRECONDITION', 'm', 'IntegrityError') instanceof PackageError);
  assert.ok(errorFromStatus('INVALID_ARGUMENT', 'm', 'CodesError') instanceof CodesError);
  assert.ok(errorFromStatus('INVALID_ARGUMENT', 'm') instanceof InputError);
  assert.ok(errorFromStatus('NOT_FOUND', 'm') instanceof ModelNotFound);
  assert.ok(errorFromStatus('RESOURCE_EXHAUSTED', 'm') instanceof Overloaded);
  assert.ok(errorFromStatus('DEADLINE_EXCEEDED', 'm') instanceof DeadlineExceeded);
  assert.ok(errorFromStatus('UNAUTHENTICATED', 'm') instanceof Unauthenticated);
  const named = errorFromStatus('INTERNAL', 'boom', 'ModelNotFound'); // class and status disagree
  assert.ok(named instanceof ServerError);
  assert.equal(named.status, 'INTERNAL');
  const other = errorFromStatus('INVALID_ARGUMENT', 'm', 'SomethingElse');
  assert.ok(other instanceof ServerError && other.status === 'INVALID_ARGUMENT');
  const plain = errorFromStatus('FAILED_PRECONDITION', 'm'); // no class named, none by status
  assert.ok(plain instanceof ServerError && plain.status === 'FAILED_PRECONDITION');
  const e = new FingerprintMismatch('x');
  assert.equal(e.name, 'FingerprintMismatch');
  assert.equal(e.status, 'FAILED_PRECONDITION');
  assert.ok(e instanceof LatentwireError && e instanceof Error);
});

test('lbPolicyFor: round_robin for dns: and multi-address targets', () => {
  assert.equal(lbPolicyFor('host:1'), 'pick_first');
  assert.equal(lbPolicyFor('dns:///h:1'), 'round_robin');
  assert.equal(lbPolicyFor('ipv4:10.0.0.1:1,10.0.0.2:1'), 'round_robin');
  assert.equal(lbPolicyFor('ipv4:10.0.0.1:1'), 'pick_first');
  assert.equal(lbPolicyFor('dns:///h:1', 'pick_first'), 'pick_first');
  assert.throws(() => lbPolicyFor('h:1', 'random'), RangeError);
});

// -- the stand-in server --------------------------------------------------------------------
const state = { unavailable: 0, sleep: 0, calls: 0, streams: 0, breakAfter: /** @type {number | null} */ (null) };
/** @type {grpc.Server} */
let server;
let address = '';

/** @param {number} code @param {string} details @param {string | null} kind */
function failure(code, details, kind) {
  const metadata = new grpc.Metadata();
  if (kind) metadata.set('latentwire-error', kind);
  return Object.assign(new Error(details), { code, details, metadata });
}

const zeros = (/** @type {number} */ n) => ({ dtype: 'float32', shape: [n, 2], data: Buffer.alloc(n * 8) });

before(async () => {
  const def = codecPackageDefinition();
  server = new grpc.Server();
  server.addService(/** @type {any} */ (def['latentwire.v1.Codec']), {
    Decode(/** @type {any} */ call, /** @type {any} */ cb) {
      state.calls += 1;
      if (state.unavailable > 0) {
        state.unavailable -= 1;
        cb(failure(grpc.status.UNAVAILABLE, 'still loading its models', 'Unavailable'));
        return;
      }
      const fp = call.request.codes.fingerprint;
      if (fp === 'bad') return cb(failure(grpc.status.FAILED_PRECONDITION, 'another encoder', 'FingerprintMismatch'));
      if (fp === 'plain') return cb(failure(grpc.status.INVALID_ARGUMENT, 'no class named', null));
      if (fp === 'token') return cb(failure(grpc.status.UNAUTHENTICATED, String(call.metadata.get('authorization')[0] ?? 'none'), 'Unauthenticated'));
      setTimeout(() => cb(null, { id: call.request.id, model_name: 'm', model_version: '1', fingerprint: fp, reconstruction: zeros(Number(call.request.codes.count)) }), state.sleep * 1000);
    },
    DecodeStream(/** @type {any} */ call) {
      state.streams += 1;
      let answered = 0;
      call.on('data', (/** @type {any} */ req) => {
        if (state.breakAfter !== null && answered >= state.breakAfter) {
          state.breakAfter = null;
          call.emit('error', failure(grpc.status.UNAVAILABLE, 'shutting down', 'Unavailable'));
          return;
        }
        answered += 1;
        if (req.codes.fingerprint === 'bad') {
          call.write({ id: req.id, error: { code: 'FAILED_PRECONDITION', message: 'another encoder', kind: 'FingerprintMismatch' } });
        } else {
          call.write({ id: req.id, model_name: 'm', model_version: '1', fingerprint: req.codes.fingerprint, reconstruction: zeros(Number(req.codes.count)) });
        }
      });
      call.on('end', () => call.end());
      call.on('error', () => {});
    },
  });
  const port = await new Promise((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  address = `127.0.0.1:${port}`;
});

after(() => server.forceShutdown());

/** @param {number} count @param {string} [fingerprint] */
const codes = (count, fingerprint = 'fp') => ({
  model_name: 'm', fingerprint, format: 'f32', count,
  tensor: { dtype: 'float32', shape: [count, 8], data: new Uint8Array(count * 32) }, latent_shape: [], input_shape: [],
});

/** A client whose retry pauses are recorded (and taken, short). @param {import('../src/client.js').ClientOptions} options */
function recording(options, target = address) {
  const c = new Client(target, options);
  /** @type {number[]} */
  const delays = [];
  c.sleep = async (s) => {
    delays.push(s);
    await new Promise((r) => setTimeout(r, 1));
  };
  return { c, delays };
}

/** @returns {Promise<number>} */
async function freePort() {
  const srv = createServer();
  await new Promise((r) => srv.listen(0, '127.0.0.1', () => r(null)));
  const port = /** @type {import('node:net').AddressInfo} */ (srv.address()).port;
  await new Promise((r) => srv.close(r));
  return port;
}

test('UNAVAILABLE is retried with exponential backoff and jitter, then raised as Unavailable', async () => {
  const { c, delays } = recording({ retries: 2, backoff: 0.05, timeout: 10 }, `127.0.0.1:${await freePort()}`);
  await assert.rejects(c.listModels(), Unavailable);
  assert.equal(delays.length, 2);
  delays.forEach((d, i) => assert.ok(0.5 * 0.05 * 2 ** i <= d && d <= 1.5 * 0.05 * 2 ** i, String(d)));
  delays.length = 0;
  await assert.rejects(async () => {
    for await (const _ of c.decodeStream([codes(1)])) void _;
  }, Unavailable);
  assert.equal(delays.length, 2);
  c.close();
});

test('a server answering UNAVAILABLE is retried until it answers', async () => {
  state.unavailable = 2;
  state.calls = 0;
  const { c, delays } = recording({ retries: 3, backoff: 0.01 });
  const r = await c.decode(codes(3));
  assert.deepEqual(r.x.shape, [3, 2]);
  assert.equal(state.calls, 3);
  assert.equal(delays.length, 2);
  state.unavailable = 10;
  state.calls = 0;
  delays.length = 0;
  const c2 = recording({ retries: 2, backoff: 0.01 });
  await assert.rejects(c2.c.decode(codes(3)), (e) => e instanceof Unavailable && /still loading/.test(e.message));
  assert.equal(state.calls, 3);
  assert.equal(c2.delays.length, 2);
  state.unavailable = 0;
  c.close();
  c2.c.close();
});

test('deadlines: the client\'s default and per call, raised as DeadlineExceeded', async () => {
  state.sleep = 1.0;
  const c = new Client(address, { timeout: 0.1 });
  const t0 = performance.now();
  await assert.rejects(c.decode(codes(1)), DeadlineExceeded);
  await assert.rejects(c.decode(codes(1), { timeout: 0.05 }), DeadlineExceeded);
  assert.ok(performance.now() - t0 < 900);
  state.sleep = 0;
  c.close();
});

test('the server\'s error class comes back; other errors are not retried', async () => {
  const { c, delays } = recording({ timeout: 10 });
  await assert.rejects(c.decode(codes(2, 'bad')), (e) => e instanceof FingerprintMismatch && e.message === 'another encoder');
  await assert.rejects(c.decode(codes(2, 'plain')), (e) => e instanceof InputError && e.message === `server ${address}: no class named`);
  assert.deepEqual(delays, []);
  await assert.rejects(c.decode(codes(2), { outputDtype: 'int8' }), /output_dtype/);
  await assert.rejects(c.decode([]), CodesError);
  c.close();
});

test('a token goes as "authorization: Bearer <token>" on an insecure channel', async () => {
  const c = new Client(address, { token: 's3cret' });
  await assert.rejects(c.decode(codes(1, 'token')), (e) => e instanceof Unauthenticated && e.message === 'Bearer s3cret');
  c.close();
});

test('DecodeStream: ids in order, per-item errors, and a broken stream replays what was not answered', async () => {
  const c = new Client(address, { timeout: 10 });
  /** @type {import('../src/client.js').StreamResult[]} */
  const got = [];
  for await (const r of c.decodeStream([codes(1), codes(2, 'bad'), codes(3)])) got.push(r);
  assert.deepEqual(got.map((r) => r.id), ['0', '1', '2']);
  assert.deepEqual(got[2].unwrap().shape, [3, 2]);
  assert.ok(!got[1].ok && got[1].error instanceof FingerprintMismatch);
  assert.throws(() => got[1].unwrap(), FingerprintMismatch);
  state.breakAfter = 2;
  state.streams = 0;
  const { c: r, delays } = recording({ retries: 2, backoff: 0.01, timeout: 10 });
  /** @type {import('../src/client.js').StreamResult[]} */
  const again = [];
  for await (const x of r.decodeStream((function* () {
    for (let i = 1; i <= 5; i++) yield codes(i);
  })())) again.push(x);
  assert.deepEqual(again.map((x) => [x.id, x.unwrap().shape[0]]), [['0', 1], ['1', 2], ['2', 3], ['3', 4], ['4', 5]]);
  assert.equal(state.streams, 2);
  assert.equal(delays.length, 1);
  c.close();
  r.close();
});

test('DecodeStream: an error from the messages is raised after the answers to what was sent', async () => {
  const c = new Client(address, { timeout: 10 });
  /** @type {import('../src/client.js').StreamResult[]} */
  const got = [];
  await assert.rejects(async () => {
    for await (const r of c.decodeStream((async function* () {
      yield codes(2);
      throw new InputError('sensor unplugged');
    })())) got.push(r);
  }, /sensor unplugged/);
  assert.deepEqual(got.map((r) => r.id), ['0']);
  // stopping early cancels the stream
  for await (const r of c.decodeStream([codes(1), codes(1), codes(1)])) {
    assert.equal(r.id, '0');
    break;
  }
  c.close();
});

test('StreamRequests replays unanswered requests in order and drops duplicate answers', async () => {
  const requests = new StreamRequests((function* () {
    for (let i = 0; i < 6; i++) yield codes(i);
  })(), 'float16');
  assert.deepEqual([(await requests.next(0)).id, (await requests.next(0)).id], ['0', '1']);
  assert.ok(requests.restart());
  assert.equal(await requests.next(0), null); // the abandoned attempt stops
  const sent = [];
  for (let i = 0; i < 4; i++) sent.push(await requests.next(1));
  assert.deepEqual(sent.map((r) => [r.id, r.codes.count, r.output_dtype]), [['0', 0, 'float16'], ['1', 1, 'float16'], ['2', 2, 'float16'], ['3', 3, 'float16']]);
  assert.ok(requests.answered('0') && requests.answered('2'));
  assert.ok(!requests.answered('0'));
  assert.equal(requests.unanswered, 2);
  assert.ok(requests.restart());
  const third = [];
  for (let i = 0; i < 4; i++) third.push((await requests.next(2)).id);
  assert.deepEqual(third, ['1', '3', '4', '5']);
  assert.equal(await requests.next(2), null);
  for (const id of third) assert.ok(requests.answered(id));
  requests.checkComplete();
  const left = new StreamRequests([codes(1), codes(1), codes(1)], 'float32');
  for (let i = 0; i < 3; i++) await left.next(0);
  assert.ok(left.answered('1'));
  assert.throws(() => left.checkComplete(), (e) => e instanceof ServerError && /without answering 2 request\(s\) \(ids 0, 2\)/.test(e.message));
});

test('FetchEncoder answers are checked before anything is written', async () => {
  const { createHash } = await import('node:crypto');
  const { mkdtempSync, readdirSync, readFileSync, writeFileSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const { checkFetched, writeEncoderPackage } = await import('../src/client.js');
  const sha = (/** @type {Buffer} */ b) => createHash('sha256').update(b).digest('hex');
  const blob = Buffer.from('an onnx graph');
  const manifest = (/** @type {string} */ path, /** @type {string} */ digest) => JSON.stringify({ files: { encoder: { path, sha256: digest } } });
  const resp = { encoder_onnx: blob, sha256: sha(blob), model: { manifest_json: manifest('encoder.onnx', sha(blob)) }, files: [] };
  assert.equal(checkFetched(resp).encoderFile, 'encoder.onnx');
  const damaged = Buffer.from(blob);
  damaged[0] ^= 1;
  assert.throws(() => checkFetched({ ...resp, encoder_onnx: damaged }), (e) => e instanceof IntegrityError && /transfer was damaged/.test(e.message));
  assert.throws(() => checkFetched({ ...resp, encoder_onnx: damaged, sha256: sha(damaged) }), /manifest expects/);
  assert.throws(() => checkFetched({ ...resp, model: { manifest_json: manifest('../encoder.onnx', sha(blob)) } }), /expected a file name/);
  assert.throws(() => checkFetched({ ...resp, model: { manifest_json: '{' } }), /not valid JSON/);
  const extra = { role: 'scorer', data: blob, sha256: sha(blob) };
  assert.throws(() => checkFetched({ ...resp, files: [extra] }), /does not name/);
  const dir = mkdtempSync(join(tmpdir(), 'lw-fetch-'));
  assert.equal(await writeEncoderPackage(resp, join(dir, 'edge')), join(dir, 'edge'));
  assert.deepEqual(readdirSync(join(dir, 'edge')).sort(), ['encoder.onnx', 'manifest.json']);
  assert.deepEqual(readdirSync(dir), ['edge']); // no temporary folder left
  assert.equal(readFileSync(join(dir, 'edge', 'manifest.json'), 'utf8'), resp.model.manifest_json);
  await assert.rejects(writeEncoderPackage(resp, join(dir, 'edge')), (e) => e instanceof PackageError && /not empty/.test(e.message));
  writeFileSync(join(dir, 'file'), 'x');
  await assert.rejects(writeEncoderPackage(resp, join(dir, 'file')), /not a folder/);
});
