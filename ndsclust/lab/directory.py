"""A local directory cluster: N real slapd providers in multi-provider delta-syncrepl.

Used by ``ndsclust lab``, the integration fixtures, the benchmarks and the fault harness.
Each provider (``ndsclust.lab.provider``) has its own cn=config and data directories under
``base_dir/p<index>``. Every provider's configuration and the base entries are rendered by
``ndsclust.slapd.render`` from the templates deploy/ ships (``ndsclust/slapd/``), so the lab and
the tests run the configuration that is installed (docs/design.md section 2,
docs/platform.md facts 1-4): the accesslog before the main database, delta-syncrepl of the
cluster data as the replication identity, the pulse database with plain syncrepl,
cn=Monitor for the sync phase of every agreement (``wait_replicating``), the shipped ACLs
and groups, and the ndsclust schema.

The lab's own choices, all of them options of the renderer that deploy/ never uses: the
admin, ``cn=admin,<suffix>``, is the root DN of every database and binds with a password
(the lab's bookkeeping and the tests use it; sentinels bind as their server entries,
``add_server_identity``); ``durable=False`` turns off the fsync of every commit;
``with_schema=False`` leaves the ndsclust schema out (the tests of installing it).

Two transports. With ``tls=True`` (what ``LabCluster`` uses) a lab CA made with
``ndsclust.pki`` under ``base_dir/pki`` signs one certificate per provider naming the
address it listens on, the providers listen on ``ldaps://`` only and replicate over TLS.
Without it (the integration tests of the store and the watch) they listen on ``ldap://``:
the same configuration without its TLS lines.
"""

from __future__ import annotations

import atexit
import json
import os
import secrets
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from ndsclust import pki, site
from ndsclust.errors import NdsclustError
from ndsclust.lab.provider import (
    LabError,
    LabTimeout,
    Provider,
    free_ports,
    slapadd_all,
    wait_until,
)
from ndsclust.ldapstore import provider_admin
from ndsclust.ldapstore.connection import Credentials
from ndsclust.ldapstore.replication import Tree, context_csns, read_tree
from ndsclust.slapd import render

# What the tests and tools have always imported from here.
__all__ = ["DirectoryCluster", "LabError", "LabTimeout", "Provider", "free_ports", "wait_until"]

T = TypeVar("T")

STATE_FILE = "cluster.json"
SCHEMA_DIR = Path("/etc/ldap/schema")
# Root over ldapi (SASL EXTERNAL) manages cn=config, e.g. loads a schema on a live provider.
LDAPI_ROOT = site.LDAPI_ROOT
MAX_PROVIDERS = site.MAX_SERVER_ID  # a provider's server id names its replication rids
PKI_DIR = "pki"
LAB_CLUSTER_NAME = "lab"
SECRET_BYTES = 24  # random passwords: 32 url-safe characters


def _config_managers() -> list[str]:
    """Identities that manage cn=config over ldapi (SASL EXTERNAL): root, and the user
    running the lab when that is not root."""
    own = f"gidNumber={os.getgid()}+uidNumber={os.getuid()},cn=peercred,cn=external,cn=auth"
    return [LDAPI_ROOT] if own == LDAPI_ROOT else [LDAPI_ROOT, own]


def _cert_stem(p: Provider) -> str:
    """File stem (and certificate subject name) of a provider's TLS certificate."""
    return f"provider{p.server_id}"


def _peer_of(rid: int) -> int:
    """Server id of the provider an agreement replicates from (``render.MAIN_RID_BASE``)."""
    return rid - (render.PULSE_RID_BASE if rid >= render.PULSE_RID_BASE else render.MAIN_RID_BASE)


class DirectoryCluster:
    """N providers replicating both suffixes to each other (multi-provider).

    ``start()`` builds and starts them; ``stop()`` kills them and removes ``base_dir``. With
    ``die_with_parent`` (tests) every slapd dies with the thread that started it and an
    atexit hook stops the cluster; without it (``ndsclust lab up``) the cluster outlives its
    creator, and another process takes it over with ``DirectoryCluster.attach(base_dir)``.
    """

    def __init__(
        self,
        n: int = 3,
        base_dir: str | Path | None = None,
        host: str = "127.0.0.1",
        hosts: Sequence[str] | None = None,
        suffix: str = "dc=ndsclust,dc=test",
        pulse_suffix: str = "o=ndsclust-pulse",
        admin_password: str | None = None,
        retry: str = "1 +",
        die_with_parent: bool = True,
        accesslog_purge: str = "07+00:00 01+00:00",
        with_schema: bool = True,
        exec_prefixes: Sequence[Sequence[str]] | None = None,
        log_level: str = "0",
        durable: bool = True,
        tls: bool = False,
        replicator_password: str | None = None,
    ) -> None:
        """``base_dir``: a new or empty directory (removed by ``stop()``), default a fresh
        temporary one. ``hosts``: one listen address per provider (default ``host`` for
        all). ``exec_prefixes``: one command prefix per provider, e.g.
        ``("ip", "netns", "exec", "ns1")``. ``log_level``: slapd's ``-d`` level for its log
        file (``0``: start-up errors only; ``"sync stats"`` to debug replication).
        ``tls``: ldaps:// with a lab CA (module docstring)."""
        if not 1 <= n <= MAX_PROVIDERS:
            raise LabError(f"a lab cluster has 1 to {MAX_PROVIDERS} providers, not {n}")
        self._hosts = tuple(hosts) if hosts is not None else (host,) * n
        self._exec_prefixes = (
            tuple(tuple(p) for p in exec_prefixes) if exec_prefixes is not None else ((),) * n
        )
        for what, seq in (("hosts", self._hosts), ("exec_prefixes", self._exec_prefixes)):
            if len(seq) != n:
                raise LabError(f"{what} has {len(seq)} items for {n} providers")
        for dn in (suffix, pulse_suffix):
            try:
                site.naming_context(dn)
            except ValueError as e:
                raise LabError(str(e)) from None
        self.n = n
        self.tls = tls
        self._replicator_password = replicator_password or secrets.token_urlsafe(SECRET_BYTES)
        self._requested_dir = Path(base_dir) if base_dir is not None else None
        self._base_dir: Path | None = None
        self.suffix = suffix
        self.pulse_suffix = pulse_suffix
        self.admin_dn = f"cn=admin,{suffix}"
        self.pulse_admin_dn = self.admin_dn  # root of the pulse database too
        self.admin_password = admin_password or secrets.token_urlsafe(18)
        self.base = f"ou=ndsclust,{suffix}"  # the cluster base: the store's default
        self.retry = retry
        self.die_with_parent = die_with_parent
        self.accesslog_purge = accesslog_purge
        self.with_schema = with_schema
        self.log_level = log_level
        self.durable = durable
        self._providers: tuple[Provider, ...] = ()
        self._started = False
        self._stopped = False

    # -- identity -------------------------------------------------------------------------

    @property
    def providers(self) -> tuple[Provider, ...]:
        return self._providers

    @property
    def uris(self) -> list[str]:
        """URLs of the providers (ldaps:// with ``tls``), in order: the first is the write
        provider."""
        return [p.url for p in self._providers]

    @property
    def ca_file(self) -> str | None:
        """The lab CA's certificate, which signed every provider's (``tls`` only)."""
        return str(self.base_dir / PKI_DIR / pki.CA_CERT) if self.tls else None

    def admin_credentials(self) -> Credentials:
        """How the lab's own admin reaches the providers' URIs: over verified TLS in the
        ``tls`` mode, else plain LDAP (allowed explicitly: it is the plain mode)."""
        return Credentials(
            bind_dn=self.admin_dn,
            password=self.admin_password,
            ca_file=self.ca_file,
            allow_plain=not self.tls,
        )

    def _ldapi_admin(self) -> Credentials:
        return Credentials(bind_dn=self.admin_dn, password=self.admin_password)

    def deploy_site(self, provider: Provider | None = None) -> site.Site:
        """The site description of this cluster, as a deploy/ site file would give it, with
        the TLS files of ``provider`` (default the first one): the input of
        ``ndsclust.slapd.render``."""
        p = provider or self._providers[0]
        tls = None
        if self.tls:
            pki_dir, stem = self.base_dir / PKI_DIR, _cert_stem(p)
            tls = site.Tls(
                str(pki_dir / pki.CA_CERT),
                str(pki_dir / f"{stem}.crt"),
                str(pki_dir / f"{stem}.key"),
            )
        return site.Site(
            suffix=self.suffix,
            base=self.base,
            pulse_suffix=self.pulse_suffix,
            admin_dn=self.admin_dn,
            replicator_dn=f"cn=replicator,{self.suffix}",
            replicator_password=self._replicator_password,
            providers=tuple(site.Provider(q.server_id, q.url) for q in self._providers),
            # Groups need a member; the admin is root anyway, so membership grants it
            # nothing it does not have.
            operators=(self.admin_dn,),
            auditors=(self.admin_dn,),
            tls=tls,
            data_dir=str(p.dir),
            run_dir=str(p.dir),
            module_path="/usr/lib/ldap",
            schema_dir=str(SCHEMA_DIR),
            retry=self.retry,
            accesslog_purge=self.accesslog_purge,
        )

    def _on_write_provider(self, what: str, fn: Callable[[str, Credentials], T]) -> T:
        """``fn(ldapi URL, admin credentials)`` on the write provider; LabError naming
        ``what`` when it fails."""
        try:
            return fn(self._providers[0].ldapi_url, self._ldapi_admin())
        except NdsclustError as e:
            raise LabError(f"{what}: {e}") from e

    def add_server_identity(
        self, name: str, addresses: Sequence[str], resources: Sequence[str] = ()
    ) -> tuple[str, str]:
        """Add the entry of server ``name`` as deploy/render.py's ``server`` verb renders
        it: the identity its sentinel binds as, with a new random password. Written as the
        admin on the write provider (its ldapi socket). Returns (DN, password)."""
        password = secrets.token_urlsafe(SECRET_BYTES)
        dn, attrs = render.server_entry(self.deploy_site(), name, addresses, resources, password)
        self._on_write_provider(
            f"server {name}", lambda uri, creds: provider_admin.add_entry(uri, creds, dn, attrs)
        )
        return dn, password

    def add_operator(self, dn: str) -> None:
        """Make ``dn`` a member of the operators group, as an admin does with ldapmodify:
        it may then create applications and change their commands."""
        group = f"cn=operators,{self.base}"
        self._on_write_provider(
            f"operator {dn}",
            lambda uri, creds: provider_admin.add_values(uri, creds, group, "member", [dn]),
        )

    @property
    def base_dir(self) -> Path:
        if self._base_dir is None:
            raise LabError("the cluster has no directory yet: call start() first")
        return self._base_dir

    def __repr__(self) -> str:
        return f"DirectoryCluster(n={self.n}, uris={self.uris}, base_dir={self._base_dir})"

    # -- life cycle -----------------------------------------------------------------------

    def __enter__(self) -> DirectoryCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 15.0) -> float:
        """Build and start every provider, in parallel. Return the seconds from the first
        spawn until every provider answers, holds the base entries and replicates from
        every other one (all agreements in the persist phase). On any failure everything
        started is stopped and removed before the error propagates."""
        if self._started:
            raise LabError("this cluster was already started; build a new DirectoryCluster")
        self._started = True
        try:
            self._base_dir = self._make_base_dir()
            if self.die_with_parent:
                atexit.register(self.stop)
            self._build()
            began = time.monotonic()
            deadline = began + timeout
            for p in self._providers:
                p.spawn()
            for p in self._providers:
                p.wait_answering(deadline)
            self.wait_replicating(deadline - time.monotonic())
            elapsed = time.monotonic() - began
            self.wait_converged(max(deadline - time.monotonic(), 1.0))
            return elapsed
        except BaseException as e:
            try:
                self.stop()
            except LabError as cleanup:
                e.add_note(f"cleaning up also failed: {cleanup}")
            raise

    def _make_base_dir(self) -> Path:
        if self._requested_dir is None:
            return Path(tempfile.mkdtemp(prefix="ndsclust-lab-"))
        d = self._requested_dir.resolve()
        if d.exists() and any(d.iterdir()):
            # stop() removes base_dir: never adopt a directory that holds anything else.
            raise LabError(f"base_dir {d} is not empty; give a new or empty directory")
        d.mkdir(parents=True, exist_ok=True)
        return d

    def _build(self) -> None:
        """Every provider's cn=config and the base entries, rendered by
        ``ndsclust.slapd.render`` and loaded with slapadd before the first start
        (docs/platform.md fact 1)."""
        base = self.base_dir
        ports = free_ports(self._hosts)
        self._providers = tuple(
            Provider(
                i,
                self._hosts[i],
                ports[i],
                base / f"p{i}",
                self._exec_prefixes[i],
                self.die_with_parent,
                log_level=self.log_level,
                tls=self.tls,
            )
            for i in range(self.n)
        )
        now = datetime.now(UTC)
        if self.tls:
            pki.init_ca(base / PKI_DIR, LAB_CLUSTER_NAME, now)
        configs = []
        for p in self._providers:
            p.on_spawn = self._provider_spawned
            for sub in ("slapd.d", "accesslog", "db", "pulse"):
                (p.dir / sub).mkdir(parents=True)
            if self.tls:
                # The certificate names the address clients and peers put in its URI.
                pki.issue(base / PKI_DIR, _cert_stem(p), now, ips=[p.host])
            ldif = p.dir / "config.ldif"
            ldif.touch(0o600)  # it holds the admin and replication passwords
            ldif.write_text(
                render.provider_ldif(
                    self.deploy_site(p),
                    p.server_id,
                    root_password=self.admin_password,
                    durable=self.durable,
                    config_managers=_config_managers(),
                    with_schema=self.with_schema,
                )
            )
            configs.append((p, ["-n0", "-l", str(ldif)]))
        slapadd_all(configs)
        # Every provider gets the same base entries (same entryUUID and entryCSN; -w
        # records the contextCSN) before its first start: created on one provider after
        # start instead, every agreement's first refresh would find no search base on some
        # peer, fail with noSuchObject and wait a retry interval (docs/platform.md fact 1).
        seeds = []
        for name, text in render.seed_ldifs(self.deploy_site(), now, self.with_schema).items():
            path = base / name
            path.touch(0o600)  # the replication identity's password hash
            path.write_text(text)
            dn = self.suffix if name == "seed-main.ldif" else self.pulse_suffix
            seeds += [(p, ["-q", "-w", "-b", dn, "-l", str(path)]) for p in self._providers]
        slapadd_all(seeds)

    def stop(self) -> None:
        """Kill every slapd (SIGKILL: lab data is thrown away), wait for each, remove
        base_dir. Idempotent; safe after a partial start and from another process."""
        if self._stopped:
            return
        for p in self._providers:
            p.kill(signal.SIGKILL, wait=False)
        survivors = [f"{p.name} pid {p.pid}" for p in self._providers if not p.wait_exit(5.0)]
        if survivors:
            raise LabError("could not stop " + ", ".join(survivors))
        self._stopped = True
        atexit.unregister(self.stop)
        if self._base_dir is not None and self._base_dir.exists():
            shutil.rmtree(self._base_dir)

    # -- state file, for a cluster that outlives its creator -------------------------------

    def _provider_spawned(self, provider: Provider) -> None:
        self._write_state()

    def _write_state(self) -> None:
        state = {
            "n": self.n,
            "suffix": self.suffix,
            "pulse_suffix": self.pulse_suffix,
            "admin_dn": self.admin_dn,
            "pulse_admin_dn": self.pulse_admin_dn,
            "admin_password": self.admin_password,
            "retry": self.retry,
            "die_with_parent": self.die_with_parent,
            "accesslog_purge": self.accesslog_purge,
            "with_schema": self.with_schema,
            "log_level": self.log_level,
            "uris": self.uris,
            "tls": self.tls,
            "replicator_password": self._replicator_password,
            "providers": [
                {
                    "index": p.index,
                    "server_id": p.server_id,
                    "host": p.host,
                    "port": p.port,
                    "url": p.url,
                    "ldapi_url": p.ldapi_url,
                    "dir": str(p.dir),
                    "pid": p.pid,
                    "exec_prefix": list(p.exec_prefix),
                }
                for p in self._providers
            ],
        }
        path = self.base_dir / STATE_FILE
        tmp = path.with_suffix(".tmp")
        # It holds the admin and replication passwords: owner only, replaced atomically.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(state, f, indent=2)
        tmp.replace(path)

    @classmethod
    def attach(cls, base_dir: str | Path) -> DirectoryCluster:
        """The running cluster whose state file is in ``base_dir``, as written by the
        process that started it (``ndsclust lab up``); its ``stop()`` works from here."""
        base = Path(base_dir).resolve()
        try:
            state = json.loads((base / STATE_FILE).read_text())
            cluster = cls(
                n=state["n"],
                hosts=[p["host"] for p in state["providers"]],
                suffix=state["suffix"],
                pulse_suffix=state["pulse_suffix"],
                admin_password=state["admin_password"],
                retry=state["retry"],
                die_with_parent=state["die_with_parent"],
                accesslog_purge=state["accesslog_purge"],
                with_schema=state["with_schema"],
                exec_prefixes=[p["exec_prefix"] for p in state["providers"]],
                log_level=state["log_level"],
                tls=state["tls"],
                replicator_password=state["replicator_password"],
            )
            cluster._providers = tuple(
                Provider(
                    p["index"],
                    p["host"],
                    p["port"],
                    Path(p["dir"]),
                    p["exec_prefix"],
                    state["die_with_parent"],
                    p["pid"],
                    state["log_level"],
                    state["tls"],
                )
                for p in state["providers"]
            )
        except FileNotFoundError as e:
            raise LabError(f"{base} holds no lab cluster ({STATE_FILE} is missing)") from e
        except (ValueError, KeyError, TypeError) as e:
            raise LabError(f"{base / STATE_FILE} is damaged: {e!r}") from e
        cluster._base_dir = base
        cluster._started = True
        for p in cluster._providers:
            p.on_spawn = cluster._provider_spawned
        return cluster

    # -- LDAP through the ldapi sockets ----------------------------------------------------

    def _ask(self, p: Provider, fn: Callable[[str, Credentials], T]) -> T:
        """``fn(ldapi URL, admin credentials)`` for provider ``p``; LabError when it fails."""
        try:
            return fn(p.ldapi_url, self._ldapi_admin())
        except NdsclustError as e:
            raise LabError(f"{p.name}: {e}") from e

    def _answering(self) -> list[Provider]:
        return [p for p in self._providers if p.running and not p.paused]

    def replication_state(self) -> dict[int, dict[int, str]]:
        """The sync phase of every replication agreement, from cn=Monitor, by provider
        index then rid (``render.MAIN_RID_BASE`` or ``render.PULSE_RID_BASE`` + the server id
        replicated from): ``Persist`` when connected and current. Providers that are not
        running or are paused are left out: they cannot answer."""
        return {p.index: self._ask(p, provider_admin.sync_phases) for p in self._answering()}

    def wait_replicating(self, timeout: float = 5.0) -> None:
        """Wait until every agreement between two running, unpaused providers is in the
        persist phase: from then on a write anywhere reaches them all within milliseconds
        (docs/platform.md fact 5). An agreement whose first connect was refused waits a
        whole ``retry`` interval (docs/platform.md fact 4), so this is what bounds a start or
        a restart."""
        live = {p.server_id for p in self._answering()}
        pending: list[str] = []

        def replicating() -> bool:
            try:
                state = self.replication_state()
            except LabError as e:
                pending[:] = [str(e)]
                return False
            pending[:] = [
                f"provider {i} rid {rid}: {phase or 'not connected'}"
                for i, phases in state.items()
                for rid, phase in phases.items()
                if _peer_of(rid) in live and phase != "Persist"
            ]
            return not pending

        try:
            wait_until(
                replicating,
                timeout,
                interval=0.02,
                what="every replication agreement to reach the persist phase",
            )
        except LabTimeout as e:
            raise LabTimeout(f"{e}; still waiting: " + "; ".join(pending)) from e

    def contextcsns(self) -> dict[int, dict[str, set[str]]]:
        """contextCSN values of both suffixes, by provider index then suffix. Providers that
        are not running or are paused are left out: they cannot answer."""
        return {
            p.index: {
                dn: set(self._ask(p, lambda uri, creds: context_csns(uri, creds, dn)).values())
                for dn in (self.suffix, self.pulse_suffix)
            }
            for p in self._answering()
        }

    def wait_converged(self, timeout: float = 10.0) -> None:
        """Wait until every running, unpaused provider holds the same contextCSN set for
        both suffixes; on timeout raise LabTimeout listing each provider's values."""
        last: dict[int, dict[str, set[str]]] = {}
        error = ""

        def converged() -> bool:
            nonlocal last, error
            try:
                last = self.contextcsns()
            except LabError as e:
                error = str(e)
                return False
            error = ""
            views = list(last.values())
            return all(v == views[0] for v in views[1:])

        try:
            wait_until(converged, timeout, interval=0.02, what="the providers to converge")
        except LabTimeout as e:
            detail = error or "\n".join(
                f"  provider {i}: "
                + "; ".join(f"{dn}: {', '.join(sorted(csns)) or '-'}" for dn, csns in by_dn.items())
                for i, by_dn in last.items()
            )
            raise LabTimeout(f"{e}; contextCSN per provider:\n{detail}") from e

    def read_tree(self, index: int, base: str | None = None) -> Tree:
        """Every entry under ``base`` (default: the main suffix) on one provider, as
        lower-cased DN -> attribute -> sorted values, user attributes only; empty when
        ``base`` does not exist there. Compare providers by values: one may keep another
        entryCSN for equal values (docs/platform.md fact 9)."""
        return self._ask(
            self._providers[index], lambda uri, creds: read_tree(uri, creds, base or self.suffix)
        )
