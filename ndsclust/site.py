"""The site description of an ndsclust directory, read from a site file.

One ``Site`` describes the whole directory: suffixes, the providers in write-provider
order, the replication identity, the operators and auditors, TLS material, paths and
replication settings. ``parse_site`` checks a loaded site file completely and reports
every problem at once (docs/style.md section 6). ``ndsclust.slapd.render`` renders the
providers' configuration from it, for ``deploy/render.py`` and for the local lab alike.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ndsclust.confread import Reader, document, load_yaml
from ndsclust.pki import check_cluster

LDAPI_ROOT = "gidNumber=0+uidNumber=0,cn=peercred,cn=external,cn=auth"
MAX_SERVER_ID = 99  # syncrepl rids have three decimal digits: rid = base + server ID
_RDN = re.compile(r"^([a-z][a-z0-9-]*)=([^,=+\"\\<>;#]+)$")

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
    # The cluster name of the CA (``ndsclust pki init CLUSTER``): with it a sentinel may
    # bind with its server certificate (SASL EXTERNAL) instead of a password.
    certificate_cluster: str | None = None


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


def _text(
    r: Reader, data: Mapping[str, Any], key: str, path: str = "", default: str | None = None
) -> str:
    """A required string (with ``default`` when absent): "" when missing or not a string."""
    return r.string(data, key, path, required=True, default=default) or ""


def _dn(
    r: Reader, data: Mapping[str, Any], key: str, path: str = "", default: str | None = None
) -> str:
    value = _text(r, data, key, path, default)
    if not value:
        return ""
    try:
        return check_dn(value)
    except ValueError as e:
        r.bad(path + key, str(e))
        return ""


def _dn_list(r: Reader, data: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = data.get(key)
    if not isinstance(value, list) or not value:
        r.bad(key, "must list at least one DN (a groupOfNames needs a member)")
        return ()
    out = []
    for i, dn in enumerate(value):
        try:
            out.append(check_dn(str(dn)))
        except ValueError as e:
            r.bad(f"{key}[{i}]", str(e))
    return tuple(out)


def read_secret(path: str) -> str:
    """A password file's content without its final newline, as the sentinel reads it."""
    return Path(path).read_text(encoding="utf-8").rstrip("\n")


def _providers(p: Reader, data: Mapping[str, Any], tls: bool) -> tuple[Provider, ...]:
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
    data = document(data, source)
    p = Reader()
    p.known(data, SITE_KEYS)
    suffix = _dn(p, data, "suffix")
    pulse_suffix = _dn(p, data, "pulse_suffix", default="o=ndsclust-pulse")
    for key, dn in (("suffix", suffix), ("pulse_suffix", pulse_suffix)):
        if dn:
            try:
                naming_context(dn)
            except ValueError as e:
                p.bad(key, str(e))
    base = _dn(p, data, "base", default=f"ou=ndsclust,{suffix}" if suffix else None)
    if (
        base
        and suffix
        and (
            not normalize_dn(base).endswith("," + normalize_dn(suffix))
            or not normalize_dn(base).startswith("ou=")
        )
    ):
        p.bad("base", f"{base!r} must be ou=<name>,{suffix}: the cluster base lives in the suffix")
    admin_dn = _text(p, data, "admin_dn", default=LDAPI_ROOT)
    if '"' in admin_dn:
        p.bad("admin_dn", "must not contain '\"'")

    rep = p.section(data, "replicator", known={"dn", "password_file"}) or {}
    replicator_dn = _dn(p, rep, "dn", "replicator.", default=f"cn=replicator,{suffix}")
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
    pw_file = _text(p, rep, "password_file", "replicator.")
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
        t = (
            p.section(
                data, "tls", known={"ca_file", "cert_file", "key_file", "certificate_cluster"}
            )
            or {}
        )
        cluster = p.string(t, "certificate_cluster", "tls.")
        if cluster is not None:
            try:
                check_cluster(cluster)
            except ValueError as e:
                p.bad("tls.certificate_cluster", str(e))
        tls = Tls(
            _text(p, t, "ca_file", "tls."),
            _text(p, t, "cert_file", "tls."),
            _text(p, t, "key_file", "tls."),
            cluster,
        )
        for key in ("ca_file", "cert_file", "key_file"):
            value = getattr(tls, key)
            if value and not value.startswith("/"):
                p.bad(f"tls.{key}", f"{value!r} must be an absolute path")
    providers = _providers(p, data, tls is not None)

    paths = (
        p.section(data, "paths", known={"data_dir", "run_dir", "module_path", "schema_dir"}) or {}
    )
    repl = p.section(data, "replication", known={"retry", "accesslog_purge"}) or {}
    site = Site(
        suffix=suffix,
        base=base,
        pulse_suffix=pulse_suffix,
        admin_dn=admin_dn,
        replicator_dn=replicator_dn,
        replicator_password=password,
        providers=providers,
        operators=_dn_list(p, data, "operators"),
        auditors=_dn_list(p, data, "auditors"),
        tls=tls,
        data_dir=_text(p, paths, "data_dir", "paths.", "/var/lib/ldap/ndsclust"),
        run_dir=_text(p, paths, "run_dir", "paths.", "/var/run/slapd"),
        module_path=_text(p, paths, "module_path", "paths.", "/usr/lib/ldap"),
        schema_dir=_text(p, paths, "schema_dir", "paths.", "/etc/ldap/schema"),
        retry=_text(p, repl, "retry", "replication.", "1 30 5 +"),
        accesslog_purge=_text(p, repl, "accesslog_purge", "replication.", "14+00:00 01+00:00"),
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
    p.check(source)
    return site


def load_site(path: str) -> Site:
    return parse_site(load_yaml(path), path)
