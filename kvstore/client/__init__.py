"""Python clients for kvstore."""

from kvstore.client._calls import ClientStats
from kvstore.client.aio import AsyncClient
from kvstore.client.credentials import TLS
from kvstore.client.policy import BreakerPolicy, HedgePolicy, RetryPolicy
from kvstore.client.results import GetResult, PutItem, PutResult
from kvstore.client.sync import Client

__all__ = [
    "TLS",
    "AsyncClient",
    "BreakerPolicy",
    "Client",
    "ClientStats",
    "GetResult",
    "HedgePolicy",
    "PutItem",
    "PutResult",
    "RetryPolicy",
]
