"""Python clients for kvstore."""

from kvstore.client.aio import AsyncClient
from kvstore.client.credentials import TLS
from kvstore.client.results import GetResult, PutItem, PutResult
from kvstore.client.sync import Client

__all__ = ["TLS", "AsyncClient", "Client", "GetResult", "PutItem", "PutResult"]
