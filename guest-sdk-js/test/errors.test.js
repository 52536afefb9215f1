// RioError names its fields as the Rust and Python SDKs do, and the codec
// fails with the same kinds; run with `npm test` (node's own test runner).

import { test } from "node:test";
import assert from "node:assert/strict";

import { RioError, asHandlerError } from "../src/errors.js";
import { decode } from "../src/codec.js";

test("a RioError has a kind and a message, and reaches the caller as both", () => {
  const error = new RioError("insufficient-funds", "balance 3 is less than 5");
  assert.equal(error.kind, "insufficient-funds");
  assert.equal(error.message, "balance 3 is less than 5");
  assert.equal(String(error), "RioError: insufficient-funds: balance 3 is less than 5");
  assert.deepEqual(asHandlerError(error).payload, {
    kind: "insufficient-funds",
    message: "balance 3 is less than 5",
  });
});

test("`detail`, the deprecated name, still reads the message", () => {
  assert.equal(new RioError("refused", "no").detail, "no");
});

test("any other exception answers `trap`", () => {
  assert.deepEqual(asHandlerError(new TypeError("x is undefined")).payload, {
    kind: "trap",
    message: "TypeError: x is undefined",
  });
});

test("undecodable data is `bad-data` unless the caller says `bad-request`", () => {
  const garbage = Uint8Array.of(0xff, 0x00);
  assert.throws(() => decode(garbage, "state key `value`"), { kind: "bad-data" });
  assert.throws(() => decode(garbage, "the `increment` message", "bad-request"), {
    kind: "bad-request",
  });
  assert.deepEqual(decode(new Uint8Array(), "an empty payload"), {});
});
