"""User errors: one clear line and no traceback, for every bad input the build task can get."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hubforge.docker_io import Docker
from hubforge.errors import DockerUnavailable, HubforgeError
from hubforge.imagebuild.base import Workspace, mmdebstrap_argv
from hubforge.imagebuild.targets import BaseSpec, Graph

WORK = Workspace(Path("/tmp/w/trusted/debian-archive.gpg"), Path("/tmp/w/repo"), Path("/tmp/w/report"))

ROOT = Path(__file__).resolve().parents[2]
KEYRING = Path("/tmp/w/trusted/debian-archive.gpg")  # the pinned keyring's copy, alone in its folder
NO_DAEMON = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}


def invoke(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


@pytest.mark.parametrize(
    ("target", "flavor", "message"),
    [
        (
            "nope",
            None,
            "unknown target 'nope'; valid targets: backup, base, gpu-probe, hub, idp, lab, monitoring, proxy, registry",
        ),
        ("lab", "gpu", "unknown flavour 'gpu' of lab; valid flavours: datascience, default"),
        (None, "datascience", "--flavor needs --target lab"),
    ],
)
def test_graph_selection_errors_list_the_valid_choices(target, flavor, message):
    with pytest.raises(HubforgeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Graph().select(target, flavor)


def test_selection_puts_parents_first():
    assert [t.name for t in Graph().select("lab", "datascience")] == ["base", "lab-datascience"]
    assert [t.name for t in Graph().select(None, None)] == [
        *("base", "hub", "proxy", "lab", "gpu-probe", "registry", "backup", "monitoring")
    ]


def test_docker_daemon_missing_is_one_line():
    os.environ.update(NO_DAEMON)
    try:
        with pytest.raises(DockerUnavailable) as caught:
            Docker()
    finally:
        del os.environ["DOCKER_HOST"]
    assert "\n" not in str(caught.value) and "invoke setup" in str(caught.value)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["build", "--target", "nope"],
            "error: unknown target 'nope'; valid targets: backup, base, gpu-probe, hub, idp, lab, monitoring, proxy, "
            "registry",
        ),
        (["build", "--base", "cloud"], "error: --base='cloud' is not valid; use one of: auto, pull, bootstrap"),
        (["clean", "--keep", "-1"], "error: --keep must be 0 or more, got -1"),
        (["lock", "--only", "npm"], "error: --only='npm' is not valid; use python, apt or native"),
        (
            ["release", "--version", "1.0.0", "--push", "--dry-run"],
            "error: --push and --dry-run contradict each other; pass one",
        ),
        (["up", "--gpu", "maybe"], "error: --gpu='maybe' is not valid; use auto, on or off"),
        (["up", "--port", "70000"], "error: --port='70000' is out of range; use 1-65535"),
        (["down", "--user-volumes"], "error: --user-volumes only goes with --volumes"),
    ],
)
def test_tasks_refuse_bad_flags_in_one_line(args, expected):
    result = invoke(*args)
    assert result.returncode == 1
    assert result.stderr.strip() == expected
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize("name", ["build", "up", "e2e"])
def test_dash_h_is_each_tasks_help(name):
    """invoke gives a flag the first free letter of its name: --check, --http-port and --headed took -h, so that
    `invoke build -h` built (and `invoke e2e -h` ran the browser tests) instead of printing the help."""
    result = invoke(name, "-h", env=NO_DAEMON)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"Usage: inv[oke] [--core-opts] {name} [--options]")


def test_build_without_daemon_says_how_to_start_it():
    result = invoke("build", "--plan", env=NO_DAEMON)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and "Traceback" not in result.stderr
    assert "docker daemon" in lines[0].lower() and "DOCKER_HOST" in lines[0]


def test_mmdebstrap_argv_trims_and_uses_all_three_suites():
    recipe = {
        "variant": "minbase",
        "components": ["main"],
        "include": ["usr-is-merged"],
        "purge_after": ["perl"],
        "path_exclude": ["/usr/share/man/*"],
        "path_include": [],
        "remove_after": ["/var/log/*"],
    }
    argv = mmdebstrap_argv(
        BaseSpec(mode="bootstrap", mirror="http://mirror.example/debian"),
        recipe,
        Path("/tmp/out.tar"),
        WORK,
        locking=True,
    )
    assert argv[:5] == ["mmdebstrap", "--variant=minbase", "--mode=root", "--format=tar", "--quiet"]
    assert "--dpkgopt=path-exclude=/usr/share/man/*" in argv
    assert '--customize-hook=chroot "$1" dpkg --purge perl' in argv
    assert argv[-3:] == [
        "deb http://mirror.example/debian bookworm main",
        "deb http://mirror.example/debian bookworm-updates main",
        "deb http://deb.debian.org/debian-security bookworm-security main",
    ]


class FailingBuildAPI:
    """Stands in for docker-py's APIClient.build: replays the stream of a build whose 3rd step fails."""

    def build(self, **kwargs):
        assert kwargs["network_mode"] == "none"  # every image build is offline
        yield {"stream": "Step 1/3 : FROM hubforge/base:abc\n"}
        yield {"stream": "Step 2/3 : COPY debs/ /tmp/debs/\n"}
        yield {"stream": "Step 3/3 : RUN apt-get install -y /tmp/debs/*.deb\n"}
        for number in range(40):
            yield {"stream": f"log line {number}\n"}
        yield {"error": "The command '/bin/sh -c apt-get install' returned a non-zero code: 100"}


def test_a_failed_build_names_the_step_and_shows_the_last_30_lines(tmp_path):
    from hubforge.errors import BuildFailed

    gateway = Docker(client=type("Client", (), {"api": FailingBuildAPI()})())
    with pytest.raises(BuildFailed) as caught:
        gateway.build(tmp_path, "hubforge/lab:key", {}, on_line=lambda line: None)
    message = str(caught.value)
    assert "failed at Step 3/3 : RUN apt-get install" in message
    assert "log line 39" in message and "log line 10" in message and "log line 8\n" not in message
    assert message.strip().endswith("returned a non-zero code: 100")


def test_compose_plugin_is_a_copy_that_outlives_its_environment(tmp_path, monkeypatch):
    """`invoke setup` used to link the plugin into the venv that ran it; deleting the venv broke `docker compose`."""
    from hubforge import doctor

    venv = tmp_path / "venv"
    venv.mkdir()
    (venv / "docker-compose").write_text("#!/bin/sh\necho 'Docker Compose version v2.40.3'\n")
    monkeypatch.setattr(doctor, "bundled_compose", lambda: venv / "docker-compose")
    plugin = tmp_path / "home" / ".docker" / "cli-plugins" / "docker-compose"
    plugin.parent.mkdir(parents=True)
    plugin.symlink_to(tmp_path / "old-venv" / "docker-compose")  # a dangling link from an older setup
    doctor.install_compose(lambda message: None, plugin)
    (venv / "docker-compose").unlink()
    venv.rmdir()
    assert not plugin.is_symlink() and plugin.stat().st_mode & 0o111
    assert "v2.40.3" in subprocess.run([str(plugin)], capture_output=True, text=True, check=True).stdout


def test_doctor_names_the_local_registry_the_release_tests_need(monkeypatch):
    from hubforge import doctor

    monkeypatch.setattr(doctor, "which", lambda program: None)
    monkeypatch.setattr(doctor, "REGISTRY_PATH", "/nonexistent/docker-registry")
    (check,) = doctor.checks(Path("/tmp"), {"registry"})
    assert not check.ok and check.apt == ("docker-registry",) and "apt-get install -y docker-registry" in check.fix
