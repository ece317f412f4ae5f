// The wire contract, proto/latentwire/v1/codec.proto, loaded at run time (nothing generated):
// with @grpc/proto-loader for the gRPC service and with protobufjs for the Codes message on
// its own (codes files, and the bytes tests compare with Python's SerializeToString()).
//
// Where the .proto files are found, first hit wins:
//   1. $LATENTWIRE_PROTO_DIR (a folder holding latentwire/v1/codec.proto);
//   2. <package>/proto: a packed or installed package (`npm pack` copies it, see prepack);
//   3. <package>/../../proto: the package inside a latentwire checkout (clients/node/).

import { existsSync, realpathSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';

import * as protoLoader from '@grpc/proto-loader';

const require = createRequire(import.meta.url);
/** @type {typeof import('protobufjs')} */
const protobuf = require('protobufjs');

export const CODEC_PROTO = join('latentwire', 'v1', 'codec.proto');
const HERE = dirname(realpathSync(fileURLToPath(import.meta.url)));
const PACKAGE_DIR = resolve(HERE, '..');

/** The folders searched for latentwire/v1/codec.proto, in order. */
export function protoCandidates() {
  const out = [];
  if (process.env.LATENTWIRE_PROTO_DIR) out.push(resolve(process.env.LATENTWIRE_PROTO_DIR));
  out.push(join(PACKAGE_DIR, 'proto'), resolve(PACKAGE_DIR, '..', '..', 'proto'));
  return out;
}

/** The folder holding latentwire/v1/codec.proto. */
export function protoDir() {
  const candidates = protoCandidates();
  for (const dir of candidates) if (existsSync(join(dir, CODEC_PROTO))) return dir;
  throw new Error(
    `cannot find ${CODEC_PROTO}: looked in ${candidates.join(', ')}; set LATENTWIRE_PROTO_DIR ` +
      'to the proto/ folder of latentwire',
  );
}

/** Options for @grpc/proto-loader: field names as in the .proto, uint64 as Number. */
export const LOADER_OPTIONS = {
  keepCase: true,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
};

/** @type {protoLoader.PackageDefinition | undefined} */
let packageDefinition;
/** @type {import('protobufjs').Root | undefined} */
let root;

/** The service definitions (for @grpc/grpc-js loadPackageDefinition). */
export function codecPackageDefinition() {
  if (!packageDefinition) {
    const dir = protoDir();
    packageDefinition = protoLoader.loadSync(join(dir, CODEC_PROTO), { ...LOADER_OPTIONS, includeDirs: [dir] });
  }
  return packageDefinition;
}

/** The protobufjs Root of codec.proto (field names as in the .proto). */
export function protoRoot() {
  if (!root) {
    const dir = protoDir();
    root = new protobuf.Root();
    root.resolvePath = (_origin, target) => (target.startsWith('/') ? target : join(dir, target));
    root.loadSync(CODEC_PROTO, { keepCase: true });
    root.resolveAll();
  }
  return root;
}

/** @param {string} name e.g. "Codes" */
export function messageType(name) {
  return protoRoot().lookupType(`latentwire.v1.${name}`);
}

/**
 * A message object with proto3 default values left out (empty strings, zeros, empty
 * repeated fields and bytes), as Python's SerializeToString() leaves them out: protobufjs
 * writes every field that is present, default or not.
 * @template T
 * @param {T} obj
 * @returns {T}
 */
export function pruneDefaults(obj) {
  if (obj === null || typeof obj !== 'object' || ArrayBuffer.isView(obj)) return obj;
  /** @type {Record<string, any>} */
  const out = {};
  for (const [k, v] of Object.entries(obj)) {
    if (v === undefined || v === null || v === '' || v === 0 || v === false) continue;
    if (Array.isArray(v) && v.length === 0) continue;
    if (ArrayBuffer.isView(v) && v.byteLength === 0) continue;
    out[k] = Array.isArray(v) ? v : pruneDefaults(v);
  }
  return /** @type {T} */ (out);
}
