"""The cluster's TLS material and bearer tokens: making them, reading them, who they identify.

Self-contained on purpose (stdlib, cryptography and kvstore.errors only): the node, the CLI and
the tests share it, and the gRPC wiring lives above it in kvstore.rpc.
"""

from kvstore.security.certs import (
    identity_from_cert,
    issue_client_cert,
    issue_node_cert,
    make_ca,
    verify_issued_by,
)
from kvstore.security.cluster import ClusterMaterial, write_cluster_material
from kvstore.security.identity import ROLES, Identity, SecurityError
from kvstore.security.tokens import TokenTable, new_token, token_digest

__all__ = [
    "ROLES",
    "ClusterMaterial",
    "Identity",
    "SecurityError",
    "TokenTable",
    "identity_from_cert",
    "issue_client_cert",
    "issue_node_cert",
    "make_ca",
    "new_token",
    "token_digest",
    "verify_issued_by",
    "write_cluster_material",
]
