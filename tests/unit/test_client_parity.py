"""The blocking and the asyncio client offer the same methods, with the same parameters in
the same order and the same defaults: code moves between them by adding or removing await."""

from __future__ import annotations

import inspect

from kvstore.client import AsyncClient, Client

# Not calls: the context-manager protocols differ by nature (with / async with).
_PROTOCOL = {"__enter__", "__exit__", "__aenter__", "__aexit__"}


def _public(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if (not name.startswith("_") or name == "__init__") and name not in _PROTOCOL
    }


def test_both_clients_have_the_same_methods_and_signatures() -> None:
    sync, aio = _public(Client), _public(AsyncClient)
    # The async client's extra: the per-node stream it multiplexes calls on.
    assert set(aio) - set(sync) == {"stream"}
    assert set(sync) - set(aio) == set()
    for name, signature in sync.items():
        theirs = aio[name]
        assert list(signature.parameters) == list(theirs.parameters), name
        for parameter, mine in signature.parameters.items():
            assert mine.default == theirs.parameters[parameter].default, (name, parameter)
    for name in set(sync) - {"__init__", "close", "stats"}:
        assert inspect.iscoroutinefunction(getattr(AsyncClient, name)), name


def test_every_call_takes_its_own_timeout() -> None:
    for name in ("get", "put", "delete", "get_many", "put_many", "delete_many"):
        assert "timeout" in inspect.signature(getattr(Client, name)).parameters, name
        assert "sloppy" in inspect.signature(getattr(AsyncClient, name)).parameters, name
