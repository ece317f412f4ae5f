// The factorised prior (runtime/entropy.py in JS): streams of (N, K, H, W) batches equal the
// Python runtime's (test/fixtures/py-golden.json), and every guard of its decoder.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { MAX_SYMBOLS, Prior } from '../src/entropy.js';
import { CodesError, PackageError } from '../src/errors.js';
import { bytes, fixture, hex, nd } from './helpers.js';

const golden = fixture('py-golden.json');
const dict = (/** @type {any[]} */ tables) => ({ coder: 'constriction-ans32', precision_bits: 16, tables });

test('Prior.encode writes the stream FactorizedPrior.encode writes (channel by channel, C order)', () => {
  for (const c of golden.priors) {
    const prior = Prior.fromDict(dict(c.tables), c.tables.length);
    const sym = nd(c.symbols);
    if (c.stream === null) {
      assert.throws(() => prior.encode(sym.data, sym.shape), (e) => e instanceof CodesError && /refuses as truncated/.test(e.message));
      continue;
    }
    const stream = prior.encode(sym.data, sym.shape);
    assert.equal(hex(stream), hex(bytes(c.stream)));
    const back = prior.decode(stream, sym.shape[0], sym.shape.slice(1));
    assert.deepEqual(back.shape, sym.shape);
    assert.deepEqual(Array.from(back.symbols), Array.from(sym.data));
  }
});

test('the manifest tables are checked as Python checks them', () => {
  const ok = [{ offset: -2, freq: [1, 2, 3] }];
  assert.equal(Prior.fromDict(dict(ok), 1).channels, 1);
  /** @type {[any, RegExp][]} */
  const bad = [
    [{ ...dict(ok), coder: 'zstd' }, /not supported/],
    [{ ...dict(ok), precision_bits: 12 }, /12 bits/],
    [dict([...ok, ...ok]), /needs 1 tables/],
    [dict([{ offset: 0, freq: [1] }]), /2\.\.4096 frequencies/],
    [dict([{ offset: 0, freq: [1, 0] }]), /each >= 1/],
    [dict([{ offset: 0, freq: [1, 65537] }]), /frequencies/],
    [dict([{ offset: 0, freq: new Array(4097).fill(1) }]), /frequencies/],
    [dict([{ offset: 1.5, freq: [1, 1] }]), /integer offset/],
    [dict([{ offset: 2 ** 30, freq: [1, 1] }]), /within/],
  ];
  for (const [d, re] of bad) assert.throws(() => Prior.fromDict(d, 1), (e) => e instanceof PackageError && re.test(e.message));
});

test('symbols outside a table are refused with the index and the channel\'s range', () => {
  const prior = Prior.fromDict(dict([{ offset: -2, freq: [5, 5, 5] }, { offset: 0, freq: [1, 1] }]), 2);
  assert.throws(
    () => prior.encode(Int32Array.from([-2, 0, 0, 2]), [2, 2]),
    (e) => e instanceof CodesError && /index \(1, 1\) is 2; channel 1 takes 0 \.\. 1/.test(e.message),
  );
  assert.throws(() => prior.encode(Int32Array.from([0]), [1, 1]), /shape \(N, 2, \.\.\.\)/);
});

test('decode keeps every guard of the Python decoder', () => {
  const prior = Prior.fromDict(dict([{ offset: 0, freq: [1000, 10, 10] }, { offset: -1, freq: [3, 3] }]), 2);
  const sym = Int32Array.from({ length: 2 * 2 * 3 }, (_, i) => (i % 6 < 3 ? i % 3 : -1 + (i % 2)));
  const stream = prior.encode(sym, [2, 2, 3]);
  const refuse = (/** @type {() => unknown} */ f, /** @type {RegExp} */ re) =>
    assert.throws(f, (e) => e instanceof CodesError && re.test(e.message));
  refuse(() => prior.decode(stream.subarray(1), 2, [2, 3]), /whole number of 32-bit words/);
  refuse(() => prior.decode(new Uint8Array(0), 2, [2, 3]), /empty but codes say count=2/);
  refuse(() => prior.decode(stream, 2, [3, 3]), /2 channels first/);
  refuse(() => prior.decode(stream, 2, [2, 0]), /2 channels first/);
  refuse(() => prior.decode(stream, 2, new Array(33).fill(1)), /at most 32/);
  refuse(() => prior.decode(stream, MAX_SYMBOLS, [2, 3]), /symbols one message may hold/);
  refuse(() => prior.decode(stream, 1000, [2, 3]), /truncated or their count is wrong/);
  const junk = new Uint8Array(stream);
  junk[junk.length - 1] = 0;
  junk[junk.length - 2] = 0;
  junk[junk.length - 3] = 0;
  junk[junk.length - 4] = 0;
  refuse(() => prior.decode(junk, 2, [2, 3]), /cannot be decoded/);
  refuse(() => prior.decode(stream, 1, [2, 3]), /truncated or corrupted/);
  const back = prior.decode(stream, 2, [2, 3]);
  assert.deepEqual(Array.from(back.symbols), Array.from(sym));
  assert.deepEqual(back.shape, [2, 2, 3]);
});
