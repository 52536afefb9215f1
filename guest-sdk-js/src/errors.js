// Errors with a kind and a message, as the WIT `handler-error` record, and
// the deliberate trap.

/**
 * Thrown by a handler, reaches the caller as `{kind, message}`: `kind` is a
 * short machine-readable word, `message` the text for humans, as the Rust
 * and Python SDKs name them.
 */
export class RioError extends Error {
  constructor(kind, message = "") {
    // The stack trace (made here) still shows the kind with the message.
    super(`${kind}: ${message}`);
    this.name = "RioError";
    this.kind = String(kind);
    // `message` alone, like the other SDKs, rather than Error's
    // "kind: message".
    this.message = String(message);
  }

  /** @deprecated `message` (the SDK's first name for it; kept so guests written then still work). */
  get detail() {
    return this.message;
  }

  toString() {
    return `${this.name}: ${this.kind}: ${this.message}`;
  }
}

/** What `abort()` throws; `service()` lets it escape the export. */
export class Abort {
  constructor(reason) {
    this.reason = reason;
  }
}

/**
 * What the component answers for `error`: componentize-js turns a thrown
 * value with a `payload` into the `err` case of the result.
 */
export function asHandlerError(error) {
  const record =
    error instanceof RioError
      ? { kind: error.kind, message: error.message }
      : // An uncaught exception answers `trap`, as a Rust panic does, so
        // callers see one kind whatever the callee's language. The instance
        // is kept: the turn's writes are discarded anyway. (`abort()` is
        // for a real trap, which also drops the instance.)
        { kind: "trap", message: describe(error) };
  const wrapped = new Error(record.message);
  wrapped.payload = record;
  return wrapped;
}

function describe(error) {
  if (error instanceof Error) return `${error.name}: ${error.message}`;
  try {
    return String(error);
  } catch {
    return "a value that cannot be shown";
  }
}
