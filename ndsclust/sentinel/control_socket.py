"""The control socket's file (``ndsclust.sentinel.control``).

A Unix stream socket at the configured ``control_socket`` path, mode 0600. It belongs to
``programs.user`` when that is set (the programs' user can connect, and root), else to the
sentinel's own user: with the sentinel running as root, root only. The mode is set on the
socket before ``bind``, so the file never exists with looser permissions. A stale socket
file (left by a dead sentinel) is replaced; a live one (another sentinel listening) is
refused at start.

What the sentinel holds for its clients is bounded twice: per connection, one unfinished
line (``control_protocol.MAX_LINE``) and its unsent answers (``MAX_OUT``); over all
connections together, ``MAX_HELD`` bytes of both. Past ``MAX_HELD`` the connection that
holds the most is told so and closed (``over_budget``), so a flood of long lines on many
connections costs the sentinel at most ``MAX_HELD`` and leaves the small clients alone.
"""

from __future__ import annotations

import errno
import os
import pwd
import socket
import stat
from collections.abc import Mapping
from typing import TypeVar

from ndsclust.errors import ConfigError

K = TypeVar("K")

SOCKET_MODE = 0o600
MAX_PATH = 107  # sun_path holds 108 bytes with the terminating NUL
MAX_OUT = 4 << 20  # unsent bytes to one client beyond which it is dropped
MAX_HELD = 16 << 20  # unfinished lines and unsent answers of all clients together


def over_budget(held: Mapping[K, int], limit: int = MAX_HELD) -> tuple[K, str] | None:
    """The connection to close when everything ``held`` (connection -> bytes) exceeds
    ``limit``, the one holding the most, and what to tell it. None while within the limit."""
    total = sum(held.values())
    if total <= limit:
        return None
    victim = max(held, key=lambda k: held[k])
    return victim, (
        f"the sentinel holds {total} bytes for its clients, more than its limit of "
        f"{limit}; this connection held the most ({held[victim]}): closing it"
    )


def listen(path: str, user: str | None) -> tuple[socket.socket, tuple[int, int]]:
    """Bind, chmod, chown and listen on ``path``: the socket and its file's (device, inode).

    ConfigError when the path cannot be used.
    """
    problem = _path_problem(path)
    if problem:
        raise ConfigError("control_socket", [f"control_socket: {problem}"])
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        # Linux gives the socket file the mode of the socket inode: set before bind, the
        # file is never open to others, whatever the umask.
        os.fchmod(sock.fileno(), SOCKET_MODE)
        os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
        sock.bind(path)
        os.chmod(path, SOCKET_MODE)
        if user is not None:
            entry = pwd.getpwnam(user)
            if (entry.pw_uid, entry.pw_gid) != (os.geteuid(), os.getegid()):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        st = os.stat(path)
        sock.listen(128)
        sock.setblocking(False)
    except KeyError:
        sock.close()
        raise ConfigError(
            "control_socket",
            [f"programs.user: user {user!r} does not exist; it would own {path}"],
        ) from None
    except OSError as e:
        sock.close()
        raise ConfigError(
            "control_socket", [f"control_socket: cannot listen on {path}: {e.strerror or e}"]
        ) from None
    return sock, (st.st_dev, st.st_ino)


def _path_problem(path: str) -> str | None:
    """Why ``path`` cannot be bound now; removes a stale socket file left by a dead sentinel."""
    if len(os.fsencode(path)) > MAX_PATH:
        return f"{path} is longer than {MAX_PATH} bytes, the limit of a Unix socket path"
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISSOCK(st.st_mode):
        return f"{path} exists and is not a socket; remove it or choose another path"
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError as e:
        if e.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            return f"{path}: {e.strerror or e}"
        os.unlink(path)  # nobody listens: a sentinel that died left it
        return None
    finally:
        probe.close()
    return f"another process listens on {path} (is a sentinel already running?)"
