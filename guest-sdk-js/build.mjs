// Turns a JavaScript guest module into a rio component: bundles it with the
// SDK and the CBOR library into one ES module (componentize-js takes one),
// then componentizes that against the rio WIT world.
//
//   node build.mjs --entry GUEST/index.js --wit WIT_DIR --out OUT.wasm

import { mkdir, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

import { componentize } from "@bytecodealliance/componentize-js";
import { build } from "esbuild";

const sdk = dirname(fileURLToPath(import.meta.url));

function fail(message) {
  console.error(`build.mjs: ${message}`);
  process.exit(1);
}

let values;
try {
  ({ values } = parseArgs({
    options: { entry: { type: "string" }, wit: { type: "string" }, out: { type: "string" } },
  }));
} catch (error) {
  fail(error.message);
}
for (const required of ["entry", "wit", "out"]) {
  if (!values[required]) fail(`--${required} is required`);
}
const entry = resolve(values.entry);
const out = resolve(values.out);
const staging = join(dirname(out), "rio-js");
await mkdir(staging, { recursive: true });

// componentize-js exports the module's `handler` binding as the WIT
// interface; the user's module default-exports what `service()` returned.
const shim = join(staging, "entry.js");
await writeFile(shim, `export { default as handler } from ${JSON.stringify(entry)};\n`);

const bundled = join(staging, "bundle.js");
try {
  await build({
    entryPoints: [shim],
    outfile: bundled,
    bundle: true,
    format: "esm",
    platform: "neutral",
    mainFields: ["module", "main"],
    // The host provides these when the component is instantiated.
    external: ["rio:*", "wasi:*"],
    // The guest's own package.json installs nothing: the SDK and its CBOR
    // library come from this folder.
    alias: { "rio-sdk": join(sdk, "src/index.js") },
    nodePaths: [join(sdk, "node_modules")],
    logLevel: "error",
  });
} catch (error) {
  // esbuild has printed the errors with their file and line.
  const noDefault = (error?.errors ?? []).some((e) => e.text.includes('import "default"'));
  fail(
    noDefault
      ? `${entry} has no default export; end it with \`export default service({...})\``
      : `cannot bundle ${entry}`,
  );
}

let component;
try {
  ({ component } = await componentize({
    sourcePath: bundled,
    witPath: resolve(values.wit),
    // Named with its version, as `src/index.js` imports it: the WIT folder
    // also keeps released versions (in subfolders, which the parser skips).
    worldName: "rio:service/service-object@0.2.0",
    // No fetch: a silo gives guests no sockets, so nothing may import wasi:http.
    disableFeatures: ["http", "fetch-event"],
  }));
} catch (error) {
  // Usually the module threw while it was loaded (componentize-js runs its
  // top level at build time).
  fail(`cannot componentize ${entry}:\n${error?.message ?? error}`);
}
await writeFile(out, component);
