// N-dimensional arrays as latentwire-edge passes them around: a typed array in C order with
// a shape and a numpy dtype name, and their wire form (latentwire.v1.Tensor: raw
// little-endian bytes, dtype and shape; runtime/codes.py array_to_tensor/tensor_to_array).

import { endianness } from 'node:os';

import { CodesError, InputError } from './errors.js';

if (endianness() !== 'LE') {
  // typed arrays use the host's byte order and the wire is little-endian
  throw new Error('latentwire-edge runs on little-endian hosts only');
}

/**
 * @typedef {Float32Array | Float64Array | Uint16Array | Int8Array | Uint8Array | Int16Array
 *   | Int32Array | BigInt64Array} TypedArray
 */

/**
 * A dense array: `data` holds prod(shape) elements of `dtype` in C order. float16 data are
 * the raw IEEE half-precision bits (Uint16Array); int64 data are a BigInt64Array.
 * @typedef {object} NDArray
 * @property {string} dtype numpy dtype name
 * @property {number[]} shape
 * @property {TypedArray} data
 */

/** dtype -> typed array class (float16 as raw bits). */
export const TYPED = {
  float32: Float32Array,
  float64: Float64Array,
  float16: Uint16Array,
  int8: Int8Array,
  uint8: Uint8Array,
  int16: Int16Array,
  int32: Int32Array,
  int64: BigInt64Array,
};
/** dtypes a tensor may have on the wire. */
export const WIRE_DTYPES = Object.keys(TYPED);
/** Most dimensions a wire tensor may have. */
export const MAX_DIMS = 32;

/** @param {readonly number[]} shape */
export const prod = (shape) => shape.reduce((a, b) => a * b, 1);

/**
 * An NDArray, checking that the data fit the shape. `data` may be a typed array or a
 * plain array of numbers (float64).
 * @param {TypedArray | ArrayLike<number>} data
 * @param {readonly number[]} shape
 * @param {string} [dtype] default: from the typed array (Uint16Array means float16)
 * @returns {NDArray}
 */
export function ndarray(data, shape, dtype) {
  let arr = /** @type {TypedArray} */ (data);
  let name = dtype ?? dtypeOf(data);
  if (!ArrayBuffer.isView(data)) {
    arr = Float64Array.from(/** @type {ArrayLike<number>} */ (data));
    name = dtype ?? 'float64';
    if (name !== 'float64') arr = new /** @type {any} */ (TYPED)[name](arr);
  }
  if (!shape.every((s) => Number.isInteger(s) && s >= 0)) {
    throw new InputError(`a shape holds non-negative integers, got (${shape.join(', ')})`);
  }
  if (arr.length !== prod(shape)) {
    throw new InputError(`${arr.length} values do not fill the shape (${shape.join(', ')})`);
  }
  return { dtype: name, shape: [...shape], data: arr };
}

/** @param {unknown} data */
export function dtypeOf(data) {
  for (const [name, cls] of Object.entries(TYPED)) if (data instanceof cls) return name;
  if (data instanceof Uint8ClampedArray) return 'uint8';
  throw new InputError(`arrays of ${Object.prototype.toString.call(data)} are not supported`);
}

/** @param {{ buffer: ArrayBufferLike, byteOffset: number, byteLength: number }} view */
export function bytesOf(view) {
  return new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
}

/**
 * The wire form of an array.
 * @param {NDArray} arr
 * @returns {{ dtype: string, shape: number[], data: Uint8Array }}
 */
export function arrayToTensor(arr) {
  if (!WIRE_DTYPES.includes(arr.dtype)) {
    throw new CodesError(`dtype ${arr.dtype} cannot travel on the wire; use one of ${WIRE_DTYPES.join(', ')}`);
  }
  return { dtype: arr.dtype, shape: [...arr.shape], data: bytesOf(arr.data) };
}

/**
 * An array from its wire form, checking that dtype, shape and byte length agree.
 * @param {{ dtype?: string, shape?: (number | string)[], data?: Uint8Array | null } | null | undefined} tensor
 * @returns {NDArray}
 */
export function tensorToArray(tensor) {
  const dtype = tensor?.dtype ?? '';
  if (!WIRE_DTYPES.includes(dtype)) {
    throw new CodesError(`unknown tensor dtype '${dtype}'; expected one of ${WIRE_DTYPES.join(', ')}`);
  }
  const shape = (tensor?.shape ?? []).map(Number);
  if (shape.length > MAX_DIMS) {
    throw new CodesError(`tensor has ${shape.length} dimensions; at most ${MAX_DIMS} are allowed`);
  }
  if (shape.some((s) => s < 0)) throw new CodesError(`tensor shape (${shape.join(', ')}) has a negative dimension`);
  const cls = /** @type {any} */ (TYPED)[dtype];
  const data = tensor?.data ?? new Uint8Array(0);
  const expected = prod(shape) * cls.BYTES_PER_ELEMENT;
  if (data.length !== expected) {
    throw new CodesError(
      `tensor of shape (${shape.join(', ')}) and dtype ${dtype} needs ${expected} bytes, got ${data.length}`,
    );
  }
  // a copy: protobuf buffers are not aligned to the element size
  const copy = new Uint8Array(data.length);
  copy.set(data);
  return { dtype, shape, data: new cls(copy.buffer) };
}

// -- float16 ---------------------------------------------------------------------------
const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/**
 * A float16 (raw bits) as a number.
 * @param {number} h
 */
export function halfToFloat(h) {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

/**
 * Float16 bits -> Float32Array (exact).
 * @param {Uint16Array} bits
 */
export function halfsToFloats(bits) {
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) out[i] = halfToFloat(bits[i]);
  return out;
}

/** @param {number} x the float32 value to test (as its bits) */
export function isFiniteF32Bits(x) {
  f32[0] = x;
  return (u32[0] & 0x7f800000) !== 0x7f800000;
}

/**
 * An array's values as numbers (float16 decoded, int64 as Number).
 * @param {NDArray} arr
 * @returns {Float64Array | Float32Array | TypedArray}
 */
export function valuesOf(arr) {
  if (arr.dtype === 'float16') return halfsToFloats(/** @type {Uint16Array} */ (arr.data));
  if (arr.dtype === 'int64') return Float64Array.from(/** @type {BigInt64Array} */ (arr.data), Number);
  return arr.data;
}
