"""deploy/ against real slapd: the rendered configuration loads, replicates, and its ACLs
hold, rule by rule.

Two providers on loopback are built exactly as deploy/INSTALL.md says: the site file is
rendered by deploy/render.py, each provider's cn=config is loaded with ``slapadd -n0``,
the same seed files with ``slapadd -w`` on both, then slapd starts with TLS (a test CA
made here) and the accounts are added with ``ldapadd``. Every identity binds over
StartTLS with the certificate verified, as the sentinels and the CLI do. Each refusal is
checked twice: the result code is insufficientAccessRights, and the entry is unchanged.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import ldap3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ndsclust.cli import main as cli_main
from ndsclust.errors import ProviderUnreachable
from ndsclust.lab.directory import Provider, free_ports, wait_until
from ndsclust.ldapstore.connection import Credentials, Providers, open_connection
from ndsclust.ldapstore.store import Store
from ndsclust.ldapstore.watch import RefreshDone, Watch
from ndsclust.model import Request, RequestKind, ServerName, ServerState, StateValue, Tag

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SUFFIX = "dc=example,dc=com"
BASE = f"ou=ndsclust,{SUFFIX}"
PULSE = "o=ndsclust-pulse"
SERVERS = f"ou=servers,{BASE}"
APPS = f"ou=applications,{BASE}"
EVENTS = f"ou=events,{BASE}"
OPERATOR = f"uid=olivia,ou=people,{SUFFIX}"
AUDITOR = f"uid=arthur,ou=people,{SUFFIX}"
STRANGER = f"uid=sam,ou=people,{SUFFIX}"  # a person in no group
REPLICATOR = f"cn=replicator,{SUFFIX}"
ALPHA, BETA = ServerName("alpha"), ServerName("beta")
INSUFFICIENT_ACCESS = 50
# More than slapd's default size limit of 500: identities without a limits rule are cut off.
BULK_EVENTS = 520


def load_render() -> ModuleType:
    """deploy/render.py is a script beside the package, not part of it."""
    spec = importlib.util.spec_from_file_location("ndsclust_deploy_render", DEPLOY / "render.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


render = load_render()


def make_tls(d: Path) -> tuple[Path, Path, Path]:
    """A CA and one certificate for 127.0.0.1 signed by it: (ca, cert, key)."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ndsclust deploy test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
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
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = (d / "ca.crt", d / "provider.crt", d / "provider.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(paths[2], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return paths


def run(cmd: list[str], *, stdin: str | None = None, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        cmd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
        check=False,
    )
    assert done.returncode == 0, f"{' '.join(cmd)} exited {done.returncode}:\n{done.stderr}"
    return done.stdout


def peercred_dn() -> str:
    """The identity of this process over ldapi:// (SASL EXTERNAL): the site's admin."""
    return f"gidNumber={os.getgid()}+uidNumber={os.getuid()},cn=peercred,cn=external,cn=auth"


def argon2_hash(password: str) -> str:
    """Operators' and auditors' passwords as INSTALL.md hashes them."""
    return run(
        [
            "slappasswd",
            "-o",
            "module-path=/usr/lib/ldap",
            "-o",
            "module-load=argon2",
            "-h",
            "{ARGON2}",
            "-T",
            "/dev/stdin",
        ],
        stdin=password,
    ).strip()


@dataclass
class Deployment:
    dir: Path
    providers: tuple[Provider, ...]
    ca: Path
    passwords: dict[str, str]
    password_files: dict[str, Path]

    @property
    def uris(self) -> list[str]:
        return [p.url for p in self.providers]

    def creds(self, dn: str | None) -> Credentials:
        return Credentials(
            bind_dn=dn,
            password=self.passwords.get(dn or ""),
            ca_file=str(self.ca),
            start_tls=True,
            allow_plain=False,
        )

    def connect(self, dn: str | None, provider: int = 0) -> ldap3.Connection:
        """Bound over StartTLS with the provider's certificate verified; anonymous for None."""
        return open_connection(self.uris[provider], self.creds(dn))

    def store(self, dn: str, *, event_limit: int = 1000) -> Store:
        return Store(
            Providers(self.uris, self.creds(dn), timeout=2.0),
            SUFFIX,
            base=BASE,
            pulse_base=PULSE,
            event_limit=event_limit,
        )

    def read(
        self, dn: str, provider: int = 0, attrs: list[str] | None = None
    ) -> dict[str, list[str]]:
        """One entry as the site admin sees it (root over ldapi://, no ACL applies); empty
        when there is no such entry."""
        conn = open_connection(self.providers[provider].ldapi_url, Credentials(sasl_external=True))
        try:
            conn.search(
                dn,
                "(objectClass=*)",
                ldap3.BASE,
                attributes=attrs or ["*"],
                dereference_aliases=ldap3.DEREF_NEVER,
            )
            found = [e for e in conn.response or [] if e["type"] == "searchResEntry"]
            if not found:
                return {}
            return {
                k: sorted(v.decode() for v in vs) for k, vs in found[0]["raw_attributes"].items()
            }
        finally:
            conn.unbind()

    def admin_ldif(self, tool: str, ldif: str, provider: int = 0) -> str:
        """ldapadd/ldapmodify as the site admin: root of the provider over ldapi://."""
        return run(
            [tool, "-Q", "-Y", "EXTERNAL", "-H", self.providers[provider].ldapi_url], stdin=ldif
        )

    def operator_ldif(
        self, tool: str, ldif: str, provider: int = 0, options: tuple[str, ...] = ()
    ) -> str:
        """ldapadd/ldapmodify as an operator over StartTLS, as INSTALL.md shows."""
        return run(
            [
                tool,
                *options,
                "-x",
                "-ZZ",
                "-H",
                self.uris[provider],
                "-D",
                OPERATOR,
                "-y",
                str(self.password_files[OPERATOR]),
            ],
            stdin=ldif,
            env={"LDAPTLS_CACERT": str(self.ca), "LDAPTLS_REQCERT": "demand"},
        )


def _site(d: Path, data_dir: Path, ports: list[int]) -> dict[str, Any]:
    return {
        "suffix": SUFFIX,
        "base": BASE,
        "pulse_suffix": PULSE,
        "admin_dn": peercred_dn(),
        "providers": [
            {"id": i + 1, "uri": f"ldap://127.0.0.1:{port}"} for i, port in enumerate(ports)
        ],
        "replicator": {"dn": REPLICATOR, "password_file": str(d / "replicator.pw")},
        "operators": [OPERATOR],
        "auditors": [AUDITOR],
        "tls": {
            "ca_file": str(d / "ca.crt"),
            "cert_file": str(d / "provider.crt"),
            "key_file": str(d / "provider.key"),
        },
        "paths": {"data_dir": str(data_dir), "run_dir": str(data_dir)},
        # One second between retries: the agreement of the provider started first fails
        # once, its peer not listening yet.
        "replication": {"retry": "1 +", "accesslog_purge": "14+00:00 01+00:00"},
    }


def _bulk_events(n: int) -> str:
    """n events for the seed: more than the default size limit."""
    return "\n".join(
        f"dn: ndsclustEventId=seed-{i:04d},{EVENTS}\nobjectClass: top\n"
        f"objectClass: ndsclustEvent\nndsclustEventId: seed-{i:04d}\n"
        f"ndsclustEventTime: 20240101000000.{i:06d}Z\nndsclustEventKind: seeded\n"
        for i in range(n)
    )


def _people(passwords: dict[str, str]) -> str:
    return "\n".join(
        f"dn: {dn}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\nsn: {uid}\n"
        f"userPassword: {argon2_hash(passwords[dn])}\n"
        for dn, uid in ((OPERATOR, "olivia"), (AUDITOR, "arthur"), (STRANGER, "sam"))
    )


def _build(d: Path, started: list[Provider]) -> Deployment:
    ca, _, _ = make_tls(d)
    names = [REPLICATOR, OPERATOR, AUDITOR, STRANGER, server_dn(ALPHA), server_dn(BETA)]
    passwords = {dn: secrets.token_urlsafe(24) for dn in names}
    files = {}
    for i, dn in enumerate(names):
        files[dn] = d / f"secret{i}.pw"
        files[dn].write_text(passwords[dn])  # no newline: ldapadd -y takes it all
        files[dn].chmod(0o600)
    shutil.copy(files[REPLICATOR], d / "replicator.pw")

    ports = free_ports(["127.0.0.1"] * 2)
    providers = tuple(Provider(i, "127.0.0.1", ports[i], d / f"p{i}") for i in range(2))
    now = datetime.now(UTC)
    for p in providers:
        for sub in ("slapd.d", "accesslog", "db", "pulse"):
            (p.dir / sub).mkdir(parents=True)
        site = render.parse_site(_site(d, p.dir, ports))
        (p.dir / "provider.ldif").write_text(render.provider_ldif(site, p.server_id))
        run(["slapadd", "-n0", "-F", str(p.conf_dir), "-l", str(p.dir / "provider.ldif")])
        if p.index == 0:
            # Rendered once, the same files loaded on every provider (INSTALL.md).
            for name, text in render.seed_ldifs(site, now).items():
                (d / name).write_text(text)
            with (d / "seed-main.ldif").open("a") as f:
                f.write(
                    "\n" + render.with_operational(_bulk_events(BULK_EVENTS), 1, now, site.admin_dn)
                )
        for suffix, name in ((SUFFIX, "seed-main.ldif"), (PULSE, "seed-pulse.ldif")):
            run(["slapadd", "-q", "-w", "-F", str(p.conf_dir), "-b", suffix, "-l", str(d / name)])
    for p in providers:
        p.spawn()
        started.append(p)
    deadline = time.monotonic() + 10
    for p in providers:
        p.wait_answering(deadline)

    dep = Deployment(d, providers, ca, passwords, files)
    dep.admin_ldif("ldapadd", _people(passwords))
    site = render.parse_site(_site(d, d, ports))
    for name, address in ((ALPHA, "127.0.0.1:7001"), (BETA, "127.0.0.1:7002")):
        dep.admin_ldif(
            "ldapadd", render.server_ldif(site, name, [address], [], passwords[server_dn(name)])
        )
    dep.operator_ldif("ldapadd", app_ldif("web"))
    # Both providers hold everything before any test runs; the replication identity is
    # the only credential in either provider's configuration.
    wait_until(
        lambda: dep.read(app_dn("web"), provider=1),
        timeout=10,
        what="the seeded entries to replicate to the second provider",
    )
    return dep


@pytest.fixture(scope="module")
def dep() -> Iterator[Deployment]:
    d = Path(tempfile.mkdtemp(prefix="ndsclust-deploy-"))
    started: list[Provider] = []
    try:
        yield _build(d, started)
    finally:
        for p in started:
            p.kill()  # SIGKILL, waited for: the data is thrown away
        shutil.rmtree(d)


def server_dn(name: str) -> str:
    return f"cn={name},{SERVERS}"


def app_dn(tag: str) -> str:
    return f"ndsclustTag={tag},{APPS}"


def app_ldif(tag: str, host: str = ALPHA) -> str:
    return (
        f"dn: {app_dn(tag)}\nobjectClass: top\nobjectClass: ndsclustApplication\n"
        f"ndsclustTag: {tag}\nndsclustType: capable\nndsclustCommand: /bin/sleep 1000\n"
        f"ndsclustPrimaryServer: {ALPHA}\nndsclustBackupServer: {{0}}{BETA}\n"
        f"ndsclustHostServer: {host}\nndsclustAutoRecover: TRUE\nndsclustState: running\n"
    )


def result(conn: ldap3.Connection) -> int:
    return int((conn.result or {}).get("result", -1))


# -- the rendered configuration works -----------------------------------------------------


def test_seeded_entries_are_one_entry_on_both_providers(dep: Deployment) -> None:
    """Loaded from one rendered seed, the base entries are the same entry everywhere."""
    for dn in (SUFFIX, BASE, f"cn=operators,{BASE}", REPLICATOR, PULSE):
        uuids = {dep.read(dn, provider=i, attrs=["entryUUID"])["entryUUID"][0] for i in range(2)}
        assert len(uuids) == 1, dn


def test_write_on_either_provider_reaches_the_other(dep: Deployment) -> None:
    """Multi-provider delta-syncrepl as the replication identity, both ways, both databases."""
    dep.operator_ldif("ldapadd", app_ldif("repl1"), provider=0)
    wait_until(lambda: dep.read(app_dn("repl1"), provider=1), timeout=5, what="repl1 on provider 2")
    dep.operator_ldif(
        "ldapmodify",
        f"dn: {app_dn('repl1')}\nchangetype: modify\n"
        "replace: ndsclustRequest\nndsclustRequest: unload\n",
        provider=1,
    )
    wait_until(
        lambda: dep.read(app_dn("repl1"), provider=0).get("ndsclustRequest") == ["unload"],
        timeout=5,
        what="the request on provider 1",
    )
    st = dep.store(server_dn(BETA))
    try:
        st.write_pulse(BETA, 7)
    finally:
        st.close()
    wait_until(
        lambda: dep.read(f"cn={BETA},{PULSE}", provider=1).get("ndsclustPulse") == ["7"],
        timeout=5,
        what="beta's pulse on provider 2",
    )


def test_plain_ldap_is_refused(dep: Deployment) -> None:
    """olcSecurity: without TLS (or ldapi://) not even a bind gets through."""
    plain = Credentials(bind_dn=OPERATOR, password=dep.passwords[OPERATOR], allow_plain=True)
    with pytest.raises(ProviderUnreachable, match="confidentialityRequired"):
        open_connection(dep.uris[0], plain)


# -- sentinels: exactly what FIGS. 6-9 need ------------------------------------------------


def test_sentinel_writes_what_failover_needs(dep: Deployment) -> None:
    """Alpha's sentinel, through the real store: host swap with state (FIG. 7A), state,
    request consumption, marker (claims 34-35), events with pruning, its own pulse
    (claim 44) and its own server entry's state."""
    dep.operator_ldif("ldapadd", app_ldif("s-ok", host=BETA))
    st = dep.store(server_dn(ALPHA))
    try:
        st.swap_host(Tag("s-ok"), BETA, ALPHA, state=StateValue.parse("loading"))
        st.set_state(Tag("s-ok"), StateValue.parse("running"))
        st.set_request(Tag("s-ok"), Request(RequestKind.MIGRATE, BETA))
        st.consume_request(Tag("s-ok"), Request(RequestKind.MIGRATE, BETA))
        st.swap_marker(Tag("s-ok"), None, "offset=1")
        st.swap_marker(Tag("s-ok"), "offset=1", "offset=2")
        st.record_event("failover", server=ALPHA, tag="s-ok", text="from beta")
        st.write_pulse(ALPHA, 1)
        st.write_pulse(ALPHA, 2)
        st.set_server_state(ALPHA, ServerState.MAINTENANCE)
        st.set_server_state(ALPHA, ServerState.UP)
        app = st.app("s-ok")
        assert (app.host, str(app.state), app.request, app.marker) == (
            ALPHA,
            "running",
            None,
            "offset=2",
        )
        assert st.pulses()[ALPHA].counter == 2
        before = len(st.events())
        st.event_limit = before - 1
        assert st.prune_events() == 1
        snap = st.snapshot()
        assert {ALPHA, BETA} <= set(snap.servers) and "web" in snap.apps
    finally:
        st.close()


def test_sentinel_makes_the_anti_entropy_repairs(dep: Deployment) -> None:
    """What anti-entropy needs beyond failover (docs/design.md invariant 3): the structural
    class of any server, application or event deleted and added again in one modify (the
    change that brings back a copy a provider lost), and an application entry deleted."""
    dep.operator_ldif("ldapadd", app_ldif("s-stray"))
    st = dep.store(server_dn(BETA))
    event = st.record_event("note", server=BETA, text="by beta").dn
    st.close()
    conn = dep.connect(server_dn(ALPHA))
    try:
        for dn, cls in (
            (event, "ndsclustEvent"),
            (app_dn("web"), "ndsclustApplication"),
            (server_dn(BETA), "ndsclustServer"),
        ):
            before = dep.read(dn)
            touch = [(ldap3.MODIFY_DELETE, [cls]), (ldap3.MODIFY_ADD, [cls])]
            assert conn.modify(dn, {"objectClass": touch}), (dn, conn.result)
            after = dep.read(dn)
            assert after["objectClass"] == before["objectClass"]
        # A replace with the same values needs the whole attribute (docs/platform.md fact 34)
        same = dep.read(app_dn("web"))["objectClass"]
        assert not conn.modify(app_dn("web"), {"objectClass": [(ldap3.MODIFY_REPLACE, same)]})
        assert result(conn) == INSUFFICIENT_ACCESS, conn.result
        assert conn.delete(app_dn("s-stray")), conn.result
    finally:
        conn.unbind()
    assert dep.read(app_dn("s-stray")) == {}


def test_sentinel_watch_and_unlimited_reads(dep: Deployment) -> None:
    """A sentinel follows the cluster base by RFC 4533 as its own identity, and reads more
    entries than slapd's default size limit (a thousand applications must fit)."""
    with Watch(Providers(dep.uris, dep.creds(server_dn(ALPHA))), BASE) as watch:

        def refreshed() -> bool:
            while (event := watch.get(0)) is not None:
                if isinstance(event, RefreshDone):
                    return True
            return False

        wait_until(refreshed, timeout=10, what="the refresh phase of alpha's watch")
    for dn in (server_dn(ALPHA), AUDITOR, OPERATOR):
        conn = dep.connect(dn)
        try:
            conn.search(EVENTS, "(objectClass=ndsclustEvent)", ldap3.LEVEL, attributes=["1.1"])
            assert result(conn) == 0 and len(conn.response) > 500, dn
        finally:
            conn.unbind()


def _mod(attr: str, value: str) -> Callable[[ldap3.Connection, str], bool]:
    return lambda c, dn: bool(c.modify(dn, {attr: [(ldap3.MODIFY_REPLACE, [value])]}))


SENTINEL_REFUSED: list[tuple[str, str, Callable[[ldap3.Connection, str], bool]]] = [
    ("beta's state", server_dn(BETA), _mod("ndsclustServerState", "maintenance")),
    ("beta's addresses", server_dn(BETA), _mod("ndsclustAddress", "127.0.0.1:9")),
    ("beta's password", server_dn(BETA), _mod("userPassword", "guessed-by-alpha")),
    (
        "its own object classes",
        server_dn(ALPHA),
        lambda c, dn: bool(
            c.modify(dn, {"objectClass": [(ldap3.MODIFY_DELETE, ["simpleSecurityObject"])]})
        ),
    ),
    ("its own entry, deleted", server_dn(ALPHA), lambda c, dn: bool(c.delete(dn))),
    (
        "a new server",
        server_dn("gamma"),
        lambda c, dn: bool(c.add(dn, ["top", "ndsclustServer"], {"cn": "gamma"})),
    ),
    ("an application's command", app_dn("web"), _mod("ndsclustCommand", "/bin/sh -c evil")),
    ("an application's primary", app_dn("web"), _mod("ndsclustPrimaryServer", ALPHA)),
    ("an application's backups", app_dn("web"), _mod("ndsclustBackupServer", "{0}alpha")),
    ("an application's resources", app_dn("web"), _mod("ndsclustResource", "san1")),
    ("an application's auto-recover", app_dn("web"), _mod("ndsclustAutoRecover", "FALSE")),
    ("an application's unload command", app_dn("web"), _mod("ndsclustUnloadCommand", "/bin/true")),
    (
        "a new application",
        app_dn("evil"),
        lambda c, dn: bool(
            c.add(
                dn,
                ["top", "ndsclustApplication"],
                {
                    "ndsclustTag": "evil",
                    "ndsclustType": "capable",
                    "ndsclustCommand": "/bin/true",
                    "ndsclustPrimaryServer": ALPHA,
                },
            )
        ),
    ),
    (
        "an event signed by beta",
        f"ndsclustEventId=forged-by-alpha,{EVENTS}",
        lambda c, dn: bool(
            c.add(
                dn,
                ["top", "ndsclustEvent"],
                {
                    "ndsclustEventId": "forged-by-alpha",
                    "ndsclustEventTime": "20260101000000Z",
                    "ndsclustEventKind": "failover",
                    "ndsclustEventServer": BETA,
                },
            )
        ),
    ),
    (
        "an event without a server",
        f"ndsclustEventId=unsigned-by-alpha,{EVENTS}",
        lambda c, dn: bool(
            c.add(
                dn,
                ["top", "ndsclustEvent"],
                {
                    "ndsclustEventId": "unsigned-by-alpha",
                    "ndsclustEventTime": "20260101000000Z",
                    "ndsclustEventKind": "failover",
                },
            )
        ),
    ),
    (
        "beta's event, rewritten",
        f"ndsclustEventId=by-beta,{EVENTS}",
        _mod("ndsclustEventText", "x"),
    ),
    (
        "beta's event, re-signed",
        f"ndsclustEventId=by-beta,{EVENTS}",
        _mod("ndsclustEventServer", ALPHA),
    ),
    (
        "its own event, re-signed as beta's",
        f"ndsclustEventId=by-alpha,{EVENTS}",
        _mod("ndsclustEventServer", BETA),
    ),
    (
        "an application's object classes",
        app_dn("web"),
        lambda c, dn: bool(
            c.modify(dn, {"objectClass": [(ldap3.MODIFY_ADD, ["extensibleObject"])]})
        ),
    ),
    ("beta's pulse", f"cn={BETA},{PULSE}", _mod("ndsclustPulse", "999")),
    (
        "a pulse for another server",
        f"cn=gamma,{PULSE}",
        lambda c, dn: bool(
            c.add(dn, ["top", "ndsclustPulseEntry"], {"cn": "gamma", "ndsclustPulse": "1"})
        ),
    ),
    (
        "membership of the operators",
        f"cn=operators,{BASE}",
        lambda c, dn: bool(c.modify(dn, {"member": [(ldap3.MODIFY_ADD, [server_dn(ALPHA)])]})),
    ),
    ("the cluster base", BASE, _mod("description", "owned")),
    (
        "cn=config",
        "olcDatabase={2}mdb,cn=config",
        lambda c, dn: bool(
            c.modify(dn, {"olcAccess": [(ldap3.MODIFY_ADD, ["{0}to * by * write"])]})
        ),
    ),
    (
        "the schema",
        "cn={3}ndsclust,cn=schema,cn=config",
        lambda c, dn: bool(
            c.modify(
                dn,
                {
                    "olcAttributeTypes": [
                        (
                            ldap3.MODIFY_ADD,
                            [
                                "( 1.3.6.1.4.1.99999.1 NAME 'evilAttr' SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 )"
                            ],
                        )
                    ]
                },
            )
        ),
    ),
]


@pytest.fixture(scope="module")
def beta_pulse(dep: Deployment) -> None:
    """Beta's pulse entry and an event of each server exist, so refusals to touch them are
    refusals, not noSuchObject."""
    st = dep.store(server_dn(BETA))
    try:
        st.write_pulse(BETA, 1)
    finally:
        st.close()
    for name in (ALPHA, BETA):
        conn = dep.connect(server_dn(name))
        try:
            assert conn.add(
                f"ndsclustEventId=by-{name},{EVENTS}",
                ["top", "ndsclustEvent"],
                {
                    "ndsclustEventId": f"by-{name}",
                    "ndsclustEventTime": "20260101000000Z",
                    "ndsclustEventKind": "failover",
                    "ndsclustEventServer": name,
                },
            ), conn.result
        finally:
            conn.unbind()


def test_a_sentinel_prunes_other_servers_events(dep: Deployment, beta_pulse: None) -> None:
    conn = dep.connect(server_dn(ALPHA))
    dn = f"ndsclustEventId=pruned-by-alpha,{EVENTS}"
    try:
        conn.add(
            dn,
            ["top", "ndsclustEvent"],
            {
                "ndsclustEventId": "pruned-by-alpha",
                "ndsclustEventTime": "20250101000000Z",
                "ndsclustEventKind": "failover",
                "ndsclustEventServer": BETA,
            },
        )
        assert result(conn) == INSUFFICIENT_ACCESS
        st = dep.store(server_dn(BETA))
        try:
            st.record_event("failover", server=BETA, text="old")
        finally:
            st.close()
        ops = dep.store(OPERATOR)
        try:
            old = [e for e in ops.events() if e.server == BETA and e.text == "old"]
        finally:
            ops.close()
        assert old
        assert conn.delete(old[0].dn), conn.result
    finally:
        conn.unbind()


@pytest.mark.parametrize("what, dn, op", SENTINEL_REFUSED, ids=[w for w, _, _ in SENTINEL_REFUSED])
def test_sentinel_cannot_write(
    dep: Deployment,
    beta_pulse: None,
    what: str,
    dn: str,
    op: Callable[[ldap3.Connection, str], bool],
) -> None:
    before = dep.read(dn)
    conn = dep.connect(server_dn(ALPHA))
    try:
        assert not op(conn, dn), f"alpha could write {what}"
        assert result(conn) == INSUFFICIENT_ACCESS, conn.result
    finally:
        conn.unbind()
    assert dep.read(dn) == before


def test_sentinel_cannot_read_password_hashes(dep: Deployment) -> None:
    conn = dep.connect(server_dn(ALPHA))
    try:
        conn.search(
            SERVERS, "(objectClass=ndsclustServer)", ldap3.LEVEL, attributes=["cn", "userPassword"]
        )
        found = {
            e["attributes"]["cn"][0]: e["raw_attributes"]
            for e in conn.response
            if e["type"] == "searchResEntry"
        }
        assert set(found) >= {ALPHA, BETA}
        assert all("userPassword" not in attrs for attrs in found.values())
    finally:
        conn.unbind()


# -- operators, auditors, anonymous, replication -------------------------------------------


def test_operator_manages_applications_servers_requests_and_events(dep: Deployment) -> None:
    dep.operator_ldif("ldapadd", app_ldif("o-app"))
    dep.operator_ldif(
        "ldapmodify",
        f"dn: {app_dn('o-app')}\nchangetype: modify\n"
        "replace: ndsclustCommand\nndsclustCommand: /bin/sleep 5\n-\n"
        "replace: ndsclustRequest\nndsclustRequest: migrate:beta\n",
    )
    assert dep.read(app_dn("o-app"))["ndsclustCommand"] == ["/bin/sleep 5"]
    st = dep.store(OPERATOR)
    try:
        st.ensure_base()  # what 'ndsclust servers add' does first: harmless when present
        st.record_event("unload", tag="o-app", text="by=olivia")
        st.delete_app("o-app")
        assert not dep.read(app_dn("o-app"))
    finally:
        st.close()
    # A new server with its identity, as INSTALL.md step 6 lets an operator add it: it
    # binds and pulses at once; retired, its pulse and its entry go.
    gamma_pw = secrets.token_urlsafe(24)
    dep.operator_ldif(
        "ldapadd",
        f"dn: {server_dn('gamma')}\nobjectClass: top\n"
        "objectClass: ndsclustServer\nobjectClass: simpleSecurityObject\n"
        f"cn: gamma\nuserPassword: {render.ssha(gamma_pw)}\n",
    )
    gamma = Store(
        Providers(
            dep.uris,
            Credentials(
                bind_dn=server_dn("gamma"),
                password=gamma_pw,
                ca_file=str(dep.ca),
                start_tls=True,
                allow_plain=False,
            ),
        ),
        SUFFIX,
        base=BASE,
        pulse_base=PULSE,
    )
    try:
        gamma.write_pulse(ServerName("gamma"), 1)
    finally:
        gamma.close()
    dep.operator_ldif(
        "ldapmodify",
        f"dn: cn=gamma,{PULSE}\nchangetype: delete\n\n"
        f"dn: {server_dn('gamma')}\nchangetype: delete\n",
    )
    assert not dep.read(server_dn("gamma")) and not dep.read(f"cn=gamma,{PULSE}")


def test_identities_change_their_own_password(dep: Deployment) -> None:
    """RFC 3062 password modify on one's own entry; the hash stays unreadable."""
    new = secrets.token_urlsafe(24)
    conn = dep.connect(STRANGER)
    try:
        assert conn.extend.standard.modify_password(STRANGER, dep.passwords[STRANGER], new)
        conn.search(STRANGER, "(objectClass=*)", ldap3.BASE, attributes=["userPassword"])
        assert "userPassword" not in conn.response[0]["raw_attributes"]
    finally:
        conn.unbind()
    dep.passwords[STRANGER] = new
    dep.connect(STRANGER).unbind()


def test_operator_cannot_change_groups_or_configuration(dep: Deployment) -> None:
    conn = dep.connect(OPERATOR)
    try:
        assert not conn.modify(f"cn=auditors,{BASE}", {"member": [(ldap3.MODIFY_ADD, [STRANGER])]})
        assert result(conn) == INSUFFICIENT_ACCESS
        assert not conn.modify(
            "olcDatabase={2}mdb,cn=config", {"olcReadOnly": [(ldap3.MODIFY_REPLACE, ["TRUE"])]}
        )
        assert result(conn) == INSUFFICIENT_ACCESS
    finally:
        conn.unbind()


AUDITOR_REFUSED: list[tuple[str, str, Callable[[ldap3.Connection, str], bool]]] = [
    ("an application's host", app_dn("web"), _mod("ndsclustHostServer", BETA)),
    ("an application's request", app_dn("web"), _mod("ndsclustRequest", "unload")),
    ("an application's command", app_dn("web"), _mod("ndsclustCommand", "/bin/true")),
    (
        "a new application",
        app_dn("audited"),
        lambda c, dn: bool(
            c.add(
                dn,
                ["top", "ndsclustApplication"],
                {
                    "ndsclustTag": "audited",
                    "ndsclustType": "capable",
                    "ndsclustCommand": "/bin/true",
                    "ndsclustPrimaryServer": ALPHA,
                },
            )
        ),
    ),
    ("an application, deleted", app_dn("web"), lambda c, dn: bool(c.delete(dn))),
    ("a server's state", server_dn(ALPHA), _mod("ndsclustServerState", "maintenance")),
    (
        "an event",
        f"ndsclustEventId=audit-1,{EVENTS}",
        lambda c, dn: bool(
            c.add(
                dn,
                ["top", "ndsclustEvent"],
                {
                    "ndsclustEventId": "audit-1",
                    "ndsclustEventKind": "x",
                    "ndsclustEventTime": "20240101000000Z",
                },
            )
        ),
    ),
    ("a pulse", f"cn={BETA},{PULSE}", _mod("ndsclustPulse", "999")),
]


@pytest.mark.parametrize("what, dn, op", AUDITOR_REFUSED, ids=[w for w, _, _ in AUDITOR_REFUSED])
def test_auditor_cannot_write(
    dep: Deployment,
    beta_pulse: None,
    what: str,
    dn: str,
    op: Callable[[ldap3.Connection, str], bool],
) -> None:
    before = dep.read(dn)
    conn = dep.connect(AUDITOR)
    try:
        assert not op(conn, dn), f"the auditor could write {what}"
        assert result(conn) == INSUFFICIENT_ACCESS, conn.result
    finally:
        conn.unbind()
    assert dep.read(dn) == before


def test_auditor_reads_the_cluster_with_the_cli(
    dep: Deployment, beta_pulse: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """`ndsclust status` and `ndsclust doctor` bound as an auditor, over StartTLS
    (INSTALL.md, step 9): reading is all they need."""
    args = [
        *(a for uri in dep.uris for a in ("--uri", uri)),
        "--suffix",
        SUFFIX,
        "--pulse-suffix",
        PULSE,
        "-D",
        AUDITOR,
        "-y",
        str(dep.password_files[AUDITOR]),
        "--ca-file",
        str(dep.ca),
        "-Z",
    ]
    assert cli_main([*args, "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert {s["name"] for s in status["servers"]} >= {ALPHA, BETA}
    assert "web" in {a["tag"] for a in status["applications"]}
    rc = cli_main([*args, "doctor", "--json"])
    findings = json.loads(capsys.readouterr().out)["findings"]
    ok = {(f["check"], f["subject"]) for f in findings if f["level"] == "ok"}
    # No sentinel runs here: the pulses were written once by the fixture, so on a loaded
    # machine doctor may rightly find them stale. What it must not find is anything it
    # could not read.
    problems = [f for f in findings if f["level"] == "problem"]
    assert all(f["check"] == "pulse" and "ago" in f["message"] for f in problems), problems
    assert rc == (1 if problems else 0)
    # The schema version comes from the subschema entry, open to every bound user.
    assert {("schema", uri) for uri in dep.uris} <= ok
    assert ("replication", "providers") in ok


def test_identities_outside_the_groups_read_only_their_own_entry(dep: Deployment) -> None:
    conn = dep.connect(STRANGER)
    try:
        for base in (SUFFIX, BASE, APPS, PULSE):
            conn.search(base, "(objectClass=*)", ldap3.SUBTREE, attributes=["1.1"])
            assert not [e for e in conn.response if e["type"] == "searchResEntry"], base
        conn.search(STRANGER, "(objectClass=*)", ldap3.BASE, attributes=["uid"])
        assert conn.response[0]["attributes"]["uid"] == ["sam"]
    finally:
        conn.unbind()


def test_anonymous_reads_nothing(dep: Deployment) -> None:
    conn = dep.connect(None)
    try:
        for base in (SUFFIX, PULSE, "cn=accesslog", "cn=config", "cn=Monitor"):
            conn.search(base, "(objectClass=*)", ldap3.SUBTREE, attributes=["*"])
            assert not [e for e in conn.response if e["type"] == "searchResEntry"], base
        assert not conn.modify(
            app_dn("web"), {"ndsclustHostServer": [(ldap3.MODIFY_REPLACE, [BETA])]}
        )
        # The root DSE stays readable: clients look for StartTLS there before binding.
        assert conn.search("", "(objectClass=*)", ldap3.BASE, attributes=["supportedExtension"])
    finally:
        conn.unbind()


def test_replicator_reads_everything_and_writes_nothing(dep: Deployment) -> None:
    conn = dep.connect(REPLICATOR)
    try:
        conn.search(
            "cn=accesslog", "(objectClass=auditWriteObject)", ldap3.SUBTREE, attributes=["reqDN"]
        )
        assert result(conn) == 0 and conn.response
        conn.search(server_dn(ALPHA), "(objectClass=*)", ldap3.BASE, attributes=["userPassword"])
        assert conn.response[0]["raw_attributes"].get("userPassword")
        assert not conn.modify(
            app_dn("web"), {"ndsclustState": [(ldap3.MODIFY_REPLACE, ["stopped"])]}
        )
        assert result(conn) == INSUFFICIENT_ACCESS
    finally:
        conn.unbind()


def install_ldif_blocks() -> list[str]:
    """The ```ldif examples of INSTALL.md, in order."""
    text = (DEPLOY / "INSTALL.md").read_text()
    # After the language may come a label (```ldif billing.ldif): the block starts a line later.
    return [block.split("\n", 1)[1].split("```", 1)[0] for block in text.split("```ldif")[1:]]


def test_install_guide_examples_work_for_an_operator(dep: Deployment) -> None:
    """Every LDIF example of INSTALL.md (first application, load, unload, migrate,
    failback, maintenance on and off), written with ldapmodify as an operator, is valid
    and permitted."""
    blocks = install_ldif_blocks()
    assert len(blocks) >= 7 and "ndsclustApplication" in blocks[0]
    for block in blocks:
        dep.operator_ldif("ldapmodify", block, options=("-a",))  # -a: a plain entry is an add
    app = dep.read(app_dn("billing"))
    assert app["ndsclustRequest"] == ["failback"] and app["ndsclustHostServer"] == [ALPHA]
    assert dep.read(server_dn(ALPHA))["ndsclustServerState"] == ["up"]


def _cli_args(dep: Deployment, *identity: str) -> list[str]:
    return [
        *(a for uri in dep.uris for a in ("--uri", uri)),
        "--suffix",
        SUFFIX,
        "--pulse-suffix",
        PULSE,
        *identity,
        "--ca-file",
        str(dep.ca),
        "-Z",
    ]


def test_status_as_anonymous_says_it_cannot_read(
    dep: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main([*_cli_args(dep), "status"]) == 1
    err = capsys.readouterr().err
    assert f"cannot read {BASE} as anonymous" in err and "no servers" not in err


def test_a_wrong_password_exits_2_and_says_the_bind_was_refused(
    dep: Deployment, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = tmp_path / "wrong.pw"
    wrong.write_text("not the password")
    began = time.monotonic()
    assert cli_main([*_cli_args(dep, "-D", OPERATOR, "-y", str(wrong)), "status"]) == 2
    err = capsys.readouterr().err
    assert "the bind was refused" in err and "invalidCredentials" in err, err
    assert "no provider reachable" not in err
    assert time.monotonic() - began < 5  # refused everywhere: no waiting for a better answer


def test_the_audit_trail_names_the_bind_identity_of_a_request(
    dep: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CLI's audit event names the operator's DN; a request written with ldapmodify
    carries its writer in modifiersName, which the sentinels copy into their event."""
    dep.operator_ldif("ldapadd", app_ldif("audited", host=ALPHA))
    args = _cli_args(dep, "-D", OPERATOR, "-y", str(dep.password_files[OPERATOR]))
    assert cli_main([*args, "unload", "audited", "--no-wait"]) == 0
    st = dep.store(OPERATOR)
    try:
        mine = [e for e in st.events(tag="audited") if e.kind == "request_unload"]
        assert mine and f"by={OPERATOR}" in mine[-1].text and "by=root" not in mine[-1].text
        dep.operator_ldif(
            "ldapmodify",
            f"dn: {app_dn('audited')}\nchangetype: modify\nreplace: ndsclustRequest\n"
            "ndsclustRequest: load\n",
        )
        app = st.app("audited")
        assert app.requested_by is not None and app.requested_by.lower() == OPERATOR.lower()
    finally:
        st.close()
