// What an ONNX graph file may hold, read from its protobuf bytes (no onnx library):
// runtime/model.py check_graph in JavaScript (refuse graphs whose tensors keep their data
// in external files, ORT-format models and bytes that are not protobuf), and the model's
// metadata_props, where latentwire writes the package fingerprint.

import { PackageError } from './errors.js';

class Malformed extends Error {}
class External extends Error {
  /** @param {string} tensor @param {string} location */
  constructor(tensor, location) {
    super(tensor);
    this.tensor = tensor;
    this.location = location;
  }
}

const [TENSOR, SPARSE, GRAPH, NODE, ATTR, FUNC, TRAIN, MODEL] = [0, 1, 2, 3, 4, 5, 6, 7];
/** every field of onnx.proto that holds (a message that can hold) a TensorProto */
const SUBMESSAGES = /** @type {Record<number, Record<number, number>>} */ ({
  [MODEL]: { 7: GRAPH, 20: TRAIN, 25: FUNC },
  [GRAPH]: { 1: NODE, 5: TENSOR, 15: SPARSE },
  [NODE]: { 5: ATTR },
  [ATTR]: { 5: TENSOR, 6: GRAPH, 10: TENSOR, 11: GRAPH, 22: SPARSE, 23: SPARSE },
  [SPARSE]: { 1: TENSOR, 2: TENSOR },
  [FUNC]: { 7: NODE, 11: ATTR },
  [TRAIN]: { 1: GRAPH, 2: GRAPH },
  [TENSOR]: {},
});
const TENSOR_NAME = 8;
const EXTERNAL_DATA = 13;
const DATA_LOCATION = 14;
const METADATA_PROPS = 14; // ModelProto.metadata_props (StringStringEntryProto key=1 value=2)
const MAX_NESTING = 100;
const utf8 = new TextDecoder('utf-8');

/**
 * @param {Uint8Array} buf @param {number} pos @param {number} end
 * @returns {[number, number]} (value, next position); values past 2**53 lose precision,
 * which only matters for lengths, and those are checked against `end`
 */
function varint(buf, pos, end) {
  let result = 0;
  let mul = 1;
  for (let i = 0; ; i++) {
    if (pos >= end) throw new Malformed(`a varint runs past the end of its message at byte ${pos}`);
    const byte = buf[pos++];
    result += (byte & 0x7f) * mul;
    if (byte < 0x80) return [result, pos];
    mul *= 128;
    if (i >= 9) throw new Malformed(`a varint longer than 10 bytes ends at byte ${pos}`);
  }
}

/**
 * The field at `pos`: [number, wire type, a, b, next]; a varint gives a = its value, a
 * length-delimited field buf[a:b]; a group is skipped whole.
 * @param {Uint8Array} buf @param {number} pos @param {number} end @param {number} depth
 * @returns {[number, number, number, number, number]}
 */
function field(buf, pos, end, depth) {
  let key;
  [key, pos] = varint(buf, pos, end);
  const num = Math.floor(key / 8);
  const wire = key % 8;
  if (!(num > 0 && num < 2 ** 29)) throw new Malformed(`field number ${num} at byte ${pos}`);
  let a = pos;
  let b = pos;
  if (wire === 0) {
    [a, pos] = varint(buf, pos, end);
  } else if (wire === 1 || wire === 5) {
    pos += wire === 1 ? 8 : 4;
  } else if (wire === 2) {
    let size;
    [size, a] = varint(buf, pos, end);
    pos = b = a + size;
  } else if (wire === 3) {
    pos = skipGroup(buf, pos, end, num, depth + 1);
  } else if (wire !== 4) {
    throw new Malformed(`wire type ${wire} of field ${num} at byte ${pos}`);
  }
  if (pos > end) throw new Malformed(`field ${num} runs past the end of its message`);
  return [num, wire, a, b, pos];
}

/**
 * @param {Uint8Array} buf @param {number} pos @param {number} end @param {number} depth
 * @returns {Generator<[number, number, number, number]>}
 */
function* fields(buf, pos, end, depth) {
  while (pos < end) {
    const [num, wire, a, b, next] = field(buf, pos, end, depth);
    pos = next;
    if (wire === 4) throw new Malformed(`field ${num} ends a group that never started`);
    yield [num, wire, a, b];
  }
}

/**
 * @param {Uint8Array} buf @param {number} pos @param {number} end @param {number} group
 * @param {number} depth
 */
function skipGroup(buf, pos, end, group, depth) {
  if (depth > MAX_NESTING) throw new Malformed(`groups nested more than ${MAX_NESTING} deep`);
  while (pos < end) {
    const [num, wire, , , next] = field(buf, pos, end, depth);
    pos = next;
    if (wire === 4) {
      if (num !== group) throw new Malformed(`group ${group} is closed by field ${num}`);
      return pos;
    }
  }
  throw new Malformed(`group ${group} is not closed`);
}

/**
 * @param {Uint8Array} buf @param {number} pos @param {number} end @param {number} kind
 * @param {number} depth
 */
function walk(buf, pos, end, kind, depth) {
  if (depth > MAX_NESTING) throw new Malformed(`messages nested more than ${MAX_NESTING} deep`);
  const subs = SUBMESSAGES[kind];
  let name = '';
  let location = '';
  let external = false;
  for (const [num, wire, start, stop] of fields(buf, pos, end, depth)) {
    if (wire === 2 && num in subs) {
      walk(buf, start, stop, subs[num], depth + 1);
    } else if (kind === TENSOR) {
      if (num === DATA_LOCATION && wire === 0 && start !== 0) {
        external = true;
      } else if (num === EXTERNAL_DATA && wire === 2) {
        external = true;
        for (const [kf, kw, a, b] of fields(buf, start, stop, depth + 1)) {
          if (kf === 2 && kw === 2) location = location || utf8.decode(buf.subarray(a, b));
        }
      } else if (num === TENSOR_NAME && wire === 2) {
        name = utf8.decode(buf.subarray(start, stop));
      }
    }
  }
  if (external) throw new External(name, location);
}

/**
 * Refuse a graph that ONNX Runtime would not load from these bytes alone: tensors with
 * external data (a `location` ONNX Runtime would open relative to the working directory,
 * the CVE-2024-27318 class), ORT-format models and bytes that are not protobuf.
 * @param {Uint8Array} blob @param {string} file
 */
export function checkGraph(blob, file) {
  if (utf8.decode(blob.subarray(4, 8)) === 'ORTM') {
    throw new PackageError(`${file} is an ORT-format model; a package holds ONNX graphs`);
  }
  try {
    walk(blob, 0, blob.length, MODEL, 0);
  } catch (err) {
    if (err instanceof External) {
      throw new PackageError(
        `${file}: tensor '${err.tensor}' keeps its data in an external file '${err.location}'; ` +
          'a model package holds single-file graphs (no external data)',
      );
    }
    if (err instanceof Malformed) {
      throw new PackageError(`${file} is not an ONNX graph (${err.message}): ONNX Runtime cannot load the graph`);
    }
    throw err;
  }
}

/**
 * The model's metadata_props as [key, value] pairs, in file order.
 * @param {Uint8Array} blob
 * @returns {[string, string][]}
 */
export function metadataProps(blob) {
  /** @type {[string, string][]} */
  const out = [];
  try {
    for (const [num, wire, a, b] of fields(blob, 0, blob.length, 0)) {
      if (num !== METADATA_PROPS || wire !== 2) continue;
      let key = '';
      let value = '';
      for (const [kf, kw, x, y] of fields(blob, a, b, 1)) {
        if (kw !== 2) continue;
        if (kf === 1) key = utf8.decode(blob.subarray(x, y));
        else if (kf === 2) value = utf8.decode(blob.subarray(x, y));
      }
      out.push([key, value]);
    }
  } catch (err) {
    if (err instanceof Malformed) return out;
    throw err;
  }
  return out;
}
