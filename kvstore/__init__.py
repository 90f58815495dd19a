"""kvstore: a Dynamo-style replicated key-value store.

from kvstore import Client
with Client("127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103") as kv:
    kv.put("greeting", b"hello")
    result = kv.get("greeting")        # result.values, result.context, result.found
"""

from kvstore import errors
from kvstore.client import AsyncClient, Client, GetResult, PutResult

__all__ = ["AsyncClient", "Client", "GetResult", "PutResult", "errors"]
__version__ = "0.1.0"
