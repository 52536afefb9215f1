"""The error a handler raises to answer with a kind and a message."""


class RioError(Exception):
    """Raised by a handler, reaches the caller as `{kind, message}`.

    `kind` is a short machine-readable word (`insufficient-funds`); the
    caller's `rio call` prints both. A failed call to another object raises
    one too, with the callee's kind, so letting it propagate passes it on.
    """

    def __init__(self, kind: str, message: str = ""):
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message
