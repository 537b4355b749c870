"""TLS against a real slapd (Debian's, built with GnuTLS) with material from ``ndsclust.pki``.

One slapd for the module, configured as deploy/ ships it (rendered by
``ndsclust.slapd.render`` with ``tls.certificate_cluster``), listening on ldaps:// (TLS from
the first byte), on ldap:// (for StartTLS) and on ldapi://. Its certificate comes from ``pki.issue`` for 127.0.0.1; a second,
unrelated CA plays the attacker's (or another cluster's). Proves: certificate verification
is on (wrong CA, wrong name refused), StartTLS works, plain ldap:// is refused before any
packet is sent when the configuration forbids it, and a server certificate binds with SASL
EXTERNAL as that server's entry (olcAuthzRegexp from ``pki.authz_regexp``).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import ldap3
import pytest

from ndsclust import pki, site
from ndsclust.errors import BindRefused, ConfigError, ProviderUnreachable
from ndsclust.lab.directory import Provider, free_ports
from ndsclust.ldapstore.connection import Credentials, Providers, open_connection
from ndsclust.slapd import render

SUFFIX = "dc=ndsclust,dc=test"
BASE = f"ou=ndsclust,{SUFFIX}"
ADMIN = f"cn=admin,{SUFFIX}"
ADMIN_PW = "tls-test-secret"
CLUSTER = "prod"
NOW = datetime.now(UTC)
VERIFY_FAILED = "CERTIFICATE_VERIFY_FAILED|certificate verify failed"


class TlsProvider(Provider):
    """A lab provider that also listens on ldaps://."""

    def __init__(self, dir: Path, port: int, tls_port: int) -> None:
        super().__init__(0, "127.0.0.1", port, dir)
        self.ldaps_url = f"ldaps://127.0.0.1:{tls_port}"

    def command(self) -> list[str]:
        cmd = super().command()
        i = cmd.index("-h")
        return [*cmd[: i + 1], f"{cmd[i + 1]} {self.ldaps_url}", *cmd[i + 2 :]]


@dataclass(frozen=True)
class Setup:
    slapd: TlsProvider
    pki_dir: Path
    other_dir: Path  # a second CA with a certificate for alpha: not this cluster's

    @property
    def ca(self) -> str:
        return str(self.pki_dir / "ca.crt")

    def cert(self, server: str, other: bool = False) -> tuple[str, str]:
        d = self.other_dir if other else self.pki_dir
        return str(d / f"{server}.crt"), str(d / f"{server}.key")


def site_of(d: Path, pki_dir: Path, uri: str) -> site.Site:
    """One provider as deploy/ describes it, with TLS and client certificates of CLUSTER:
    the test renders it through the shipped templates like any other provider."""
    return site.Site(
        suffix=SUFFIX,
        base=BASE,
        pulse_suffix="o=ndsclust-pulse",
        admin_dn=ADMIN,
        replicator_dn=f"cn=replicator,{SUFFIX}",
        replicator_password="tls-test-replicator-secret",
        providers=(site.Provider(1, uri),),
        operators=(ADMIN,),
        auditors=(ADMIN,),
        tls=site.Tls(
            str(pki_dir / "ca.crt"),
            str(pki_dir / "ldap.crt"),
            str(pki_dir / "ldap.key"),
            certificate_cluster=CLUSTER,
        ),
        data_dir=str(d),
        run_dir=str(d),
        module_path="/usr/lib/ldap",
        schema_dir="/etc/ldap/schema",
        retry="1 +",
        accesslog_purge="07+00:00 01+00:00",
    )


def alpha_ldif() -> str:
    """Server alpha's entry, which its certificate binds as."""
    return (
        f"dn: cn=alpha,ou=servers,{BASE}\nobjectClass: ndsclustServer\ncn: alpha\n"
        "ndsclustServerState: up\n"
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("tls")
    pki_dir, other_dir, d = root / "pki", root / "other", root / "p0"
    slapd: TlsProvider | None = None
    try:
        pki.init_ca(pki_dir, CLUSTER, NOW)
        pki.issue(pki_dir, "ldap", NOW, ips=["127.0.0.1"])  # slapd's own certificate
        pki.issue(pki_dir, "alpha", NOW)  # the sentinel of alpha
        pki.init_ca(other_dir, CLUSTER, NOW)
        pki.issue(other_dir, "alpha", NOW, ips=["127.0.0.1"])
        for sub in ("slapd.d", "accesslog", "db", "pulse"):
            (d / sub).mkdir(parents=True)
        port, tls_port = free_ports(["127.0.0.1", "127.0.0.1"])
        slapd = TlsProvider(d, port, tls_port)
        described = site_of(d, pki_dir, slapd.ldaps_url)
        (root / "config.ldif").write_text(
            render.provider_ldif(described, 1, root_password=ADMIN_PW)
        )
        loads = [["-n0", "-l", str(root / "config.ldif")]]
        for name, text in render.seed_ldifs(described, NOW).items():
            (root / name).write_text(text)
            suffix = SUFFIX if name == "seed-main.ldif" else described.pulse_suffix
            loads.append(["-q", "-w", "-b", suffix, "-l", str(root / name)])
        (root / "alpha.ldif").write_text(alpha_ldif())
        loads.append(["-b", SUFFIX, "-l", str(root / "alpha.ldif")])
        for args in loads:
            subprocess.run(
                ["/usr/sbin/slapadd", "-F", str(slapd.conf_dir), *args],
                check=True,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=60,
            )
        slapd.start()
        yield Setup(slapd, pki_dir, other_dir)
    finally:
        if slapd is not None:
            slapd.stop()
        shutil.rmtree(root, ignore_errors=True)


def whoami(conn: ldap3.Connection) -> str:
    try:
        return str(conn.extend.standard.who_am_i())
    finally:
        conn.unbind()


def test_ldaps_with_the_cluster_ca_connects_and_binds(setup: Setup) -> None:
    conn = open_connection(
        setup.slapd.ldaps_url,
        Credentials(bind_dn=ADMIN, password=ADMIN_PW, ca_file=setup.ca, allow_plain=False),
    )
    assert whoami(conn) == f"dn:{ADMIN}"


def test_a_certificate_from_another_ca_is_refused(setup: Setup) -> None:
    # The attacker's slapd is played by ours, checked against the other CA: the same thing.
    creds = Credentials(bind_dn=ADMIN, password=ADMIN_PW, ca_file=str(setup.other_dir / "ca.crt"))
    with pytest.raises(ProviderUnreachable, match=VERIFY_FAILED):
        open_connection(setup.slapd.ldaps_url, creds)


def test_a_certificate_for_another_name_is_refused(setup: Setup) -> None:
    """Signed by the right CA but not for the name in the URI (slapd's certificate names
    127.0.0.1 and DNS:ldap, not localhost): one server of the cluster cannot pose as
    another."""
    uri = setup.slapd.ldaps_url.replace("127.0.0.1", "localhost")
    with pytest.raises(
        ProviderUnreachable,
        match=r"certificate names DNS:ldap, IP Address:127.0.0.1, not localhost",
    ):
        open_connection(uri, Credentials(bind_dn=ADMIN, password=ADMIN_PW, ca_file=setup.ca))


def test_tls_without_a_ca_file_still_verifies_the_provider(setup: Setup) -> None:
    """No ca_file: the system's CAs, which never signed the cluster's certificates; a
    connection that checks nothing would let anyone on the path pose as the provider."""
    creds = Credentials(bind_dn=ADMIN, password=ADMIN_PW)
    with pytest.raises(ProviderUnreachable, match=VERIFY_FAILED):
        open_connection(setup.slapd.ldaps_url, creds)
    with pytest.raises(ProviderUnreachable, match=VERIFY_FAILED):
        open_connection(
            setup.slapd.url, Credentials(bind_dn=ADMIN, password=ADMIN_PW, start_tls=True)
        )


def test_starttls_upgrades_plain_ldap(setup: Setup) -> None:
    conn = open_connection(
        setup.slapd.url,
        Credentials(
            bind_dn=ADMIN, password=ADMIN_PW, ca_file=setup.ca, start_tls=True, allow_plain=False
        ),
    )
    try:
        assert conn.tls_started
    finally:
        conn.unbind()


def test_starttls_with_the_wrong_ca_is_refused(setup: Setup) -> None:
    creds = Credentials(
        bind_dn=ADMIN, password=ADMIN_PW, start_tls=True, ca_file=str(setup.other_dir / "ca.crt")
    )
    with pytest.raises(ProviderUnreachable, match=VERIFY_FAILED):
        open_connection(setup.slapd.url, creds)


def test_plain_ldap_is_refused_before_connecting_when_not_allowed(setup: Setup) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.setblocking(False)
    try:
        uri = f"ldap://127.0.0.1:{listener.getsockname()[1]}"
        with pytest.raises(ConfigError, match="plain LDAP without TLS is refused"):
            open_connection(uri, Credentials(bind_dn=ADMIN, password=ADMIN_PW, allow_plain=False))
        with pytest.raises(ConfigError, match="plain LDAP without TLS is refused"):
            Providers([uri], Credentials(allow_plain=False)).connect()
        with pytest.raises(BlockingIOError):
            listener.accept()  # no connection was even attempted: the password stayed
    finally:
        listener.close()


def test_ldapi_needs_no_tls_even_when_plain_is_refused(setup: Setup) -> None:
    conn = open_connection(
        setup.slapd.ldapi_url, Credentials(sasl_external=True, allow_plain=False)
    )
    assert whoami(conn).lower().startswith("dn:gidnumber=0+uidnumber=0,cn=peercred")


def test_server_certificate_binds_as_its_server_entry_with_sasl_external(setup: Setup) -> None:
    crt, key = setup.cert("alpha")
    creds = Credentials(
        sasl_external=True, ca_file=setup.ca, cert_file=crt, key_file=key, allow_plain=False
    )
    assert whoami(open_connection(setup.slapd.ldaps_url, creds)) == f"dn:cn=alpha,ou=servers,{BASE}"
    starttls = Credentials(
        sasl_external=True,
        ca_file=setup.ca,
        cert_file=crt,
        key_file=key,
        start_tls=True,
        allow_plain=False,
    )
    assert whoami(open_connection(setup.slapd.url, starttls)) == f"dn:cn=alpha,ou=servers,{BASE}"


def test_a_client_certificate_from_another_ca_cannot_bind(setup: Setup) -> None:
    crt, key = setup.cert("alpha", other=True)
    creds = Credentials(sasl_external=True, ca_file=setup.ca, cert_file=crt, key_file=key)
    # olcTLSVerifyClient try: a certificate that does not verify ends the session at once.
    with pytest.raises(ProviderUnreachable, match="session terminated by server"):
        open_connection(setup.slapd.ldaps_url, creds)


def test_sasl_external_without_a_certificate_is_refused(setup: Setup) -> None:
    with pytest.raises(ProviderUnreachable, match="SASL EXTERNAL"):
        open_connection(setup.slapd.ldaps_url, Credentials(sasl_external=True, ca_file=setup.ca))


@pytest.mark.parametrize("how", ["ldaps", "starttls", "name"])
def test_tls_errors_are_words_not_python_reprs(setup: Setup, how: str) -> None:
    other = str(setup.other_dir / "ca.crt")
    uri, creds = {
        "ldaps": (
            setup.slapd.ldaps_url,
            Credentials(bind_dn=ADMIN, password=ADMIN_PW, ca_file=other),
        ),
        "starttls": (
            setup.slapd.url,
            Credentials(bind_dn=ADMIN, password=ADMIN_PW, ca_file=other, start_tls=True),
        ),
        "name": (
            setup.slapd.ldaps_url.replace("127.0.0.1", "localhost"),
            Credentials(bind_dn=ADMIN, password=ADMIN_PW, ca_file=setup.ca),
        ),
    }[how]
    with pytest.raises(ProviderUnreachable) as info:
        open_connection(uri, creds)
    text = str(info.value)
    assert not any(s in text for s in ("Error(", "[(", "')", "\\'", "SSLCertVerificationError")), (
        text
    )
    assert text.startswith(uri), text


def test_wrong_password_is_a_refused_bind_not_an_unreachable_directory(setup: Setup) -> None:
    creds = Credentials(bind_dn=ADMIN, password="wrong", ca_file=setup.ca)
    with pytest.raises(BindRefused) as info:
        Providers([setup.slapd.ldaps_url], creds, final_refusal=True).connect_retrying(
            deadline=None
        )
    assert info.value.everywhere and "invalidCredentials" in str(info.value)
    assert "no provider reachable" not in str(info.value)
