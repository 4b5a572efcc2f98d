"""Issue 26, part 4: `jlpm install` of the lab extension runs no dependency's install script on the host.

A local `file:` dependency with a postinstall stands in for a poisoned package (no network needed): the extension's
own .yarnrc.yml turns scripts off, and so does the environment labext.build_wheel gives jlpm, each on its own."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hubforge.imagebuild import labext

SOURCE = Path(__file__).resolve().parents[2] / "images" / "lab" / "hubforge-notify"
PATH = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
pytestmark = pytest.mark.skipif(
    shutil.which("jlpm", path=PATH) is None or shutil.which("node") is None,
    reason="needs jlpm (jupyter-builder) and node",
)

POSTINSTALL = "node -e \"require('fs').writeFileSync(process.env.INIT_CWD + '/pwned', 'ran')\""


def project(root: Path, yarnrc: str) -> Path:
    """A yarn project whose one dependency (a local folder) has a postinstall that leaves a file behind."""
    (root / "evil").mkdir(parents=True)
    (root / "evil" / "package.json").write_text(
        json.dumps({"name": "evil", "version": "1.0.0", "scripts": {"postinstall": POSTINSTALL}})
    )
    (root / "package.json").write_text(
        json.dumps({"name": "victim", "version": "1.0.0", "private": True, "dependencies": {"evil": "file:./evil"}})
    )
    (root / ".yarnrc.yml").write_text(yarnrc)
    (root / "yarn.lock").write_text("")
    return root


def jlpm_install(root: Path, env: dict[str, str]) -> None:
    """`jlpm install` of a project whose yarn.lock it writes: yarn refuses to change a lockfile when CI=true
    (enableImmutableInstalls), so that is turned off here, as it must be for a new project's first install."""
    env = {**env, "YARN_ENABLE_IMMUTABLE_INSTALLS": "false"}
    result = subprocess.run(["jlpm", "install"], cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, (result.stdout + result.stderr)[-1500:]


def test_the_extensions_yarnrc_runs_no_install_script(tmp_path: Path) -> None:
    root = project(tmp_path / "p", (SOURCE / ".yarnrc.yml").read_text())
    env = {k: v for k, v in os.environ.items() if not k.startswith("YARN_")}
    jlpm_install(root, {**env, "PATH": PATH, "YARN_CACHE_FOLDER": str(tmp_path / "cache")})
    assert (root / "node_modules" / "evil" / "package.json").is_file()  # installed, and
    assert not (root / "pwned").exists()  # its script did not run


def test_the_build_environment_runs_no_install_script_whatever_the_yarnrc_says(tmp_path: Path) -> None:
    root = project(tmp_path / "p", "nodeLinker: node-modules\nenableScripts: true\n")
    jlpm_install(root, labext.jlpm_env(tmp_path / "cache", PATH))
    assert (root / "node_modules" / "evil" / "package.json").is_file()
    assert not (root / "pwned").exists()
