"""The risk team's side of the payment cascade: the fraud check.

Runs on the risk team's peer (``dizzy peer run --flow risk_flow.py``), with
writer rights on the shop's accounts: it sees payment requests by gossip and
answers with its verdict, which goes back the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dizzy.flow import Flow

flow = Flow("risk", kinds=["account"])


@flow.event("payment.requested")
@dataclass
class Requested:
    amount_cents: int
    currency: str = "EUR"


@flow.handler(consumes="payment.requested", emits=["payment.fraud_checked"])
def fraud_check(event: Any, ctx: Any) -> None:
    score = min(99, event.data.amount_cents // 5_000)  # a stand-in for a real model
    ctx.emit(
        "payment.fraud_checked",
        {"amount_cents": event.data.amount_cents, "ok": score < 20, "score": score},
    )
