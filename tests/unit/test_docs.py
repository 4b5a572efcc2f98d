"""The docs site: its generated reference pages are what the code says, and every page is in the table of contents."""

from __future__ import annotations

import re
from pathlib import Path

from ..support.helpers import docs_extension

ROOT = Path(__file__).resolve().parents[2]


hubforge_reference = docs_extension()


def test_the_task_reference_is_generated_from_tasks_py():
    committed = (ROOT / "docs/reference/tasks.md").read_text()
    assert committed == hubforge_reference.task_reference(), "docs/reference/tasks.md is stale: run `invoke docs`"


def test_every_task_and_flag_is_in_the_reference():
    from invoke import Task

    import tasks

    reference = hubforge_reference.task_reference()
    for name, task in vars(tasks).items():
        if isinstance(task, Task):
            assert f"## `invoke {name.replace('_', '-')}`" in reference
            for flag in task.help:
                assert f"`--{flag.replace('_', '-')}`" in reference or f"`{flag}` (positional)" in reference, (
                    name,
                    flag,
                )


def test_every_page_is_in_a_table_of_contents():
    index = (ROOT / "docs/index.md").read_text()
    listed = set(re.findall(r"^([a-z/-]+)$", index, re.M))
    pages = {
        p.relative_to(ROOT / "docs").with_suffix("").as_posix()
        for p in (ROOT / "docs").rglob("*.md")
        if "_build" not in p.parts
    } - {"index"}
    assert pages == listed


def test_the_readme_is_a_front_door_and_its_links_exist():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 200
    for link in re.findall(r"\]\(((?:docs/)[^)#]+)\)", readme):
        assert (ROOT / link).exists(), link
