// CBOR in and out, the convention every rio SDK shares: integers stay
// integers, maps decode as plain objects, an empty payload means `{}`.

import { Token, Type, decode as cborDecode, encode as cborEncode } from "cborg";
import { RioError } from "./errors.js";

const EMPTY_MAP = new Uint8Array([0xa0]);

const ENCODE_OPTIONS = {
  // A missing field, not a field holding CBOR `undefined`, which Rust and
  // Python readers reject or keep as an oddity.
  ignoreUndefinedProperties: true,
  // ...and where a value must be written (array items), null.
  typeEncoders: { undefined: () => [new Token(Type.null, null)] },
};

export function encode(value) {
  try {
    return cborEncode(value, ENCODE_OPTIONS);
  } catch (error) {
    throw new RioError("internal", `cannot encode the value as CBOR: ${error.message}`);
  }
}

/**
 * `kind` names the failure: `bad-request` for an incoming message,
 * `bad-data` (the default) for a stored value or a reply, as the Rust and
 * Python SDKs do.
 */
export function decode(bytes, what, kind = "bad-data") {
  try {
    if (!bytes || bytes.length === 0) return cborDecode(EMPTY_MAP);
    // The host's byte lists may arrive as another kind of array.
    return cborDecode(bytes instanceof Uint8Array ? bytes : Uint8Array.from(bytes));
  } catch (error) {
    throw new RioError(kind, `${what} is not valid CBOR: ${error.message}`);
  }
}
