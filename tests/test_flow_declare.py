"""Declaring flows (docs/flows.md#declaring): checked when the flow is defined, not when
the first event arrives; schemas decode event data strictly."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import pytest

from dizzy.flow import Flow, FlowEvent, SchemaError
from dizzy.flow.schema import decode, encode
from dizzy.protocol import UsageError


def noop(event: FlowEvent, ctx: Any) -> None:
    pass


def test_a_handler_keeps_its_declaration_and_stays_callable() -> None:
    flow = Flow("payments", kinds=["account"])

    @flow.handler(consumes="payment.requested", emits=["payment.authorized"], on_error="block")
    def authorize(event: Any, ctx: Any) -> str:
        return "called"

    assert flow.handlers == {"authorize": authorize}
    assert authorize.consumes == ("payment.requested",)
    assert authorize.emits == ("payment.authorized",)
    assert (authorize.on_error, authorize.retries, authorize.version) == ("block", 3, "1")
    assert authorize.label == "payments/authorize"
    assert flow.kinds == frozenset({"account"})
    assert authorize(None, None) == "called"  # type: ignore[arg-type]

    @authorize.on_invalidated
    def undo(event: Any, ctx: Any) -> None:
        pass

    assert authorize.invalidated is undo


def test_a_projection_and_its_tables() -> None:
    flow = Flow("payments")

    @flow.projection(consumes=["payment.captured", "payment.refunded"], tables=["totals"])
    def totals(event: Any, db: Any) -> None:
        pass

    assert flow.projections == {"totals": totals}
    assert totals.consumes == ("payment.captured", "payment.refunded")
    assert totals.tables == ("totals",)
    assert flow.steps == [totals]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"consumes": []}, "at least one event type"),
        ({"consumes": "bad type"}, "not an event type"),
        ({"consumes": "a", "emits": ["a"]}, "would consume what it emits"),
        ({"consumes": "a", "emits": ["dizzy.grant"]}, "are not emitted"),
        ({"consumes": "a", "on_error": "stop"}, "on_error is"),
        ({"consumes": "a", "retries": -1}, "retries"),
        ({"consumes": "a", "retries": True}, "retries"),
        ({"consumes": "a", "version": ""}, "version"),
        ({"consumes": "a", "emits": "b c"}, "not an event type"),
    ],
)
def test_bad_handler_declarations_fail_where_they_are_made(
    kwargs: dict[str, Any], message: str
) -> None:
    flow = Flow("f")
    with pytest.raises(UsageError, match=message):
        flow.handler(**kwargs)  # before any function is given


def test_names_and_signatures_are_checked() -> None:
    flow = Flow("f")
    with pytest.raises(UsageError, match="two arguments"):
        flow.handler(consumes="a", name="one")(lambda event: None)  # type: ignore[arg-type,misc]
    with pytest.raises(UsageError, match="cannot name a handler"):
        flow.handler(consumes="a")(lambda event, ctx: None)
    flow.handler(consumes="a", name="via_lambda")(lambda event, ctx: None)
    flow.handler(consumes="a")(noop)
    with pytest.raises(UsageError, match="named noop already"):
        flow.projection(consumes="a")(noop)
    with pytest.raises(UsageError, match="flow name"):
        Flow("has/slash")
    with pytest.raises(UsageError, match="not an event type or kind"):
        Flow("f", kinds=["no spaces"])
    with pytest.raises(UsageError, match="bad table name"):
        flow.projection(consumes="a", tables=["x;DROP"], name="p")(lambda event, db: None)


# -- schemas ----------------------------------------------------------------------------


@dataclass
class Line:
    sku: str
    qty: int = 1


@dataclass
class Order:
    amount_cents: int
    currency: Literal["EUR", "USD"]
    lines: list[Line]
    note: str | None = None
    tags: dict[str, bool] = field(default_factory=dict)


def test_a_schema_decodes_nested_data_and_ignores_unknown_keys() -> None:
    order = decode(
        Order,
        {
            "amount_cents": 1200,
            "currency": "EUR",
            "lines": [{"sku": "a"}, {"sku": "b", "qty": 2}],
            "later": "a field a newer writer added",
        },
    )
    assert order == Order(1200, "EUR", [Line("a"), Line("b", 2)])
    assert encode(order) == {
        "amount_cents": 1200,
        "currency": "EUR",
        "lines": [{"sku": "a", "qty": 1}, {"sku": "b", "qty": 2}],
        "note": None,
        "tags": {},
    }


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"currency": "EUR", "lines": []}, "amount_cents: missing"),
        ({"amount_cents": "1", "currency": "EUR", "lines": []}, "expected int, got str"),
        ({"amount_cents": True, "currency": "EUR", "lines": []}, "expected int, got bool"),
        ({"amount_cents": 1, "currency": "GBP", "lines": []}, "currency: expected one of"),
        ({"amount_cents": 1, "currency": "EUR", "lines": [{"qty": 1}]}, r"lines\[0\].sku: missing"),
        ({"amount_cents": 1, "currency": "EUR", "lines": {}}, "lines: expected array"),
        ({"amount_cents": 1, "currency": "EUR", "lines": [], "note": 3}, "note"),
    ],
)
def test_data_that_does_not_fit_says_where(data: dict[str, Any], message: str) -> None:
    with pytest.raises(SchemaError, match=message):
        decode(Order, data)


def test_schemas_are_registered_once_and_must_be_dataclasses_of_json_types() -> None:
    flow = Flow("f")
    flow.event("order.placed")(Order)
    assert flow.schemas == {"order.placed": Order}
    with pytest.raises(UsageError, match="has a schema already"):
        flow.event("order.placed")(Order)
    with pytest.raises(UsageError, match="registers a dataclass"):
        flow.event("x")(dict)

    @dataclass
    class Floaty:
        price: float

    with pytest.raises(UsageError, match="not a type of event data"):
        flow.event("y")(Floaty)
