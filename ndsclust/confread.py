"""Reading a configuration file: YAML in, every problem collected with its path.

The one reader of the sentinel configuration (``ndsclust.config``) and of a site file
(``ndsclust.site``). ``load_yaml`` reads the file; a ``Reader`` walks the document and,
instead of stopping at the first problem, records each with its YAML path
(``timeouts.failover: ...``); ``Reader.check`` then raises one ``ConfigError`` listing them
all (docs/style.md section 6).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Collection, Mapping
from typing import Any, TypeVar

import yaml

from ndsclust.errors import ConfigError

T = TypeVar("T")

_SECONDS = re.compile(r"\s*([0-9.]+)\s*(ms|s)?\s*")


def load_yaml(path: str) -> Any:
    """The document in the file at ``path``; ConfigError saying why it cannot be read."""
    try:
        with open(path, encoding="utf-8") as f:
            # libyaml when present: it reads in linear time and bounds the nesting depth,
            # where the pure-Python loader recurses once per level.
            return yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except OSError as e:
        raise ConfigError(path, [f"cannot read: {e.strerror}"]) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(path, [f"{where}not valid YAML: {getattr(e, 'problem', e)}"]) from None
    except UnicodeDecodeError as e:
        raise ConfigError(path, [f"byte {e.start}: not UTF-8 text ({e.reason})"]) from None
    except RecursionError:
        raise ConfigError(path, ["not valid YAML: it nests too deeply"]) from None


def document(data: Any, source: str) -> Mapping[str, Any]:
    """``data`` when it is a mapping, as every configuration file holds; else ConfigError."""
    if not isinstance(data, Mapping):
        raise ConfigError(source, ["the file must hold a mapping (key: value lines)"])
    return data


class Reader:
    """Walks a loaded YAML document, recording problems with their paths instead of
    stopping at the first. ``path`` arguments are the prefix of ``key`` (``"timeouts."``)."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def bad(self, path: str, msg: str) -> None:
        self.problems.append(f"{path}: {msg}")

    def check(self, source: str) -> None:
        """Raise one ConfigError naming ``source`` and every problem recorded."""
        if self.problems:
            raise ConfigError(source, self.problems)

    def known(self, data: Mapping[str, Any], known: Collection[str], path: str = "") -> None:
        """Record every key of ``data`` that is not in ``known``."""
        for k in data:
            if k not in known:
                self.bad(f"{path}{k}", f"unknown key; allowed: {', '.join(sorted(known))}")

    def _present(
        self, data: Mapping[str, Any], key: str, path: str, required: bool, default: Any
    ) -> Any:
        """The value of ``key`` (``default`` when absent); a missing required one is a
        problem."""
        value = data.get(key, default)
        if value is None and required:
            self.bad(f"{path}{key}", "is missing")
        return value

    def section(
        self,
        data: Mapping[str, Any],
        key: str,
        path: str = "",
        *,
        required: bool = False,
        known: Collection[str] | None = None,
    ) -> Mapping[str, Any] | None:
        value = self._present(data, key, path, required, None)
        p = f"{path}{key}"
        if value is None:
            return None
        if not isinstance(value, Mapping):
            self.bad(p, f"must be a mapping, not {type(value).__name__}")
            return None
        if known is not None:
            self.known(value, known, f"{p}.")
        return value

    def string(
        self,
        data: Mapping[str, Any],
        key: str,
        path: str = "",
        *,
        required: bool = False,
        default: str | None = None,
    ) -> str | None:
        value = self._present(data, key, path, required, default)
        if value is None:
            return None
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            self.bad(f"{path}{key}", f"{value!r} must be a string")
            return None
        return str(value)

    def number(
        self,
        data: Mapping[str, Any],
        key: str,
        path: str,
        default: float,
        *,
        low: float,
        high: float,
    ) -> float:
        """Seconds: a number, or a string such as ``'500ms'`` or ``'2s'``."""
        value = data.get(key, default)
        if isinstance(value, str):
            m = _SECONDS.fullmatch(value)
            if m:
                try:
                    value = float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)
                except ValueError:
                    pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.bad(f"{path}{key}", f"{value!r} is not a number of seconds (e.g. 0.5, '500ms')")
            return default
        if not low <= float(value) <= high:
            self.bad(f"{path}{key}", f"{value} is out of range; allowed {low} to {high} seconds")
            return default
        return float(value)

    def integer(
        self, data: Mapping[str, Any], key: str, path: str, default: int, *, low: int, high: int
    ) -> int:
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.bad(f"{path}{key}", f"{value!r} must be a whole number from {low} to {high}")
            return default
        return value

    def flag(
        self, data: Mapping[str, Any], key: str, path: str, default: bool | None
    ) -> bool | None:
        value = data.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.bad(f"{path}{key}", f"{value!r} must be true or false")
            return default
        return value

    def string_list(self, data: Mapping[str, Any], key: str, path: str = "") -> list[str]:
        value = data.get(key, [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.bad(f"{path}{key}", "must be a list of strings")
            return []
        return list(value)

    def checked_list(
        self, data: Mapping[str, Any], key: str, path: str, check: Callable[[str], T]
    ) -> list[T]:
        """A list of strings, each through ``check``, which raises ValueError saying what
        is wrong with a value; the values it refuses are left out."""
        out: list[T] = []
        for i, value in enumerate(self.string_list(data, key, path)):
            try:
                out.append(check(value))
            except ValueError as e:
                self.bad(f"{path}{key}[{i}]", str(e))
        return out

    def address(self, value: str, path: str) -> str | None:
        host, sep, port = value.rpartition(":")
        try:
            ipaddress.ip_address(host.strip("[]"))
            if sep and 0 < int(port) < 65536:
                return value
        except ValueError:
            pass
        self.bad(path, f"{value!r} is not an address; write ip:port, e.g. 198.18.0.2:7946")
        return None
