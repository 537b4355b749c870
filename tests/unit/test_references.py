"""Every reference in the repository's text points at something that exists: paths under the
checkout's top directories, Markdown file names and relative links, and the numbered
citations of the docs (docs/design.md sections and invariants, docs/style.md sections,
docs/platform.md facts). A file moved, renamed or renumbered without its references fails
here, naming the file and line that still cite it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCANNED_DIRS = ("ndsclust", "tools", "tests", "deploy", "docs", "schema", ".ci")
SCANNED_FILES = ("README.md", "Makefile", "pyproject.toml")
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".in", ".service", ".sh", ".toml", ".txt", ""}

# A path starting at one of the checkout's top directories, not inside a longer path
# (/etc/ndsclust/...) or a word; `*` as in tests/unit/test_fuzz_*.py is a glob.
PATH = re.compile(
    r"(?<![\w./~$*-])((?:docs|deploy|tools|tests|schema|ndsclust|\.ci)/[\w.*/-]*[\w*])"
)
MD_NAME = re.compile(r"(?<![\w./-])([\w-]+\.md)\b")
MD_LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")
NUMBERS = r"(\d+(?:(?:, |,| and |–|-)\d+)*)"
CITATION = re.compile(
    r"(docs/(?:design|style|platform)\.md)\)?,? (sections?|facts?|invariants?) " + NUMBERS
)
INVARIANT = re.compile(r"\binvariants? " + NUMBERS)


def scanned() -> Iterator[Path]:
    for name in SCANNED_FILES:
        yield ROOT / name
    for top in SCANNED_DIRS:
        for path in sorted((ROOT / top).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix in TEXT_SUFFIXES:
                yield path


def lines() -> Iterator[tuple[Path, int, str]]:
    for path in scanned():
        try:
            text = path.read_text()
        except (UnicodeDecodeError, FileNotFoundError):
            continue
        for n, line in enumerate(text.splitlines(), 1):
            yield path, n, line


def numbers(text: str) -> list[int]:
    """``4``, ``12 and 13``, ``1–2``, ``4, 6`` as the numbers they name (a range whole)."""
    found: list[int] = []
    for part in re.split(r", |,| and ", text):
        low, _, high = part.replace("–", "-").partition("-")
        found.extend(range(int(low), int(high or low) + 1))
    return found


def numbered(doc: str) -> dict[str, set[int]]:
    """What each numbered citation of ``doc`` may name: its ``## N.`` sections, the
    ``**N.`` facts of docs/platform.md, the invariants listed after **The invariants.**"""
    text = (ROOT / doc).read_text()
    invariants = text.partition("**The invariants.**")[2].partition("\n## ")[0]
    return {
        "section": {int(n) for n in re.findall(r"(?m)^## (\d+)\.", text)},
        "fact": {int(n) for n in re.findall(r"(?m)^\*\*(\d+)\.", text)},
        "invariant": {int(n) for n in re.findall(r"(?m)^(\d+)\. \*\*", invariants)},
    }


def where(path: Path, n: int) -> str:
    return f"{path.relative_to(ROOT)}:{n}"


def test_every_path_named_exists() -> None:
    missing = [
        f"{where(path, n)} names {ref}, which does not exist"
        for path, n, line in lines()
        for ref in PATH.findall(line)
        if not (any(ROOT.glob(ref)) if "*" in ref else (ROOT / ref).exists())
    ]
    assert not missing, "\n".join(missing)


def test_every_markdown_file_named_exists() -> None:
    """A bare name such as INSTALL.md must be some file of the checkout (deploy/INSTALL.md);
    Markdown links resolve from the file that holds them."""
    names = {p.name for top in SCANNED_DIRS for p in (ROOT / top).rglob("*.md")}
    names |= {p.name for p in ROOT.glob("*.md")}
    missing = [
        f"{where(path, n)} names {name}, which no file of the checkout is called"
        for path, n, line in lines()
        for name in MD_NAME.findall(line)
        if name not in names
    ]
    missing += [
        f"{where(path, n)} links to {link}, which does not exist"
        for path, n, line in lines()
        if path.suffix == ".md"
        for link in MD_LINK.findall(line)
        if "://" not in link and not (path.parent / link).exists()
    ]
    assert not missing, "\n".join(missing)


def test_every_numbered_citation_names_a_number_the_doc_has() -> None:
    docs = {doc: numbered(doc) for doc in ("docs/design.md", "docs/style.md", "docs/platform.md")}
    missing = []
    for path, n, line in lines():
        cited = [(doc, kind.rstrip("s"), nums) for doc, kind, nums in CITATION.findall(line)]
        cited += [("docs/design.md", "invariant", nums) for nums in INVARIANT.findall(line)]
        for doc, kind, nums in cited:
            for number in numbers(nums):
                if number not in docs[doc][kind]:
                    missing.append(f"{where(path, n)} cites {doc} {kind} {number}, which it lacks")
    assert not missing, "\n".join(missing)


def test_the_scan_sees_the_citations() -> None:
    """The patterns above match the repository's way of citing, so the checks are not
    vacuous."""
    text = [line for _, _, line in lines()]
    assert sum(len(PATH.findall(line)) for line in text) > 100
    assert sum(len(CITATION.findall(line)) for line in text) > 50
    assert numbers("12 and 13") == [12, 13] and numbers("1–3") == [1, 2, 3]
    assert numbered("docs/platform.md")["fact"] >= {1, 10, 12}
    assert numbered("docs/design.md")["invariant"] >= {1, 2, 3, 4}
