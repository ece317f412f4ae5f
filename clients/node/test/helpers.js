// Shared helpers of the unit tests: the golden files and arrays in their JSON form.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

import { TYPED } from '../src/arrays.js';

export const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), 'fixtures');

/** @param {string} name */
export function fixture(name) {
  return JSON.parse(readFileSync(join(FIXTURES, name), 'utf8'));
}

/** @param {string} b64 */
export function bytes(b64) {
  return new Uint8Array(Buffer.from(b64, 'base64'));
}

/**
 * An NDArray from {dtype, shape, data: base64}.
 * @param {{ dtype: string, shape: number[], data: string }} d
 * @returns {{ dtype: string, shape: number[], data: any }}
 */
export function nd(d) {
  const raw = bytes(d.data);
  const copy = new Uint8Array(raw.length);
  copy.set(raw);
  const cls = /** @type {any} */ (TYPED)[d.dtype];
  return { dtype: d.dtype, shape: d.shape, data: new cls(copy.buffer) };
}

/** @param {ArrayBufferView} a */
export function hex(a) {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('hex');
}
