// An edge device in Node, end to end: provision the encoder from the server (once), encode
// sensor data locally, send the codes, get the reconstructions back.
//
//   node examples/edge-device.mjs SERVER MODEL INPUT.npy [RECON.npy]
//   e.g. node examples/edge-device.mjs 127.0.0.1:8001 digits data/digits.npy
import { existsSync } from 'node:fs';

import { Client, EdgeModel, LatentwireError, readNpy, serializeCodes, valuesOf, writeNpy } from 'latentwire-edge';

const [server, name, input, output] = process.argv.slice(2);
const client = new Client(server, { token: process.env.LATENTWIRE_TOKEN ?? null, timeout: 10 });
try {
  // 1. provision: encoder.onnx + manifest.json, sha256-checked, written atomically
  const dir = `edge-packages/${name}`;
  if (!existsSync(dir)) await client.fetchEncoder(name, dir);
  const encoder = await EdgeModel.load(dir); // checks sha256, fingerprint, graph
  console.log(`encoder ${encoder.name} (${encoder.format} codes, fingerprint ${encoder.fingerprint})`);

  // 2. encode on the device: (N, *input shape) in the user's units -> Codes messages
  const x = readNpy(input);
  const t0 = performance.now();
  const codes = await encoder.encodeCodes(x); // images are padded to the stride and cropped back
  const bytes = codes.reduce((a, m) => a + serializeCodes(m).length, 0);
  console.log(`encoded ${x.shape[0]} samples in ${(performance.now() - t0).toFixed(1)} ms: ` +
    `${codes.length} message(s), ${bytes} bytes (raw float32: ${x.data.length * 4})`);

  // 3. decode on the server (retried on UNAVAILABLE, deadline 10 s)
  const result = await client.decode(codes);
  console.log(`reconstructions ${JSON.stringify(result.x.shape)} from ${result.modelName} version ${result.modelVersion}`);
  const a = valuesOf(x);
  const b = valuesOf(result.x);
  let err = 0;
  for (let i = 0; i < a.length; i++) err = Math.max(err, Math.abs(Number(a[i]) - Number(b[i])));
  console.log(`max abs error ${err.toFixed(4)}`);
  if (output) writeNpy(output, result.x);

  // or over one DecodeStream, an answer per message as it comes
  for await (const r of client.decodeStream(codes)) {
    console.log(`stream answer ${r.id}: ${r.ok ? JSON.stringify(r.x?.shape) : r.error}`);
  }
} catch (err) {
  if (!(err instanceof LatentwireError)) throw err;
  // the server's error class: FingerprintMismatch, ModelNotFound, CodesError, Unavailable, ...
  console.error(`${err.name} (${err.status}): ${err.message}`);
  process.exitCode = 1;
} finally {
  client.close();
}
