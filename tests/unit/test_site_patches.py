"""The lab's source patches (images/lab/site-patches.json) fit the pinned JupyterHub exactly, and keep its behaviour."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("patch_site", ROOT / "images/_shared/patch_site.py")
patch_site = importlib.util.module_from_spec(_spec)  # a build script, not a package: loaded from its path
_spec.loader.exec_module(patch_site)

PATCHES = json.loads((ROOT / "images/lab/site-patches.json").read_text())
# JupyterHub's patches are tried here against the dev extra's copy; the others (packages of the lab alone) fit or stop
# the image's build, and tests/images checks what they change in the built lab.
HUB_PATCHES = [patch for patch in PATCHES if patch["file"].startswith("jupyterhub/")]


def test_each_text_must_be_found_exactly_once(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mod.py").write_text("import a\nimport a\nvalue = 1\n")
    with pytest.raises(patch_site.PatchError, match="found it 2 times"):
        patch_site.apply([{"file": "pkg/mod.py", "replace": [["import a\n", ""]]}], tmp_path)
    with pytest.raises(patch_site.PatchError, match="found it 0 times"):
        patch_site.apply([{"file": "pkg/mod.py", "replace": [["import b\n", ""]]}], tmp_path)
    with pytest.raises(patch_site.PatchError, match="no such file"):
        patch_site.apply([{"file": "pkg/gone.py", "replace": [["x", "y"]]}], tmp_path)
    assert (tmp_path / "pkg" / "mod.py").read_text() == "import a\nimport a\nvalue = 1\n"  # nothing half-done


def test_nothing_is_written_unless_every_patch_fits(tmp_path):
    (tmp_path / "one.py").write_text("x = 1\n")
    (tmp_path / "two.py").write_text("y = 2\n")
    with pytest.raises(patch_site.PatchError):
        patch_site.apply(
            [
                {"file": "one.py", "replace": [["x = 1", "x = 10"]]},
                {"file": "two.py", "replace": [["z = 3", "z = 30"]]},
            ],
            tmp_path,
        )
    assert (tmp_path / "one.py").read_text() == "x = 1\n"


def test_the_patched_file_gets_fresh_bytecode(tmp_path):
    (tmp_path / "mod.py").write_text("value = 1\n")
    assert patch_site.apply([{"file": "mod.py", "replace": [["value = 1", "value = 2"]]}], tmp_path) == ["mod.py"]
    assert list((tmp_path / "__pycache__").glob("mod.*.pyc"))


def pinned_jupyterhub() -> str:
    lock = (ROOT / "images/lab/requirements.lock").read_text()
    return re.search(r"^jupyterhub==(\S+)", lock, re.M).group(1)


@pytest.fixture(scope="module")
def patched_site(tmp_path_factory) -> Path:
    """A copy of this machine's JupyterHub (the version the lab pins), with the lab's patches applied."""
    installed = importlib.metadata.version("jupyterhub")
    assert installed == pinned_jupyterhub(), (
        f"the dev extra's jupyterhub {installed} differs from the lab's lock {pinned_jupyterhub()}: align them"
    )
    import jupyterhub

    site = tmp_path_factory.mktemp("site")
    shutil.copytree(Path(jupyterhub.__file__).parent, site / "jupyterhub")
    assert patch_site.apply(HUB_PATCHES, site) == sorted(p["file"] for p in HUB_PATCHES)
    return site


def run_python(site: Path, code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip()


def test_the_single_user_server_no_longer_loads_the_hub_database_layers(patched_site):
    loaded = run_python(
        patched_site,
        "import sys, jupyterhub.singleuser.extension, jupyterhub.services.auth; "
        "print(sorted(m for m in ('sqlalchemy', 'alembic', 'jupyterhub.orm') if m in sys.modules))",
    )
    assert loaded == "[]"
    stock = run_python(
        Path("/nonexistent"), "import sys, jupyterhub.singleuser.extension; print('sqlalchemy' in sys.modules)"
    )
    assert stock == "True"  # the patch is what makes the difference


def test_the_hub_still_recognises_its_health_checks_and_scopes(patched_site):
    out = run_python(
        patched_site,
        "\n".join(
            [
                "from jupyterhub import log, scopes, orm",
                "from jupyterhub.handlers.pages import HealthCheckHandler",
                "print(log._health_check_handlers() == (HealthCheckHandler,))",
                "print(scopes._intersect_expanded_scopes({'read:users'}, {'read:users', 'admin:users'}) == "
                "{'read:users'})",
                "print(scopes.orm.User is orm.User)",
            ]
        ),
    )
    assert out.splitlines() == ["True", "True", "True"]


def test_database_errors_are_still_caught_and_others_still_raised(patched_site):
    out = run_python(
        patched_site,
        "\n".join(
            [
                "import asyncio",
                "from sqlalchemy.exc import OperationalError",
                "from jupyterhub.utils import catch_db_error",
                "class Handler:",
                "    rolled = False",
                "    class log:",
                "        exception = staticmethod(lambda *a: None)",
                "    class db:",
                "        rollback = staticmethod(lambda: setattr(Handler, 'rolled', True))",
                "@catch_db_error",
                "async def db_fails(self): raise OperationalError('x', {}, Exception())",
                "@catch_db_error",
                "async def other_fails(self): raise KeyError('not a database error')",
                "asyncio.run(db_fails(Handler())); print(Handler.rolled)",
                "try:\n    asyncio.run(other_fails(Handler()))\nexcept KeyError:\n    print('raised')",
            ]
        ),
    )
    assert out.splitlines() == ["True", "raised"]
