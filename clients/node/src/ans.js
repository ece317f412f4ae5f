// latentwire's rANS coder in JavaScript: the streams of constriction's AnsCoder (the manifest
// coder "constriction-ans32"), bit for bit, as runtime/ans.py writes them in Python.
//
// constriction's `AnsCoder` is `AnsCoder<u32, u64>` and `Categorical(freq, perfect=False)` is
// `ContiguousCategoricalEntropyModel<u32, _, 24>`:
//
// - Tables. n integer frequencies f become 24-bit left cumulatives
//   left[i] = trunc(cum_i * scale) + i, cum_i = f_0 + ... + f_(i-1), scale = (2**24 - n) / sum(f),
//   all in float64; symbol i has probability left[i+1] - left[i] (left[n] = 2**24).
// - Encode (push a symbol of probability p, cumulative l onto a u64 state): when
//   state >> 40 >= p, write the state's low 32-bit word and shift it out; then
//   state = (state / p) << 24 | (state % p + l). A stack: symbols are pushed last first so that
//   they pop in order. The stream is the words written, then the final state as its low and
//   high word without leading zero words (state 0 adds none), as little-endian u32.
// - Decode (pop): the state starts from the last word (refused when 0) and the one before;
//   each symbol is the one whose interval holds q = state mod 2**24, then
//   state = (state >> 24) * p + q - l, refilled with the next word from the end when it falls
//   below 2**32. A stream was used up exactly when the state ends at 0.
//
// The u64 state is kept as two uint32 halves in doubles (hi, lo); every intermediate value
// stays below 2**53, so the arithmetic is exact (test/ans.test.js checks it against a BigInt
// twin and against golden streams made by constriction).

/** Bits of the quantised probabilities (constriction's default models). */
export const PRECISION = 24;
const ONE = 2 ** PRECISION;
const MASK = ONE - 1;
const TWO32 = 2 ** 32;
const TWO20 = 2 ** 20;
const TWO16 = 2 ** 16;
const TWO12 = 2 ** 12;

/** One channel's quantised distribution over the symbols 0 .. n-1 (offsets are the caller's). */
export class Table {
  /**
   * @param {ArrayLike<number>} freq non-negative frequencies (integers in manifests), n >= 2
   */
  constructor(freq) {
    const n = freq.length;
    if (n < 2 || n >= ONE - 1) {
      throw new RangeError(`a table needs 2 .. ${ONE - 2} frequencies, got ${n}`);
    }
    let total = 0;
    for (let i = 0; i < n; i++) {
      const f = freq[i];
      if (typeof f !== 'number' || !(f >= 0)) {
        throw new RangeError('frequencies must be non-negative numbers');
      }
      total += f;
    }
    if (!Number.isFinite(total) || total <= 0) {
      throw new RangeError('frequencies must have a positive, finite sum');
    }
    const scale = (ONE - n) / total;
    /** n + 1 cumulatives, the last 2**24. */
    this.left = new Float64Array(n + 1);
    /** n probabilities (out of 2**24), each at least 1. */
    this.prob = new Float64Array(n);
    this.n = n;
    let cum = 0;
    for (let i = 0; i < n; i++) {
      this.left[i] = Math.trunc(cum * scale) + i;
      cum += freq[i];
    }
    this.left[n] = ONE;
    for (let i = 0; i < n; i++) this.prob[i] = this.left[i + 1] - this.left[i];
  }

  /**
   * The symbol whose interval holds q (0 <= q < 2**24): left[s] <= q < left[s + 1].
   * @param {number} q
   */
  find(q) {
    const left = this.left;
    let lo = 0;
    let hi = this.n; // left[lo] <= q < left[hi]
    while (hi - lo > 1) {
      const mid = (lo + hi) >>> 1;
      if (left[mid] <= q) lo = mid;
      else hi = mid;
    }
    return lo;
  }
}

/**
 * One stream (uint32 words) of the symbols `symbols[c]` of each channel c (indices into
 * `tables[c]`, already checked to lie in it), channel 0's first when decoding.
 * @param {readonly Table[]} tables
 * @param {readonly ArrayLike<number>[]} symbols
 * @returns {Uint32Array}
 */
export function encode(tables, symbols) {
  if (tables.length !== symbols.length) {
    throw new RangeError(`${tables.length} tables for ${symbols.length} channels of symbols`);
  }
  let total = 0;
  for (const s of symbols) total += s.length;
  // every symbol writes at most one word; the final state adds two
  let words = new Uint32Array(Math.min(total, 1 << 20) + 2);
  let n = 0;
  let hi = 0; // state = hi * 2**32 + lo, both uint32
  let lo = 0;
  for (let c = tables.length - 1; c >= 0; c--) {
    const { left, prob } = tables[c];
    const idx = symbols[c];
    for (let i = idx.length - 1; i >= 0; i--) {
      const s = idx[i];
      const p = prob[s];
      if (hi >>> 8 >= p) { // state >> 40 >= p: flush the low word
        if (n === words.length) {
          const grown = new Uint32Array(Math.min(words.length * 2, total + 2));
          grown.set(words);
          words = grown;
        }
        words[n++] = lo;
        lo = hi;
        hi = 0;
      }
      // (quotient, remainder) of the 64-bit state by p in three exact steps: hi < p * 2**8
      // here, so the quotient is below 2**40 and each partial dividend below 2**40
      const qh = Math.floor(hi / p);
      const x = (hi - qh * p) * TWO16 + (lo >>> 16);
      const q1 = Math.floor(x / p);
      const y = (x - q1 * p) * TWO16 + (lo & 0xffff);
      const q0 = Math.floor(y / p);
      const r = y - q0 * p;
      const quot = qh * TWO32 + q1 * TWO16 + q0; // < 2**40
      // state = quot << 24 | (r + l): r + l < 2**24
      const top = Math.floor(quot / 256);
      hi = top;
      lo = ((quot - top * 256) * ONE + r + left[s]) >>> 0;
    }
  }
  const tail = hi ? 2 : lo ? 1 : 0;
  const out = new Uint32Array(n + tail);
  out.set(words.subarray(0, n));
  if (tail) out[n] = lo;
  if (tail === 2) out[n + 1] = hi;
  return out;
}

/**
 * (K, perChannel) symbol indices from a stream, and whether the stream was used up exactly.
 * Throws RangeError when the stream ends in a zero word, which no encoder writes.
 * @param {readonly Table[]} tables
 * @param {Uint32Array} words
 * @param {number} perChannel
 * @returns {{ symbols: Int32Array[], intact: boolean }}
 */
export function decode(tables, words, perChannel) {
  let pos = words.length;
  if (pos && words[pos - 1] === 0) {
    throw new RangeError('Invalid compressed data: ANS compressed data never ends in a zero word.');
  }
  let hi = 0;
  let lo = 0;
  if (pos) {
    lo = words[--pos];
    if (pos) {
      hi = lo;
      lo = words[--pos];
    }
  }
  const out = [];
  for (const table of tables) {
    const { left, prob } = table;
    const row = new Int32Array(perChannel);
    for (let i = 0; i < perChannel; i++) {
      const q = lo & MASK;
      const s = table.find(q);
      // state = (state >> 24) * p + (q - l), exactly: a = state >> 24 < 2**40 split at 2**20
      const a = hi * 256 + (lo >>> 24);
      const ah = Math.floor(a / TWO20);
      const al = a - ah * TWO20;
      const p = prob[s];
      const mid = ah * p; // < 2**44, weighs 2**20
      const midHi = Math.floor(mid / TWO12);
      const low = (mid - midHi * TWO12) * TWO20 + al * p + (q - left[s]); // < 2**46
      const carry = Math.floor(low / TWO32);
      hi = midHi + carry;
      lo = low - carry * TWO32;
      if (hi === 0 && pos) {
        hi = lo;
        lo = words[--pos];
      }
      row[i] = s;
    }
    out.push(row);
  }
  return { symbols: out, intact: hi === 0 && lo === 0 };
}
