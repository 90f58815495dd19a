"""Python clients for kvstore."""

from kvstore.client.aio import AsyncClient
from kvstore.client.results import GetResult, PutItem, PutResult
from kvstore.client.sync import Client

__all__ = ["AsyncClient", "Client", "GetResult", "PutItem", "PutResult"]
