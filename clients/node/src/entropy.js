// Entropy coding of integer latents with a factorised prior: runtime/entropy.py in
// JavaScript, over the rANS coder of ./ans.js (the streams of constriction's AnsCoder).
//
// One stream codes all symbols of a batch (N, K, ...): channel by channel, each channel's
// symbols in C order over (sample, height, width); channel 0 decodes first. Every guard of
// the Python decoder is kept: symbol range, MAX_SYMBOLS, the minimum stream length (`fits`)
// and the check that a stream is used up exactly.

import { Table, decode as ansDecode, encode as ansEncode } from './ans.js';
import { CodesError, PackageError } from './errors.js';

export const CODER = 'constriction-ans32';
export const PRECISION_BITS = 16;
export const MAX_SUPPORT = 4096;
export const MAX_SYMBOL = 2 ** 30;
/** Most symbols one stream may decode to. */
export const MAX_SYMBOLS = 2 ** 26;
/** Most dimensions of a latent shape (runtime/codes.py MAX_DIMS). */
export const MAX_DIMS = 32;

/** @param {unknown} v @returns {v is number} */
const isInt = (v) => typeof v === 'number' && Number.isInteger(v);

/** Per-channel integer frequency tables (a manifest's codes.entropy). */
export class Prior {
  /**
   * @param {number[]} offsets the first symbol of each channel's table
   * @param {number[][]} freqs each channel's frequencies
   */
  constructor(offsets, freqs) {
    this.offsets = offsets;
    this.freqs = freqs;
    this.tables = freqs.map((f) => new Table(f));
    /** @type {number[]} the last symbol of each channel's table */
    this.high = offsets.map((o, c) => o + freqs[c].length - 1);
    // bits one sample's symbols (one per channel) cost at least
    let least = 0;
    for (const f of freqs) {
      let max = 0;
      let sum = 0;
      for (const v of f) {
        if (v > max) max = v;
        sum += v;
      }
      least += -Math.log2(max / sum);
    }
    this.leastBits = least;
  }

  get channels() {
    return this.freqs.length;
  }

  /**
   * The tables of a manifest's codes.entropy, checked as runtime/entropy.py does.
   * @param {unknown} d @param {number} channels
   */
  static fromDict(d, channels) {
    if (typeof d !== 'object' || d === null || Array.isArray(d)) {
      throw new PackageError('codes.entropy must be an object');
    }
    const o = /** @type {Record<string, any>} */ (d);
    if (o.coder !== CODER) {
      throw new PackageError(`entropy coder ${JSON.stringify(o.coder ?? null)} is not supported; latentwire-edge uses ${CODER}`);
    }
    const precision = o.precision_bits ?? PRECISION_BITS;
    if (precision !== PRECISION_BITS) {
      throw new PackageError(
        `entropy tables of ${JSON.stringify(precision)} bits are not supported; latentwire-edge reads ${PRECISION_BITS}-bit tables`,
      );
    }
    const tables = o.tables;
    if (!Array.isArray(tables) || tables.length !== channels) {
      const n = Array.isArray(tables) ? tables.length : 'no';
      throw new PackageError(
        `the entropy model needs ${channels} tables, one per latent channel; the manifest has ${n}`,
      );
    }
    const total = 2 ** PRECISION_BITS;
    /** @type {number[]} */
    const offsets = [];
    /** @type {number[][]} */
    const freqs = [];
    tables.forEach((t, c) => {
      const freq = t && typeof t === 'object' ? t.freq : undefined;
      const offset = t && typeof t === 'object' ? t.offset : undefined;
      if (
        !Array.isArray(freq) ||
        freq.length < 2 ||
        freq.length > MAX_SUPPORT ||
        !freq.every((v) => isInt(v) && v >= 1 && v <= total)
      ) {
        throw new PackageError(`entropy table ${c} must hold 2..${MAX_SUPPORT} frequencies, each >= 1`);
      }
      if (!isInt(offset) || offset < -MAX_SYMBOL || offset > MAX_SYMBOL - freq.length) {
        throw new PackageError(
          `entropy table ${c} needs an integer offset; its symbols must lie within +-${MAX_SYMBOL}, got ${JSON.stringify(offset ?? null)}`,
        );
      }
      offsets.push(offset);
      freqs.push(freq);
    });
    return new Prior(offsets, freqs);
  }

  /**
   * Whether `nbytes` of stream can hold `perChannel` symbols in every channel (see
   * runtime/entropy.py `_fits`: ANS codes a batch of mostly lowest symbols into fewer bytes
   * than a decoder accepts).
   * @param {number} nbytes @param {number} perChannel
   */
  fits(nbytes, perChannel) {
    if (perChannel && !nbytes) return false;
    return (perChannel * this.leastBits) / 2 <= 8 * nbytes + 64;
  }

  /**
   * Refuse symbols outside their channel's table.
   * @param {ArrayLike<number>} symbols (N, K, ...) in C order
   * @param {number[]} shape
   * @param {string} [what]
   */
  checkSymbols(symbols, shape, what = 'symbols') {
    const K = this.channels;
    const inner = shape.slice(2).reduce((a, b) => a * b, 1);
    let bad = 0;
    let first = -1;
    for (let i = 0; i < symbols.length; i++) {
      const c = Math.floor(i / inner) % K;
      const v = symbols[i];
      if (v < this.offsets[c] || v > this.high[c]) {
        bad++;
        if (first < 0) first = i;
      }
    }
    if (bad) {
      const at = unravel(first, shape);
      const c = at[1];
      throw new CodesError(
        `${what}: ${bad} value(s) outside the entropy model's range, the first at index ` +
          `(${at.join(', ')}${at.length === 1 ? ',' : ''}) is ${symbols[first]}; channel ${c} takes ` +
          `${this.offsets[c]} .. ${this.high[c]}`,
      );
    }
  }

  /**
   * One stream of (N, K, ...) integer symbols (checked against the tables first).
   * @param {ArrayLike<number>} symbols in C order
   * @param {number[]} shape [N, K, ...]
   * @returns {Uint8Array}
   */
  encode(symbols, shape) {
    const K = this.channels;
    if (shape.length < 2 || shape[1] !== K) {
      throw new CodesError(`symbols must have shape (N, ${K}, ...), got (${shape.join(', ')})`);
    }
    this.checkSymbols(symbols, shape);
    const N = shape[0];
    const inner = shape.slice(2).reduce((a, b) => a * b, 1);
    const perChannel = N * inner;
    /** @type {Int32Array[]} */
    const channels = [];
    for (let c = 0; c < K; c++) {
      const idx = new Int32Array(perChannel);
      const off = this.offsets[c];
      let j = 0;
      for (let n = 0; n < N; n++) {
        const base = (n * K + c) * inner;
        for (let i = 0; i < inner; i++) idx[j++] = symbols[base + i] - off;
      }
      channels.push(idx);
    }
    const words = ansEncode(this.tables, channels);
    const stream = wordsToBytes(words);
    if (!this.fits(stream.length, perChannel)) {
      throw new CodesError(
        `${N} samples code to an entropy stream of ${stream.length} bytes, which a decoder ` +
          'refuses as truncated: too many of their values sit at their channel\'s lowest symbol, ' +
          'which costs no bits at the end of a stream; these samples cannot be sent with this ' +
          "model's entropy tables",
      );
    }
    return stream;
  }

  /**
   * Symbols (count, ...latentShape) from one stream; CodesError when the stream is not
   * exactly what `encode` wrote for that many symbols.
   * @param {Uint8Array} stream @param {number} count @param {number[]} latentShape
   * @returns {{ symbols: Int32Array, shape: number[] }}
   */
  decode(stream, count, latentShape) {
    const shape = latentShape.map(Number);
    const K = this.channels;
    if (shape.length > MAX_DIMS) {
      throw new CodesError(
        `entropy codes have a latent shape of ${shape.length} dimensions; at most ${MAX_DIMS} are allowed`,
      );
    }
    if (!shape.length || shape[0] !== K || shape.some((s) => s < 1)) {
      throw new CodesError(
        `entropy codes have latent shape [${shape.join(', ')}]; this model's symbols have ${K} channels first`,
      );
    }
    if (stream.length % 4) {
      throw new CodesError(`an entropy stream is a whole number of 32-bit words; got ${stream.length} bytes`);
    }
    const inner = shape.slice(1).reduce((a, b) => a * b, 1);
    const perChannel = count * inner;
    if (perChannel * K > MAX_SYMBOLS) {
      throw new CodesError(
        `${count} samples of latent shape [${shape.join(', ')}] are more than the ${MAX_SYMBOLS} symbols one message may hold`,
      );
    }
    if (perChannel && !stream.length) {
      throw new CodesError(`the entropy stream is empty but codes say count=${count}`);
    }
    if (!this.fits(stream.length, perChannel)) {
      throw new CodesError(
        `an entropy stream of ${stream.length} bytes cannot hold ${count} samples of latent shape ` +
          `[${shape.join(', ')}]; the codes are truncated or their count is wrong`,
      );
    }
    const words = bytesToWords(stream);
    let decoded;
    try {
      decoded = ansDecode(this.tables, words, perChannel);
    } catch (err) {
      throw new CodesError(`the entropy stream cannot be decoded: ${/** @type {Error} */ (err).message}`);
    }
    if (!decoded.intact) {
      throw new CodesError(
        `the entropy stream (${stream.length} bytes) is truncated or corrupted: it does not decode ` +
          `to exactly ${count} samples of latent shape [${shape.join(', ')}]`,
      );
    }
    const rest = shape.slice(1).reduce((a, b) => a * b, 1);
    const out = new Int32Array(count * K * rest);
    for (let c = 0; c < K; c++) {
      const row = decoded.symbols[c];
      const off = this.offsets[c];
      for (let n = 0; n < count; n++) {
        const dst = (n * K + c) * rest;
        const src = n * rest;
        for (let i = 0; i < rest; i++) out[dst + i] = row[src + i] + off;
      }
    }
    return { symbols: out, shape: [count, ...shape] };
  }
}

/**
 * @param {number} flat @param {number[]} shape
 * @returns {number[]}
 */
export function unravel(flat, shape) {
  const at = new Array(shape.length).fill(0);
  for (let i = shape.length - 1; i >= 0; i--) {
    at[i] = flat % shape[i];
    flat = Math.floor(flat / shape[i]);
  }
  return at;
}

/** @param {Uint32Array} words */
function wordsToBytes(words) {
  const out = new Uint8Array(words.length * 4);
  const view = new DataView(out.buffer);
  for (let i = 0; i < words.length; i++) view.setUint32(4 * i, words[i], true);
  return out;
}

/** @param {Uint8Array} bytes */
function bytesToWords(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Uint32Array(bytes.length / 4);
  for (let i = 0; i < out.length; i++) out[i] = view.getUint32(4 * i, true);
  return out;
}
