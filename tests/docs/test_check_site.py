"""docs/scripts/check_site.py: each check on tiny synthetic sites, both ways."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "docs" / "scripts" / "check_site.py"
main = runpy.run_path(str(SCRIPT))["main"]


def site(root: Path, pages: dict[str, str]) -> Path:
    """Write each page's body, wrapped in a minimal HTML document, under ``root``."""
    for name, body in pages.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"<!doctype html><html><head><title>t</title></head>"
                        f"<body>{body}</body></html>", encoding="utf-8")
    return root


def check(root: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    """The exit code and the printed lines of the checker run on ``root``."""
    code = main([str(root)])
    return code, capsys.readouterr().out.splitlines()


def assert_problem(root: Path, capsys: pytest.CaptureFixture[str], page: str, what: str) -> None:
    code, lines = check(root, capsys)
    assert code == 1
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{page}: ") and what in lines[0], lines


def test_clean_site_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site(tmp_path, {
        "index.html": '<h1 id="top">Home</h1><a href="api.html#fn">fn</a> <a href="#top">up</a>'
                      ' <a href="#">nothing</a> <a href="guide/">guide</a>'
                      ' <a href="api%20old.html?x=1#a%20b">old</a>'
                      ' <link href="_static/s.css?v=1"> <img src="_static/i.png">'
                      ' <p>Spectrum, spec and SPECTRUM are fine. The referenced machine too.</p>',
        "api.html": '<dl><dt id="fn">fn</dt></dl><a name="legacy"></a><a href="index.html#top">x</a>',
        "api old.html": '<p id="a b">spaces</p>',
        "guide/index.html": '<a href="../api.html#legacy">legacy</a>',
        "_static/s.css": "",
        "_static/i.png": "",
    })
    code, lines = check(tmp_path, capsys)
    assert code == 0
    assert lines == [f"{tmp_path}: 4 pages and 9 local links checked, no problems"]


def test_missing_page(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site(tmp_path, {"index.html": '<a href="nowhere.html">x</a>'})
    assert_problem(tmp_path, capsys, "index.html", "'nowhere.html': no such file")


def test_missing_anchor_on_another_page(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    site(tmp_path, {"index.html": '<a href="sub/api.html#gone">x</a>',
                    "sub/api.html": '<p id="here">api</p>'})
    assert_problem(tmp_path, capsys, "index.html", "no anchor #gone in api.html")


def test_missing_same_page_anchor(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site(tmp_path, {"index.html": '<p id="here"><a href="#there">x</a></p>',
                    "sub/page.html": '<a href="#there">x</a>'})
    code, lines = check(tmp_path, capsys)
    assert code == 1
    assert lines == ["index.html: broken link '#there': no anchor #there in index.html",
                     "sub/page.html: broken link '#there': no anchor #there in page.html"]


def test_directory_link_means_its_index(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    site(tmp_path, {"index.html": '<a href="foo/#in">foo</a>',
                    "foo/index.html": '<p id="in">foo</p>'})
    assert check(tmp_path, capsys)[0] == 0
    (tmp_path / "foo" / "index.html").unlink()
    (tmp_path / "foo" / "other.html").write_text("<p>other</p>")
    assert_problem(tmp_path, capsys, "index.html", "'foo/#in': no such file")


def test_external_links_ignored(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site(tmp_path, {"index.html": '<a href="https://example.org/x.html#y">a</a>'
                                  '<a href="http://example.org">b</a><a href="mailto:a@b.c">c</a>'
                                  '<img src="data:image/png;base64,AAAA">'
                                  '<script src="//cdn.example.org/m.js"></script>'
                                  '<a href="javascript:void(0)">d</a>'})
    code, lines = check(tmp_path, capsys)
    assert code == 0
    assert lines == [f"{tmp_path}: 1 pages and 0 local links checked, no problems"]


def test_raw_latex_in_prose(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site(tmp_path, {"index.html": r"<p>The slope \(x\) grows.</p>"})
    assert_problem(tmp_path, capsys, "index.html", r'raw LaTeX in text: "The slope \(x\) grows."')


@pytest.mark.parametrize("text", [r"use $$x$$", r"a \sigma b", r"\frac{1}{2}", r"a\_b",
                                  r"\[x\]", ":math:`x`"])
def test_other_raw_latex(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str) -> None:
    site(tmp_path, {"guide.html": f"<li><em>{text}</em></li>"})
    assert_problem(tmp_path, capsys, "guide.html", "raw LaTeX in text")


def test_latex_in_math_or_code_is_fine(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    site(tmp_path, {"index.html":
                    r'<p>See <span class="math notranslate nohighlight">\(x\)</span>.</p>'
                    r'<div class="math notranslate nohighlight">\[\sigma(a)\]</div>'
                    r"<pre>\(x\) $$y$$ \sigma</pre><p><code>\frac</code> <kbd>\n</kbd></p>"
                    r'<div class="highlight-python"><div class="highlight"><span>\(x\)</span>'
                    r"</div></div><script>var s = '\\(x\\)';</script>"
                    r"<style>p::before { content: '\\sigma' }</style><textarea>\(x\)</textarea>"
                    r"<p>then <br>  \(y\)</p>"})
    code, lines = check(tmp_path, capsys)
    assert code == 1  # only in the last paragraph: each exclusion ends with its element
    assert lines == [r'index.html: raw LaTeX in text: "\(y\)"']


def test_escaped_underscore_in_math(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site(tmp_path, {"index.html": r'<span class="math notranslate nohighlight">\(n\_bits\)</span>'})
    assert_problem(tmp_path, capsys, "index.html", r'escaped underscore \_ in math: "\(n\_bits\)"')


@pytest.mark.parametrize("body", ["<p>As the SPEC says.</p>",
                                  "<pre><span>x</span> = <span>SPEC</span>[0]</pre>",
                                  "<p>Timed on the <em>Reference</em> machine.</p>",
                                  "<p>Timed on the reference\n  machine.</p>"])
def test_internal_references(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                             body: str) -> None:
    site(tmp_path, {"perf.html": body})
    assert_problem(tmp_path, capsys, "perf.html", "internal reference")


def test_internal_references_in_scripts_are_fine(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    site(tmp_path, {"index.html": "<script>SPEC = 1</script><style>/* SPEC */</style>"
                                  "<p>SPECTRUM, spec, Spec, SPECs, reference-machine</p>"})
    assert check(tmp_path, capsys)[0] == 0


def test_skipped_directories(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = r'<a href="missing.html">x</a><p>\(x\) SPEC</p>'
    site(tmp_path, {"index.html": '<a href="_modules/m.html#f">source</a>',
                    "_static/page.html": bad, "_sources/page.html": bad,
                    "_modules/m.html": bad + '<div id="f">f</div>'})
    code, lines = check(tmp_path, capsys)
    assert code == 0
    assert lines == [f"{tmp_path}: 1 pages and 1 local links checked, no problems"]
