// The ONNX protobuf walk (runtime/model.py check_graph in JS) on hand-made graph bytes.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { PackageError } from '../src/errors.js';
import { checkGraph, metadataProps } from '../src/onnx.js';

/** @param {number} n */
const varint = (n) => {
  const out = [];
  do {
    out.push((n & 0x7f) | (n > 0x7f ? 0x80 : 0));
    n = Math.floor(n / 128);
  } while (n);
  return out;
};
/** @param {number} field @param {number[] | string} body */
const ld = (field, body) => {
  const b = typeof body === 'string' ? [...Buffer.from(body)] : body;
  return [...varint(field * 8 + 2), ...varint(b.length), ...b];
};
/** @param {number} field @param {number} v */
const vi = (field, v) => [...varint(field * 8), ...varint(v)];
const bytes = (/** @type {number[]} */ b) => Uint8Array.from(b);

const entry = (/** @type {string} */ k, /** @type {string} */ v) => ld(14, [...ld(1, k), ...ld(2, v)]);
const tensor = (/** @type {number[]} */ extra) => [...ld(8, 'w'), ...vi(1, 3), ...extra];

test('metadata_props are read in file order', () => {
  const model = bytes([...vi(1, 10), ...entry('latentwire.fingerprint', 'abc'), ...ld(7, ld(2, 'g')), ...entry('k', 'v')]);
  assert.deepEqual(metadataProps(model), [['latentwire.fingerprint', 'abc'], ['k', 'v']]);
  checkGraph(model, 'm.onnx');
});

test('tensors with external data are refused wherever they hide', () => {
  const external = tensor([...vi(14, 1), ...ld(13, [...ld(1, 'location'), ...ld(2, '../../etc/passwd')])]);
  const inGraph = bytes(ld(7, ld(5, external)));
  assert.throws(() => checkGraph(inGraph, 'e.onnx'), (e) => e instanceof PackageError && /'w' keeps its data in an external file '..\/..\/etc\/passwd'/.test(e.message));
  const inAttribute = bytes(ld(7, ld(1, ld(5, ld(5, external))))); // graph.node.attribute.t
  assert.throws(() => checkGraph(inAttribute, 'e.onnx'), /external file/);
  const inSubgraph = bytes(ld(7, ld(1, ld(5, ld(6, ld(5, external))))));
  assert.throws(() => checkGraph(inSubgraph, 'e.onnx'), /external file/);
  const flagOnly = bytes(ld(7, ld(5, tensor(vi(14, 1)))));
  assert.throws(() => checkGraph(flagOnly, 'e.onnx'), /external file ''/);
  checkGraph(bytes(ld(7, ld(5, tensor(vi(14, 0))))), 'ok.onnx'); // DEFAULT location
});

test('ORT-format models and bytes that are not protobuf are refused', () => {
  assert.throws(() => checkGraph(bytes([0, 0, 0, 0, ...Buffer.from('ORTM'), 0]), 'x.ort'), /ORT-format/);
  assert.throws(() => checkGraph(bytes([0x0a, 0x05, 1]), 'x.onnx'), /not an ONNX graph/);
  assert.throws(() => checkGraph(bytes([0x0f]), 'x.onnx'), /not an ONNX graph/); // wire type 7
  assert.throws(() => checkGraph(bytes([0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]), 'x.onnx'), /varint/);
  let deep = ld(6, []);
  for (let i = 0; i < 60; i++) deep = ld(6, ld(1, ld(5, deep))); // graph.node.attribute.g ...
  assert.throws(() => checkGraph(bytes(ld(7, ld(1, ld(5, deep)))), 'x.onnx'), /nested more than 100/);
});
