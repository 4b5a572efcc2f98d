"""The house of hub_ext: its rooms import one way, down the floors below, and the class paths the stack's
jupyterhub_config.py names are there.

Floors, from the ground up (a room imports only its own floor and those below it):
naming -> settings -> monitoring -> labs -> helpers -> backup -> auth -> spawn -> hub -> web -> authenticators."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FLOORS = [
    "naming",
    "settings",
    "monitoring",
    "labs",
    "helpers",
    "backup",
    "auth",
    "spawn",
    "hub",
    "web",
    "authenticators",
]


def room_of(path: Path, package: Path) -> str:
    rel = path.relative_to(package).with_suffix("")
    return rel.parts[0]


def imports(package: Path, name: str = "hub_ext") -> list[tuple[str, str, str]]:
    """(file, its room, the room it imports) for every import of `name`'s rooms inside `package`, lazy ones too."""
    found = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            modules = []
            if isinstance(node, ast.ImportFrom) and node.module and (node.module + ".").startswith(f"{name}."):
                parts = node.module.split(".")
                modules = [parts[1]] if len(parts) > 1 else [alias.name for alias in node.names]
            elif isinstance(node, ast.Import):
                modules = [a.name.split(".")[1] for a in node.names if a.name.startswith(f"{name}.")]
            found += [(path.relative_to(package.parent).as_posix(), room_of(path, package), m) for m in modules]
    return found


def upward(package: Path) -> list[str]:
    rank = {room: floor for floor, room in enumerate(FLOORS)}
    return [
        f"{file}: {room} imports {other}, a floor above it"
        for file, room, other in imports(package)
        if room in rank and other in rank and rank[other] > rank[room]
    ]


def test_every_room_is_on_a_floor():
    rooms = {room_of(p, ROOT / "hub_ext") for p in (ROOT / "hub_ext").rglob("*.py")} - {"__init__"}
    assert rooms == set(FLOORS)


def test_hub_ext_imports_run_one_way():
    assert upward(ROOT / "hub_ext") == []


def test_an_import_up_the_floors_is_found(tmp_path):
    package = tmp_path / "hub_ext"
    (package / "settings").mkdir(parents=True)
    (package / "settings" / "hub.py").write_text("def f():\n    from hub_ext.web.accounts import x\n")
    assert upward(package) == ["hub_ext/settings/hub.py: settings imports web, a floor above it"]


@pytest.mark.parametrize(
    "path", sorted(set(re.findall(r'"(hub_ext\.[\w.]+)"', (ROOT / "stack/jupyterhub_config.py").read_text())))
)
def test_the_class_paths_the_hub_config_names_import(path):
    module, _, name = path.rpartition(".")
    assert isinstance(getattr(importlib.import_module(module), name), type)


def label_literals(root: Path) -> list[str]:
    """Docker label names (naming.py's *_LABEL values) written as string literals outside hub_ext/naming.py, where
    they are declared."""
    from hub_ext import naming

    labels = {value for name, value in vars(naming).items() if name.endswith("_LABEL")}
    found = []
    for path in sorted([*(root / "hub_ext").rglob("*.py"), *(root / "hubforge").rglob("*.py")]):
        if path.name == "naming.py" and path.parent.name == "hub_ext":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in labels:
                found.append(f"{path.relative_to(root).as_posix()}:{node.lineno}: {node.value}")
    return found


def test_docker_label_names_live_only_in_naming(tmp_path):
    assert label_literals(ROOT) == []
    (tmp_path / "hub_ext").mkdir()
    (tmp_path / "hubforge").mkdir()
    (tmp_path / "hubforge" / "x.py").write_text('labels = {"hubforge.role": "tool"}\n')
    assert label_literals(tmp_path) == ["hubforge/x.py:1: hubforge.role"]
