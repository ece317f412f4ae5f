// Codes files (what `latentwire encode` writes and `latentwire decode` reads, see
// runtime/codes.py): the magic b"LWCODES1", then for each message a uint32 little-endian
// length and the serialized latentwire.v1.Codes message.

import { readFileSync, writeFileSync } from 'node:fs';

import { CodesError } from './errors.js';
import { parseCodes, serializeCodes } from './model.js';

export const MAGIC = Buffer.from('LWCODES1', 'latin1');

/**
 * The bytes of a codes file holding `messages`.
 * @param {Iterable<import('./model.js').Codes>} messages
 * @returns {Buffer}
 */
export function formatCodesFile(messages) {
  /** @type {Buffer[]} */
  const parts = [MAGIC];
  for (const msg of messages) {
    const payload = serializeCodes(msg);
    const len = Buffer.alloc(4);
    len.writeUInt32LE(payload.length);
    parts.push(len, Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength));
  }
  return Buffer.concat(parts);
}

/**
 * Write messages to a codes file; returns the number of bytes written.
 * @param {string} path @param {Iterable<import('./model.js').Codes>} messages
 */
export function writeCodesFile(path, messages) {
  const data = formatCodesFile(messages);
  writeFileSync(path, data);
  return data.length;
}

/**
 * The serialized messages of a codes file's bytes, refusing anything that is not one.
 * @param {Uint8Array} data @param {string} [what]
 * @returns {Uint8Array[]}
 */
export function splitCodesFile(data, what = 'the codes file') {
  if (data.length < MAGIC.length || !MAGIC.equals(data.subarray(0, MAGIC.length))) {
    throw new CodesError(`${what} is not a latentwire codes file (magic b'LWCODES1' missing)`);
  }
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  /** @type {Uint8Array[]} */
  const out = [];
  let pos = MAGIC.length;
  while (pos < data.length) {
    if (data.length - pos < 4) throw new CodesError(`${what}: truncated length prefix of message ${out.length}`);
    const size = view.getUint32(pos, true);
    pos += 4;
    if (data.length - pos < size) {
      throw new CodesError(`${what}: message ${out.length} is truncated (${data.length - pos} of ${size} bytes)`);
    }
    out.push(data.subarray(pos, pos + size));
    pos += size;
  }
  if (!out.length) throw new CodesError(`${what} holds no codes`);
  return out;
}

/**
 * The messages of a codes file.
 * @param {string} path
 * @returns {import('./model.js').Codes[]}
 */
export function readCodesFile(path) {
  let data;
  try {
    data = readFileSync(path);
  } catch (err) {
    throw new CodesError(`cannot open codes file ${path}: ${/** @type {Error} */ (err).message}`);
  }
  return splitCodesFile(data, path).map((bytes, i) => {
    try {
      return parseCodes(bytes);
    } catch (err) {
      throw new CodesError(`${path}: message ${i} is not a Codes message: ${/** @type {Error} */ (err).message}`);
    }
  });
}
