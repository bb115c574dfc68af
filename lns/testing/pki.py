"""A throw-away certificate authority for the RadSec tests, made with the `openssl` CLI.

`CertificateAuthority(directory)` makes a self-signed CA (EC P-256, valid for two
days); `issue()` signs a leaf certificate for a server (`serverAuth`, with DNS and IP
subject alternative names) or a client (`clientAuth`). Validity dates can be set
(`not_before`/`not_after`, UTC) to make expired or not-yet-valid certificates: that
needs `openssl ca`, whose `-startdate`/`-enddate` exist in OpenSSL 3.0, where
`openssl x509 -req` has only `-days`. Every file is readable by everyone (0644) and
lives under `directory`, so a FreeRADIUS running as `freerad` can read it.
"""

from __future__ import annotations

import datetime
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CertificateAuthority", "Issued"]

_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key, as PEM files."""

    cert: Path
    key: Path


def _openssl(*args: str, cwd: Path) -> None:
    done = subprocess.run(
        ["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {done.stderr.strip()}")


def _asn1_time(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y%m%d%H%M%SZ")


class CertificateAuthority:
    """A CA in `directory` (created if missing); `name` is its subject CN."""

    def __init__(self, directory: Path, name: str = "lns test CA") -> None:
        self.directory = directory
        self.name = name
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o755)
        stem = name.replace(" ", "-")
        self.cert = directory / f"{stem}.pem"
        self.key = directory / f"{stem}.key"
        _openssl(
            "req",
            "-x509",
            *_KEY,
            "-keyout",
            str(self.key),
            "-out",
            str(self.cert),
            "-subj",
            f"/CN={name}",
            "-days",
            "2",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            cwd=directory,
        )
        # `openssl ca` keeps its database next to the CA.
        self._db = directory / f"{stem}-db"
        self._db.mkdir(exist_ok=True)
        (self._db / "index.txt").write_text("")
        (self._db / "serial").write_text("1000\n")
        self._config = self._db / "ca.cnf"
        self._config.write_text(
            "[ca]\ndefault_ca = this\n"
            "[this]\n"
            f"dir = {self._db}\n"
            "database = $dir/index.txt\nserial = $dir/serial\nnew_certs_dir = $dir\n"
            f"certificate = {self.cert}\nprivate_key = {self.key}\n"
            "default_md = sha256\npolicy = anything\nunique_subject = no\n"
            "copy_extensions = none\n"
            "[anything]\ncommonName = supplied\n"
        )
        self._chmod()

    def issue(
        self,
        name: str,
        *,
        dns: Sequence[str] = (),
        ips: Sequence[str] = (),
        client: bool = False,
        not_before: datetime.datetime | None = None,
        not_after: datetime.datetime | None = None,
    ) -> Issued:
        """A leaf certificate with CN `name`, signed by this CA.

        Server certificates carry `extendedKeyUsage = serverAuth` and the given
        subject alternative names; `client=True` makes a `clientAuth` one. Without
        dates it is valid from an hour ago for a day.
        """
        now = datetime.datetime.now(datetime.UTC)
        not_before = not_before or now - datetime.timedelta(hours=1)
        not_after = not_after or now + datetime.timedelta(days=1)
        stem = name.replace(" ", "-").replace("/", "-")
        cert = self.directory / f"{stem}.pem"
        key = self.directory / f"{stem}.key"
        csr = self._db / f"{stem}.csr"
        _openssl(
            "req", "-new", *_KEY, "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}",
            cwd=self.directory,
        )  # fmt: skip
        san = [f"DNS:{d}" for d in dns] + [f"IP:{ip}" for ip in ips]
        extensions = [
            "basicConstraints = critical, CA:FALSE",
            "keyUsage = critical, digitalSignature, keyEncipherment",
            f"extendedKeyUsage = {'clientAuth' if client else 'serverAuth'}",
        ]
        if san:
            extensions.append(f"subjectAltName = {', '.join(san)}")
        extfile = self._db / f"{stem}.ext"
        extfile.write_text("\n".join(extensions) + "\n")
        _openssl(
            "ca", "-batch", "-notext", "-config", str(self._config), "-in", str(csr),
            "-out", str(cert), "-extfile", str(extfile),
            "-startdate", _asn1_time(not_before), "-enddate", _asn1_time(not_after),
            cwd=self.directory,
        )  # fmt: skip
        self._chmod()
        return Issued(cert, key)

    def _chmod(self) -> None:
        for path in self.directory.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
