// A small .npy reader and writer (format versions 1-3, little-endian or byte-sized dtypes,
// C order): enough to exchange arrays with numpy (np.load / np.save).

import { readFileSync, writeFileSync } from 'node:fs';

import { DataError } from './errors.js';
import { TYPED, bytesOf } from './arrays.js';

const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // \x93NUMPY
/** numpy descr -> dtype name */
const DESCR = {
  '<f4': 'float32', '<f8': 'float64', '<f2': 'float16', '|i1': 'int8', '|u1': 'uint8',
  '<i2': 'int16', '<i4': 'int32', '<i8': 'int64', '|b1': 'uint8',
};
const DTYPE_DESCR = Object.fromEntries(Object.entries(DESCR).filter(([k]) => k !== '|b1').map(([k, v]) => [v, k]));

/**
 * Parse .npy bytes.
 * @param {Uint8Array} buf @param {string} [what] a name for messages
 * @returns {import('./arrays.js').NDArray}
 */
export function parseNpy(buf, what = 'the .npy data') {
  if (buf.length < 10 || MAGIC.some((b, i) => buf[i] !== b)) throw new DataError(`${what}: not a .npy file`);
  const major = buf[6];
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  let len;
  let start;
  if (major === 1) {
    len = view.getUint16(8, true);
    start = 10;
  } else if (major === 2 || major === 3) {
    len = view.getUint32(8, true);
    start = 12;
  } else throw new DataError(`${what}: .npy format version ${major} is not supported`);
  const header = major === 3
    ? new TextDecoder('utf-8').decode(buf.subarray(start, start + len))
    : String.fromCharCode(...buf.subarray(start, start + len));
  const descr = /'descr':\s*'([^']+)'/.exec(header)?.[1];
  const fortran = /'fortran_order':\s*(True|False)/.exec(header)?.[1];
  const shapeText = /'shape':\s*\(([^)]*)\)/.exec(header)?.[1];
  if (descr === undefined || fortran === undefined || shapeText === undefined) {
    throw new DataError(`${what}: unreadable .npy header ${JSON.stringify(header)}`);
  }
  if (fortran === 'True') throw new DataError(`${what}: Fortran-order arrays are not supported; save a C-order array`);
  const dtype = /** @type {Record<string, string>} */ (DESCR)[descr];
  if (dtype === undefined) throw new DataError(`${what}: dtype ${descr} is not supported`);
  const shape = shapeText.split(',').map((s) => s.trim()).filter(Boolean).map(Number);
  const cls = /** @type {any} */ (TYPED)[dtype];
  const count = shape.reduce((a, b) => a * b, 1);
  const offset = start + len;
  const nbytes = count * cls.BYTES_PER_ELEMENT;
  if (buf.length - offset < nbytes) throw new DataError(`${what}: truncated (${buf.length - offset} of ${nbytes} bytes)`);
  const copy = new Uint8Array(nbytes);
  copy.set(buf.subarray(offset, offset + nbytes));
  return { dtype, shape, data: new cls(copy.buffer) };
}

/**
 * .npy bytes of an array (format 1.0, C order).
 * @param {import('./arrays.js').NDArray} arr
 * @returns {Uint8Array}
 */
export function formatNpy(arr) {
  const descr = DTYPE_DESCR[arr.dtype];
  if (descr === undefined) throw new DataError(`dtype ${arr.dtype} cannot be written to .npy`);
  const shape = arr.shape.length === 1 ? `(${arr.shape[0]},)` : `(${arr.shape.join(', ')})`;
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': ${shape}, }`;
  const total = 10 + header.length + 1;
  header += ' '.repeat((64 - (total % 64)) % 64) + '\n';
  const out = new Uint8Array(10 + header.length + arr.data.byteLength);
  out.set([...MAGIC, 1, 0], 0);
  new DataView(out.buffer).setUint16(8, header.length, true);
  for (let i = 0; i < header.length; i++) out[10 + i] = header.charCodeAt(i);
  out.set(bytesOf(arr.data), 10 + header.length);
  return out;
}

/** @param {string} path */
export function readNpy(path) {
  return parseNpy(readFileSync(path), path);
}

/** @param {string} path @param {import('./arrays.js').NDArray} arr */
export function writeNpy(path, arr) {
  writeFileSync(path, formatNpy(arr));
}
