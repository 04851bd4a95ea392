// Builds one JavaScript operator into a component: bundles the entry with
// the wrun helper (guest-sdk/js/wrun.js) by esbuild, leaving the
// `wrun:operator/*` imports to the host, then componentize-js.
//
//   node build.mjs <entry.js> <guest-sdk/js> <wit dir> <out.wasm>
import { build } from 'esbuild';
import { componentize } from '@bytecodealliance/componentize-js';
import { writeFile, mkdtemp } from 'node:fs/promises';
import { join } from 'node:path';
import { tmpdir } from 'node:os';

const [entry, sdk, wit, out] = process.argv.slice(2);
const dir = await mkdtemp(join(tmpdir(), 'wrun-js-'));
const bundled = join(dir, 'bundle.js');
await build({
  entryPoints: [entry],
  bundle: true,
  format: 'esm',
  platform: 'neutral',
  external: ['wrun:*'],
  alias: { wrun: join(sdk, 'wrun.js') },
  outfile: bundled,
  logLevel: 'warning',
});
const { component } = await componentize({
  sourcePath: bundled,
  witPath: wit,
  worldName: 'operator',
  // No WASI beyond what the runtime grants (nothing): no stdio, clocks,
  // random, and no wasi:http, which wrun does not provide.
  disableFeatures: ['stdio', 'random', 'clocks', 'http', 'fetch-event'],
});
await writeFile(out, component);
