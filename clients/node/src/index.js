// latentwire-edge: the Node.js edge client of latentwire. Load (or fetch) a model package's
// encoder, turn samples into compact Codes messages with onnxruntime-node exactly as the
// Python runtime does, and send them to a latentwire server for reconstruction or scoring.

export { EdgeModel, DEFAULT_BATCH, MESSAGE_BYTES, MAX_GRAPH_BYTES, normalize, padEdge, parseCodes, serializeCodes } from './model.js';
export { Client, StreamResult, StreamRequests, Attempts, MAX_BACKOFF, OUTPUT_DTYPES, LB_POLICIES, errorFromGrpc, lbPolicyFor, writeEncoderPackage, checkFetched, concat } from './client.js';
export { parseManifest, Normalization, FORMATS, FINGERPRINT_KEY } from './manifest.js';
export { Prior, CODER } from './entropy.js';
export { Table, PRECISION, encode as ansEncode, decode as ansDecode } from './ans.js';
export { ndarray, arrayToTensor, tensorToArray, halfToFloat, halfsToFloats, valuesOf } from './arrays.js';
export { readNpy, writeNpy, parseNpy, formatNpy } from './npy.js';
export { readCodesFile, writeCodesFile, formatCodesFile, splitCodesFile } from './codes.js';
export { protoDir } from './proto.js';
export * from './errors.js';
