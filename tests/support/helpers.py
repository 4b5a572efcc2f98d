"""Test helpers shared by every tier: the one polling wait, and reading the Grafana dashboard's metrics."""

from __future__ import annotations

import io
import json
import re
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
# Code for a lab's kernel: a web app of the user's own on port 8050 (for jupyter-server-proxy's /proxy/8050/)
WEB_APP = (
    "import subprocess; subprocess.Popen(['python3', '-m', 'http.server', '8050', '--bind', '127.0.0.1'], "
    "cwd='/tmp', stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); print('started')"
)


def positive(raw: str) -> int:
    """A benchmark's count flag (argparse's type): a whole number of 1 or more."""
    import argparse

    value = int(raw)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {raw!r}")
    return value


def wait_until(check: Callable[[], T], timeout: float, what: str, interval: float = 0.5) -> T:
    """Poll `check` until it returns something truthy; fail with `what` and the last value or error."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = check()
            if value:
                return value
            last = value
        except Exception as exc:  # noqa: BLE001 -- a failing probe is "not yet"; keep the reason
            last = exc
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


METRIC_IN_EXPR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{")
SAMPLE_SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")


def metric_family(name: str) -> str:
    """A Prometheus sample or family name without its type suffix (`x_bucket`, `x_total` -> `x`)."""
    for suffix in SAMPLE_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def dashboard_metric_families(path: Path) -> set[str]:
    """Every metric family that a Grafana dashboard's panel queries select."""
    panels = json.loads(path.read_text())["panels"]
    exprs = [target["expr"] for panel in panels for target in panel.get("targets", [])]
    return {metric_family(name) for expr in exprs for name in METRIC_IN_EXPR.findall(expr)}


SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


def dashboard_selections(path: Path) -> list[tuple[str, str, set[str]]]:
    """(panel title, sample name, the label names the expression uses with it: matched or grouped by) for every
    series selector of a Grafana dashboard whose expression selects one series name (as every panel here does)."""
    found = []
    for panel in json.loads(path.read_text())["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            selectors = SELECTOR.findall(expr)
            grouped = {name.strip() for names in GROUPING.findall(expr) for name in names.split(",") if name.strip()}
            for name, matchers in selectors:
                found.append((panel["title"], name, set(MATCHER.findall(matchers)) | grouped))
    return found


def rootfs_tar(files: dict[str, bytes], links: dict[str, str] | None = None) -> io.BytesIO:
    """A root filesystem as `docker export` streams it: paths without a leading /, hard links to earlier files."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.LNKTYPE, target
            archive.addfile(info)
    out.seek(0)
    return out


def docs_extension():
    """docs/_ext/hubforge_reference.py, the Sphinx extension that writes the generated reference pages (docs/_ext
    is not a package, so it is loaded by path)."""
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "docs/_ext/hubforge_reference.py"
    spec = importlib.util.spec_from_file_location("hubforge_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
