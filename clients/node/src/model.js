// An edge model: a model package's manifest and encoder graph, run with onnxruntime-node,
// making the Codes messages Python's Model.to_codes / Model.encode_codes make, byte for byte
// (runtime/model.py): the same checks, the normalisation in float64 cast to float32, edge
// padding of images, batches of DEFAULT_BATCH samples, and chunking by message bytes.

import { createHash } from 'node:crypto';
import { constants as fsc } from 'node:fs';
import { open, realpath } from 'node:fs/promises';
import { dirname, join } from 'node:path';

import ort from 'onnxruntime-node';

import { TYPED, bytesOf, halfToFloat, ndarray, prod } from './arrays.js';
import { CodesError, InputError, IntegrityError, PackageError } from './errors.js';
import {
  CODES_OUTPUT,
  FINGERPRINT_KEY,
  FORMAT_DTYPES,
  MANIFEST_FILE,
  MAX_MANIFEST_BYTES,
  parseManifest,
} from './manifest.js';
import { checkGraph, metadataProps } from './onnx.js';
import { messageType, pruneDefaults } from './proto.js';

/** Samples per ONNX Runtime call (bounds memory for large inputs). */
export const DEFAULT_BATCH = 4096;
/** Default payload bound of one Codes message. */
export const MESSAGE_BYTES = 1 << 20;
/** Largest graph file loaded by default. */
export const MAX_GRAPH_BYTES = 1 << 30;
const F32_MAX = 3.4028234663852886e38;

/**
 * A batch of codes, as latentwire.v1.Codes (field names as in the .proto).
 * @typedef {object} Codes
 * @property {string} model_name
 * @property {string} fingerprint
 * @property {string} format "f32" | "f16" | "int8" | "entropy"
 * @property {number} count
 * @property {{ dtype: string, shape: number[], data: Uint8Array }} tensor
 * @property {number[]} latent_shape entropy only: the per-sample symbol shape
 * @property {number[]} input_shape set when samples were padded: their shape before
 */

/**
 * Python's repr of a shape tuple: (3, 64), (64,), ().
 * @param {readonly (number | null)[]} shape
 */
export function pyShape(shape) {
  return shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(', ')})`;
}

/** @param {import('./manifest.js').TensorSpec} spec */
function dims(spec) {
  return spec.shape.map((s) => (s === null ? '*' : String(s))).join(', ');
}

/**
 * Bytes of a package file: a regular file inside the package folder (symlinks resolved),
 * at most `limit` bytes; a FIFO or device is refused without blocking on it.
 * @param {string} dir @param {string} name @param {number} limit
 */
export async function readPackageFile(dir, name, limit) {
  const shown = join(dir, name);
  let realDir;
  let real;
  try {
    realDir = await realpath(dir);
    real = await realpath(shown);
  } catch (err) {
    const e = /** @type {NodeJS.ErrnoException} */ (err);
    if (e.code === 'ENOENT') throw new PackageError(`${shown} not found`);
    throw new PackageError(`cannot resolve ${shown}: ${e.message}`);
  }
  if (dirname(real) !== realDir) {
    throw new PackageError(
      `${shown} resolves to ${real}, outside the package folder ${realDir}: refused ` +
        "(a package's files must lie in its own folder)",
    );
  }
  const fh = await open(real, fsc.O_RDONLY | (fsc.O_NONBLOCK ?? 0));
  try {
    const info = await fh.stat();
    if (!info.isFile()) throw new PackageError(`${shown} is not a regular file`);
    if (info.size > limit) throw new PackageError(`${shown} is ${info.size} bytes, over the limit of ${limit}`);
    const buf = Buffer.alloc(Math.min(info.size, limit) + 1);
    let got = 0;
    for (;;) {
      const { bytesRead } = await fh.read(buf, got, buf.length - got, got);
      if (!bytesRead) break;
      got += bytesRead;
      if (got === buf.length) break;
    }
    if (got > limit) throw new PackageError(`${shown} is over the limit of ${limit} bytes`);
    return new Uint8Array(buf.buffer, buf.byteOffset, got);
  } finally {
    await fh.close();
  }
}

/** @param {Uint8Array} blob */
export function sha256(blob) {
  return createHash('sha256').update(blob).digest('hex');
}

/**
 * @typedef {object} LoadOptions
 * @property {number} [threads] ONNX Runtime intra-op threads (default 1)
 * @property {number} [batchSize] samples per ONNX Runtime call (default 4096)
 * @property {number} [maxGraphBytes] largest encoder.onnx accepted (default 1 GiB)
 * @property {string[]} [executionProviders] default ["cpu"]
 */

/** A model package's encoder, ready to make codes. */
export class EdgeModel {
  /**
   * @param {import('./manifest.js').Manifest} manifest
   * @param {import('onnxruntime-node').InferenceSession} session
   * @param {{ path?: string, batchSize?: number }} [info]
   */
  constructor(manifest, session, info = {}) {
    this.manifest = manifest;
    this.session = session;
    /** The package folder (when loaded from one). */
    this.path = info.path ?? null;
    this.batchSize = info.batchSize ?? DEFAULT_BATCH;
    if (!(this.batchSize >= 1)) throw new RangeError(`batchSize must be >= 1, got ${this.batchSize}`);
  }

  /** Model name (manifest "name"; every Codes message carries it). */
  get name() {
    return this.manifest.name;
  }

  get fingerprint() {
    return this.manifest.fingerprint;
  }

  /** The code format: "f32", "f16", "int8" or "entropy". */
  get format() {
    return this.manifest.format;
  }

  /**
   * Load and verify a package folder (manifest.json and the encoder graph; the decoder is
   * not needed): the manifest's fingerprint matches its contract, encoder.onnx has the
   * manifest's sha256, holds no external data and carries the fingerprint in its metadata.
   * @param {string} dir
   * @param {LoadOptions} [options]
   */
  static async load(dir, options = {}) {
    let text;
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(await readPackageFile(dir, MANIFEST_FILE, MAX_MANIFEST_BYTES));
    } catch (err) {
      if (err instanceof PackageError) {
        if (/not found$/.test(err.message)) throw new PackageError(`${join(dir, MANIFEST_FILE)} not found: not a model package`);
        throw err;
      }
      throw new PackageError(`cannot read ${join(dir, MANIFEST_FILE)}: ${/** @type {Error} */ (err).message}`);
    }
    let manifest;
    try {
      manifest = parseManifest(text);
    } catch (err) {
      if (err instanceof PackageError) throw new PackageError(`${join(dir, MANIFEST_FILE)}: ${err.message}`);
      throw err;
    }
    const entry = manifest.files.encoder;
    const limit = options.maxGraphBytes ?? MAX_GRAPH_BYTES;
    let blob;
    try {
      blob = await readPackageFile(dir, entry.path, limit);
    } catch (err) {
      if (err instanceof PackageError) throw new PackageError(`encoder graph: ${err.message}`);
      throw err;
    }
    return EdgeModel.fromBytes(manifest, blob, { ...options, path: dir });
  }

  /**
   * An edge model from a manifest (text or parsed) and encoder.onnx bytes, checked as
   * `load` checks a package folder.
   * @param {string | import('./manifest.js').Manifest} manifest
   * @param {Uint8Array} encoderOnnx
   * @param {LoadOptions & { path?: string }} [options]
   */
  static async fromBytes(manifest, encoderOnnx, options = {}) {
    const m = typeof manifest === 'string' ? parseManifest(manifest) : manifest;
    const where = options.path ?? m.name;
    if (m.computedFingerprint !== m.fingerprint) {
      throw new IntegrityError(
        `${where}: manifest fingerprint ${m.fingerprint} does not match its contract fields ` +
          '(the manifest was edited after export)',
      );
    }
    const entry = m.files.encoder;
    const shown = options.path ? join(options.path, entry.path) : entry.path;
    const digest = sha256(encoderOnnx);
    if (digest !== entry.sha256) {
      throw new IntegrityError(
        `${shown} has sha256 ${digest.slice(0, 16)}..., the manifest expects ` +
          `${entry.sha256.slice(0, 16)}...: the file was changed after export`,
      );
    }
    checkGraph(encoderOnnx, shown);
    const meta = metadataProps(encoderOnnx).filter(([k]) => k === FINGERPRINT_KEY).map(([, v]) => v);
    const carried = meta.length ? meta[meta.length - 1] : null;
    if (meta.length !== 1 || carried !== m.fingerprint) {
      throw new IntegrityError(
        `${where}: encoder.onnx carries fingerprint ${carried === null ? 'None' : `'${carried}'`}, ` +
          `manifest says '${m.fingerprint}'`,
      );
    }
    const threads = options.threads ?? 1;
    let session;
    try {
      session = await ort.InferenceSession.create(encoderOnnx, {
        executionProviders: options.executionProviders ?? ['cpu'],
        intraOpNumThreads: threads,
        interOpNumThreads: 1,
        graphOptimizationLevel: 'all',
        logSeverityLevel: 3,
      });
    } catch (err) {
      const first = String(/** @type {Error} */ (err).message ?? err).trim().split('\n')[0];
      throw new PackageError(`${m.name} encoder: ONNX Runtime cannot load the graph: ${first}`);
    }
    const names = [session.inputNames[0], ...session.outputNames];
    const want = [m.input.name, CODES_OUTPUT, m.latent.name];
    if (names.join('\0') !== want.join('\0')) {
      throw new PackageError(
        `${where}: encoder.onnx maps ${names[0]} -> ${names.slice(1).join(', ')}, the manifest says ` +
          `${want[0]} -> ${want.slice(1).join(', ')}`,
      );
    }
    return new EdgeModel(m, session, { path: options.path, batchSize: options.batchSize });
  }

  /** Release the ONNX Runtime session. */
  async close() {
    await this.session.release();
  }

  // -- inputs ----------------------------------------------------------------------------
  /**
   * Check a batch against the input spec (dtype, shape, NaN/Inf): Python's _check_batch.
   * @param {import('./arrays.js').NDArray} x
   */
  checkBatch(x) {
    const spec = this.manifest.input;
    if (!['float32', 'float64', 'float16', 'int8', 'uint8', 'int16', 'int32', 'int64'].includes(x.dtype)) {
      throw new InputError(`input must have a real numeric dtype (float, integer or bool), got dtype ${x.dtype}`);
    }
    if (x.shape.length !== spec.shape.length + 1) {
      const hint = x.shape.length === spec.shape.length ? ' (add a batch axis: x[None])' : '';
      throw new InputError(`input must have shape (batch, ${dims(spec)}), got ${pyShape(x.shape)}${hint}`);
    }
    spec.shape.forEach((want, i) => {
      const axis = i + 1;
      const got = x.shape[axis];
      if (want === null) {
        if (got <= 0 || got % spec.multipleOf) {
          throw new InputError(`input axis ${axis} is ${got}; it must be a positive multiple of ${spec.multipleOf}`);
        }
      } else if (got !== want) {
        throw new InputError(
          `input has ${got} values on axis ${axis}; the model expects ${want} (samples of shape ` +
            `(${dims(spec)}), got ${pyShape(x.shape.slice(1))})`,
        );
      }
    });
    if (x.dtype === 'float32' || x.dtype === 'float64' || x.dtype === 'float16') {
      const { bad, first } = x.dtype === 'float16' ? nonFiniteHalfs(/** @type {Uint16Array} */ (x.data)) : nonFinite(/** @type {Float32Array | Float64Array} */ (x.data));
      if (bad) {
        throw new InputError(`input holds ${bad} NaN/Inf value(s), the first at index ${pyShape(unravel(first, x.shape))}`);
      }
    }
  }

  /**
   * Images whose sides are not multiples of the model's stride, padded up to them by
   * repeating the edge pixels (numpy's mode "edge"): Python's Model.pad_inputs. Returns the
   * padded batch and the per-sample shape before padding, or (x, null) when nothing is padded.
   * @param {import('./arrays.js').NDArray} x
   * @returns {{ x: import('./arrays.js').NDArray, inputShape: number[] | null }}
   */
  padInputs(x) {
    const spec = this.manifest.input;
    const m = spec.multipleOf;
    if (x.shape.length !== spec.shape.length + 1 || m === 1) return { x, inputShape: null };
    const target = [x.shape[0]];
    let padded = false;
    spec.shape.forEach((want, i) => {
      const got = x.shape[i + 1];
      const pad = want === null && got > 0 ? (m - (got % m)) % m : 0;
      if (pad) padded = true;
      target.push(got + pad);
    });
    if (!padded) return { x, inputShape: null };
    return { x: padEdge(x, target), inputShape: x.shape.slice(1) };
  }

  /**
   * A checked batch in the user's units -> normalised float32 (Python's prepare_inputs:
   * (x - offset) / scale in float64, then rounded to float32).
   * @param {import('./arrays.js').NDArray} x
   * @returns {Float32Array}
   */
  prepareInputs(x) {
    this.checkBatch(x);
    return normalize(this.manifest.normalization, x);
  }

  /**
   * Run the encoder on prepared inputs, DEFAULT_BATCH samples per call; returns the wire codes.
   * @param {Float32Array} normed @param {number[]} shape
   * @returns {Promise<import('./arrays.js').NDArray>}
   */
  async runEncoder(normed, shape) {
    const m = this.manifest;
    const n = shape[0];
    const per = prod(shape.slice(1));
    const dtype = FORMAT_DTYPES[m.format];
    /** @type {import('./arrays.js').TypedArray[]} */
    const parts = [];
    /** @type {number[] | null} */
    let outShape = null;
    for (let start = 0; start < Math.max(n, 1); start += this.batchSize) {
      const count = Math.min(this.batchSize, n - start);
      const feed = new ort.Tensor('float32', normed.subarray(start * per, (start + count) * per), [count, ...shape.slice(1)]);
      const result = await this.session.run({ [m.input.name]: feed }, [CODES_OUTPUT]);
      const out = result[CODES_OUTPUT];
      if (out.type !== dtype) {
        throw new PackageError(`${m.name}: the encoder's codes are ${out.type}, the manifest's format ${m.format} says ${dtype}`);
      }
      parts.push(/** @type {import('./arrays.js').TypedArray} */ (out.data));
      outShape = out.dims.map(Number).slice(1);
      out.dispose();
    }
    const cls = /** @type {any} */ (TYPED)[dtype];
    const total = parts.reduce((a, p) => a + p.length, 0);
    const data = parts.length === 1 ? parts[0] : new cls(total);
    if (parts.length > 1) {
      let off = 0;
      for (const p of parts) {
        /** @type {any} */ (data).set(p, off);
        off += p.length;
      }
    }
    return ndarray(data, [n, .../** @type {number[]} */ (outShape)], dtype);
  }

  /**
   * Encode a batch in the user's units (NDArray of shape (N, *input shape)) into wire codes:
   * float32 (f32), float16 bits (f16), int8 (int8) or int32 symbols (entropy).
   * @param {import('./arrays.js').NDArray} x
   */
  async encode(x) {
    const w = await this.runEncoder(this.prepareInputs(x), x.shape);
    checkLatentsOut(w);
    return w;
  }

  // -- codes messages ----------------------------------------------------------------------
  /**
   * Wrap wire codes of this model in a Codes message (Python's Model.to_codes).
   * @param {import('./arrays.js').NDArray} w
   * @param {number[] | null} [inputShape] the per-sample shape before padding
   * @returns {Codes}
   */
  toCodes(w, inputShape = null) {
    const m = this.manifest;
    /** @type {Codes} */
    const msg = {
      model_name: m.name,
      fingerprint: m.fingerprint,
      format: m.format,
      count: w.shape[0],
      tensor: { dtype: '', shape: [], data: new Uint8Array(0) },
      latent_shape: [],
      input_shape: inputShape ? [...inputShape] : [],
    };
    if (m.format === 'entropy') {
      const stream = /** @type {import('./entropy.js').Prior} */ (m.prior).encode(/** @type {Int32Array} */ (w.data), w.shape);
      msg.tensor = { dtype: 'uint8', shape: [stream.length], data: stream };
      msg.latent_shape = w.shape.slice(1);
    } else {
      const dtype = FORMAT_DTYPES[m.format];
      if (w.dtype !== dtype) throw new CodesError(`format ${m.format} carries ${dtype} codes, got ${w.dtype}`);
      msg.tensor = { dtype, shape: [...w.shape], data: bytesOf(w.data) };
    }
    return msg;
  }

  /**
   * Encode a batch into Codes messages of at most `chunk` samples, or else as many as fit
   * in `maxMessageBytes` of code payload (at least one sample each); images of a size the
   * model cannot take directly are padded (Python's Model.encode_codes).
   * @param {import('./arrays.js').NDArray} x
   * @param {{ maxMessageBytes?: number, chunk?: number }} [options]
   * @returns {Promise<Codes[]>}
   */
  async encodeCodes(x, options = {}) {
    const { maxMessageBytes = MESSAGE_BYTES, chunk } = options;
    if (chunk !== undefined && chunk !== null && !(chunk >= 1)) throw new RangeError(`chunk must be >= 1, got ${chunk}`);
    const { x: padded, inputShape } = this.padInputs(x);
    const w = await this.encode(padded);
    const n = w.shape[0];
    const perValues = prod(w.shape.slice(1));
    const itemBytes = w.data.BYTES_PER_ELEMENT;
    const perSample = Math.max(1, n ? perValues * itemBytes : 0);
    const step = chunk || Math.max(1, Math.floor(maxMessageBytes / perSample));
    /** @type {Codes[]} */
    const out = [];
    for (let start = 0; start < Math.max(n, 1); start += step) {
      const end = Math.min(start + step, n);
      const part = ndarray(w.data.subarray(start * perValues, end * perValues), [end - start, ...w.shape.slice(1)], w.dtype);
      out.push(this.toCodes(part, inputShape));
    }
    return out;
  }
}

/**
 * Refuse non-finite codes (Python's check_latents_out).
 * @param {import('./arrays.js').NDArray} w
 */
export function checkLatentsOut(w) {
  if (w.dtype !== 'float32' && w.dtype !== 'float16') return;
  const { bad, first } = w.dtype === 'float32' ? nonFinite(/** @type {Float32Array} */ (w.data)) : nonFiniteHalfs(/** @type {Uint16Array} */ (w.data));
  if (bad) {
    throw new InputError(
      `the encoder produced ${bad} non-finite code value(s) (first at ${pyShape(unravel(first, w.shape))}): ` +
        'the input is far outside the data the model was trained on',
    );
  }
}

/**
 * How many NaN/Inf values, and the index of the first (-1: none).
 * @param {Float32Array | Float64Array} a
 */
function nonFinite(a) {
  let bad = 0;
  let first = -1;
  for (let i = 0; i < a.length; i++) {
    const v = a[i];
    if (v - v !== 0) {
      if (first < 0) first = i;
      bad++;
    }
  }
  return { bad, first };
}

/** @param {Uint16Array} a float16 bits */
function nonFiniteHalfs(a) {
  let bad = 0;
  let first = -1;
  for (let i = 0; i < a.length; i++) {
    if ((a[i] & 0x7c00) === 0x7c00) {
      if (first < 0) first = i;
      bad++;
    }
  }
  return { bad, first };
}

/**
 * @param {number} flat @param {readonly number[]} shape
 */
function unravel(flat, shape) {
  const at = new Array(shape.length).fill(0);
  for (let i = shape.length - 1; i >= 0; i--) {
    at[i] = flat % shape[i];
    flat = Math.floor(flat / shape[i]);
  }
  return at;
}

/**
 * numpy.pad(x, ..., mode="edge") up to `target` (padding after the data on every axis).
 * @param {import('./arrays.js').NDArray} x @param {number[]} target
 * @returns {import('./arrays.js').NDArray}
 */
export function padEdge(x, target) {
  const cls = /** @type {any} */ (x.data).constructor;
  const out = new cls(prod(target));
  const rank = target.length;
  const src = x.shape;
  // copy row by row along the last axis, repeating the last element, then the last row
  const lastIn = src[rank - 1];
  const lastOut = target[rank - 1];
  const outer = prod(target.slice(0, rank - 1));
  const idx = new Array(rank - 1).fill(0);
  for (let r = 0; r < outer; r++) {
    let off = 0;
    for (let a = 0; a < rank - 1; a++) off = off * src[a] + Math.min(idx[a], src[a] - 1);
    const from = off * lastIn;
    const to = r * lastOut;
    out.set(x.data.subarray(from, from + lastIn), to);
    if (lastOut > lastIn) out.fill(x.data[from + lastIn - 1], to + lastIn, to + lastOut);
    for (let a = rank - 2; a >= 0; a--) {
      if (++idx[a] < target[a]) break;
      idx[a] = 0;
    }
  }
  return { dtype: x.dtype, shape: target, data: out };
}

/**
 * Normalise a checked batch (Python's Normalization.forward then _as_float32): kind "none"
 * keeps the values; else (x - offset) / scale in float64 with offset/scale broadcast over
 * the sample; then float32, refusing values past float32's range (only values computed in
 * float64, or given as float64, can be).
 * @param {import('./manifest.js').Normalization} norm
 * @param {import('./arrays.js').NDArray} x
 * @returns {Float32Array}
 */
export function normalize(norm, x) {
  const n = x.data.length;
  const out = new Float32Array(n);
  const overflow = new InputError(
    'input holds values so far outside the data the model was trained on that they overflow ' +
      'float32 after normalisation',
  );
  /** @type {ArrayLike<number>} */
  let values;
  if (x.dtype === 'float16') {
    values = new Float32Array(n);
    for (let i = 0; i < n; i++) /** @type {Float32Array} */ (values)[i] = halfToFloat(/** @type {Uint16Array} */ (x.data)[i]);
  } else if (x.dtype === 'int64') {
    values = Float64Array.from(/** @type {BigInt64Array} */ (x.data), Number);
  } else {
    values = /** @type {ArrayLike<number>} */ (x.data);
  }
  if (norm.kind === 'none') {
    const wide = x.dtype === 'float64';
    for (let i = 0; i < n; i++) {
      const v = values[i];
      if (wide && Math.abs(v) > F32_MAX) throw overflow;
      out[i] = v;
    }
    return out;
  }
  const sample = x.shape.slice(1);
  const per = prod(sample);
  if (per === 0) return out;
  const offIdx = broadcastIndex(norm.offsetShape, sample);
  const scaleIdx = broadcastIndex(norm.scaleShape, sample);
  if (offIdx === null && scaleIdx === null) {
    if (!affine(values, out, norm.offset[0], norm.scale[0])) throw overflow;
    return out;
  }
  const offset = offIdx ? gather(norm.offset, offIdx) : new Float64Array(per).fill(norm.offset[0]);
  const scale = scaleIdx ? gather(norm.scale, scaleIdx) : new Float64Array(per).fill(norm.scale[0]);
  for (let i = 0; i < n; i += per) {
    for (let j = 0; j < per; j++) {
      const v = (values[i + j] - offset[j]) / scale[j];
      if (Math.abs(v) > F32_MAX) throw overflow;
      out[i + j] = v;
    }
  }
  return out;
}

/**
 * out = (values - o) / c elementwise in float64, stored as float32; false when a value
 * overflows float32.
 * @param {ArrayLike<number>} values @param {Float32Array} out @param {number} o @param {number} c
 */
function affine(values, out, o, c) {
  for (let i = 0; i < values.length; i++) {
    const v = (values[i] - o) / c;
    if (Math.abs(v) > F32_MAX) return false;
    out[i] = v;
  }
  return true;
}

/** @param {Float64Array} values @param {Int32Array} idx */
function gather(values, idx) {
  const out = new Float64Array(idx.length);
  for (let j = 0; j < idx.length; j++) out[j] = values[idx[j]];
  return out;
}

/**
 * For each element of a sample, the index into a broadcast array of shape `shape` (null
 * when the array holds one value).
 * @param {number[]} shape @param {number[]} sample
 * @returns {Int32Array | null}
 */
function broadcastIndex(shape, sample) {
  if (prod(shape) === 1) return null;
  const per = prod(sample);
  const out = new Int32Array(per);
  const strides = new Array(shape.length).fill(0);
  for (let a = shape.length - 1, st = 1; a >= 0; a--) {
    strides[a] = shape[a] === 1 ? 0 : st;
    st *= shape[a];
  }
  const idx = new Array(sample.length).fill(0);
  for (let j = 0; j < per; j++) {
    let k = 0;
    for (let a = 0; a < sample.length; a++) k += idx[a] * strides[a];
    out[j] = k;
    for (let a = sample.length - 1; a >= 0; a--) {
      if (++idx[a] < sample[a]) break;
      idx[a] = 0;
    }
  }
  return out;
}

/**
 * A Codes message's protobuf bytes, exactly as Python's SerializeToString() writes them.
 * @param {Codes} codes
 * @returns {Uint8Array}
 */
export function serializeCodes(codes) {
  const T = messageType('Codes');
  return T.encode(T.fromObject(pruneDefaults(codes))).finish();
}

/**
 * A Codes message from protobuf bytes.
 * @param {Uint8Array} bytes
 * @returns {Codes}
 */
export function parseCodes(bytes) {
  const T = messageType('Codes');
  let msg;
  try {
    msg = T.decode(bytes);
  } catch (err) {
    throw new CodesError(`not a Codes message: ${/** @type {Error} */ (err).message}`);
  }
  return /** @type {Codes} */ (
    T.toObject(msg, { longs: Number, defaults: true, arrays: true })
  );
}

