"""The lab's source patches (images/lab/site-patches.json) fit the pinned JupyterHub exactly, and keep its behaviour."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
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


# -- ipykernel's debugger: debugpy imported on first use ------------------------------------------------------------
KERNEL_PATCHES = [patch for patch in PATCHES if patch["file"].startswith("ipykernel/")]


def pinned(name: str) -> str:
    lock = (ROOT / "images/lab/requirements.lock").read_text()
    return re.search(rf"^{name}==(\S+)", lock, re.M).group(1)


@pytest.fixture(scope="module")
def patched_kernel(tmp_path_factory) -> Path:
    """A copy of this machine's ipykernel (the version the lab pins), with the lab's patches applied."""
    for name in ("ipykernel", "debugpy"):
        assert importlib.metadata.version(name) == pinned(name), f"the dev extra's {name} differs from the lab's lock"
    import ipykernel

    site = tmp_path_factory.mktemp("kernel-site")
    shutil.copytree(Path(ipykernel.__file__).parent, site / "ipykernel")
    assert patch_site.apply(KERNEL_PATCHES, site) == ["ipykernel/debugger.py"]
    return site


DEBUG_SESSION = """
import time
from jupyter_client.manager import start_new_kernel

km, kc = start_new_kernel(kernel_name="python3")
seq = [0]


def debug(command, arguments=None):
    seq[0] += 1
    content = {"type": "request", "seq": seq[0], "command": command, "arguments": arguments or {}}
    msg = kc.session.msg("debug_request", content)
    kc.control_channel.send(msg)
    while True:
        reply = kc.control_channel.get_msg(timeout=30)
        if reply["parent_header"].get("msg_id") == msg["header"]["msg_id"]:
            return reply["content"]


def say(*values):
    print(*values, flush=True)


try:
    say("debugger" in kc.kernel_info(reply=True)["content"]["supported_features"])
    kc.execute_interactive("import sys; print('debugpy' in sys.modules)", timeout=30)
    say(debug("initialize", {"clientID": "t", "adapterID": "python", "pathFormat": "path", "linesStartAt1": True,
        "columnsStartAt1": True})["success"])
    say(debug("attach", {"justMyCode": True})["success"])
    kc.execute_interactive("a = 5", timeout=30)
    say([v["value"] for v in debug("inspectVariables")["body"]["variables"] if v["name"] == "a"])
    code = "def f(x):\\n    y = x * 2\\n    return y\\n"
    source = debug("dumpCell", {"code": code})["body"]["sourcePath"]
    kc.execute_interactive(code, timeout=30)
    debug("setBreakpoints", {"source": {"path": source}, "breakpoints": [{"line": 3}], "sourceModified": False})
    debug("configurationDone")
    kc.execute("f(21)")
    while True:
        event = kc.iopub_channel.get_msg(timeout=30)
        if event["msg_type"] == "debug_event" and event["content"].get("event") == "stopped":
            break
    thread = event["content"]["body"]["threadId"]
    frame = debug("stackTrace", {"threadId": thread})["body"]["stackFrames"][0]
    scope = debug("scopes", {"frameId": frame["id"]})["body"]["scopes"][0]["variablesReference"]
    found = debug("variables", {"variablesReference": scope})["body"]["variables"]
    say(frame["name"], frame["line"], sorted(v["name"] + "=" + v["value"] for v in found if v["name"] in "xy"))
    say(debug("continue", {"threadId": thread})["success"])
finally:
    kc.stop_channels()
    km.shutdown_kernel(now=True)
"""


def test_the_kernel_imports_debugpy_only_when_debugging_and_its_debugger_still_works(patched_kernel):
    """The kernel still offers the debugger; debugpy is not loaded until a debug request needs it; and a session as
    JupyterLab's debugger runs it (variables after a cell, a breakpoint, the stopped frame's variables) works."""
    out = subprocess.run(
        [sys.executable, "-c", DEBUG_SESSION],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(patched_kernel)},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines() == ["True", "False", "True", "True", "['5']", "f 3 ['x=21', 'y=42']", "True"]
