"""dizzy.flow: handlers and projections over a home's change feed (docs/flows.md).

    from dizzy.flow import Flow
    flow = Flow("payments")

    @flow.handler(consumes="payment.requested", emits=["payment.authorized"])
    def authorize(event, ctx):
        ctx.emit("payment.authorized", {"amount_cents": event.data["amount_cents"]})

What a handler emits is appended in the transaction that moves its position
past the consumed event: each event is answered exactly once, crashes included.
"""

from dizzy.flow.cause import CAUSE_KEY, Cause, read_cause
from dizzy.flow.context import Context, ProjectionDB
from dizzy.flow.declare import Flow, Handler, Projection, Step
from dizzy.flow.event import FlowEvent
from dizzy.flow.runner import Runner
from dizzy.flow.schema import SchemaError
from dizzy.flow.worker import BATCH, Counts

__all__ = [
    "BATCH",
    "CAUSE_KEY",
    "Cause",
    "Context",
    "Counts",
    "Flow",
    "FlowEvent",
    "Handler",
    "Projection",
    "ProjectionDB",
    "Runner",
    "SchemaError",
    "Step",
    "read_cause",
]
