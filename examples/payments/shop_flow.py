"""The shop's side of the payment cascade: authorize, capture, refund.

Runs on the shop's peer (``dizzy peer run --flow shop_flow.py``); the fraud
check runs on the risk team's peer (risk_flow.py) and its verdict arrives by
gossip.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dizzy.flow import Flow

flow = Flow("shop", kinds=["account", "refund"])


@flow.event("payment.fraud_checked")
@dataclass
class FraudChecked:
    amount_cents: int
    ok: bool
    score: int


@flow.handler(consumes="payment.fraud_checked", emits=["payment.authorized", "payment.declined"])
def authorize(event: Any, ctx: Any) -> None:
    if event.data.ok:
        ctx.emit("payment.authorized", {"amount_cents": event.data.amount_cents})
    else:
        ctx.emit("payment.declined", {"reason": f"fraud score {event.data.score}"})


@flow.handler(consumes="payment.authorized", emits=["payment.captured"])
def capture(event: Any, ctx: Any) -> None:
    # A call to the card processor would go here, keyed by event.id.
    ctx.emit("payment.captured", {"amount_cents": event.data["amount_cents"]})


@flow.handler(consumes="payment.refund_requested", emits=["refund.issued"])
def refund(event: Any, ctx: Any) -> None:
    """Each refund is an entity of its own, citing the captured payment."""
    entity = ctx.create("refund", name=f"refund of {event.data['payment']}")
    ctx.emit(
        "refund.issued",
        {"payment": event.data["payment"], "amount_cents": event.data["amount_cents"]},
        entity=entity,
    )
