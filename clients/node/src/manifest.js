// The model package manifest (manifest.json, schema version 2): what an edge device needs
// from it, read and checked as runtime/manifest.py, runtime/formats.py and
// runtime/entropy.py check it (the same limits, PackageError for anything malformed).

import { createHash } from 'node:crypto';

import { PackageError } from './errors.js';
import { canonical, objectNode, parseTree, toValue } from './pyjson.js';
import { Prior } from './entropy.js';

export const SCHEMA = 'latentwire.manifest';
export const SCHEMA_VERSION = 2;
export const MANIFEST_FILE = 'manifest.json';
/** Metadata key of the fingerprint in each ONNX graph of a package. */
export const FINGERPRINT_KEY = 'latentwire.fingerprint';
export const FORMATS = /** @type {const} */ (['f32', 'f16', 'int8', 'entropy']);
/** The encoder graph's `codes` output dtype per format. */
export const FORMAT_DTYPES = { f32: 'float32', f16: 'float16', int8: 'int8', entropy: 'int32' };
export const CODES_OUTPUT = 'codes';
export const NORMALIZATION_KINDS = ['none', 'minmax', 'standard', 'scale'];
/** dtypes a tensor may have on the wire (runtime/codes.py WIRE_DTYPES). */
export const WIRE_DTYPES = ['float32', 'float16', 'float64', 'int8', 'uint8', 'int16', 'int32', 'int64'];
export const MAX_MANIFEST_BYTES = 64 << 20;
export const MAX_RANK = 8;
export const MAX_SAMPLE_VALUES = 1 << 26;
export const MAX_MULTIPLE_OF = 1024;
const CONTRACT_KEYS = ['input', 'latent', 'output', 'normalization', 'codes'];
const ROLES = ['encoder', 'decoder'];
const SHA256 = /^[0-9a-f]{64}$/;

/**
 * @typedef {object} TensorSpec one graph tensor as seen per sample
 * @property {string} name tensor name in the ONNX graph
 * @property {(number | null)[]} shape per-sample shape; null for a free dimension
 * @property {string} dtype numpy dtype name
 * @property {number} multipleOf free dimensions must be multiples of this
 */

/**
 * @typedef {'f32' | 'f16' | 'int8' | 'entropy'} Format
 */

/** @param {unknown} v @returns {v is number} */
const isInt = (v) => typeof v === 'number' && Number.isInteger(v);

/** @param {unknown} v */
const short = (v) => {
  const s = v === undefined ? 'None' : JSON.stringify(v) ?? String(v);
  return s.length > 80 ? `${s.slice(0, 80)}...` : s;
};

/**
 * @param {Record<string, any>} d @param {string} key @param {string} what
 * @returns {string}
 */
function nonEmpty(d, key, what) {
  const v = d[key];
  if (typeof v !== 'string' || !v) {
    throw new PackageError(`${what}.${key} must be a non-empty string, got ${short(v)}`);
  }
  return v;
}

/**
 * A plain file name: no folder part, not `.`/`..`, nothing that leaves a folder.
 * @param {unknown} name
 */
export function isFileName(name) {
  return (
    typeof name === 'string' &&
    name !== '' &&
    name !== '.' &&
    name !== '..' &&
    !/[/\\\0:]/.test(name)
  );
}

/**
 * @param {unknown} d @param {string} what
 * @returns {TensorSpec}
 */
export function tensorSpec(d, what) {
  if (typeof d !== 'object' || d === null || Array.isArray(d)) {
    throw new PackageError(`${what} must be an object, got ${short(d)}`);
  }
  const o = /** @type {Record<string, any>} */ (d);
  const name = nonEmpty(o, 'name', what);
  const dtype = nonEmpty(o, 'dtype', what);
  const shape = o.shape;
  const multipleOf = o.multiple_of ?? 1;
  if (!Array.isArray(shape) || shape.length > MAX_RANK) {
    throw new PackageError(`${what}.shape must be a list of at most ${MAX_RANK} dimensions`);
  }
  if (!shape.every((s) => s === null || isInt(s)) || !isInt(multipleOf)) {
    throw new PackageError(
      `${what}: dimensions must be integers (null for a free one) and multiple_of an integer, ` +
        `got shape ${short(shape)} and multiple_of ${short(multipleOf)}`,
    );
  }
  if (shape.some((s) => s !== null && s < 1) || multipleOf < 1) {
    throw new PackageError(
      `tensor '${name}': dimensions and multiple_of must be positive, got shape ${short(shape)} ` +
        `and multiple_of ${multipleOf}`,
    );
  }
  if (multipleOf > MAX_MULTIPLE_OF) {
    throw new PackageError(`${what}.multiple_of ${multipleOf} is over ${MAX_MULTIPLE_OF}`);
  }
  const values = shape.reduce((a, s) => a * (s === null ? multipleOf : s), 1);
  if (values > MAX_SAMPLE_VALUES) {
    throw new PackageError(
      `${what}: samples of shape ${short(shape)} hold ${values} values, more than the ` +
        `${MAX_SAMPLE_VALUES} a package may declare`,
    );
  }
  if (!WIRE_DTYPES.includes(dtype)) {
    throw new PackageError(`${what}.dtype '${dtype}' is not one of ${WIRE_DTYPES.join(', ')}`);
  }
  return { name, shape, dtype, multipleOf };
}

/**
 * A number or nested lists of numbers as (flat float64 values, shape).
 * @param {unknown} value @param {string} what
 * @returns {{ values: Float64Array, shape: number[] }}
 */
export function floats(value, what) {
  /** @type {number[]} */
  const flat = [];
  /** @type {number[] | null} */
  let shape = null;
  /** @param {unknown} v @param {number} depth @param {number[]} dims */
  const walk = (v, depth, dims) => {
    if (Array.isArray(v)) {
      dims.push(v.length);
      if (v.length === 0) {
        if (shape === null) shape = [...dims];
        else if (shape.join() !== dims.join()) throw new PackageError(`${what} must be a regular array of numbers`);
      }
      for (const x of v) walk(x, depth + 1, dims);
      dims.pop();
      return;
    }
    if (typeof v !== 'number') {
      throw new PackageError(`${what} must be a number or a list of numbers, got ${short(value)}`);
    }
    if (shape === null) shape = [...dims];
    else if (shape.length !== dims.length || shape.some((s, i) => s !== dims[i])) {
      throw new PackageError(`${what} must be a regular array of numbers`);
    }
    flat.push(v);
  };
  walk(value, 0, []);
  const s = shape ?? [0];
  if (flat.length !== s.reduce((a, b) => a * b, 1)) {
    throw new PackageError(`${what} must be a regular array of numbers`);
  }
  return { values: Float64Array.from(flat), shape: s };
}

/**
 * The affine map between the user's units and the graphs' units.
 */
export class Normalization {
  /**
   * @param {string} kind none | minmax | standard | scale
   * @param {Float64Array} offset
   * @param {number[]} offsetShape
   * @param {Float64Array} scale
   * @param {number[]} scaleShape
   */
  constructor(kind, offset, offsetShape, scale, scaleShape) {
    this.kind = kind;
    this.offset = offset;
    this.offsetShape = offsetShape;
    this.scale = scale;
    this.scaleShape = scaleShape;
  }

  /**
   * @param {unknown} d @param {(number | null)[]} sampleShape
   */
  static fromDict(d, sampleShape) {
    if (typeof d !== 'object' || d === null || Array.isArray(d)) {
      throw new PackageError(`normalization must be an object, got ${short(d)}`);
    }
    const o = /** @type {Record<string, any>} */ (d);
    const kind = o.kind ?? 'none';
    if (!NORMALIZATION_KINDS.includes(kind)) {
      throw new PackageError(`normalization.kind ${short(kind)} is not one of ${NORMALIZATION_KINDS.join(', ')}`);
    }
    const offset = floats(o.offset ?? [0.0], 'normalization.offset');
    const scale = floats(o.scale ?? [1.0], 'normalization.scale');
    for (const [label, arr] of /** @type {const} */ ([['offset', offset], ['scale', scale]])) {
      const fits =
        arr.shape.length === sampleShape.length &&
        arr.shape.every((a, i) => a === 1 || a === sampleShape[i]);
      if (arr.values.length !== 1 && !fits) {
        throw new PackageError(
          `normalization.${label} has shape (${arr.shape.join(', ')}); expected one value or a shape ` +
            `that broadcasts to the sample shape (${sampleShape.map((s) => (s === null ? 'None' : s)).join(', ')})`,
        );
      }
    }
    if (!scale.values.every((v) => Number.isFinite(v) && v !== 0)) {
      throw new PackageError('normalization.scale must be finite and non-zero');
    }
    if (!offset.values.every(Number.isFinite)) {
      throw new PackageError('normalization.offset must be finite');
    }
    const flatShape = (/** @type {{values: Float64Array, shape: number[]}} */ a) =>
      a.values.length === 1 ? [1] : a.shape;
    return new Normalization(kind, offset.values, flatShape(offset), scale.values, flatShape(scale));
  }
}

/**
 * @typedef {object} Manifest a parsed, checked manifest.json
 * @property {string} name model name (also on every codes message)
 * @property {string} fingerprint
 * @property {TensorSpec} input
 * @property {TensorSpec} latent
 * @property {TensorSpec} output
 * @property {Normalization} normalization
 * @property {Format} format the code format
 * @property {Prior | null} prior the entropy tables (format "entropy")
 * @property {Record<string, any>} files
 * @property {Record<string, any>} raw the whole manifest as plain values
 * @property {string} text the manifest's JSON text as read
 * @property {string} computedFingerprint the fingerprint of the manifest's contract fields
 */

/**
 * @param {unknown} entry @param {string} role
 */
function checkFileEntry(entry, role) {
  if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) {
    throw new PackageError(`files.${role} must be an object, got ${short(entry)}`);
  }
  const e = /** @type {Record<string, any>} */ (entry);
  if (!isFileName(e.path)) {
    throw new PackageError(`files.${role}.path must name a file in the package folder, got ${short(e.path)}`);
  }
  const size = e.bytes ?? 0;
  if (!isInt(size) || size < 0) {
    throw new PackageError(`files.${role}.bytes must be a byte count, got ${short(size)}`);
  }
  for (const key of ['sha256', 'graph_sha256']) {
    if (typeof e[key] !== 'string' || !SHA256.test(e[key])) {
      throw new PackageError(`files.${role}.${key} must be 64 hex digits, got ${short(e[key])}`);
    }
  }
}

/**
 * Parse and check a manifest's JSON text (PackageError for anything malformed). Edge
 * packages hold only the encoder: a missing decoder file is fine, its manifest entry is not.
 * @param {string} text
 * @returns {Manifest}
 */
export function parseManifest(text) {
  let tree;
  try {
    tree = parseTree(text);
  } catch (err) {
    throw new PackageError(`the manifest is not valid JSON: ${/** @type {Error} */ (err).message}`);
  }
  if (tree === null || typeof tree !== 'object' || tree.t !== 'obj') {
    throw new PackageError('a manifest is a JSON object');
  }
  const d = toValue(tree);
  if (d.schema !== SCHEMA) throw new PackageError(`not a latentwire manifest (schema is ${short(d.schema)})`);
  if (d.schema_version !== SCHEMA_VERSION) {
    throw new PackageError(
      `manifest schema_version ${short(d.schema_version)} is not supported by latentwire-edge ` +
        `(reads version ${SCHEMA_VERSION}); upgrade latentwire-edge or re-export the model`,
    );
  }
  for (const key of [...CONTRACT_KEYS, 'files']) {
    if (!(key in d)) throw new PackageError(`manifest is missing the field '${key}'`);
  }
  const input = tensorSpec(d.input, 'input');
  const latent = tensorSpec(d.latent, 'latent');
  if (!latent.shape.length || latent.shape[0] === null || latent.dtype !== 'float32') {
    throw new PackageError('latent must be float32 with a fixed channel count first');
  }
  const output = tensorSpec(d.output, 'output');
  const files = d.files;
  if (typeof files !== 'object' || files === null || Array.isArray(files)) {
    throw new PackageError('files must be an object');
  }
  for (const role of ROLES) checkFileEntry(files[role], role);
  const normalization = Normalization.fromDict(d.normalization, input.shape);
  const codes = d.codes;
  if (typeof codes !== 'object' || codes === null || Array.isArray(codes)) {
    throw new PackageError('codes must be an object');
  }
  const format = codes.format;
  if (format === undefined) throw new PackageError(`codes.format is missing; latentwire-edge reads ${FORMATS.join(', ')}`);
  if (!FORMATS.includes(format)) {
    throw new PackageError(`unknown code format ${short(format)}; latentwire-edge reads ${FORMATS.join(', ')}`);
  }
  const fmt = /** @type {Format} */ (format);
  if (codes.dtype !== FORMAT_DTYPES[fmt] || codes.name !== CODES_OUTPUT) {
    throw new PackageError(
      `codes of format ${fmt} are the encoder output '${CODES_OUTPUT}' of dtype ${FORMAT_DTYPES[fmt]}; ` +
        `the manifest says ${short(codes.name)} ${short(codes.dtype)}`,
    );
  }
  const channels = /** @type {number} */ (latent.shape[0]);
  const prior = fmt === 'entropy' ? Prior.fromDict(codes.entropy ?? {}, channels) : null;
  const entries = /** @type {import('./pyjson.js').ObjNode} */ (tree).entries;
  const filesNode = /** @type {import('./pyjson.js').ObjNode} */ (entries.get('files'));
  /** @type {Record<string, import('./pyjson.js').Node>} */
  const contract = {};
  for (const key of CONTRACT_KEYS) contract[key] = /** @type {import('./pyjson.js').Node} */ (entries.get(key));
  /** @type {Record<string, import('./pyjson.js').Node>} */
  const graphs = {};
  for (const role of ROLES) {
    const entry = /** @type {import('./pyjson.js').ObjNode} */ (filesNode.entries.get(role));
    graphs[role] = /** @type {import('./pyjson.js').Node} */ (entry.entries.get('graph_sha256'));
  }
  contract.graphs = objectNode(graphs);
  const computedFingerprint = createHash('sha256')
    .update(canonical(objectNode(contract)), 'utf8')
    .digest('hex')
    .slice(0, 16);
  return {
    name: nonEmpty(d, 'name', 'manifest'),
    fingerprint: nonEmpty(d, 'fingerprint', 'manifest'),
    input,
    latent,
    output,
    normalization,
    format: fmt,
    prior,
    files,
    raw: d,
    text,
    computedFingerprint,
  };
}
