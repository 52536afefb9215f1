"""The SDK's errors and CBOR failures outside a component: the kinds and
field names every rio SDK shares. Run: `python3 -m unittest discover -s
guest-sdk-python/tests` (needs cbor2, from requirements-build.txt)."""

import sys
import types
import unittest
from pathlib import Path

# The package's `__init__` imports the host bindings, which exist only
# inside a component; a bare package of the same folder imports just the
# two pure modules tested here.
package = types.ModuleType("rio_sdk")
package.__path__ = [str(Path(__file__).resolve().parents[1] / "rio_sdk")]
sys.modules["rio_sdk"] = package

from rio_sdk._codec import decode  # noqa: E402
from rio_sdk._errors import RioError  # noqa: E402


class ErrorsAndCodec(unittest.TestCase):
    def test_an_error_has_a_kind_and_a_message(self):
        error = RioError("insufficient-funds", "balance 3 is less than 5")
        self.assertEqual((error.kind, error.message), ("insufficient-funds", "balance 3 is less than 5"))

    def test_undecodable_data_is_bad_data_unless_the_caller_says_bad_request(self):
        garbage = bytes([0xFF, 0x00])
        with self.assertRaises(RioError) as data:
            decode(garbage, "state key `value`")
        self.assertEqual(data.exception.kind, "bad-data")
        with self.assertRaises(RioError) as message:
            decode(garbage, "the `increment` message", "bad-request")
        self.assertEqual(message.exception.kind, "bad-request")
        self.assertEqual(decode(b"", "an empty payload"), {})


if __name__ == "__main__":
    unittest.main()
