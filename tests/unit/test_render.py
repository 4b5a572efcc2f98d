"""Rendering: deterministic, strict about variables, and confined to declared templates."""

from __future__ import annotations

from pathlib import Path

import pytest

from hubforge.errors import HubforgeError
from hubforge.imagebuild.builder import render_variables, template_texts
from hubforge.imagebuild.targets import Graph
from hubforge.render import render

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["hub", "lab", "lab-datascience", "gpu-probe"])
def test_rendering_is_deterministic_and_complete(name):
    target = Graph().targets[name]
    texts = template_texts(ROOT, target)
    first = render(texts, target.template, render_variables(target, "hubforge/base:abc"))
    second = render(dict(reversed(list(texts.items()))), target.template, render_variables(target, "hubforge/base:abc"))
    assert first == second
    assert "FROM hubforge/base:abc AS system" in first
    assert "{{" not in first and "{%" not in first
    # labels come last, sorted, so a label change never busts the layer cache of the steps above
    label_lines = [i for i, line in enumerate(first.splitlines()) if line.startswith("LABEL ")]
    assert label_lines and label_lines[-1] == len(first.rstrip().splitlines()) - 1
    assert 'org.opencontainers.image.licenses="BSD-3-Clause"' in first


INSTRUCTIONS = {
    "FROM",
    "RUN",
    "COPY",
    "ENV",
    "ARG",
    "LABEL",
    "USER",
    "WORKDIR",
    "EXPOSE",
    "VOLUME",
    "HEALTHCHECK",
    "ENTRYPOINT",
    "CMD",
    "SHELL",
    "STOPSIGNAL",
}


@pytest.mark.parametrize("name", ["hub", "lab", "lab-datascience", "gpu-probe", "registry", "idp"])
def test_every_logical_line_is_an_instruction(name):
    """An include that ends in a newline splits a RUN in two, which only the daemon would notice otherwise."""
    target = Graph().targets[name]
    text = render(template_texts(ROOT, target), target.template, render_variables(target, "p"))
    logical, current = [], ""
    for line in text.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line.rstrip("\\") + " "
        if not line.endswith("\\"):
            logical.append(current.strip())
            current = ""
    assert not current, "a line continues past the end of the file"
    assert [line for line in logical if line.split()[0] not in INSTRUCTIONS] == []


@pytest.mark.parametrize("name", ["hub", "lab", "gpu-probe"])
def test_no_add_and_a_non_root_user(name):
    target = Graph().targets[name]
    text = render(template_texts(ROOT, target), target.template, render_variables(target, "p"))
    instructions = [line.split()[0] for line in text.splitlines() if line and not line.startswith((" ", "#"))]
    assert "ADD" not in instructions
    final = text[text.rindex("FROM scratch") :]
    assert "\nUSER 1000:1000\n" in final or "\nUSER 65534:65534\n" in final


def test_missing_variable_names_variable_and_template():
    with pytest.raises(HubforgeError, match=r"template t\.j2: variable missing: 'parent' is undefined"):
        render({"t.j2": "FROM {{ parent }}\n"}, "t.j2", {})


def test_undeclared_include_is_refused():
    with pytest.raises(HubforgeError, match="includes secret.j2, which its target does not declare"):
        render({"t.j2": '{% include "secret.j2" %}'}, "t.j2", {})


def test_syntax_error_names_the_line():
    with pytest.raises(HubforgeError, match=r"t\.j2:2: "):
        render({"t.j2": "FROM x\n{% if %}\n"}, "t.j2", {})
