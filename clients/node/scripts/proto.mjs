// `node scripts/proto.mjs copy`: copy ../../proto/latentwire into ./proto before `npm pack`
// (a packed package cannot reach the repository's proto/ folder); `clean` removes the copy
// after packing, so that inside the repository the package reads ../../proto again.
import { cpSync, existsSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const pkg = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const source = resolve(pkg, '..', '..', 'proto', 'latentwire');
const target = join(pkg, 'proto', 'latentwire');
const what = process.argv[2];
if (what === 'copy') {
  if (!existsSync(join(source, 'v1', 'codec.proto'))) {
    console.error(`latentwire-edge: ${source}/v1/codec.proto not found (pack from a latentwire checkout)`);
    process.exit(1);
  }
  rmSync(join(pkg, 'proto'), { recursive: true, force: true });
  cpSync(source, target, { recursive: true });
} else if (what === 'clean') {
  rmSync(join(pkg, 'proto'), { recursive: true, force: true });
} else {
  console.error('usage: node scripts/proto.mjs copy|clean');
  process.exit(2);
}
