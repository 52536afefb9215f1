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
const { values } = parseArgs({
  options: { entry: { type: "string" }, wit: { type: "string" }, out: { type: "string" } },
});
for (const required of ["entry", "wit", "out"]) {
  if (!values[required]) {
    console.error(`build.mjs: --${required} is required`);
    process.exit(2);
  }
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
await build({
  entryPoints: [shim],
  outfile: bundled,
  bundle: true,
  format: "esm",
  platform: "neutral",
  mainFields: ["module", "main"],
  // The host provides these when the component is instantiated.
  external: ["rio:*", "wasi:*"],
  alias: { "rio-sdk": join(sdk, "src/index.js") },
  nodePaths: [join(sdk, "node_modules")],
  logLevel: "warning",
});

const { component } = await componentize({
  sourcePath: bundled,
  witPath: resolve(values.wit),
  worldName: "service-object",
  // No fetch: a silo gives guests no sockets, so nothing may import wasi:http.
  disableFeatures: ["http", "fetch-event"],
});
await writeFile(out, component);
