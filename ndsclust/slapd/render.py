"""The slapd configuration of an ndsclust directory, rendered from a site description.

From a ``Site`` (``ndsclust.site``) and the templates beside this module
(``provider.ldif.in``, ``seed-main.ldif.in``, ``seed-pulse.ldif.in``) this module renders
the cn=config LDIF of each provider (syncprov, accesslog and delta-syncrepl from every
other provider, the pulse database, the monitor, indexes, the ndsclust schema, TLS and the
ACLs), the base entries every provider loads with ``slapadd -w``, and server entries, which
are also the identities sentinels bind as. It is the only renderer: ``deploy/render.py``
(``main`` here) renders production providers from a site file with it, and the local lab
and the tests (``ndsclust.lab.directory``) render theirs with it too, so they run under
exactly the configuration, ACLs and TLS settings that are shipped.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import re
import sys
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from ndsclust import pki, schema
from ndsclust.errors import ConfigError, EntryInvalid, NdsclustError
from ndsclust.ldapstore import entries
from ndsclust.model import Server, check_resource, check_server_name
from ndsclust.site import Site, load_site, naming_context, normalize_dn, read_secret

TEMPLATES = Path(__file__).resolve().parent
# syncrepl rids have at most three decimal digits: rid = base + server ID of the peer.
MAIN_RID_BASE = 100
PULSE_RID_BASE = 200
ACCESSLOG_SUFFIX = "cn=accesslog"
DELTA_SYNCREPL = (
    f'syncdata=accesslog logbase="{ACCESSLOG_SUFFIX}" '
    'logfilter="(&(objectClass=auditWriteObject)(reqResult=0))"'
)
# Plain LDAP must not carry a password or cluster data: every operation needs a security
# strength of at least this, which TLS gives and ldapi:// (71 by default) too.
MIN_SSF = "64"
# Attributes the store searches by equality, indexed on the cluster data database.
NDSCLUST_EQ_INDEXES = (
    "ndsclustTag",
    "ndsclustHostServer",
    "ndsclustPrimaryServer",
    "ndsclustBackupServer",
    "ndsclustEventTime",
    "ndsclustEventTag",
)
_PLACEHOLDER = re.compile(r"@([A-Z][A-Z0-9_]*)@")
_NAMES_NDSCLUST_ATTR = re.compile(
    r"olcAccess: \{\d+\}to \S+ (?:filter=\S+ )?(attrs=\S*|.*set=\"this/)ndsclust"
)
_REGEX_SPECIAL = re.compile(r"([.^$*+?()\[\]{}|\\])")

Value = str | Sequence[str] | None


class RenderError(NdsclustError):
    """A template and this renderer disagree on a placeholder: a defect, not bad input."""


# -- templates ---------------------------------------------------------------------------


def fill(template: str, values: Mapping[str, Value]) -> str:
    """Replace every ``@NAME@`` of ``template``.

    A string replaces the placeholder. A sequence repeats the line once per item (so a
    line ``member: @OPERATORS@`` becomes one line per member) and drops it when empty.
    ``None`` drops every line that uses the placeholder: that is how optional settings
    (TLS, multi-provider mode of a single provider) disappear. A placeholder missing from
    ``values`` is an error, and so is a value no placeholder uses: a template and its
    renderer cannot drift apart silently."""
    unused = sorted(set(values) - set(_PLACEHOLDER.findall(template)))
    if unused:
        raise RenderError(f"{', '.join('@' + n + '@' for n in unused)} is not used by the template")
    out: list[str] = []
    for line in template.splitlines():
        names = _PLACEHOLDER.findall(line)
        unknown = sorted({n for n in names if n not in values})
        if unknown:
            raise RenderError(
                f"no value for {', '.join('@' + n + '@' for n in unknown)} in line {line!r}"
            )
        if any(values[n] is None for n in names):
            continue
        lists = [n for n in dict.fromkeys(names) if not isinstance(values[n], str)]
        if len(lists) > 1:
            raise RenderError(f"line {line!r} repeats for more than one list: {lists}")
        if not lists:
            out.append(_PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), line))
            continue
        listed = lists[0]
        for item in values[listed] or ():
            out.append(
                _PLACEHOLDER.sub(
                    lambda m: item if m.group(1) == listed else str(values[m.group(1)]), line
                )
            )
    return "\n".join(out) + "\n"


def template(name: str) -> str:
    return (TEMPLATES / name).read_text(encoding="utf-8")


# -- provider ----------------------------------------------------------------------------


def syncrepl_lines(site: Site, me: int) -> tuple[list[str], list[str]]:
    """olcSyncrepl values of the main and pulse databases of provider ``me``: one agreement
    per other provider, bound as the replication identity, over TLS with the peer's
    certificate verified against the site CA."""
    common = (
        f'bindmethod=simple binddn="{site.replicator_dn}" '
        f'credentials="{site.replicator_password}" type=refreshAndPersist '
        f'retry="{site.retry}" timeout=3 network-timeout=2 keepalive=30:3:5'
    )
    main: list[str] = []
    pulse: list[str] = []
    for peer in (q for q in site.providers if q.server_id != me):
        tls = ""
        if site.tls is not None:
            tls = f" tls_cacert={site.tls.ca_file} tls_reqcert=demand"
            if urlsplit(peer.uri).scheme.lower() == "ldap":
                tls = " starttls=critical" + tls
        main.append(
            f"{{{len(main)}}}rid={MAIN_RID_BASE + peer.server_id:03d} "
            f'provider={peer.uri} {common}{tls} searchbase="{site.suffix}" '
            f"{DELTA_SYNCREPL}"
        )
        pulse.append(
            f"{{{len(pulse)}}}rid={PULSE_RID_BASE + peer.server_id:03d} "
            f'provider={peer.uri} {common}{tls} searchbase="{site.pulse_suffix}"'
        )
    return main, pulse


def provider_ldif(
    site: Site,
    server_id: int,
    *,
    root_password: str | None = None,
    durable: bool = True,
    config_managers: Sequence[str] = (),
    with_schema: bool = True,
) -> str:
    """The cn=config LDIF of provider ``server_id``.

    The keyword options serve the local lab, never deploy/: ``root_password`` lets the
    admin (then a DN of the suffix) bind with a password, ``durable=False`` turns off the
    fsync of every commit of a throwaway directory (a thousand applications failing over
    cost several writes each, and with one fsync per commit on every provider the disk,
    not ndsclust, would set the pace), ``config_managers`` are the identities that manage
    cn=config instead of the admin (the lab's root and own user over ldapi://, so that its
    admin, root of the databases over the network, is no more a cn=config manager than a
    deployment's operators are), ``with_schema=False``
    leaves out the ndsclust schema and its indexes (tests of installing it on a live
    provider, docs/platform.md fact 3)."""
    if server_id not in {q.server_id for q in site.providers}:
        raise ConfigError(
            "--server-id",
            [
                f"{server_id} is not in the site's providers "
                f"({', '.join(str(q.server_id) for q in site.providers)})"
            ],
        )
    main, pulse = syncrepl_lines(site, server_id)
    tls = site.tls
    ldif = fill(
        template("provider.ldif.in"),
        {
            "SERVER_ID": str(server_id),
            "SUFFIX": site.suffix,
            "BASE": site.base,
            "PULSE_SUFFIX": site.pulse_suffix,
            "PULSE_SUFFIX_REGEX": _REGEX_SPECIAL.sub(r"\\\1", normalize_dn(site.pulse_suffix)),
            "ADMIN_DN": site.admin_dn,
            "CONFIG_MANAGERS": " ".join(
                f'by dn.exact="{dn}" manage'
                for dn in dict.fromkeys(config_managers or (site.admin_dn,))
            ),
            "ROOT_PASSWORD": root_password,
            "NO_SYNC": None if durable else "TRUE",
            "REPLICATOR_DN": site.replicator_dn,
            "DATA_DIR": site.data_dir,
            "RUN_DIR": site.run_dir,
            "MODULE_PATH": site.module_path,
            "SCHEMA_DIR": site.schema_dir,
            "NDSCLUST_SCHEMA": schema.render_ldif().strip() if with_schema else None,
            "NDSCLUST_INDEX": NDSCLUST_EQ_INDEXES if with_schema else (),
            "TLS_CA_FILE": tls.ca_file if tls else None,
            "TLS_CERT_FILE": tls.cert_file if tls else None,
            "TLS_KEY_FILE": tls.key_file if tls else None,
            "TLS_VERIFY_CLIENT": "try" if tls and tls.certificate_cluster else None,
            "AUTHZ_REGEXP": (
                pki.authz_regexp(tls.certificate_cluster, site.base)
                if tls and tls.certificate_cluster
                else None
            ),
            "MIN_SSF": MIN_SSF if tls else None,
            "ACCESSLOG_PURGE": site.accesslog_purge,
            "MAIN_SYNCREPL": [f"olcSyncrepl: {line}" for line in main],
            "PULSE_SYNCREPL": [f"olcSyncrepl: {line}" for line in pulse],
            # A database without a replication agreement cannot be a multi-provider one.
            "MULTI_PROVIDER": "TRUE" if main else None,
        },
    )
    if with_schema:
        return ldif
    # Without the schema, slapd refuses a rule naming an ndsclust attribute; it renumbers
    # the rules that remain.
    return "".join(
        line for line in ldif.splitlines(keepends=True) if not _NAMES_NDSCLUST_ATTR.match(line)
    )


# -- entries -----------------------------------------------------------------------------


def ssha(password: str, salt: bytes | None = None) -> str:
    """An RFC 2307 {SSHA} hash, which slapd checks natively. The identities hashed here
    have random secrets of 16 characters and more, which no fast hash makes guessable;
    people's passwords go through slappasswd with {ARGON2} (deploy/INSTALL.md)."""
    salt = os.urandom(8) if salt is None else salt
    digest = hashlib.sha1(password.encode("utf-8") + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode("ascii")


def with_operational(
    ldif: str,
    server_id: int,
    now: datetime,
    creator: str,
    new_uuid: Callable[[], str] = lambda: str(uuid.uuid4()),
) -> str:
    """Append fixed operational attributes to every entry of ``ldif``: loaded with
    ``slapadd`` on every provider, each entry is then the same entry everywhere (same
    entryUUID and entryCSN), exactly as if it had replicated."""
    stamp = now.strftime("%Y%m%d%H%M%SZ")
    csn = f"{now.strftime('%Y%m%d%H%M%S.%f')}Z#000000#{server_id:03x}#000000"
    out = []
    for block in ldif.strip("\n").split("\n\n"):
        if any(line.startswith("dn: ") for line in block.splitlines()):
            block += (
                f"\nentryUUID: {new_uuid()}\nentryCSN: {csn}\ncreatorsName: {creator}"
                f"\ncreateTimestamp: {stamp}\nmodifiersName: {creator}"
                f"\nmodifyTimestamp: {stamp}"
            )
        out.append(block)
    return "\n\n".join(out) + "\n"


def seed_ldifs(site: Site, now: datetime, with_schema: bool = True) -> dict[str, str]:
    """The base entries, by file name: ``seed-main.ldif`` and ``seed-pulse.ldif``.
    ``with_schema=False`` (the lab only) makes the cluster base a plain organizational
    unit, for a directory without the ndsclust schema."""
    suffix_classes, suffix_attrs = naming_context(site.suffix)
    pulse_classes, pulse_attrs = naming_context(site.pulse_suffix)
    values: dict[str, dict[str, Value]] = {
        "seed-main.ldif": {
            "SUFFIX": site.suffix,
            "BASE": site.base,
            "BASE_OU": site.base.split(",", 1)[0].split("=", 1)[1].strip(),
            "CLUSTER_CLASS": "ndsclustCluster" if with_schema else None,
            "SUFFIX_CLASSES": suffix_classes,
            "SUFFIX_ATTRS": suffix_attrs,
            "REPLICATOR_DN": site.replicator_dn,
            "REPLICATOR_CN": site.replicator_dn.split(",", 1)[0].split("=", 1)[1].strip(),
            "REPLICATOR_PASSWORD_HASH": ssha(site.replicator_password),
            "OPERATORS": site.operators,
            "AUDITORS": site.auditors,
        },
        "seed-pulse.ldif": {
            "PULSE_SUFFIX": site.pulse_suffix,
            "PULSE_CLASSES": pulse_classes,
            "PULSE_ATTRS": pulse_attrs,
        },
    }
    first = site.providers[0].server_id
    return {
        name: with_operational(fill(template(f"{name}.in"), v), first, now, site.admin_dn)
        for name, v in values.items()
    }


def server_entry(
    site: Site, name: str, addresses: Sequence[str], resources: Sequence[str], password: str
) -> tuple[str, dict[str, list[str]]]:
    """DN and attributes of one server's entry, as ``ndsclust servers add`` writes it, plus
    the password its sentinel binds with (hashed). Validated by the same parser the
    sentinels use."""
    try:
        server = Server(
            name=check_server_name(name),
            addresses=tuple(addresses),
            resources=frozenset(check_resource(r) for r in resources),
        )
    except ValueError as e:
        raise ConfigError("server", [str(e)]) from None
    dn = f"cn={server.name},ou=servers,{site.base}"
    attrs = entries.server_attributes(server)
    try:
        entries.parse_server(dn, attrs)
    except EntryInvalid as e:
        raise ConfigError("server", [f"{e.attribute}: {e.problem}"]) from None
    if len(password) < 16:
        raise ConfigError(
            "server",
            [
                f"the password has {len(password)} characters; use at "
                "least 16 (python3 -c 'import secrets; "
                "print(secrets.token_urlsafe(32))')"
            ],
        )
    attrs["objectClass"] = [*attrs["objectClass"], "simpleSecurityObject"]
    attrs["userPassword"] = [ssha(password)]
    return dn, attrs


def server_ldif(
    site: Site, name: str, addresses: Sequence[str], resources: Sequence[str], password: str
) -> str:
    """``server_entry`` as LDIF, for ``ldapadd``."""
    dn, attrs = server_entry(site, name, addresses, resources, password)
    lines = [
        f"# Server {dn.split(',', 1)[0][3:]}; its sentinel binds as this entry (directory.bind_dn).",
        f"dn: {dn}",
    ]
    lines += [f"{attr}: {v}" for attr, values in attrs.items() for v in values]
    return "\n".join(lines) + "\n"


# -- command line (deploy/render.py) -----------------------------------------------------

USAGE = """Render the slapd configuration of an ndsclust directory from a site file.

``provider SITE --server-id N``
    the cn=config LDIF of provider N, for ``slapadd -n0``;
``seed SITE --out-dir DIR``
    the base entries, with fixed entryUUID and entryCSN: render them once and load the
    same files on every provider with ``slapadd -w``, so they are one entry everywhere;
``server SITE --name NAME --address IP:PORT --password-file FILE``
    the entry of one server, which is also the identity its sentinel binds as.

Every problem with the site file is reported at once; the exit status is then 2.
See deploy/INSTALL.md."""


def _write(text: str, out: str | None) -> None:
    """Print ``text``, or write it to ``out`` readable by its owner only: rendered files
    hold the replication password or password hashes."""
    if out is None:
        sys.stdout.write(text)
        return
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="render.py",
        description=USAGE.split("\n\n")[0],
        epilog=USAGE.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    prov = sub.add_parser("provider", help="cn=config LDIF of one provider (slapadd -n0)")
    prov.add_argument("site", help="site file (see deploy/site.example.yaml)")
    prov.add_argument("--server-id", type=int, required=True, help="this provider's id")
    prov.add_argument("-o", "--out", help="write here (mode 0600) instead of stdout")
    seed = sub.add_parser("seed", help="base entries for every provider (slapadd -w)")
    seed.add_argument("site")
    seed.add_argument("--out-dir", required=True, help="writes seed-main.ldif, seed-pulse.ldif")
    srv = sub.add_parser("server", help="one server entry with its sentinel's identity")
    srv.add_argument("site")
    srv.add_argument("--name", required=True, help="server name (lower case, digits, '-')")
    srv.add_argument(
        "--address",
        action="append",
        default=[],
        metavar="IP:PORT",
        help="heartbeat address of its sentinel; repeat for redundant rings",
    )
    srv.add_argument(
        "--resource",
        action="append",
        default=[],
        metavar="NAME",
        help="resource the server offers; repeat",
    )
    srv.add_argument(
        "--password-file",
        required=True,
        help="the password its sentinel binds with (directory.password_file)",
    )
    srv.add_argument("-o", "--out", help="write here (mode 0600) instead of stdout")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        site = load_site(args.site)
        if args.command == "provider":
            _write(provider_ldif(site, args.server_id), args.out)
        elif args.command == "seed":
            out_dir = Path(args.out_dir)
            out_dir.mkdir(parents=True, exist_ok=True)
            for name, text in seed_ldifs(site, datetime.now(UTC)).items():
                _write(text, str(out_dir / name))
        else:
            try:
                password = read_secret(args.password_file)
            except OSError as e:
                raise ConfigError(
                    "--password-file", [f"{args.password_file}: {e.strerror}"]
                ) from None
            _write(server_ldif(site, args.name, args.address, args.resource, password), args.out)
    except ConfigError as e:
        print(f"render.py: {e}", file=sys.stderr)
        return 2
    return 0
