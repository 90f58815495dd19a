"""kvstore: a Dynamo-style replicated key-value store.

from kvstore import Client
with Client("127.0.0.1:8101,127.0.0.1:8102,127.0.0.1:8103") as kv:
    kv.put("greeting", b"hello")
    result = kv.get("greeting")        # result.values, result.context, result.found
"""

# Lazy (PEP 562): Python runs this file whenever any kvstore.x.y is imported, so it imports
# nothing from kvstore when it runs; the client loads on first use of a name below.
# tools/check_layers.py enforces it.
from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kvstore import errors
    from kvstore.client import TLS, AsyncClient, Client, GetResult, PutItem, PutResult

__all__ = ["TLS", "AsyncClient", "Client", "GetResult", "PutItem", "PutResult", "errors"]
__version__ = "0.1.0"

_CLIENT_NAMES = frozenset({"TLS", "AsyncClient", "Client", "GetResult", "PutItem", "PutResult"})


def __getattr__(name: str) -> Any:
    if name == "errors":
        return import_module("kvstore.errors")
    if name in _CLIENT_NAMES:
        value = getattr(import_module("kvstore.client"), name)
        globals()[name] = value  # once loaded, a plain attribute
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
