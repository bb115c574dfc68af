"""The TLS side of a RadSec server (RFC 6614 section 2.3): credentials, verification,
and why a handshake failed.

Verification is Twisted's: `optionsForClientTLS(server_name, trustRoot=ca,
clientCertificate=cert+key)`, which makes OpenSSL check the chain to the `ca` file
and the validity dates, and checks the name with `service_identity` (a DNS name
against the certificate's DNS subject alternative names, an IP address against
its IP ones). We never relax it.

OpenSSL says no more than "certificate verify failed" when it refuses a chain, so
to tell the operator which check failed, :class:`RadsecTls` keeps the chain the
server presented (read in an info callback during the handshake) and, when the
handshake fails, finds the reason itself: not issued by a CA of `ca`, expired,
not yet valid, not meant for a TLS server, or (service_identity's verdict) not
carrying the expected name. The reason names the server, never a key.

Twisted before 26.4 checked the name from an info callback, which ours would
replace: :class:`RadsecTls` refuses to run there.
"""

from __future__ import annotations

import datetime
import weakref
from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID
from OpenSSL import SSL, crypto
from service_identity import VerificationError
from twisted.copyright import version as twisted_version
from twisted.internet import ssl
from twisted.internet.error import ConnectionClosed
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from lns.config import RadiusServer

__all__ = ["RadsecTls", "TlsSetupError"]


class TlsSetupError(ValueError):
    """The RadSec credentials cannot be used; the message names the key and the file."""


def _read(server: RadiusServer, key: str) -> bytes:
    path = getattr(server, key)
    if path is None:
        raise TlsSetupError(f"[[aaa.radius]] {server.address} {key}: required for RadSec")
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise TlsSetupError(
            f"[[aaa.radius]] {server.address} {key}: cannot read {path!r}: {exc.strerror or exc}"
        ) from None


def _certificates(server: RadiusServer, key: str) -> list[x509.Certificate]:
    data = _read(server, key)
    try:
        found = x509.load_pem_x509_certificates(data)
    except ValueError:
        found = []
    if not found:
        raise TlsSetupError(
            f"[[aaa.radius]] {server.address} {key}: no PEM certificate in {getattr(server, key)!r}"
        )
    return found


@implementer(IOpenSSLClientConnectionCreator)
class _ChainRecorder:
    """Twisted's connection creator, plus an info callback that keeps the peer's chain."""

    def __init__(
        self,
        inner: IOpenSSLClientConnectionCreator,
        chains: weakref.WeakKeyDictionary[object, list[x509.Certificate]],
    ) -> None:
        self._inner = inner
        self._chains = chains

    def clientConnectionForTLS(self, tlsProtocol: TLSMemoryBIOProtocol) -> SSL.Connection:
        connection: SSL.Connection = self._inner.clientConnectionForTLS(tlsProtocol)
        chains = self._chains
        key = weakref.ref(tlsProtocol)

        def record(conn: SSL.Connection, where: int, ret: int) -> None:
            owner = key()
            if owner is None or owner in chains:
                return
            chain = conn.get_peer_cert_chain(as_cryptography=True)
            if chain:
                chains[owner] = list(chain)

        connection.set_info_callback(record)
        return connection


class RadsecTls:
    """Credentials and certificate checks for one `transport = "tls"` server."""

    def __init__(self, server: RadiusServer) -> None:
        if _release(twisted_version) < (26, 4):
            raise TlsSetupError(
                "RadSec needs Twisted 26.4 or newer (older ones check the server's name "
                "in a TLS callback that this module uses too)"
            )
        self.server = server
        self.name = server.tls_name
        self.authorities = _certificates(server, "ca")
        chain = _certificates(server, "cert")
        key_pem = _read(server, "key")
        try:
            key = crypto.load_privatekey(crypto.FILETYPE_PEM, key_pem)
        except crypto.Error:
            # pyOpenSSL's message is about the format, never the key; still, say only where.
            raise TlsSetupError(
                f"[[aaa.radius]] {server.address} key: no usable PEM private key in {server.key!r}"
            ) from None
        client = ssl.PrivateCertificate.fromCertificateAndKeyPair(
            ssl.Certificate(crypto.X509.from_cryptography(chain[0])), ssl.KeyPair(key)
        )
        trust = ssl.trustRootFromCertificates(
            [ssl.Certificate(crypto.X509.from_cryptography(ca)) for ca in self.authorities]
        )
        inner = ssl.optionsForClientTLS(
            self.name,
            trustRoot=trust,
            clientCertificate=client,
            extraCertificateOptions={
                # Intermediates of our own certificate, sent after it.
                "extraCertChain": [crypto.X509.from_cryptography(c) for c in chain[1:]],
                "raiseMinimumTo": ssl.TLSVersion.TLSv1_2,
            },
        )
        self._chains: weakref.WeakKeyDictionary[object, list[x509.Certificate]] = (
            weakref.WeakKeyDictionary()
        )
        self.creator: IOpenSSLClientConnectionCreator = _ChainRecorder(inner, self._chains)

    def refusal(
        self, tls_transport: object, reason: Failure, now: datetime.datetime | None = None
    ) -> str:
        """Why the handshake on `tls_transport` (the TLS protocol) failed, in words."""
        chain = self._chains.get(tls_transport, [])
        now = now or datetime.datetime.now(datetime.UTC)
        error = reason.value
        if isinstance(error, VerificationError):
            names = ", ".join(_names(chain[0])) if chain else "unknown"
            return (
                f"certificate does not carry the name {self.name!r} as a DNS or IP subject "
                f"alternative name (it has: {names})"
            )
        if isinstance(error, SSL.Error):
            text = _openssl_reasons(error)
            if "certificate verify failed" in text:
                return self._diagnose(chain, now)
            return f"TLS handshake failed: {text}"
        if isinstance(error, ConnectionClosed):
            return "connection closed during the TLS handshake"
        return f"TLS handshake failed: {reason.getErrorMessage()}"

    def _diagnose(self, chain: Sequence[x509.Certificate], now: datetime.datetime) -> str:
        if not chain:
            return "certificate refused (OpenSSL: certificate verify failed)"
        leaf = chain[0]
        if not any(self._trusted(cert) for cert in chain):
            return (
                f"certificate not issued by a CA in ca = {self.server.ca!r} "
                f"(issuer: {leaf.issuer.rfc4514_string()})"
            )
        for position, cert in enumerate(chain):
            what = "certificate" if position == 0 else f"CA {cert.subject.rfc4514_string()!r}"
            if now > cert.not_valid_after_utc:
                return f"{what} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC"
            if now < cert.not_valid_before_utc:
                return f"{what} not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC"
        try:
            usage = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            usage = None
        if usage is not None and ExtendedKeyUsageOID.SERVER_AUTH not in usage:
            return "certificate is not for a TLS server (extendedKeyUsage lacks serverAuth)"
        return "certificate refused (OpenSSL: certificate verify failed)"

    def _trusted(self, cert: x509.Certificate) -> bool:
        """Whether `cert` is one of our CAs or directly issued by one."""
        for ca in self.authorities:
            if cert == ca:
                return True
            try:
                cert.verify_directly_issued_by(ca)
            except (ValueError, TypeError, InvalidSignature):
                continue
            return True
        return False


def _release(text: str) -> tuple[int, int]:
    """(major, minor) of a version string such as "26.10.0"."""
    major, minor = ([int(p) if p.isdigit() else 0 for p in text.split(".")] + [0, 0])[:2]
    return major, minor


def _names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ["no subject alternative name"]
    return [f"DNS:{n}" for n in san.get_values_for_type(x509.DNSName)] + [
        f"IP:{n}" for n in san.get_values_for_type(x509.IPAddress)
    ]


def _openssl_reasons(error: BaseException) -> str:
    """pyOpenSSL's error stack as text: its reasons only (never key material)."""
    reasons: list[str] = []
    for entry in error.args[0] if error.args and isinstance(error.args[0], list) else []:
        if isinstance(entry, tuple) and entry:
            reasons.append(str(entry[-1]))
    return "; ".join(reasons) or str(error)
