"""Validation throughput: documents/s for a realistic nested table validator.

convexlite's compiled ``v.object(...)`` beside msgspec's own typed conversion
of the same document (``msgspec.convert`` into Structs: the fastest
validation available in Python) and a hand-written check, in one run.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from engine import v

ORDER = v.object(
    {
        "customer": v.object(
            {"name": v.string(), "email": v.string(), "vip": v.optional(v.boolean())}
        ),
        "items": v.array(
            v.object(
                {
                    "sku": v.string(),
                    "qty": v.int64(),
                    "price": v.float64(),
                    "kind": v.union(v.literal("physical"), v.literal("digital")),
                }
            )
        ),
        "status": v.union(v.literal("open"), v.literal("paid"), v.literal("shipped")),
        "note": v.optional(v.nullable(v.string())),
        "total": v.float64(),
    }
)


class Customer(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    email: str
    vip: bool | msgspec.UnsetType = msgspec.UNSET


class Item(msgspec.Struct, forbid_unknown_fields=True):
    sku: str
    qty: int
    price: float
    kind: Literal["physical", "digital"]


class Order(msgspec.Struct, forbid_unknown_fields=True):
    customer: Customer
    items: list[Item]
    status: Literal["open", "paid", "shipped"]
    total: float
    note: str | msgspec.UnsetType | None = msgspec.UNSET


def hand_written(doc: Any) -> None:
    if type(doc) is not dict or not {"customer", "items", "status", "total"} <= doc.keys():
        raise ValueError("order")
    if not doc.keys() <= {"customer", "items", "status", "total", "note"}:
        raise ValueError("extra")
    c = doc["customer"]
    if type(c) is not dict or type(c.get("name")) is not str or type(c.get("email")) is not str:
        raise ValueError("customer")
    if "vip" in c and type(c["vip"]) is not bool:
        raise ValueError("vip")
    for item in doc["items"]:
        if (
            type(item) is not dict
            or type(item.get("sku")) is not str
            or type(item.get("qty")) is not int
            or type(item.get("price")) is not float
            or item.get("kind") not in ("physical", "digital")
            or len(item) != 4
        ):
            raise ValueError("item")
    if doc["status"] not in ("open", "paid", "shipped") or type(doc["total"]) is not float:
        raise ValueError("status")
    if "note" in doc and doc["note"] is not None and type(doc["note"]) is not str:
        raise ValueError("note")


def make_order(i: int) -> dict[str, Any]:
    return {
        "customer": {"name": f"c{i}", "email": f"c{i}@example.com", "vip": i % 2 == 0},
        "items": [
            {
                "sku": f"s{j}",
                "qty": j + 1,
                "price": 9.5 * j,
                "kind": "physical" if j % 2 else "digital",
            }
            for j in range(5)
        ],
        "status": "paid",
        "note": None,
        "total": 120.0,
    }


def run(report: Any) -> None:
    orders = [make_order(i) for i in range(1000)]
    for doc in orders:  # the three checks agree on valid documents
        ORDER.validate(doc)
        msgspec.convert(doc, Order)
        hand_written(doc)
    seconds = 0.5 if report.quick else 2.0
    group = "validate a nested order (5 items)"
    report.measure(
        "validate",
        lambda: [ORDER.validate(d) for d in orders],
        ops_per_call=len(orders),
        seconds=seconds,
        group=group,
        system="convexlite v.object",
    )
    report.measure(
        "validate",
        lambda: [msgspec.convert(d, Order) for d in orders],
        ops_per_call=len(orders),
        seconds=seconds,
        group=group,
        system="msgspec.convert Struct",
    )
    report.measure(
        "validate",
        lambda: [hand_written(d) for d in orders],
        ops_per_call=len(orders),
        seconds=seconds,
        group=group,
        system="hand-written check",
    )
