"""Client certificates as workload identities (X509-SVIDs), and the TLS files' consistency.

gRPC verifies a client certificate's chain against PDV_TLS_CLIENT_CA in the handshake, and
nothing else: that it is an X509-SVID is checked here (spiffe/spiffe standards/X509-SVID.md):

- exactly one URI SAN, a SPIFFE ID with a path (§2: "SVIDs containing more than one URI SAN
  MUST be rejected"); gRPC's own `peer_spiffe_id` is absent unless there is exactly one;
- not a CA: basic constraints, if present, say cA=false (§4.1); a key usage, if present, has
  digitalSignature and neither keyCertSign nor cRLSign (§4.3);
- an extended key usage, if present, allows clientAuth (§4.4).

A certificate is read once per process and remembered by the SHA-256 of the PEM gRPC hands
over (a bounded cache): a connection's calls all present the same one.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from vault.domain.identity import PeerCertificate, spiffe_id_problem

__all__ = ["CertificateCache", "read_peer_certificate", "tls_files_problem"]


def read_peer_certificate(pem: bytes) -> PeerCertificate:
    """What a verified client certificate says; `problem` when it is not an X509-SVID."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        return _unreadable(pem)
    fingerprint = cert.fingerprint(hashes.SHA256()).hex()
    not_after = cert.not_valid_after_utc
    try:
        problem, spiffe_id = _svid_problem(cert)
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType):
        problem, spiffe_id = "its extensions cannot be read", None
    if problem is not None:
        return PeerCertificate(fingerprint, None, problem, not_after)
    return PeerCertificate(fingerprint, spiffe_id, None, not_after)


def _svid_problem(cert: x509.Certificate) -> tuple[str | None, str | None]:
    ext = cert.extensions
    try:
        san = ext.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    if len(uris) != 1:
        return f"it has {len(uris)} URI SANs; an X509-SVID has exactly one", None
    [uri] = uris
    problem = spiffe_id_problem(uri)
    if problem is not None:  # the URI is not echoed: only what is wrong with it
        return f"its URI SAN: {problem}", None
    try:
        if ext.get_extension_for_class(x509.BasicConstraints).value.ca:
            return "it is a CA certificate (cA=true); an X509-SVID is a leaf", None
    except x509.ExtensionNotFound:
        pass
    try:
        usage = ext.get_extension_for_class(x509.KeyUsage).value
        if usage.key_cert_sign or usage.crl_sign:
            return "its key usage allows signing certificates or CRLs", None
        if not usage.digital_signature:
            return "its key usage lacks digitalSignature", None
    except x509.ExtensionNotFound:
        pass
    try:
        purposes = ext.get_extension_for_class(x509.ExtendedKeyUsage).value
        if (
            ExtendedKeyUsageOID.CLIENT_AUTH not in purposes
            and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in purposes
        ):
            return "its extended key usage does not allow clientAuth", None
    except x509.ExtensionNotFound:
        pass
    return None, uri


def _unreadable(pem: bytes) -> PeerCertificate:
    return PeerCertificate(
        hashlib.sha256(pem).hexdigest(), None, "it cannot be read", datetime.min.replace(tzinfo=UTC)
    )


class CertificateCache:
    """Client certificates read, by the SHA-256 of their PEM; at most `max_entries`, the least
    recently used forgotten first. Used from one thread (the event loop's)."""

    def __init__(self, max_entries: int = 4096) -> None:
        self._max = max_entries
        self._read: OrderedDict[bytes, PeerCertificate] = OrderedDict()

    def __repr__(self) -> str:
        return f"CertificateCache(entries={len(self._read)})"

    def __len__(self) -> int:
        return len(self._read)

    def read(self, pem: bytes) -> PeerCertificate:
        digest = hashlib.sha256(pem).digest()
        known = self._read.get(digest)
        if known is not None:
            self._read.move_to_end(digest)
            return known
        peer = read_peer_certificate(pem)
        self._read[digest] = peer
        if len(self._read) > self._max:
            self._read.popitem(last=False)
        return peer


def tls_files_problem(chain: bytes, key: bytes, client_ca: bytes | None) -> str | None:
    """Why these PEM files cannot serve TLS together, in words that name no key material;
    None when they can: certificates that parse, a private key that parses and belongs to
    the chain's first certificate, and a client CA bundle of certificates."""
    try:
        leaf = x509.load_pem_x509_certificates(chain)[0]
    except ValueError:
        return "the certificate file holds no PEM certificate"
    try:
        private = serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError):
        return "the key file holds no unencrypted PEM private key"
    info = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if private.public_key().public_bytes(der, info) != leaf.public_key().public_bytes(der, info):
        return "the key is not the key of the certificate file's first certificate"
    if client_ca is not None:
        try:
            x509.load_pem_x509_certificates(client_ca)
        except ValueError:
            return "the client CA file holds no PEM certificate"
    return None
