"""Re-seed one provider's cluster database from the write provider (docs/design.md invariant 3,
"Anti-entropy"; the operator's view in docs/operating.md, "When providers differ").

What anti-entropy cannot repair through the write provider is repaired by replacing the odd
provider's copy of the main database: offline, with its slapd stopped, from an export of the
write provider that keeps every entry's entryUUID and entryCSN. Reloaded this way the copy is
the same entries as the write provider's (as if replicated), its contextCSN is computed from
them (``slapadd -w``), and replication resumes from there with whatever was written since.
An online per-entry fix on the odd provider is not safe: a delete or add there is itself
replicated to its peers, so it would remove or duplicate the authoritative entry.

The export needs an identity that reads every attribute (passwords included): the
replication identity or the directory's admin; the reload needs the provider's ``slapd.d``
and runs where that provider's files are.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import ldap3

from ndsclust.errors import ProviderUnreachable, StoreError
from ndsclust.ldapstore.connection import Credentials, open_connection

# Kept by the export so the reload is the same entries, not look-alikes (slapadd accepts them).
KEPT_OPERATIONAL = (
    "entryUUID",
    "entryCSN",
    "createTimestamp",
    "creatorsName",
    "modifyTimestamp",
    "modifiersName",
)


def _line(attr: str, value: bytes) -> str:
    try:
        text = value.decode("utf-8")
        safe = text.isprintable() and not text.startswith((" ", ":", "<")) and text == text.strip()
    except UnicodeDecodeError:
        safe = False
    if safe:
        return f"{attr}: {text}"
    return f"{attr}:: {base64.b64encode(value).decode()}"


def to_ldif(found: Sequence[tuple[str, Mapping[str, Sequence[bytes]]]]) -> str:
    """Entries as LDIF, parents before children (slapadd needs them in that order)."""
    blocks = []
    for dn, attrs in sorted(found, key=lambda e: (e[0].count(","), e[0].lower())):
        lines = [_line("dn", dn.encode())]
        for a in sorted(attrs, key=lambda a: (a.lower() != "objectclass", a.lower())):
            lines += [_line(a, bytes(v)) for v in attrs[a]]
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


def export(conn: ldap3.Connection, suffix: str) -> str:
    """The whole main database under ``suffix`` through ``conn`` as LDIF for slapadd. The
    bind must read every attribute (the replication identity or the admin): what it may not
    read is missing from the reload."""
    found = conn.extend.standard.paged_search(
        suffix,
        "(objectClass=*)",
        search_scope=ldap3.SUBTREE,
        dereference_aliases=ldap3.DEREF_NEVER,
        attributes=["*", *KEPT_OPERATIONAL],
        paged_size=500,
        generator=True,
    )
    entries = [
        (str(e["dn"]), dict(e["raw_attributes"]))
        for e in found
        if e.get("type") == "searchResEntry"
    ]
    return to_ldif(entries)


def export_from(uri: str, creds: Credentials, suffix: str) -> str:
    """``export`` through a connection of its own to the provider ``uri``."""
    conn = open_connection(uri, creds, timeout=10.0)
    try:
        return export(conn, suffix)
    finally:
        conn.unbind()


def answers(uri: str, creds: Credentials) -> bool:
    """Whether the provider ``uri`` accepts a bind now (a provider to reload must not)."""
    try:
        open_connection(uri, creds, timeout=1.0).unbind()
    except ProviderUnreachable:
        return False
    return True


def db_directory(conf_dir: Path, suffix: str) -> Path:
    """The olcDbDirectory of the database holding ``suffix``, from the provider's slapd.d."""
    out = subprocess.run(
        ["slapcat", "-F", str(conf_dir), "-n", "0", "-a", f"(olcSuffix={suffix})"],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise StoreError(f"slapcat -F {conf_dir} -n 0: {out.stderr.strip()}")
    for line in out.stdout.splitlines():
        if line.lower().startswith("olcdbdirectory:"):
            return Path(line.split(":", 1)[1].strip())
    raise StoreError(f"{conf_dir}: no database with olcSuffix {suffix}")


def reload(conf_dir: Path, suffix: str, ldif: str) -> tuple[Path, float]:
    """Replace the database of ``suffix`` with ``ldif``; slapd must be stopped. The old files
    are kept beside it (``<dir>.before-reseed-<time>``); returns that path and the seconds
    slapadd took."""
    db = db_directory(conf_dir, suffix)
    kept = db.with_name(f"{db.name}.before-reseed-{int(time.time())}")
    shutil.copytree(db, kept)
    for f in ("data.mdb", "lock.mdb"):
        (db / f).unlink(missing_ok=True)
    t0 = time.monotonic()
    out = subprocess.run(
        ["slapadd", "-q", "-w", "-F", str(conf_dir), "-b", suffix],
        input=ldif,
        capture_output=True,
        text=True,
        check=False,
    )
    took = time.monotonic() - t0
    if out.returncode != 0:
        for f in ("data.mdb", "lock.mdb"):
            (db / f).unlink(missing_ok=True)
            if (kept / f).exists():
                shutil.copy2(kept / f, db / f)
        raise StoreError(f"slapadd into {db}: {out.stderr.strip()[-500:]} (old files restored)")
    return kept, took
