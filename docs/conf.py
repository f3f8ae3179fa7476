"""Sphinx configuration for binary-neurons."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import binary_neurons  # noqa: E402

project = "binary-neurons"
author = "binary-neurons developers"
copyright = "2026, binary-neurons developers"
release = binary_neurons.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.intersphinx",
    "sphinx.ext.doctest",
    "sphinx.ext.viewcode",
    "sphinx_copybutton",
    "myst_parser",
    # A copy of MathJax 3 in the built site, so that math renders with no network.
    "sphinx-mathjax-offline",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
templates_path = ["_templates"]

autosummary_generate = True
autodoc_default_options = {
    "members": True,
    "show-inheritance": True,
    "exclude-members": "extra_repr",
}
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_custom_sections = [("Shape", "params_style")]



def _resolves(url: str) -> bool:
    host = url.split("/")[2]
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return False
    return True


# Inventories are fetched only from hosts that resolve: CI builds offline with -W, where an
# unreachable inventory would be a warning; online builds get the cross-references.
_INVENTORIES = {
    "python": "https://docs.python.org/3",
    "torch": "https://docs.pytorch.org/docs/stable",
}
intersphinx_mapping = {
    name: (url, None) for name, url in _INVENTORIES.items() if _resolves(url)
}
intersphinx_timeout = 5

myst_heading_anchors = 3
# $...$ and $$...$$ math in the Markdown pages (the BinaryGAN example's README among them).
myst_enable_extensions = ["dollarmath"]

html_theme = "furo"
html_title = f"binary-neurons {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]

copybutton_prompt_text = r">>> |\.\.\. |\$ "
copybutton_prompt_is_regexp = True

doctest_global_setup = "import torch\nimport binary_neurons as bn\ntorch.manual_seed(0)"



def _draw_figures(app) -> None:
    sys.path.insert(0, str(Path(__file__).parent / "scripts"))
    import estimator_figures

    estimator_figures.main(Path(app.srcdir) / "generated" / "figures")


def setup(app):
    app.connect("builder-inited", _draw_figures)
