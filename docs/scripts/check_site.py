"""Check a built HTML site for broken links, unrendered math and internal references.

A reader browsing the site offline must see rendered math, every link must resolve, and the
site must not refer to internal documents. For every page under ROOT (except ``_static/``,
``_sources/`` and viewcode's ``_modules/``) this checks that:

1. every local ``href``/``src`` of ``a``, ``link``, ``img`` and ``script`` names an existing file
   (``foo/`` meaning ``foo/index.html``), and that its ``#fragment``, if any, is the ``id`` (or
   ``<a name>``) of an element of the target HTML page;
2. the prose (text outside math, code, ``script``, ``style`` and ``textarea``) holds no raw LaTeX
   (``\\(``, ``\\)``, ``\\[``, ``\\]``, ``$$``, ``\\command``, ``\\_``) and no unrendered ``:math:``
   role, and no math element holds ``\\_``, which MathJax shows as a literal backslash;
3. no visible text, code included, says ``SPEC`` or ``reference machine``.

    python docs/scripts/check_site.py docs/_build/html

Prints one ``PAGE: problem`` line per problem and exits 1, or a one-line summary and exits 0.
"""

from __future__ import annotations

import argparse
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

SKIPPED_DIRS = {"_static", "_sources", "_modules"}
LINK_ATTRS = {"a": ("href",), "link": ("href",), "img": ("src",), "script": ("src",)}
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param",
        "source", "track", "wbr"}
HIDDEN = {"script", "style"}  # never visible
CODE = {"pre", "code", "kbd", "samp"}
# Tags that do not break a line of text: internal references are searched for across them.
INLINE = {"a", "abbr", "b", "bdi", "bdo", "cite", "code", "data", "dfn", "em", "i", "kbd",
          "mark", "q", "s", "samp", "small", "span", "strong", "sub", "sup", "time", "u", "var"}

RAW_LATEX = re.compile(r"\\[()\[\]]|\$\$|\\[A-Za-z]+|\\_|:math:")
ESCAPED_UNDERSCORE = re.compile(r"\\_")
INTERNAL = re.compile(r"\bSPEC\b|(?i:reference\s+machine)")


def excerpt(text: str, match: re.Match[str], width: int = 60) -> str:
    """About ``width`` characters of ``text`` around ``match``, whitespace collapsed, quoted."""
    start = max(0, match.start() - (width - len(match.group())) // 2)
    snippet = " ".join(text[start:start + width].split())
    return f'"{"..." if start else ""}{snippet}{"..." if start + width < len(text) else ""}"'


class PageParser(HTMLParser):
    """Collects a page's ids and local links and the problems in its text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[str] = []
        self.problems: list[str] = []
        self._stack: list[tuple[str, bool, bool, bool]] = []  # tag, hidden, math, code
        self._line: list[str] = []  # visible text since the last line-breaking tag

    def _flags(self) -> tuple[bool, bool, bool]:
        top = self._stack[-1] if self._stack else ("", False, False, False)
        return top[1], top[2], top[3]

    def _attrs(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if values.get("id"):
            self.ids.add(values["id"])
        if tag == "a" and values.get("name"):
            self.ids.add(values["name"])
        self.links += [values[a] for a in LINK_ATTRS.get(tag, ()) if a in values]
        if tag not in INLINE:
            self._flush()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._attrs(tag, attrs)
        if tag in VOID:
            return
        classes = dict(attrs).get("class") or ""
        hidden, math, code = self._flags()
        self._stack.append((
            tag,
            hidden or tag in HIDDEN,
            math or "math" in classes,
            code or tag in CODE or tag == "textarea"
            or any(c.startswith("highlight") for c in classes.split()),
        ))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._attrs(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag not in INLINE:
            self._flush()
        if any(entry[0] == tag for entry in self._stack):  # also closes unclosed children
            while self._stack.pop()[0] != tag:
                pass

    def handle_data(self, data: str) -> None:
        hidden, math, code = self._flags()
        if hidden:
            return
        self._line.append(data)
        if math and (m := ESCAPED_UNDERSCORE.search(data)):
            self.problems.append(f"escaped underscore \\_ in math: {excerpt(data, m)}")
        elif not math and not code and (m := RAW_LATEX.search(data)):
            self.problems.append(f"raw LaTeX in text: {excerpt(data, m)}")

    def _flush(self) -> None:
        text = "".join(self._line)
        self._line.clear()
        if m := INTERNAL.search(text):
            self.problems.append(f"internal reference {m.group()!r}: {excerpt(text, m)}")

    def close(self) -> None:
        super().close()
        self._flush()


def parse(path: Path) -> PageParser:
    """Parse one HTML file."""
    parser = PageParser()
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    parser.close()
    return parser


def check_site(root: Path) -> tuple[list[str], int, int]:
    """Problems as ``PAGE: what`` lines, the number of pages and of local links checked."""
    pages = sorted(p for p in root.rglob("*.html")
                   if not SKIPPED_DIRS & set(p.relative_to(root).parts[:-1]))
    parsed: dict[Path, PageParser] = {p.resolve(): parse(p) for p in pages}

    def ids_of(target: Path) -> set[str]:
        if target not in parsed:  # a page that is not checked itself, e.g. in _modules/
            parsed[target] = parse(target)
        return parsed[target].ids

    problems: list[str] = []
    n_links = 0
    for page in pages:
        name = page.relative_to(root).as_posix()
        result = parsed[page.resolve()]
        found = list(result.problems)
        for link in result.links:
            url = urlsplit(link)
            if url.scheme or link.startswith("//"):
                continue
            n_links += 1
            path, fragment = unquote(url.path), unquote(url.fragment)
            target = (page.parent / path).resolve() if path else page.resolve()
            if path.endswith("/") or target.is_dir():
                target = target / "index.html"
            if not target.is_file():
                found.append(f"broken link {link!r}: no such file")
            elif fragment and target.suffix in {".html", ".htm"} and fragment not in ids_of(target):
                found.append(f"broken link {link!r}: no anchor #{fragment} in {target.name}")
        problems += [f"{name}: {p}" for p in dict.fromkeys(found)]  # each once per page
    return problems, len(pages), n_links


def main(argv: list[str] | None = None) -> int:
    """Check the site, print the problems or a summary, and return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="the built site, e.g. docs/_build/html")
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        parser.error(f"{args.root} is not a directory")
    problems, n_pages, n_links = check_site(args.root)
    for problem in problems:
        print(problem)
    if problems:
        return 1
    print(f"{args.root}: {n_pages} pages and {n_links} local links checked, no problems")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
