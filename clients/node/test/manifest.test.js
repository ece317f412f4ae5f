// The manifest: Python's float repr and canonical JSON (so the fingerprint of a manifest is
// computed exactly as runtime/manifest.py computes it), and the checks of its fields.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';

import { PackageError } from '../src/errors.js';
import { parseManifest } from '../src/manifest.js';
import { canonical, objectNode, parseTree, pyFloatRepr, pyString, toValue } from '../src/pyjson.js';
import { fixture } from './helpers.js';

const golden = fixture('py-golden.json');

test('pyFloatRepr is Python\'s repr of a float', () => {
  for (const [repr, dumped] of golden.float_repr) {
    assert.equal(pyFloatRepr(Number(repr)), repr);
    assert.equal(canonical(/** @type {any} */ (parseTree(dumped))), dumped);
  }
  assert.equal(pyFloatRepr(NaN), 'NaN');
  assert.equal(pyFloatRepr(-Infinity), '-Infinity');
});

test('canonical JSON of a parsed manifest is byte for byte Python\'s canonical_json', () => {
  const { text, canonical: want, fingerprint } = golden.canonical;
  const tree = /** @type {import('../src/pyjson.js').ObjNode} */ (parseTree(text));
  /** @type {Record<string, any>} */
  const picked = {};
  for (const k of ['input', 'latent', 'output', 'normalization', 'codes']) picked[k] = tree.entries.get(k);
  assert.equal(canonical(objectNode(picked)), want);
  const files = /** @type {any} */ (tree.entries.get('files'));
  picked.graphs = objectNode({
    encoder: files.entries.get('encoder').entries.get('graph_sha256'),
    decoder: files.entries.get('decoder').entries.get('graph_sha256'),
  });
  const digest = createHash('sha256').update(canonical(objectNode(picked))).digest('hex').slice(0, 16);
  assert.equal(digest, fingerprint);
});

test('the JSON parser reads what Python\'s json.loads reads', () => {
  const v = toValue(parseTree('{"a": [1, 2.5, -0.0, 1e2, NaN, Infinity, -Infinity], "a": "last", "__proto__": {"x": true}}'));
  assert.equal(v.a, 'last');
  assert.deepEqual(Object.keys(v), ['a', '__proto__']);
  assert.equal(canonical(parseTree('[1E2, -0, 12345678901234567890123]')), '[100.0,0,12345678901234567890123]');
  assert.equal(pyString('é\u0001"\\\x7f'), '"\\u00e9\\u0001\\"\\\\\\u007f"');
  for (const bad of ['{', '[1,]', '{"a" 1}', '01', '"\u0001"', '[1] 2', "{'a': 1}"]) {
    assert.throws(() => parseTree(bad), SyntaxError, bad);
  }
});

/** A minimal valid manifest (its fingerprint is then computed by parseManifest itself). */
function manifest(/** @type {Record<string, any>} */ over = {}) {
  const sha = 'ab'.repeat(32);
  return {
    schema: 'latentwire.manifest',
    schema_version: 2,
    name: 'm',
    fingerprint: '0'.repeat(16),
    input: { name: 'x', shape: [4], dtype: 'float32', multiple_of: 1 },
    latent: { name: 'z', shape: [2], dtype: 'float32' },
    output: { name: 'x_hat', shape: [4], dtype: 'float32' },
    normalization: { kind: 'minmax', offset: [0.5], scale: [2.0] },
    codes: { format: 'f32', name: 'codes', dtype: 'float32' },
    files: { encoder: { path: 'encoder.onnx', sha256: sha, graph_sha256: sha }, decoder: { path: 'decoder.onnx', sha256: sha, graph_sha256: sha } },
    ...over,
  };
}

test('parseManifest reads a manifest and refuses malformed ones with PackageError', () => {
  const m = parseManifest(JSON.stringify(manifest()));
  assert.equal(m.name, 'm');
  assert.equal(m.format, 'f32');
  assert.deepEqual(m.input.shape, [4]);
  assert.match(m.computedFingerprint, /^[0-9a-f]{16}$/);
  const bad = [
    ['not json', /not valid JSON/],
    [JSON.stringify([1]), /JSON object/],
    [JSON.stringify(manifest({ schema: 'x' })), /not a latentwire manifest/],
    [JSON.stringify(manifest({ schema_version: 1 })), /schema_version 1/],
    [JSON.stringify(manifest({ input: { name: 'x', shape: [0], dtype: 'float32' } })), /positive/],
    [JSON.stringify(manifest({ input: { name: 'x', shape: new Array(9).fill(1), dtype: 'float32' } })), /at most 8/],
    [JSON.stringify(manifest({ input: { name: 'x', shape: [4], dtype: 'complex64' } })), /dtype/],
    [JSON.stringify(manifest({ input: { name: 'x', shape: [null], dtype: 'float32', multiple_of: 2048 } })), /over 1024/],
    [JSON.stringify(manifest({ input: { name: 'x', shape: [1 << 14, 1 << 14], dtype: 'float32' } })), /more than/],
    [JSON.stringify(manifest({ latent: { name: 'z', shape: [null], dtype: 'float32' } })), /fixed channel count/],
    [JSON.stringify(manifest({ normalization: { kind: 'log' } })), /normalization.kind/],
    [JSON.stringify(manifest({ normalization: { kind: 'minmax', offset: [1, 2, 3], scale: [1] } })), /broadcasts/],
    [JSON.stringify(manifest({ normalization: { kind: 'minmax', offset: [0], scale: [0] } })), /non-zero/],
    [JSON.stringify(manifest({ normalization: { kind: 'minmax', offset: ['a'], scale: [1] } })), /list of numbers/],
    [JSON.stringify(manifest({ codes: { format: 'q4', name: 'codes', dtype: 'int8' } })), /unknown code format/],
    [JSON.stringify(manifest({ codes: { format: 'int8', name: 'codes', dtype: 'float32' } })), /dtype int8/],
    [JSON.stringify(manifest({ codes: { format: 'entropy', name: 'codes', dtype: 'int32' } })), /entropy coder/],
    [JSON.stringify(manifest({ files: { encoder: { path: '../x', sha256: 'ab'.repeat(32), graph_sha256: 'ab'.repeat(32) } } })), /files\.encoder\.path/],
    [JSON.stringify(manifest({ files: { encoder: { path: 'e.onnx', sha256: 'AB'.repeat(32), graph_sha256: 'ab'.repeat(32) }, decoder: {} } })), /64 hex/],
  ];
  for (const [text, re] of bad) {
    assert.throws(() => parseManifest(/** @type {string} */ (text)), (e) => e instanceof PackageError && /** @type {RegExp} */ (re).test(e.message), String(re));
  }
});
