"""The slapd configuration of an ndsclust directory, from a site description.

One ``Site`` describes the whole directory: suffixes, the providers in write-provider
order, the replication identity, the operators and auditors, TLS material. From it and the
templates in ``ndsclust/slapd/`` this module renders the cn=config LDIF of each provider
(syncprov, accesslog and delta-syncrepl from every other provider, the pulse database, the
monitor, indexes, the ndsclust schema, TLS and the ACLs), the base entries every provider
loads with ``slapadd -w``, and server entries, which are also the identities sentinels bind
as. ``deploy/render.py`` renders production providers from a site file with it, and the
local lab (``ndsclust.lab.directory``) renders its providers with it too, so the lab runs
under exactly the ACLs and TLS settings that are shipped.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from ndsclust import schema
from ndsclust.errors import ConfigError, EntryInvalid, NdsclustError
from ndsclust.ldapstore import entries
from ndsclust.model import Server, check_resource, check_server_name

TEMPLATES = Path(__file__).resolve().parent / "slapd"
LDAPI_ROOT = "gidNumber=0+uidNumber=0,cn=peercred,cn=external,cn=auth"
# syncrepl rids have at most three decimal digits: rid = base + server ID of the peer.
MAIN_RID_BASE = 100
PULSE_RID_BASE = 200
MAX_SERVER_ID = 99
ACCESSLOG_SUFFIX = "cn=accesslog"
DELTA_SYNCREPL = (
    f'syncdata=accesslog logbase="{ACCESSLOG_SUFFIX}" '
    'logfilter="(&(objectClass=auditWriteObject)(reqResult=0))"'
)
# Plain LDAP must not carry a password or cluster data: every operation needs a security
# strength of at least this, which TLS gives and ldapi:// (71 by default) too.
MIN_SSF = "64"
_PLACEHOLDER = re.compile(r"@([A-Z][A-Z0-9_]*)@")
_RDN = re.compile(r"^([a-z][a-z0-9-]*)=([^,=+\"\\<>;#]+)$")
_REGEX_SPECIAL = re.compile(r"([.^$*+?()\[\]{}|\\])")

Value = str | Sequence[str] | None

SITE_KEYS = {
    "suffix",
    "base",
    "pulse_suffix",
    "admin_dn",
    "replicator",
    "providers",
    "operators",
    "auditors",
    "tls",
    "paths",
    "replication",
}


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


# -- site file ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Provider:
    server_id: int
    uri: str


@dataclass(frozen=True, slots=True)
class Tls:
    ca_file: str
    cert_file: str
    key_file: str


@dataclass(frozen=True, slots=True)
class Site:
    suffix: str
    base: str
    pulse_suffix: str
    admin_dn: str
    replicator_dn: str
    replicator_password: str
    providers: tuple[Provider, ...]
    operators: tuple[str, ...]
    auditors: tuple[str, ...]
    tls: Tls | None
    data_dir: str
    run_dir: str
    module_path: str
    schema_dir: str
    retry: str
    accesslog_purge: str


def normalize_dn(dn: str) -> str:
    """The form slapd matches ``dn.regex`` against, for the plain DNs a site file may use:
    lower case (dc, o, ou and cn compare case-insensitively) and no spaces around ``,``."""
    return ",".join(part.strip().lower() for part in dn.split(","))


def check_dn(dn: str) -> str:
    """Raise ValueError unless ``dn`` is a plain DN: attr=value RDNs without escapes."""
    rdns = normalize_dn(dn).split(",")
    bad = [r for r in rdns if not _RDN.match(r)]
    if not dn.strip() or bad:
        raise ValueError(
            f"{dn!r} is not a DN this renderer handles: write attr=value,... "
            "without quotes, escapes, '+' or '#'"
        )
    return ",".join(p.strip() for p in dn.split(","))


def naming_context(dn: str) -> tuple[list[str], list[str]]:
    """Object classes and attribute lines of a suffix entry: dc=... as dcObject +
    organization, o=... as organization."""
    attr, _, value = dn.split(",", 1)[0].partition("=")
    attr = attr.strip().lower()
    if attr == "dc":
        return ["dcObject", "organization"], [f"dc: {value}", f"o: {value}"]
    if attr == "o":
        return ["organization"], [f"o: {value}"]
    raise ValueError(f"{dn!r}: a suffix starts with dc=... or o=...")


class _Problems:
    """Collects every problem of a site file with its path (docs/style.md section 6)."""

    def __init__(self) -> None:
        self.found: list[str] = []

    def bad(self, path: str, msg: str) -> None:
        self.found.append(f"{path}: {msg}")

    def text(
        self, data: Mapping[str, Any], key: str, path: str = "", default: str | None = None
    ) -> str:
        value = data.get(key, default)
        if value is None:
            self.bad(path + key, "is missing")
            return ""
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            self.bad(path + key, f"{value!r} must be a string")
            return ""
        return str(value)

    def dn(
        self, data: Mapping[str, Any], key: str, path: str = "", default: str | None = None
    ) -> str:
        value = self.text(data, key, path, default)
        if not value:
            return ""
        try:
            return check_dn(value)
        except ValueError as e:
            self.bad(path + key, str(e))
            return ""

    def section(self, data: Mapping[str, Any], key: str, known: set[str]) -> Mapping[str, Any]:
        value = data.get(key) or {}
        if not isinstance(value, Mapping):
            self.bad(key, f"must be a mapping, not {type(value).__name__}")
            return {}
        for k in value:
            if k not in known:
                self.bad(f"{key}.{k}", f"unknown key; allowed: {', '.join(sorted(known))}")
        return value

    def dn_list(self, data: Mapping[str, Any], key: str) -> tuple[str, ...]:
        value = data.get(key)
        if not isinstance(value, list) or not value:
            self.bad(key, "must list at least one DN (a groupOfNames needs a member)")
            return ()
        out = []
        for i, dn in enumerate(value):
            try:
                out.append(check_dn(str(dn)))
            except ValueError as e:
                self.bad(f"{key}[{i}]", str(e))
        return tuple(out)


def read_secret(path: str) -> str:
    """A password file's content without its final newline, as the sentinel reads it."""
    return Path(path).read_text(encoding="utf-8").rstrip("\n")


def _providers(p: _Problems, data: Mapping[str, Any], tls: bool) -> tuple[Provider, ...]:
    raw = data.get("providers")
    if not isinstance(raw, list) or not raw:
        p.bad(
            "providers",
            "must list every provider as {id: N, uri: ldap://host}, in "
            "write-provider order (the order of directory.uris of the sentinels)",
        )
        return ()
    out: list[Provider] = []
    for i, item in enumerate(raw):
        path = f"providers[{i}]"
        if not isinstance(item, Mapping) or set(item) != {"id", "uri"}:
            p.bad(path, "must be a mapping with exactly the keys id and uri")
            continue
        sid, uri = item["id"], str(item["uri"])
        if isinstance(sid, bool) or not isinstance(sid, int) or not 1 <= sid <= MAX_SERVER_ID:
            p.bad(
                f"{path}.id",
                f"{sid!r} must be a whole number from 1 to {MAX_SERVER_ID} "
                "(it names the provider's serverID and its replication rids)",
            )
            continue
        scheme = urlsplit(uri).scheme.lower()
        if scheme not in ("ldap", "ldaps") or not urlsplit(uri).hostname:
            p.bad(
                f"{path}.uri",
                f"{uri!r} must be ldap://host[:port] or ldaps://host[:port], "
                "reachable from every other provider",
            )
            continue
        if scheme == "ldaps" and not tls:
            p.bad(f"{path}.uri", f"{uri!r} is ldaps:// but tls is off")
            continue
        if any(q.server_id == sid for q in out):
            p.bad(f"{path}.id", f"serverID {sid} is used twice; every provider needs its own")
            continue
        if any(q.uri == uri for q in out):
            p.bad(f"{path}.uri", f"{uri} is listed twice")
            continue
        out.append(Provider(sid, uri))
    return tuple(out)


def parse_site(data: Any, source: str = "<site>", read: Callable[[str], str] = read_secret) -> Site:
    """A validated ``Site`` from a loaded site file; ConfigError listing every problem."""
    if not isinstance(data, Mapping):
        raise ConfigError(source, ["the file must hold a mapping (key: value lines)"])
    p = _Problems()
    for k in data:
        if k not in SITE_KEYS:
            p.bad(str(k), f"unknown key; allowed: {', '.join(sorted(SITE_KEYS))}")
    suffix = p.dn(data, "suffix")
    pulse_suffix = p.dn(data, "pulse_suffix", default="o=ndsclust-pulse")
    for key, dn in (("suffix", suffix), ("pulse_suffix", pulse_suffix)):
        if dn:
            try:
                naming_context(dn)
            except ValueError as e:
                p.bad(key, str(e))
    base = p.dn(data, "base", default=f"ou=ndsclust,{suffix}" if suffix else None)
    if (
        base
        and suffix
        and (
            not normalize_dn(base).endswith("," + normalize_dn(suffix))
            or not normalize_dn(base).startswith("ou=")
        )
    ):
        p.bad("base", f"{base!r} must be ou=<name>,{suffix}: the cluster base lives in the suffix")
    admin_dn = p.text(data, "admin_dn", default=LDAPI_ROOT)
    if '"' in admin_dn:
        p.bad("admin_dn", "must not contain '\"'")

    rep = p.section(data, "replicator", {"dn", "password_file"})
    replicator_dn = p.dn(rep, "dn", "replicator.", default=f"cn=replicator,{suffix}")
    if (
        replicator_dn
        and suffix
        and not (
            normalize_dn(replicator_dn).startswith("cn=")
            and normalize_dn(replicator_dn).split(",", 1)[1] == normalize_dn(suffix)
        )
    ):
        p.bad("replicator.dn", f"{replicator_dn!r} must be cn=<name>,{suffix}")
    password = ""
    pw_file = p.text(rep, "password_file", "replicator.")
    try:
        password = read(pw_file) if pw_file else ""
    except OSError as e:
        p.bad("replicator.password_file", f"{pw_file}: {e.strerror}")
    else:
        if pw_file and len(password) < 16:
            p.bad(
                "replicator.password_file",
                f"{pw_file}: the password has {len(password)} "
                "characters; use at least 16 (python3 -c 'import secrets; "
                "print(secrets.token_urlsafe(32))')",
            )
        elif any(c in password for c in '"\\\n'):
            p.bad(
                "replicator.password_file",
                f"{pw_file}: the password must not contain "
                "'\"', '\\' or a line break (it is quoted in olcSyncrepl)",
            )

    tls: Tls | None = None
    raw_tls = data.get("tls")
    if raw_tls is False:
        tls = None
    elif not isinstance(raw_tls, Mapping):
        p.bad(
            "tls",
            "is missing; give ca_file, cert_file and key_file, or write 'tls: false' "
            "to run without TLS (a test bench, never production)",
        )
    else:
        t = p.section(data, "tls", {"ca_file", "cert_file", "key_file"})
        tls = Tls(
            p.text(t, "ca_file", "tls."),
            p.text(t, "cert_file", "tls."),
            p.text(t, "key_file", "tls."),
        )
        for key in ("ca_file", "cert_file", "key_file"):
            value = getattr(tls, key)
            if value and not value.startswith("/"):
                p.bad(f"tls.{key}", f"{value!r} must be an absolute path")
    providers = _providers(p, data, tls is not None)

    paths = p.section(data, "paths", {"data_dir", "run_dir", "module_path", "schema_dir"})
    repl = p.section(data, "replication", {"retry", "accesslog_purge"})
    site = Site(
        suffix=suffix,
        base=base,
        pulse_suffix=pulse_suffix,
        admin_dn=admin_dn,
        replicator_dn=replicator_dn,
        replicator_password=password,
        providers=providers,
        operators=p.dn_list(data, "operators"),
        auditors=p.dn_list(data, "auditors"),
        tls=tls,
        data_dir=p.text(paths, "data_dir", "paths.", "/var/lib/ldap/ndsclust"),
        run_dir=p.text(paths, "run_dir", "paths.", "/var/run/slapd"),
        module_path=p.text(paths, "module_path", "paths.", "/usr/lib/ldap"),
        schema_dir=p.text(paths, "schema_dir", "paths.", "/etc/ldap/schema"),
        retry=p.text(repl, "retry", "replication.", "1 30 5 +"),
        accesslog_purge=p.text(repl, "accesslog_purge", "replication.", "14+00:00 01+00:00"),
    )
    for key in ("data_dir", "run_dir", "module_path", "schema_dir"):
        value = getattr(site, key)
        if value and not value.startswith("/"):
            p.bad(f"paths.{key}", f"{value!r} must be an absolute path")
    if not re.fullmatch(r"\d+ (\d+|\+)( \d+ (\d+|\+))*", site.retry or "1 +"):
        p.bad(
            "replication.retry",
            f"{site.retry!r} is not a syncrepl retry schedule "
            "('interval count ... interval +', e.g. '1 30 5 +')",
        )
    if not re.fullmatch(
        r"(\d+\+)?\d{2}:\d{2}(:\d{2})? (\d+\+)?\d{2}:\d{2}(:\d{2})?",
        site.accesslog_purge or "00:00 00:00",
    ):
        p.bad(
            "replication.accesslog_purge",
            f"{site.accesslog_purge!r} is not 'AGE PERIOD' as [dd+]hh:mm, e.g. '14+00:00 01+00:00'",
        )
    if p.found:
        raise ConfigError(source, p.found)
    return site


def load_site(path: str) -> Site:
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise ConfigError(path, [f"cannot read: {e.strerror}"]) from None
    except yaml.YAMLError as e:
        raise ConfigError(path, [f"not valid YAML: {e}"]) from None
    return parse_site(data, path)


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
) -> str:
    """The cn=config LDIF of provider ``server_id``.

    The keyword options serve the local lab, never deploy/: ``root_password`` lets the
    admin (then a DN of the suffix) bind with a password, ``durable=False`` turns off the
    fsync of every commit of a throwaway directory, ``config_managers`` are identities
    that manage cn=config besides the admin (the lab's user over ldapi://)."""
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
    return fill(
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
                for dn in dict.fromkeys((site.admin_dn, *config_managers))
            ),
            "ROOT_PASSWORD": root_password,
            "NO_SYNC": None if durable else "TRUE",
            "REPLICATOR_DN": site.replicator_dn,
            "DATA_DIR": site.data_dir,
            "RUN_DIR": site.run_dir,
            "MODULE_PATH": site.module_path,
            "SCHEMA_DIR": site.schema_dir,
            "NDSCLUST_SCHEMA": schema.render_ldif().strip(),
            "TLS_CA_FILE": tls.ca_file if tls else None,
            "TLS_CERT_FILE": tls.cert_file if tls else None,
            "TLS_KEY_FILE": tls.key_file if tls else None,
            "MIN_SSF": MIN_SSF if tls else None,
            "ACCESSLOG_PURGE": site.accesslog_purge,
            "MAIN_SYNCREPL": [f"olcSyncrepl: {line}" for line in main],
            "PULSE_SYNCREPL": [f"olcSyncrepl: {line}" for line in pulse],
            # A database without a replication agreement cannot be a multi-provider one.
            "MULTI_PROVIDER": "TRUE" if main else None,
        },
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


def seed_ldifs(site: Site, now: datetime) -> dict[str, str]:
    """The base entries, by file name: ``seed-main.ldif`` and ``seed-pulse.ldif``."""
    suffix_classes, suffix_attrs = naming_context(site.suffix)
    pulse_classes, pulse_attrs = naming_context(site.pulse_suffix)
    values: dict[str, dict[str, Value]] = {
        "seed-main.ldif": {
            "SUFFIX": site.suffix,
            "BASE": site.base,
            "BASE_OU": site.base.split(",", 1)[0].split("=", 1)[1].strip(),
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
