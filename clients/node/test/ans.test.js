// The rANS coder against streams made by constriction (test/fixtures/ans-golden.json) and
// against a BigInt twin written straight from the coder's definition.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { PRECISION, Table, decode, encode } from '../src/ans.js';
import { fixture } from './helpers.js';

const golden = fixture('ans-golden.json');

test('golden streams: encode writes constriction\'s words, decode reads them back', () => {
  assert.equal(golden.coder, 'constriction-ans32');
  assert.ok(golden.cases.length >= 30);
  for (const c of golden.cases) {
    const tables = c.freqs.map((/** @type {number[]} */ f) => new Table(f));
    const words = encode(tables, c.symbols);
    assert.deepEqual(Array.from(words), c.words, c.name);
    const lengths = new Set(c.symbols.map((/** @type {number[]} */ s) => s.length));
    if (lengths.size === 1) {
      const per = c.symbols[0].length;
      const got = decode(tables, Uint32Array.from(c.words), per);
      assert.ok(got.intact, c.name);
      assert.deepEqual(got.symbols.map((r) => Array.from(r)), c.symbols, c.name);
    }
  }
});

test('the golden cases cover the corners', () => {
  const names = golden.cases.map((/** @type {{name: string}} */ c) => c.name);
  for (const want of ['two symbols', 'peaked', '4096 symbols', 'only first symbols', 'empty']) {
    assert.ok(names.includes(want), want);
  }
  const first = golden.cases.find((/** @type {{name: string}} */ c) => c.name === 'only first symbols');
  assert.deepEqual(first.words, []); // state 0 throughout: a stream of no words
});

test('tables: quantised like constriction (float64 cumulatives, at least 1 per symbol)', () => {
  const t = new Table([1, 65535]);
  assert.equal(t.left[0], 0);
  assert.equal(t.prob[0] + t.prob[1], 2 ** PRECISION);
  assert.ok(t.prob[0] >= 1);
  const wide = new Table(new Array(4096).fill(1));
  assert.equal(wide.prob.reduce((a, b) => a + b, 0), 2 ** 24);
  assert.throws(() => new Table([5]), RangeError);
  assert.throws(() => new Table([0, 0]), RangeError);
});

// -- a BigInt twin, for random tables and symbols -----------------------------------------
/** @param {Table} t */
const big = (t) => ({ left: Array.from(t.left, BigInt), prob: Array.from(t.prob, BigInt) });

/** @param {Table[]} tables @param {number[][]} symbols */
function encodeBig(tables, symbols) {
  const words = [];
  let state = 0n;
  for (let c = tables.length - 1; c >= 0; c--) {
    const { left, prob } = big(tables[c]);
    for (let i = symbols[c].length - 1; i >= 0; i--) {
      const s = symbols[c][i];
      if (state >> 40n >= prob[s]) {
        words.push(Number(state & 0xffffffffn));
        state >>= 32n;
      }
      state = ((state / prob[s]) << 24n) | (state % prob[s]) + left[s];
    }
  }
  if (state) {
    words.push(Number(state & 0xffffffffn));
    if (state >> 32n) words.push(Number(state >> 32n));
  }
  return words;
}

/** @param {Table[]} tables @param {number[]} words @param {number} per */
function decodeBig(tables, words, per) {
  const stack = [...words];
  let state = 0n;
  if (stack.length) state = BigInt(/** @type {number} */ (stack.pop()));
  if (stack.length) state = (state << 32n) | BigInt(/** @type {number} */ (stack.pop()));
  const out = [];
  for (const t of tables) {
    const { left, prob } = big(t);
    const row = [];
    for (let i = 0; i < per; i++) {
      const q = state & 0xffffffn;
      let s = 0;
      while (left[s + 1] <= q) s++;
      state = (state >> 24n) * prob[s] + q - left[s];
      if (state < 1n << 32n && stack.length) state = (state << 32n) | BigInt(/** @type {number} */ (stack.pop()));
      row.push(s);
    }
    out.push(row);
  }
  return { symbols: out, intact: state === 0n };
}

/** A small deterministic generator (mulberry32). @param {number} seed */
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

test('random tables and symbols: the double-based coder equals the BigInt twin', () => {
  const r = rng(12345);
  for (let trial = 0; trial < 300; trial++) {
    const k = 1 + Math.floor(r() * 4);
    const tables = [];
    const symbols = [];
    const per = Math.floor(r() * 200);
    for (let c = 0; c < k; c++) {
      const n = 2 + Math.floor(r() * (trial % 10 === 0 ? 4000 : 40));
      const peaked = r() < 0.3;
      const freq = Array.from({ length: n }, (_, i) => (peaked && i === 0 ? 60000 : 1 + Math.floor(r() ** 3 * 5000)));
      const table = new Table(freq);
      tables.push(table);
      // skewed draws: many first symbols, some rare ones
      symbols.push(Array.from({ length: per }, () => (r() < 0.5 ? 0 : Math.floor(r() * n))));
    }
    const words = encode(tables, symbols);
    assert.deepEqual(Array.from(words), encodeBig(tables, symbols), `trial ${trial}`);
    const got = decode(tables, words, per);
    assert.ok(got.intact);
    assert.deepEqual(got.symbols.map((s) => Array.from(s)), symbols);
    // arbitrary words decode as the twin decodes them (garbage in, the same garbage out)
    const junk = Array.from({ length: 1 + Math.floor(r() * 6) }, () => Math.floor(r() * 2 ** 32));
    junk[junk.length - 1] ||= 1;
    const a = decode(tables, Uint32Array.from(junk), per);
    const b = decodeBig(tables, junk, per);
    assert.deepEqual(a.symbols.map((s) => Array.from(s)), b.symbols);
    assert.equal(a.intact, b.intact);
  }
});

test('decode: a stream ending in a zero word is refused; a cut stream is not intact', () => {
  const t = [new Table([3, 5, 8])];
  assert.throws(() => decode(t, Uint32Array.from([7, 0]), 3), /never ends in a zero word/);
  const symbols = [Array.from({ length: 500 }, (_, i) => i % 3)];
  const words = encode(t, symbols);
  assert.ok(words.length > 3);
  assert.equal(decode(t, words.subarray(1), 500).intact, false);
  assert.equal(decode(t, words, 499).intact, false);
});
