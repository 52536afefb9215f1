// Checks a decoded message against a handler's declared fields, so a wrong
// message answers `bad-request` instead of failing somewhere inside.

import { RioError } from "./errors.js";

const CHECKS = {
  // Beyond 2^53 CBOR integers decode as BigInt, which mixes with no number.
  int: (v) => Number.isSafeInteger(v),
  number: (v) => typeof v === "number",
  string: (v) => typeof v === "string",
  boolean: (v) => typeof v === "boolean",
  object: (v) => v !== null && typeof v === "object" && !Array.isArray(v),
  array: (v) => Array.isArray(v),
  any: () => true,
};

/** `schema` maps field names to a type word, with `?` for optional. */
export function checkMessage(message, schema) {
  if (!CHECKS.object(message)) {
    throw new RioError("bad-request", "the message should be a map");
  }
  for (const [field, declared] of Object.entries(schema)) {
    const optional = declared.endsWith("?");
    const type = optional ? declared.slice(0, -1) : declared;
    const check = CHECKS[type];
    if (!check) throw new TypeError(`unknown field type \`${declared}\` for \`${field}\``);
    const value = message[field];
    if (value === undefined || value === null) {
      if (optional) continue;
      throw new RioError("bad-request", `the message lacks the field \`${field}\``);
    }
    if (!check(value)) {
      throw new RioError("bad-request", `field \`${field}\` should be ${type === "int" ? "an integer (at most 2^53 - 1 in size)" : `a ${type}`}, got ${shown(value)}`);
    }
  }
}

function shown(value) {
  return typeof value === "bigint" ? value.toString() : JSON.stringify(value);
}
