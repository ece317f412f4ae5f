// The encoder's input side and the messages: normalisation and padding bit for bit as
// runtime/model.py computes them, Codes bytes as Python's SerializeToString() writes them,
// codes files and .npy files.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { arrayToTensor, halfToFloat, ndarray, tensorToArray } from '../src/arrays.js';
import { formatCodesFile, readCodesFile, splitCodesFile } from '../src/codes.js';
import { CodesError, InputError } from '../src/errors.js';
import { Normalization } from '../src/manifest.js';
import { normalize, padEdge, parseCodes, serializeCodes } from '../src/model.js';
import { formatNpy, parseNpy } from '../src/npy.js';
import { bytes, fixture, hex, nd } from './helpers.js';

const golden = fixture('py-golden.json');

test('normalisation: (x - offset) / scale in float64 then float32, bit for bit', () => {
  for (const c of golden.normalization) {
    const norm = Normalization.fromDict({ kind: c.kind, offset: c.offset, scale: c.scale }, c.sample_shape);
    const x = nd(c.x);
    const y = nd(c.y);
    assert.equal(hex(normalize(norm, x)), hex(y.data), `${c.kind} ${c.x.dtype} ${JSON.stringify(c.sample_shape)}`);
  }
});

test('normalisation refuses what overflows float32, like _as_float32', () => {
  const none = Normalization.fromDict({ kind: 'none' }, [2]);
  assert.throws(() => normalize(none, ndarray(Float64Array.from([1, 1e39]), [1, 2])), InputError);
  normalize(none, ndarray(Float32Array.from([1, 3e38]), [1, 2])); // float32 in: nothing to check
  const tiny = Normalization.fromDict({ kind: 'scale', offset: [0], scale: [1e-30] }, [2]);
  assert.throws(() => normalize(tiny, ndarray(Float32Array.from([1, 1e9]), [1, 2])), /overflow float32/);
});

test('padding repeats the edge pixels, as numpy.pad(mode="edge")', () => {
  const x = nd(golden.pad.x);
  const y = nd(golden.pad.y);
  const got = padEdge(x, y.shape);
  assert.deepEqual(got.shape, y.shape);
  assert.equal(got.dtype, 'int16');
  assert.equal(hex(got.data), hex(y.data));
});

test('Codes messages serialize to the bytes Python writes', () => {
  for (const c of golden.codes) {
    const codes = { ...c.codes, tensor: { ...c.codes.tensor, data: bytes(c.codes.tensor.data) } };
    const got = serializeCodes(codes);
    assert.equal(hex(got), hex(bytes(c.bytes)), c.codes.model_name);
    const back = parseCodes(got);
    assert.equal(back.count, c.codes.count);
    assert.deepEqual(back.latent_shape, c.codes.latent_shape);
    assert.equal(hex(serializeCodes(back)), hex(got)); // parse, serialize: the same bytes
  }
});

test('codes files: LWCODES1, then length-prefixed messages', () => {
  const msgs = golden.codes.slice(0, 3).map((/** @type {any} */ c) => ({ ...c.codes, tensor: { ...c.codes.tensor, data: bytes(c.codes.tensor.data) } }));
  const data = formatCodesFile(msgs);
  assert.equal(data.subarray(0, 8).toString('latin1'), 'LWCODES1');
  const parts = splitCodesFile(data);
  assert.deepEqual(parts.map((p) => hex(p)), golden.codes.slice(0, 3).map((/** @type {any} */ c) => hex(bytes(c.bytes))));
  const dir = mkdtempSync(join(tmpdir(), 'lw-'));
  writeFileSync(join(dir, 'a.lwc'), data);
  assert.equal(readCodesFile(join(dir, 'a.lwc')).length, 3);
  assert.throws(() => splitCodesFile(Buffer.from('LWCODES2')), CodesError);
  assert.throws(() => splitCodesFile(Buffer.from('LWCODES1')), /holds no codes/);
  assert.throws(() => splitCodesFile(data.subarray(0, data.length - 1)), /truncated/);
});

test('wire tensors: dtype, shape and byte length must agree', () => {
  const arr = ndarray(Float32Array.from([1, 2, 3, 4, 5, 6]), [2, 3]);
  const t = arrayToTensor(arr);
  assert.deepEqual(tensorToArray(t), arr);
  assert.throws(() => tensorToArray({ ...t, data: t.data.subarray(1) }), /needs 24 bytes, got 23/);
  assert.throws(() => tensorToArray({ ...t, dtype: 'bool' }), /unknown tensor dtype/);
  assert.throws(() => tensorToArray({ ...t, shape: [-2, -3] }), /negative/);
  assert.throws(() => tensorToArray({ ...t, shape: new Array(33).fill(1) }), /at most 32/);
  // unaligned bytes (as protobuf hands them out) are copied
  const raw = new Uint8Array(25);
  raw.set(t.data, 1);
  assert.deepEqual(Array.from(/** @type {Float32Array} */ (tensorToArray({ ...t, data: raw.subarray(1) }).data)), [1, 2, 3, 4, 5, 6]);
  assert.equal(halfToFloat(0x3c00), 1);
  assert.equal(halfToFloat(0xc000), -2);
  assert.equal(halfToFloat(0x0001), 2 ** -24);
  assert.equal(halfToFloat(0x7c00), Infinity);
});

test('.npy files round-trip and read what numpy writes', () => {
  const arr = ndarray(Float32Array.from([1.5, -2, 3, 4, 5, 6]), [2, 3]);
  const back = parseNpy(formatNpy(arr));
  assert.deepEqual(back, arr);
  const one = parseNpy(formatNpy(ndarray(Int32Array.from([7, 8]), [2])));
  assert.deepEqual(one.shape, [2]);
  const header = Buffer.from(formatNpy(arr).subarray(0, 80)).toString('latin1');
  assert.match(header, /'descr': '<f4', 'fortran_order': False, 'shape': \(2, 3\), \}/);
  assert.equal((header.indexOf('\n') + 1) % 64, 0); // numpy aligns the data to 64 bytes
  assert.throws(() => parseNpy(new Uint8Array(20)), /not a \.npy file/);
});
