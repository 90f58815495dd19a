"""The cluster's certificates: one CA, a certificate per node and per client, and reading them.

Roles and node addresses travel in the certificate as SAN URIs (kvstore://role/<role>,
kvstore://node/<HOST:PORT>) rather than in the subject, so one certificate can carry several and
a verifier matches exact strings instead of parsing a distinguished name.
"""

from __future__ import annotations

import datetime
import functools
import ipaddress
import re
from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kvstore.security.identity import (
    Identity,
    SecurityError,
    check_client_role,
    check_name,
    expand_roles,
)

ROLE_URI = "kvstore://role/"
NODE_URI = "kvstore://node/"

# Node addresses become SAN URIs and file names: a host (name, IPv4 or bracketed IPv6) and a
# port, and nothing that could be a path separator or break a URI.
_ADDRESS = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(?P<port>[0-9]{1,5})")

# Certificates start a little in the past so a peer whose clock lags by minutes still accepts
# one issued just now (a freshly started local cluster is the common case).
_BACKDATE = datetime.timedelta(minutes=5)


def check_address(address: str) -> str:
    match = _ADDRESS.fullmatch(address) if isinstance(address, str) else None
    if match is None or not 0 < int(match["port"]) < 65536:
        raise SecurityError(f"bad node address {address!r}: expected HOST:PORT")
    return address


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _load_cert(pem: bytes, what: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except (ValueError, TypeError) as exc:
        raise SecurityError(f"{what} is not a PEM certificate: {exc}") from exc


def _load_ca(
    ca_cert_pem: bytes, ca_key_pem: bytes
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = _load_cert(ca_cert_pem, "the CA certificate")
    try:
        key = serialization.load_pem_private_key(ca_key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise SecurityError(f"the CA key is not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise SecurityError("the CA key is not an EC key")
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise SecurityError("the CA certificate is not a CA (no BasicConstraints ca=true)")
    # A mismatched pair would sign certificates that nothing verifies: fail here, not at the
    # first handshake.
    raw = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*raw) != cert.public_key().public_bytes(*raw):
        raise SecurityError("the CA key does not belong to the CA certificate")
    return cert, key


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _check_days(days: int) -> None:
    if not isinstance(days, int) or days < 1:
        raise SecurityError(f"bad validity {days!r}: a positive number of days")


def make_ca(common_name: str = "kvstore cluster CA", days: int = 3650) -> tuple[bytes, bytes]:
    """A new self-signed CA: (cert_pem, key_pem), EC P-256."""
    _check_days(days)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=days))
        # path_length=0: the CA signs leaves only, so a stolen node key cannot mint peers.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def _issue(
    ca_cert_pem: bytes,
    ca_key_pem: bytes,
    common_name: str,
    alt_names: list[x509.GeneralName],
    usages: list[x509.ObjectIdentifier],
    days: int,
) -> tuple[bytes, bytes]:
    _check_days(days)
    ca_cert, ca_key = _load_ca(ca_cert_pem, ca_key_pem)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    # A leaf never outlives its CA: a verifier would reject it past the CA's end anyway, and
    # a clear expiry date beats a confusing handshake failure.
    not_after = min(now + datetime.timedelta(days=days), ca_cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def _host_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        pass
    # Underscores too: docker-compose v1 names containers project_service_1, and those are
    # the names its DNS gives and the nodes advertise.
    if not isinstance(host, str) or not re.fullmatch(r"[A-Za-z0-9*]([A-Za-z0-9._-]*)", host):
        raise SecurityError(f"bad host {host!r}: an IP address or a DNS name")
    return x509.DNSName(host)


def issue_node_cert(
    ca_cert_pem: bytes,
    ca_key_pem: bytes,
    address: str,
    hosts: Sequence[str],
    days: int = 825,
) -> tuple[bytes, bytes]:
    """A cluster member's certificate: (cert_pem, key_pem).

    It serves the node's port and also authenticates the node when it calls its peers, hence
    serverAuth and clientAuth. `hosts` are the names and addresses clients dial it by.
    """
    check_address(address)
    if isinstance(hosts, str) or not hosts:
        raise SecurityError(f"node {address}: hosts must be a non-empty list of names/addresses")
    alt_names: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(NODE_URI + address),
        x509.UniformResourceIdentifier(ROLE_URI + "node"),
    ]
    alt_names += [_host_name(host) for host in dict.fromkeys(hosts)]
    usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    return _issue(ca_cert_pem, ca_key_pem, address, alt_names, usages, days)


def issue_client_cert(
    ca_cert_pem: bytes, ca_key_pem: bytes, name: str, role: str, days: int = 825
) -> tuple[bytes, bytes]:
    """A client's certificate for one role (read, write or admin): (cert_pem, key_pem)."""
    check_name(name, "client")
    check_client_role(role)
    alt_names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(ROLE_URI + role)]
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    return _issue(ca_cert_pem, ca_key_pem, name, alt_names, usages, days)


def identity_from_cert(cert_pem: bytes) -> Identity:
    """The identity a (verified) certificate speaks for.

    It does not check the signature: the TLS handshake did, or verify_issued_by must. A role
    URI this version does not know grants nothing rather than failing, so a newer CA's
    certificates still work here with the roles both know.
    """
    return _identity(bytes(cert_pem))


# Runs on every RPC with the peer's PEM from the TLS auth context; parsing DER each time would
# cost more than the call it guards. Failures are not cached (lru_cache skips exceptions).
@functools.lru_cache(maxsize=1024)
def _identity(cert_pem: bytes) -> Identity:
    cert = _load_cert(cert_pem, "the peer certificate")
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    common = names[0].value if names else ""
    common_name = common.decode("utf-8", "replace") if isinstance(common, bytes) else common
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    roles = {uri[len(ROLE_URI) :] for uri in uris if uri.startswith(ROLE_URI)}
    nodes = [uri[len(NODE_URI) :] for uri in uris if uri.startswith(NODE_URI)]
    known = {role for role in roles if role in ("read", "write", "admin", "node")}
    # The node role and the address it speaks for come together or not at all: a member that
    # could claim any address, or an address without membership, is a malformed certificate.
    if ("node" in known) != bool(nodes) or len(nodes) > 1:
        raise SecurityError(
            f"certificate {common_name!r} is inconsistent: role node needs exactly one "
            f"{NODE_URI}<HOST:PORT> URI and vice versa (roles {sorted(roles)}, nodes {nodes})"
        )
    node = check_address(nodes[0]) if nodes else None
    return Identity(common_name, expand_roles(frozenset(known)), node)


def verify_issued_by(cert_pem: bytes, ca_cert_pem: bytes) -> bool:
    """Whether the CA signed `cert_pem` and it is within its validity period now.

    For material gRPC did not verify (files on disk, a certificate handed over out of band).
    A certificate that does not even parse is not issued by anyone: False. A CA that does not
    parse is the caller's configuration: SecurityError.
    """
    ca = _load_cert(ca_cert_pem, "the CA certificate")
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except (ValueError, TypeError):
        return False
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    now = _now()
    return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc
