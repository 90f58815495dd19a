"""Role checks fail closed: outside a call served through a wrapper (Guard on a TLS node,
open_access on one without TLS) the caller holds no role."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from kvstore.errors import PermissionDenied
from kvstore.rpc import auth


def test_outside_a_served_call_nothing_is_allowed() -> None:
    assert auth.caller() is auth.NOBODY
    with pytest.raises(PermissionDenied):
        auth.require("read")
    with pytest.raises(PermissionDenied):
        auth.require_node("10.0.0.1:7101")


def test_open_access_serves_every_call_as_open() -> None:
    seen: list[auth.Identity] = []

    async def get(request: Any, context: Any) -> str:
        seen.append(auth.caller())
        auth.require("write")
        auth.require_node("10.0.0.1:7101")  # no TLS: no certificate to bind the sender to
        return "answered"

    servicer = SimpleNamespace(
        **{name: get for name in ("Get", "GetMany", "Put", "PutMany", "Stream", "Topology")}
    )
    wrapped = auth.open_access("KV", servicer)
    assert asyncio.run(wrapped.Get(None, None)) == "answered"
    assert seen == [auth.OPEN]
    assert auth.caller() is auth.NOBODY  # the call's context did not leak out
