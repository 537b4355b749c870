"""The cluster's own PKI: a CA, one certificate per server, and the heartbeat key.

Every server (its slapd provider and its sentinel) gets one ECDSA P-256 key and one
certificate signed by the cluster CA. The certificate is good for both ends of a TLS
connection (serverAuth and clientAuth): slapd presents it to clients, and the sentinel
presents it to bind with SASL EXTERNAL as its own server entry, so no password is kept on
the server. P-256 is what both OpenSSL (Python's ``ssl``) and GnuTLS (Debian's slapd)
accept everywhere.

Subjects. The CA is ``CN=ndsclust CA,O=<cluster>``; a server is
``CN=<server>,OU=servers,O=<cluster>``, which slapd shows to its ACLs as the DN
``cn=<server>,ou=servers,o=<cluster>``; ``authz_regexp`` maps that DN to the server's
entry ``cn=<server>,ou=servers,<base>``, the identity the shipped ACLs give a sentinel.

Files, in one directory: ``ca.crt`` and ``ca.key``, ``<server>.crt`` and ``<server>.key``.
Keys are written 0600, certificates 0644, each through a temporary file created with its
final mode and renamed into place, so no key is ever readable by others, not even for a
moment. Nothing is overwritten unless asked (``force``), and an issue that would overwrite
one file writes none. Time is a parameter (``now``); keys come from the OS's randomness.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ndsclust.errors import ConfigError
from ndsclust.model import ServerName, check_server_name

CA_LIFETIME = timedelta(days=3650)
SERVER_LIFETIME = timedelta(days=730)
# Certificates start a little in the past: a server whose clock is behind the one that
# issued them must not see a certificate from the future.
BACKDATE = timedelta(minutes=5)
KEY_MODE = 0o600
CERT_MODE = 0o644
HEARTBEAT_KEY_BYTES = 32
CA_CERT = "ca.crt"
CA_KEY = "ca.key"
_CLUSTER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_DNS_RE = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)


@dataclass(frozen=True, slots=True)
class Written:
    """One file written, with its mode."""

    path: Path
    mode: int


@dataclass(frozen=True, slots=True)
class Issued:
    """A key and its certificate (PEM), before they are written anywhere."""

    key_pem: bytes
    cert_pem: bytes


def check_cluster(name: str) -> str:
    """A cluster name usable in a certificate subject and an olcAuthzRegexp."""
    if not _CLUSTER_RE.match(name):
        raise ValueError(
            f"{name!r} is not a cluster name: letters, digits, '_', '.', '-', "
            "1-63 characters, starting with a letter or digit"
        )
    return name


def check_dns(name: str) -> str:
    if not _DNS_RE.match(name):
        raise ValueError(f"{name!r} is not a DNS name")
    return name.rstrip(".").lower()


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    # Unencrypted PKCS#8: slapd reads its key at start with nobody to type a passphrase;
    # the file mode protects it.
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def ca_subject(cluster: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, cluster),
            x509.NameAttribute(NameOID.COMMON_NAME, "ndsclust CA"),
        ]
    )


def server_subject(cluster: str, server: ServerName) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, cluster),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "servers"),
            x509.NameAttribute(NameOID.COMMON_NAME, server),
        ]
    )


def authz_regexp(cluster: str, base: str) -> str:
    """The ``olcAuthzRegexp`` value that makes a server certificate's subject bind (SASL
    EXTERNAL) as that server's entry, ``cn=<server>,ou=servers,<base>``."""
    # slapd matches the normalized DN: attribute types and these values in lower case.
    # POSIX regular expression: "." is the only character of a cluster name to quote.
    org = check_cluster(cluster).lower().replace(".", "[.]")
    return f'"^cn=([a-z0-9-]+),ou=servers,o={org}$" "cn=$1,ou=servers,{base}"'


def _check_now(now: datetime) -> None:
    if now.tzinfo is None:
        raise ValueError("now must carry a time zone, e.g. datetime.now(timezone.utc)")


def make_ca(cluster: str, now: datetime, lifetime: timedelta = CA_LIFETIME) -> Issued:
    """A self-signed CA for ``cluster``, valid from ``now`` for ``lifetime``. It may sign
    server certificates only (path length 0)."""
    check_cluster(cluster)
    _check_now(now)
    key = _new_key()
    name = ca_subject(cluster)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + lifetime)
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
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return Issued(_key_pem(key), cert.public_bytes(serialization.Encoding.PEM))


def _ca_cluster(ca_cert: x509.Certificate) -> str:
    orgs = ca_cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    value = orgs[0].value if orgs else ""
    return value if isinstance(value, str) else value.decode()


def issue_server(
    ca: Issued,
    server: ServerName,
    now: datetime,
    *,
    ips: Sequence[str] = (),
    dns: Sequence[str] = (),
    lifetime: timedelta = SERVER_LIFETIME,
) -> Issued:
    """A key and certificate for ``server``, signed by ``ca``: serverAuth and clientAuth,
    subjectAltName with the server's name, its DNS names and its IP addresses (the names
    clients put in provider URIs are checked against these)."""
    check_server_name(server)
    _check_now(now)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the CA key is not an EC key; make the CA with 'ndsclust pki init'")
    cluster = _ca_cluster(ca_cert)
    names: list[x509.GeneralName] = []
    for name in (server, *dns):
        entry = x509.DNSName(check_dns(name))
        if entry not in names:
            names.append(entry)
    for ip in ips:
        entry_ip = x509.IPAddress(ipaddress.ip_address(ip))
        if entry_ip not in names:
            names.append(entry_ip)
    key = _new_key()
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(server_subject(cluster, server))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        # Never beyond the CA: a chain is only as valid as its shortest-lived link.
        .not_valid_after(min(now + lifetime, ca_cert.not_valid_after_utc))
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
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return Issued(_key_pem(key), cert.public_bytes(serialization.Encoding.PEM))


def heartbeat_key() -> bytes:
    """A new cluster key for the LAN heartbeat: 32 random bytes, base64, one line. The
    sentinel uses the file's text (stripped) as the HMAC key."""
    return base64.b64encode(secrets.token_bytes(HEARTBEAT_KEY_BYTES)) + b"\n"


# -- files -------------------------------------------------------------------------------


def _refuse_existing(paths: Sequence[Path], force: bool) -> None:
    if force:
        return
    there = [str(p) for p in paths if p.exists() or p.is_symlink()]
    if there:
        raise ConfigError(
            "pki", [f"{p} exists; nothing was written (use --force to replace it)" for p in there]
        )


def _write(path: Path, data: bytes, mode: int) -> Written:
    """Write ``data`` to ``path`` with ``mode``, atomically: a temporary file in the same
    directory, created with that mode (umask cannot widen it), synced, renamed over."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have narrowed it; make it exact
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return Written(path, mode)


def _prepare_dir(directory: Path) -> None:
    try:
        directory.mkdir(mode=0o755, parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError("pki", [f"{directory}: {e.strerror}"]) from None
    if not directory.is_dir():
        raise ConfigError("pki", [f"{directory} is not a directory"])


def write_pair(
    directory: Path, stem: str, issued: Issued, *, force: bool
) -> tuple[Written, Written]:
    """Write ``<stem>.key`` (0600) and ``<stem>.crt`` (0644) in ``directory``; ConfigError
    without writing anything when either exists and ``force`` is false."""
    _prepare_dir(directory)
    key_path, cert_path = directory / f"{stem}.key", directory / f"{stem}.crt"
    _refuse_existing((key_path, cert_path), force)
    try:
        return (
            _write(key_path, issued.key_pem, KEY_MODE),
            _write(cert_path, issued.cert_pem, CERT_MODE),
        )
    except OSError as e:
        raise ConfigError("pki", [f"{directory}: cannot write: {e.strerror}"]) from None


def init_ca(
    directory: Path, cluster: str, now: datetime, *, force: bool = False
) -> tuple[Written, Written]:
    """``ndsclust pki init``: the cluster CA in ``directory`` (ca.key, ca.crt)."""
    try:
        check_cluster(cluster)
    except ValueError as e:
        raise ConfigError("pki init", [f"--cluster: {e}"]) from None
    _refuse_existing((directory / CA_KEY, directory / CA_CERT), force)
    return write_pair(directory, "ca", make_ca(cluster, now), force=force)


def load_ca(directory: Path) -> Issued:
    """The CA that ``init_ca`` wrote in ``directory``; ConfigError saying what is missing."""
    try:
        issued = Issued((directory / CA_KEY).read_bytes(), (directory / CA_CERT).read_bytes())
    except OSError as e:
        raise ConfigError(
            "pki",
            [
                f"{e.filename}: {e.strerror}; create the CA first: "
                f"ndsclust pki init --dir {directory}"
            ],
        ) from None
    try:
        serialization.load_pem_private_key(issued.key_pem, password=None)
        x509.load_pem_x509_certificate(issued.cert_pem)
    except (ValueError, TypeError) as e:
        raise ConfigError("pki", [f"{directory}: the CA files cannot be read: {e}"]) from None
    return issued


def issue(
    directory: Path,
    server: str,
    now: datetime,
    *,
    ips: Sequence[str] = (),
    dns: Sequence[str] = (),
    force: bool = False,
) -> tuple[Written, Written]:
    """``ndsclust pki issue``: ``<server>.key`` and ``<server>.crt`` in ``directory``,
    signed by the CA there. Every bad argument is reported at once (ConfigError)."""
    problems = []
    try:
        name = check_server_name(server)
    except ValueError as e:
        problems.append(f"SERVER: {e}")
    for i, ip in enumerate(ips):
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            problems.append(f"--ip[{i}]: {ip!r} is not an IP address")
    for i, d in enumerate(dns):
        try:
            check_dns(d)
        except ValueError as e:
            problems.append(f"--dns[{i}]: {e}")
    if problems:
        raise ConfigError("pki issue", problems)
    _refuse_existing((directory / f"{name}.key", directory / f"{name}.crt"), force)
    issued = issue_server(load_ca(directory), name, now, ips=ips, dns=dns)
    return write_pair(directory, name, issued, force=force)


def write_heartbeat_key(path: Path, *, force: bool = False) -> Written:
    """``ndsclust pki heartbeat-key``: a new cluster key in ``path``, mode 0600."""
    _refuse_existing((path,), force)
    _prepare_dir(path.parent)
    try:
        return _write(path, heartbeat_key(), KEY_MODE)
    except OSError as e:
        raise ConfigError("pki", [f"{path}: cannot write: {e.strerror}"]) from None
