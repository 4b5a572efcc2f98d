"""Sphinx configuration of hubforge's docs: MyST Markdown and the PyData theme, as JupyterHub's docs are written.

`invoke docs` builds it with warnings as errors. The task reference (reference/tasks.md) is generated from
tasks.py at each build by _ext/hubforge_reference.py."""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))
sys.path.insert(0, str(DOCS.parent))

project = "hubforge"
author = "the hubforge developers"
copyright = "2026, the hubforge developers"  # noqa: A001 -- Sphinx's name

extensions = ["myst_parser", "hubforge_reference"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_ext"]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
suppress_warnings = ["myst.strikethrough"]

html_theme = "pydata_sphinx_theme"
html_title = "hubforge"
html_static_path: list[str] = []
html_theme_options = {
    "github_url": "https://github.com/hubforge/hubforge",
    "navigation_with_keys": False,
    "show_toc_level": 2,
}
