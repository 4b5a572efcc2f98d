"""Generated reference pages: every `invoke` task with its flags, defaults and help, from tasks.py itself.

Written into the source tree at `builder-inited`, before Sphinx reads it, so the page can never disagree with the
tasks (reference/tasks.md is not committed)."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

from invoke import Task


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def task_reference() -> str:
    tasks = importlib.import_module("tasks")
    lines = [
        "# Tasks",
        "",
        "Generated from `tasks.py` at each docs build: every task, every flag, its default and its help.",
        "Run a task as `invoke NAME [FLAGS]`; `invoke --help NAME` prints the same.",
        "",
    ]
    for name, task in sorted((n, t) for n, t in vars(tasks).items() if isinstance(t, Task)):
        shown = name.replace("_", "-")
        doc = inspect.getdoc(task.body) or ""
        lines += [f"## `invoke {shown}`", "", doc, ""]
        parameters = [p for p in inspect.signature(task.body).parameters.values() if p.name != "c"]
        if not parameters:
            lines += ["No flags.", ""]
            continue
        lines += ["| flag | default | what it does |", "| --- | --- | --- |"]
        for p in parameters:
            default = "" if p.default is inspect.Parameter.empty else p.default
            shown_default = (
                "*(required)*"
                if p.default is inspect.Parameter.empty
                else ("*(off)*" if default is False else "*(none)*" if default is None else f"`{default}`")
            )
            text = str(task.help.get(p.name, "")).replace("|", "\\|").replace("\n", " ")
            name_shown = f"`{p.name}` (positional)" if p.name in (task.positional or []) else f"`{flag(p.name)}`"
            lines.append(f"| {name_shown} | {shown_default} | {text} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


BEGIN, END = "<!-- generated from hub_ext.settings.hub.SETTINGS: begin -->", "<!-- generated: end -->"


def settings_table() -> str:
    """The settings reference's table, one row a setting of hub_ext.settings.hub.SETTINGS, in its order."""
    from hub_ext.settings.hub import SETTINGS

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    def shown(value: str) -> str:
        if value == "":
            return "*(empty)*"
        return f"*{value}*" if value.startswith("(") else f"`{value}`"

    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for setting in SETTINGS:
        rows.append(f"| `{setting.name}` | {shown(setting.shown_default())} | {cell(setting.help)} |")
    return "\n".join([BEGIN, *rows, END])


def write_if_changed(target: Path, text: str) -> None:
    if not target.exists() or target.read_text() != text:  # an unchanged page keeps its time: no rebuild
        target.write_text(text)


def write_references(app) -> None:
    reference = Path(app.srcdir) / "reference"
    write_if_changed(reference / "tasks.md", task_reference())
    page = (reference / "settings.md").read_text()
    start, end = page.index(BEGIN), page.index(END) + len(END)
    write_if_changed(reference / "settings.md", page[:start] + settings_table() + page[end:])


def setup(app):
    app.connect("builder-inited", write_references)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
