"""Options and helpers every subcommand shares: where the directory is, how to bind, output.
The live view that ``status --watch``, ``events --follow`` and the ``--wait`` of the request
verbs read is ``ndsclust.ldapstore.follow.Follower``.

Where the directory settings come from, first match wins: the command-line options, the
``NDSCLUST_*`` environment variables, the directory section of the sentinel configuration
(``--config FILE``, else ``$NDSCLUST_CONFIG``, else /etc/ndsclust/sentinel.yaml when it
exists), built-in defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import json
import logging
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from ndsclust import config as config_mod
from ndsclust.errors import ConfigError, EntryInvalid, NdsclustError
from ndsclust.ldapstore.connection import Credentials, Providers
from ndsclust.ldapstore.store import Store
from ndsclust.model import App, Event

log = logging.getLogger("ndsclust.cli")

DEFAULT_SUFFIX = "dc=ndsclust,dc=test"
DEFAULT_PULSE_SUFFIX = "o=ndsclust-pulse"
DEFAULT_CONNECT_TIMEOUT = 5.0
# How long one connection attempt to one provider may take.
PROVIDER_TIMEOUT = 2.0


def add_global_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("directory")
    g.add_argument(
        "--config",
        metavar="FILE",
        help="sentinel YAML configuration to take the directory settings from "
        "(default: $NDSCLUST_CONFIG, else /etc/ndsclust/sentinel.yaml if present); "
        "options and NDSCLUST_* variables given explicitly win over it",
    )
    g.add_argument(
        "--uri",
        action="append",
        metavar="URI",
        help="provider URI, repeat for several, in write-provider order "
        "(default: $NDSCLUST_URI, space-separated)",
    )
    g.add_argument(
        "--suffix",
        help="directory suffix holding the cluster "
        f"(default: $NDSCLUST_SUFFIX, else {DEFAULT_SUFFIX})",
    )
    g.add_argument(
        "--base",
        metavar="DN",
        help="cluster base entry; several clusters may share one directory "
        "(default: $NDSCLUST_BASE, else ou=ndsclust,<suffix>)",
    )
    g.add_argument(
        "--pulse-suffix",
        help="suffix of the pulse database "
        f"(default: $NDSCLUST_PULSE_SUFFIX, else {DEFAULT_PULSE_SUFFIX})",
    )
    g.add_argument("--bind-dn", "-D", help="bind DN ($NDSCLUST_BIND_DN)")
    g.add_argument(
        "--password-file",
        "-y",
        metavar="FILE",
        help="file holding the bind password ($NDSCLUST_PASSWORD_FILE)",
    )
    g.add_argument(
        "--sasl-external",
        "-Y",
        action="store_true",
        help="bind with SASL EXTERNAL (ldapi:// as root, or a TLS client certificate)",
    )
    g.add_argument(
        "--ca-file",
        metavar="FILE",
        help="CA certificate that signed the providers' certificates "
        "($NDSCLUST_CA_FILE); without it, the system's CAs",
    )
    g.add_argument(
        "--cert-file",
        metavar="FILE",
        help="client certificate, for SASL EXTERNAL over TLS ($NDSCLUST_CERT_FILE)",
    )
    g.add_argument(
        "--key-file", metavar="FILE", help="key of the client certificate ($NDSCLUST_KEY_FILE)"
    )
    g.add_argument(
        "--start-tls",
        "-Z",
        action="store_true",
        help="use StartTLS on ldap:// URIs ($NDSCLUST_START_TLS=1)",
    )
    g.add_argument(
        "--allow-plain-ldap",
        action="store_true",
        help="permit ldap:// without TLS, which is refused by default "
        "($NDSCLUST_ALLOW_PLAIN_LDAP=1); ldapi:// needs no TLS",
    )
    g.add_argument(
        "--connect-timeout",
        type=positive_float,
        metavar="SECONDS",
        default=DEFAULT_CONNECT_TIMEOUT,
        help="give up when no provider answers within this time (exit 3; "
        f"default {DEFAULT_CONNECT_TIMEOUT:g})",
    )
    p.add_argument("--verbose", "-v", action="store_true", help="log what happens to stderr")


def positive_float(value: str) -> float:
    """argparse type: a number of seconds greater than zero."""
    try:
        f = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not f > 0:
        raise argparse.ArgumentTypeError(f"{value!r} must be greater than 0")
    return f


def positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{value!r} must be at least 1")
    return n


def _env(name: str) -> str | None:
    v = os.environ.get(name)
    return v if v else None


def _env_flag(name: str) -> bool:
    return (_env(name) or "").lower() in ("1", "true", "yes", "on")


def load_config(args: argparse.Namespace) -> config_mod.Config | None:
    """The sentinel configuration the directory settings may come from, or None.

    Read once per command. A file that is named (``--config``, ``$NDSCLUST_CONFIG``) or present
    at the default path is validated as a whole, as the sentinel would: a broken one is a
    configuration error (exit 2), never silently half-used."""
    cached: config_mod.Config | bool | None = getattr(args, "_loaded_config", False)
    if cached is not False:
        return cached if isinstance(cached, config_mod.Config) else None
    path = getattr(args, "config", None) or _env("NDSCLUST_CONFIG")
    if path is None and os.path.exists(config_mod.DEFAULT_PATH):
        path = config_mod.DEFAULT_PATH
    loaded = config_mod.load(path) if path else None
    args._loaded_config = loaded
    return loaded


def _directory(args: argparse.Namespace) -> config_mod.DirectorySettings | None:
    cfg = load_config(args)
    return cfg.directory if cfg else None


def credentials(args: argparse.Namespace) -> Credentials:
    """How to bind. The identity (bind DN and password, or SASL EXTERNAL) and each TLS
    setting come from the options, else the NDSCLUST_* variables, else the configuration;
    TLS settings given on their own are added to the configuration's identity."""
    pw_file = args.password_file or _env("NDSCLUST_PASSWORD_FILE")
    bind_dn = args.bind_dn or _env("NDSCLUST_BIND_DN")
    ca_file = args.ca_file or _env("NDSCLUST_CA_FILE")
    cert_file = args.cert_file or _env("NDSCLUST_CERT_FILE")
    key_file = args.key_file or _env("NDSCLUST_KEY_FILE")
    start_tls = bool(args.start_tls) or _env_flag("NDSCLUST_START_TLS")
    allow_plain = bool(args.allow_plain_ldap) or _env_flag("NDSCLUST_ALLOW_PLAIN_LDAP")
    identity = bool(bind_dn or pw_file or args.sasl_external)
    explicit_tls = bool(ca_file or cert_file or key_file or start_tls or allow_plain)
    d = None if identity and explicit_tls else _directory(args)
    if d is not None:
        c = d.credentials
        if not identity:
            return dataclasses.replace(
                c,
                ca_file=ca_file or c.ca_file,
                cert_file=cert_file or c.cert_file,
                key_file=key_file or c.key_file,
                start_tls=start_tls or c.start_tls,
                allow_plain=allow_plain or c.allow_plain,
            )
        ca_file, cert_file, key_file = c.ca_file, c.cert_file, c.key_file
        start_tls, allow_plain = c.start_tls, c.allow_plain
    password = None
    if pw_file:
        try:
            with open(pw_file, encoding="utf-8") as f:
                password = f.read().rstrip("\n")
        except OSError as e:
            raise ConfigError("--password-file", [f"{pw_file}: {e.strerror}"]) from None
    return Credentials(
        bind_dn=bind_dn,
        password=password,
        sasl_external=bool(args.sasl_external),
        ca_file=ca_file,
        cert_file=cert_file,
        key_file=key_file,
        start_tls=start_tls,
        allow_plain=allow_plain,
    )


def uris(args: argparse.Namespace) -> list[str]:
    found = list(args.uri or [])
    if not found and _env("NDSCLUST_URI"):
        found = (_env("NDSCLUST_URI") or "").split()
    if not found and (d := _directory(args)) is not None:
        found = list(d.uris)
    if not found:
        raise ConfigError(
            "ndsclust",
            ["no provider given: use --uri URI (repeatable), NDSCLUST_URI, or --config FILE"],
        )
    return found


def store(args: argparse.Namespace) -> Store:
    suffix = args.suffix or _env("NDSCLUST_SUFFIX")
    base = args.base or _env("NDSCLUST_BASE")
    pulse = args.pulse_suffix or _env("NDSCLUST_PULSE_SUFFIX")
    d = None if suffix and base and pulse else _directory(args)
    if d is not None:
        # The configuration's base belongs to its suffix: not to one given on the command line.
        base = base or (d.base if suffix in (None, d.suffix) else None)
        suffix = suffix or d.suffix
        pulse = pulse or d.pulse_suffix
    providers = Providers(
        uris(args), credentials(args), timeout=PROVIDER_TIMEOUT, final_refusal=True
    )
    return Store(
        providers,
        suffix or DEFAULT_SUFFIX,
        base=base,
        pulse_base=pulse or DEFAULT_PULSE_SUFFIX,
        op_deadline=args.connect_timeout,
    )


def identity(args: argparse.Namespace) -> str:
    """Who this command binds as, in words."""
    c = credentials(args)
    if c.bind_dn:
        return c.bind_dn
    return "SASL EXTERNAL" if c.sasl_external else "anonymous"


def check_readable(args: argparse.Namespace, st: Store) -> None:
    """An empty answer means "nothing there" only if this bind can see the cluster base:
    slapd answers "no such object" where a bind may not look. NdsclustError (exit 1)
    otherwise."""
    if st.search(st.base, "(objectClass=*)", scope="BASE", attributes=["1.1"]):
        return
    raise NdsclustError(
        f"cannot read {st.base} as {identity(args)}: it does not exist, or this identity may "
        "not read it. Bind as a server (as root on a server the CLI reads "
        f"{config_mod.DEFAULT_PATH}), an operator or an auditor (-D DN -y FILE)"
    )


def operator() -> str:
    """Who runs this command, for the audit trail."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid{os.getuid()}"


def audit(
    st: Store, kind: str, *, tag: str | None = None, server: str | None = None, text: str = ""
) -> None:
    """Record what an operator did in ou=events, with the bind identity that did it (the
    directory's name for them, as in the entry's modifiersName; the Unix user after it).
    The change itself is already written, so a refused audit write (ACLs) is reported, not
    turned into a failure of the command."""
    try:
        who = st.whoami()
    except NdsclustError:
        who = "unknown"
    words = [f"by={who}", f"user={operator()}"] + ([text] if text else [])
    try:
        st.record_event(kind, tag=tag, text=" ".join(words))
    except NdsclustError as e:
        print(
            f"ndsclust: warning: could not record the event in {st.events_dn}: {e}", file=sys.stderr
        )
    if server:
        log.info("event=%s server=%s %s", kind, server, " ".join(words))
    else:
        log.info("event=%s tag=%s %s", kind, tag, " ".join(words))


# -- output ------------------------------------------------------------------------------


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


def print_json_line(data: Any) -> None:
    """One JSON document per line: what a script reads from a live (--watch) stream."""
    sys.stdout.write(json.dumps(data, sort_keys=True) + "\n")
    sys.stdout.flush()


def cell(value: Any) -> str:
    """One value as a table cell: lists comma-joined, booleans yes/no, nothing as '-'."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return "-"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value) or "-"
    return str(value) if value != "" else "-"


# Columns whose cells are short and lose their meaning when wrapped.
NO_WRAP = frozenset({"time", "kind", "level", "check", "server", "tag", "state", "pulse_age"})


def rich_table(title: str, columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> Any:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for c in columns:
        table.add_column(c, no_wrap=c in NO_WRAP)
    for r in rows:
        table.add_row(*(cell(r.get(c)) for c in columns))
    return table


def print_rows(title: str, columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> None:
    """A rich table on a terminal, tab-separated lines otherwise (docs/style.md section 9)."""
    if sys.stdout.isatty():
        from rich.console import Console

        Console().print(rich_table(title, columns, rows))
        return
    print("\t".join(columns))
    for r in rows:
        print("\t".join(cell(r.get(c)) for c in columns))


# -- time --------------------------------------------------------------------------------


def parse_time(value: str) -> float | None:
    """GeneralizedTime (``20261125120000.123456Z``, fraction optional) or the time part of
    an entryCSN, as seconds since the epoch; None when it is not one."""
    value = value.split("#", 1)[0]
    for fmt in ("%Y%m%d%H%M%S.%fZ", "%Y%m%d%H%M%SZ"):
        try:
            return datetime.strptime(value, fmt).replace(tzinfo=UTC).timestamp()
        except ValueError:
            continue
    return None


def parse_iso(value: str) -> float | None:
    """An ISO 8601 time as written by ``iso_time``, as seconds since the epoch."""
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def iso_time(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_time(e: Event) -> str:
    """An event's time in ISO 8601 (UTC), or as stored when it is not GeneralizedTime."""
    t = parse_time(e.time)
    return iso_time(t) if t is not None else e.time


def age_text(seconds: float) -> str:
    if seconds < 0:
        return f"in {age_text(-seconds)}"
    if seconds < 10:
        return f"{seconds:.1f}s"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size:.0f}{unit}"
    return f"{seconds:.0f}s"


def event_json(e: Event) -> dict[str, Any]:
    return {
        "id": e.id,
        "time": event_time(e),
        "kind": e.kind,
        "server": e.server,
        "tag": e.tag,
        "text": e.text,
    }


def app_json(a: App) -> dict[str, Any]:
    """Every field of an application, with stable keys (``app show``, ``status --json``)."""
    return {
        "tag": a.tag,
        "type": a.type.value,
        "host": a.host,
        "primary": a.primary,
        "backups": list(a.backups),
        "state": str(a.state),
        "request": str(a.request) if a.request else None,
        "auto_recover": a.auto_recover,
        "resources": sorted(a.resources),
        "command": shlex.join(a.command),
        "unload_command": shlex.join(a.unload_command) if a.unload_command else None,
        "health_command": shlex.join(a.health_command) if a.health_command else None,
        "marker": a.marker,
        "dn": a.dn,
        # Stacks (docs/design.md section 3, "Stacks").
        "requires": list(a.requires),
        "avoids": list(a.avoids),
        "service_addresses": list(a.addresses),
    }


def invalid_json(e: EntryInvalid) -> dict[str, str]:
    return {"dn": e.dn, "attribute": e.attribute, "problem": e.problem}


def add_follow_limits(p: argparse.ArgumentParser, flag: str, items: str) -> None:
    """--count and --timeout, which end a live view (``flag``: --follow, --watch)."""
    p.add_argument(
        "--count", type=positive_int, metavar="N", help=f"with {flag}: stop after N {items}"
    )
    p.add_argument(
        "--timeout",
        type=positive_float,
        metavar="SECONDS",
        help=f"with {flag}: stop after this many seconds",
    )


def want_wait(args: argparse.Namespace) -> bool:
    """--wait / --no-wait; by default wait when a person watches (stdout is a terminal)."""
    return bool(args.wait) if args.wait is not None else sys.stdout.isatty()


def add_wait_options(p: argparse.ArgumentParser, default_timeout: float = 30.0) -> None:
    w = p.add_mutually_exclusive_group()
    w.add_argument(
        "--wait",
        dest="wait",
        action="store_true",
        default=None,
        help="follow the directory until the sentinels acted, then print the "
        "outcome (default when stdout is a terminal)",
    )
    w.add_argument(
        "--no-wait", dest="wait", action="store_false", help="write the request and return at once"
    )
    p.add_argument(
        "--timeout",
        type=positive_float,
        default=default_timeout,
        metavar="SECONDS",
        help=f"how long --wait waits for the sentinels (default {default_timeout:g}); "
        "exit 1 when they did not act in time",
    )
