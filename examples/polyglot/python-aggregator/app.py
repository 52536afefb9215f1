"""An object in Python that calls a Rust object and a JavaScript object in
one handler and combines their replies.

Deploy `examples/counter` as `RustCounter`, `examples/counter-js` as
`JsCounter` and this as `Aggregator`, then:

    rio call Aggregator/a sum '{"id": "shared", "by": 4}'
    # {"rust": 4, "js": 4, "total": 8}
"""

from dataclasses import dataclass

from rio_sdk import call, handler, service


@dataclass
class Sum:
    id: str
    by: int


@service
class Aggregator:
    @handler("sum")
    def sum(self, message: Sum):
        increment = {"by": message.by}
        rust = call("RustCounter", message.id, "increment", increment)["value"]
        js = call("JsCounter", message.id, "increment", increment)["value"]
        return {"rust": rust, "js": js, "total": rust + js}
