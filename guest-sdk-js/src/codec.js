// CBOR in and out, the convention every rio SDK shares.

import { decode as cborDecode, encode as cborEncode } from "cborg";
import { RioError } from "./errors.js";

// What an empty payload means: a message with no fields.
const EMPTY_MAP = new Uint8Array([0xa0]);

export function encode(value) {
  try {
    return cborEncode(value);
  } catch (error) {
    throw new RioError("internal", `cannot encode the value as CBOR: ${error.message}`);
  }
}

export function decode(bytes, what) {
  try {
    if (!bytes || bytes.length === 0) return cborDecode(EMPTY_MAP);
    // The host's byte lists may arrive as another kind of array.
    return cborDecode(bytes instanceof Uint8Array ? bytes : Uint8Array.from(bytes));
  } catch (error) {
    throw new RioError("bad-request", `${what} is not valid CBOR: ${error.message}`);
  }
}
