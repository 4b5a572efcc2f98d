"""hub_ext's page templates compile, and the pages' one script opening gives the API helpers and then the page's own
statements, in a function of their own."""

from __future__ import annotations

from pathlib import Path

import pytest
from jinja2 import Environment, FileSystemLoader

from hub_ext.authenticators.native import TEMPLATES

OURS = sorted(path.name for path in Path(TEMPLATES).glob("*.html"))


def environment() -> Environment:
    return Environment(loader=FileSystemLoader(TEMPLATES))


@pytest.mark.parametrize("name", OURS)
def test_every_template_compiles(name):
    environment().get_template(name)


def test_the_page_script_gives_the_helpers_then_the_pages_statements_in_a_function():
    page = environment().from_string(
        '{% from "hubforge-script.html" import page_script with context %}'
        "{% call page_script() %}var mine = 1;{% endcall %}"
    )
    html = page.render(base_url="/base/hub/")
    assert html.count("function hubforgeCall") == 1 and '"/base/hub/api/hubforge/" + path' in html
    assert html.index("function hubforgeCall") < html.index("(function () {\nvar mine = 1;\n  })();")
