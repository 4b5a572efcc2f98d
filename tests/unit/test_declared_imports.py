"""Every third-party module the project imports is declared, directly, in pyproject.toml.

A package installed on a machine by hand (or pulled in by something else today) hides a missing
dependency until a fresh install fails. This reads every import in the project's Python sources,
maps each top-level module to the distribution that provides it in this environment, and fails for
a module that no directly declared distribution provides.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[2]
# What runs on the host with the project installed (the images' own files are checked by their locks).
SOURCES = ["tasks.py", "hubforge", "hub_ext", "tests", "benchmarks", "stack", "images/lab/hubforge-notify/tests"]
LOCAL = {"hubforge", "hub_ext", "tests", "tasks", "conftest", "hubforge_notify"}


def canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared(pyproject: Path) -> set[str]:
    """Distributions named in [project] dependencies and every optional extra."""
    project = tomllib.loads(pyproject.read_text())["project"]
    requirements = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    return {canon(re.split(r"[\s;\[<>=!~(]", r.strip(), maxsplit=1)[0]) for r in requirements}


def imports(path: Path) -> list[tuple[str, int]]:
    """(top-level module, line) for every absolute import in one file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name.split(".")[0], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module.split(".")[0], node.lineno))
    return found


def python_files(root: Path, sources: list[str]) -> list[Path]:
    files = []
    for source in sources:
        path = root / source
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files += [p for p in sorted(path.rglob("*.py")) if "node_modules" not in p.parts]
    return files


def undeclared(root: Path, sources: list[str], local: set[str]) -> dict[str, list[str]]:
    """module -> where it is imported, for modules that no directly declared distribution provides."""
    wanted = declared(root / "pyproject.toml")
    providers = md.packages_distributions()
    missing: dict[str, list[str]] = {}
    for path in python_files(root, sources):
        for module, line in imports(path):
            if module in sys.stdlib_module_names or module in local or module == "__future__":
                continue
            dists = {canon(d) for d in providers.get(module, [])}
            if not dists & wanted:
                where = f"{path.relative_to(root)}:{line}"
                note = f" (provided by {', '.join(sorted(dists))})" if dists else " (not installed)"
                missing.setdefault(module + note, []).append(where)
    return missing


def test_every_import_is_declared_in_pyproject():
    missing = undeclared(ROOT, SOURCES, LOCAL)
    report = "\n".join(f"  {module}: {', '.join(places[:3])}" for module, places in sorted(missing.items()))
    assert not missing, (
        f"imported but not declared in pyproject.toml; add them to dependencies or the dev extra:\n{report}"
    )


def test_the_check_finds_an_undeclared_import(tmp_path):
    """The check itself can fail: a module that pytest brings along, but the project does not name."""
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "demo"\ndependencies = ["jinja2"]\n')
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text(
        "import os\nimport jinja2\nfrom . import b\nimport pluggy\nimport nosuchmodule_xyz\n"
    )
    missing = undeclared(tmp_path, ["pkg"], {"pkg"})
    assert set(missing) == {"pluggy (provided by pluggy)", "nosuchmodule_xyz (not installed)"}
    assert missing["pluggy (provided by pluggy)"] == ["pkg/a.py:4"]
