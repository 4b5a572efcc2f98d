"""The built images: non-root, the pinned versions, healthchecks that pass and can fail, no setuid."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import docker
import pytest
import requests

from hubforge.imagebuild.builder import KEY_LABEL
from hubforge.imagebuild.lockfiles import parse_python_lock

from ..support.helpers import wait_until

pytestmark = pytest.mark.images
ROOT = Path(__file__).resolve().parents[2]


def locked(lock: str, name: str) -> str:
    return {p.name: p.version for p in parse_python_lock((ROOT / lock).read_text())}[name]


@pytest.mark.parametrize(("target", "uid"), [("hub", "1000"), ("lab", "1000"), ("gpu-probe", "65534")])
def test_runs_as_non_root(built, tracked, target, uid):
    code, output = tracked.run(
        built[target], ["id", "-u"], entrypoint=[] if target != "gpu-probe" else ["/bin/busybox"]
    )
    assert code == 0 and output.strip() == uid


@pytest.mark.parametrize("target", ["hub", "lab", "gpu-probe"])
def test_no_setuid_or_setgid_files(built, tracked, target):
    find = ["busybox", "find"] if target == "gpu-probe" else ["find"]
    code, output = tracked.run(
        built[target], find + ["/", "-xdev", "-type", "f", "-perm", "/6000"], user="0", entrypoint=[]
    )
    assert code == 0, output
    assert output.strip() == ""


@pytest.mark.parametrize("target", ["hub", "lab", "gpu-probe"])
def test_labels_carry_the_key_and_oci_metadata(built, client, target):
    labels = client.images.get(built[target]).labels
    assert labels[KEY_LABEL] == built[target].rsplit(":", 1)[1]
    for name in ("title", "version", "created", "source", "licenses"):
        assert labels[f"org.opencontainers.image.{name}"], name
    # no revision on a built image: a commit that changes none of its inputs must not change its bytes
    # (`invoke release` labels the revision it releases from: tests/integration/test_release.py)
    assert "org.opencontainers.image.revision" not in labels


def test_hub_versions(built, tracked):
    code, output = tracked.run(
        built["hub"],
        [
            "sh",
            "-c",
            "jupyterhub --version && configurable-http-proxy --version && "
            "python3 -c 'import importlib.metadata as m; print(*(m.version(p) for p in "
            '("jupyterhub-nativeauthenticator", "dockerspawner", "jupyterhub-idle-culler", "hub-ext")))\'',
        ],
    )
    assert code == 0, output
    jupyterhub, proxy, packages = output.strip().splitlines()
    assert jupyterhub == locked("images/hub/requirements.lock", "jupyterhub")
    assert (
        proxy == json.loads((ROOT / "images/proxy/package.json").read_text())["dependencies"]["configurable-http-proxy"]
    )
    assert packages.split() == [
        locked("images/hub/requirements.lock", n)
        for n in ("jupyterhub-nativeauthenticator", "dockerspawner", "jupyterhub-idle-culler")
    ] + ["0.1.0"]


def test_lab_versions_user_and_layout(built, tracked):
    script = (
        "jupyter lab --version; jupyterhub-singleuser --version; whoami; echo $HOME; pwd; "
        "stat -c '%U %n' /home/lab /home/lab/workspace /home/lab/.cache; command -v sudo || echo no-sudo"
    )
    code, output = tracked.run(built["lab"], ["sh", "-c", script])
    assert code == 0, output
    lines = output.strip().splitlines()
    assert lines[0] == locked("images/lab/requirements.lock", "jupyterlab")
    assert lines[1] == locked("images/lab/requirements.lock", "jupyterhub")
    assert lines[2:5] == ["lab", "/home/lab", "/home/lab/workspace"]
    assert lines[5:8] == ["lab /home/lab", "lab /home/lab/workspace", "lab /home/lab/.cache"]
    assert lines[8] == "no-sudo"


def test_no_compilers_or_pip_caches(built, tracked):
    for target in ("hub", "lab"):
        code, output = tracked.run(
            built[target],
            [
                "sh",
                "-c",
                "for t in gcc cc g++ make strip as ld; do command -v $t; done; "
                "ls -d /root/.cache/pip /home/*/.cache/pip 2>/dev/null; true",
            ],
            user="0",
        )
        assert code == 0 and output.strip() == "", f"{target}: {output}"


def health(container) -> str:
    container.reload()
    return container.attrs["State"].get("Health", {}).get("Status", "none")


@pytest.mark.parametrize("target", ["hub", "lab"])
def test_healthcheck_becomes_healthy(built, tracked, target):
    container = tracked.start(built[target]).get_wrapped_container()
    wait_until(lambda: health(container) == "healthy", 120, f"{target} to become healthy")


@pytest.mark.parametrize("target", ["hub", "lab"])
def test_healthcheck_fails_when_the_server_is_down(built, tracked, client, target):
    # The image's own HEALTHCHECK command (the hub's in Python, the lab's in bash), with no server running in it.
    command = client.images.get(built[target]).attrs["Config"]["Healthcheck"]["Test"][1:]
    code, output = tracked.run(built[target], command)
    assert code == 1 and "unhealthy" in output


def test_every_image_states_its_healthcheck(built, client):
    for target in ("hub", "lab"):
        assert client.images.get(built[target]).attrs["Config"]["Healthcheck"]["Test"][0] == "CMD"
    assert client.images.get(built["gpu-probe"]).attrs["Config"]["Healthcheck"]["Test"] == [
        "NONE"
    ]  # one-shot, on purpose


def test_gpu_probe_reports_no_gpu_here(built, tracked):
    code, output = tracked.run(built["gpu-probe"])
    result = json.loads(output)
    assert code == 3
    assert result["gpus"] == [] and "nvidia-smi" in result["reason"]


def test_lab_start_up_skips_what_a_lab_does_not_use(built, tracked):
    """The lab's server imports neither the hub's database layers, nor requests for extension listings that are not
    configured, nor the extensions that are off by default; and its bytecode is by hash, unchecked (flags 0b01)."""
    script = (
        "python3 -c 'import sys, jupyterhub.singleuser.extension, jupyterhub.services.auth; "
        'print(sorted(m for m in ("sqlalchemy", "alembic", "jupyterhub.orm") if m in sys.modules))\'; '
        "python3 -c 'import sys; from jupyterlab_server.listings_handler import fetch_listings; fetch_listings(None); "
        'print("requests" in sys.modules)\'; '
        "python3 -c 'import importlib.util, jupyter_server.serverapp as m; "
        'print(open(importlib.util.cache_from_source(m.__file__), "rb").read()[4:8].hex())\'; '
        "jupyter server extension list 2>&1"
    )
    code, output = tracked.run(built["lab"], ["sh", "-c", script])
    assert code == 0, output
    lines = output.splitlines()
    assert lines[:3] == ["[]", "False", "01000000"], output
    enabled = {
        line.split()[0] for line in lines if "enabled" in line and "disabled" not in line and line.startswith("    ")
    }
    assert enabled == {"hubforge_notify", "jupyterlab", "jupyter_server_terminals"}, output


def test_the_registry_serves_as_an_unprivileged_user_from_a_read_only_root(built, client, tracked):
    """The swarm engine's registry: the registry binary and glibc only, uid 65532, answering the v2 API."""
    labels = client.images.get(built["registry"]).labels
    assert labels[KEY_LABEL] == built["registry"].rsplit(":", 1)[1]
    assert client.images.get(built["registry"]).attrs["Config"]["User"] == "65532:65532"
    container = tracked.start(built["registry"], read_only=True, cap_drop=["ALL"]).get_wrapped_container()
    container.reload()
    address = container.attrs["NetworkSettings"]["IPAddress"]

    def answers() -> bool:
        try:
            return requests.get(f"http://{address}:5000/v2/", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    wait_until(answers, timeout=15, what="the registry's /v2/ answer")
    shell = client.containers.create(
        built["registry"], ["sh", "-c", "id"], entrypoint=[], labels={"hubforge.test": "images"}
    )
    try:
        with pytest.raises(docker.errors.APIError, match="no such file or directory|executable file not found"):
            shell.start()  # no shell, no tools: nothing runs in it but the registry
    finally:
        shell.remove(force=True, v=True)


def test_the_backup_image_is_restic_alone_and_checks_what_it_backed_up(built, client, tracked, tmp_path):
    """restic from its lock, uid 65532 by default, no shell; run as a backup runs it (root, DAC_READ_SEARCH only, read-
    only root), it backs up a file only its owner may read, and `restic check` passes."""
    image = client.images.get(built["backup"])
    assert (
        image.labels[KEY_LABEL] == built["backup"].rsplit(":", 1)[1] and image.attrs["Config"]["User"] == "65532:65532"
    )
    code, output = tracked.run(built["backup"], ["version"])
    assert code == 0 and output.startswith("restic 0.14.0 "), output
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "secret.txt").write_text("only its owner reads this")
    os.chown(tmp_path / "data" / "secret.txt", 1000, 1000)
    (tmp_path / "data" / "secret.txt").chmod(0o600)
    (tmp_path / "password").write_text("test\n")
    for folder in ("repository", "tmp", "cache"):
        (tmp_path / folder).mkdir()
    as_a_backup = {
        "user": "0:0",
        "volumes": [
            (str(tmp_path / "data"), "/backup/data", "ro"),
            (str(tmp_path / "repository"), "/repo", "rw"),
            (str(tmp_path / "password"), "/pw", "ro"),
            (str(tmp_path / "tmp"), "/tmp", "rw"),
            (str(tmp_path / "cache"), "/cache", "rw"),
        ],
        "env": {"RESTIC_REPOSITORY": "/repo", "RESTIC_PASSWORD_FILE": "/pw"},
        "cap_drop": ["ALL"],
        "read_only": True,
        "network_mode": "none",
    }
    for command in (["init"], ["backup", "/backup", "--host", "test"], ["check"], ["ls", "latest"]):
        kwargs = {**as_a_backup, "cap_add": ["DAC_READ_SEARCH"] if command[0] == "backup" else []}
        code, output = tracked.run(built["backup"], command, **kwargs)
        assert code == 0, (command, output)
    assert "/backup/data/secret.txt" in output
    shell = client.containers.create(
        built["backup"], ["sh", "-c", "id"], entrypoint=[], labels={"hubforge.test": "images"}
    )
    try:
        with pytest.raises(docker.errors.APIError, match="no such file or directory|executable file not found"):
            shell.start()
    finally:
        shell.remove(force=True, v=True)


def test_the_monitoring_image_runs_unprivileged_and_checks_the_shipped_rules(built, client, tracked):
    """Prometheus, Alertmanager (with the stack's configuration and its templates) and node-exporter from their locks,
    uid 65532, no shell; promtool accepts stack/monitoring/alerts.yml."""
    image = built["monitoring"]
    assert client.images.get(image).attrs["Config"]["User"] == "65532:65532"
    monitoring = ROOT / "stack" / "monitoring"
    code, output = tracked.run(
        image,
        ["check", "rules", "/rules/alerts.yml"],
        entrypoint=["/usr/bin/promtool"],
        volumes=[(str(monitoring), "/rules", "ro")],
        read_only=True,
    )
    assert code == 0 and "SUCCESS: 6 rules found" in output, output
    for binary, version in (
        ("prometheus", "prometheus, version 2.42.0"),
        ("prometheus-alertmanager", "alertmanager, version 0.25.0"),
        ("prometheus-node-exporter", "node_exporter, version 1.5.0"),
    ):
        code, output = tracked.run(image, ["--version"], entrypoint=[f"/usr/bin/{binary}"])
        assert code == 0 and version in output, (binary, output)
    alertmanager = tracked.start(
        image,
        ["--config.file=/etc/am/alertmanager.yml", "--storage.path=/alertmanager", "--cluster.listen-address="],
        entrypoint=["/usr/bin/prometheus-alertmanager"],
        volumes=[(str(monitoring), "/etc/am", "ro")],
        cap_drop=["ALL"],
    ).get_wrapped_container()
    alertmanager.reload()
    address = alertmanager.attrs["NetworkSettings"]["IPAddress"]

    def ready() -> bool:
        return requests.get(f"http://{address}:9093/-/ready", timeout=2).status_code == 200

    wait_until(ready, timeout=15, what="Alertmanager ready with the stack's configuration and its templates")
    shell = client.containers.create(image, ["sh", "-c", "id"], entrypoint=[], labels={"hubforge.test": "images"})
    try:
        with pytest.raises(docker.errors.APIError, match="no such file or directory|executable file not found"):
            shell.start()
    finally:
        shell.remove(force=True, v=True)


def sbom_of(image: str, folder: Path) -> dict:
    """`invoke sbom IMAGE`, as an operator runs it; the CycloneDX document it wrote."""
    path = folder / "sbom.cdx.json"
    result = subprocess.run(
        [sys.executable, "-m", "invoke", "sbom", image, "--output", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(path.read_text())


def test_the_gpu_probe_sbom_names_busybox_and_the_libraries_it_copied_with_their_versions(built, tracked, tmp_path):
    components = {c["name"]: c for c in sbom_of(built["gpu-probe"], tmp_path)["components"]}
    busybox = next(
        line.split()[1]
        for line in (ROOT / "images/gpu-probe/apt.lock").read_text().splitlines()
        if line.startswith("busybox-static ")
    )
    assert components["busybox-static"]["version"] == busybox
    assert components["busybox-static"]["purl"].startswith("pkg:deb/debian/busybox-static@")
    # glibc and ldconfig come from the build stage's own packages (the base image's): the same versions
    code, output = tracked.run(
        built["base"], ["dpkg-query", "-W", "-f", "${Package} ${Version}\\n", "libc6", "libc-bin"], entrypoint=[]
    )
    assert code == 0, output
    for package, version in (line.split() for line in output.strip().splitlines()):
        assert components[package]["version"] == version, package
        assert components[package]["purl"].startswith(f"pkg:deb/debian/{package}@"), package


def test_the_lab_sbom_lists_the_npm_packages_of_its_extensions_and_their_bundles(built, tmp_path):
    npm = {
        (c["name"], c["version"]): c["purl"]
        for c in sbom_of(built["lab"], tmp_path)["components"]
        if c["purl"].startswith("pkg:npm/")
    }
    notify = json.loads((ROOT / "images/lab/hubforge-notify/package.json").read_text())
    assert npm[("@hubforge/notify", notify["version"])] == f"pkg:npm/%40hubforge/notify@{notify['version']}"
    # what an extension's bundle holds (the builder's third-party-licenses.json): jupyterlab_pygments bundles
    # css-loader; hubforge-notify bundles nothing, its @jupyterlab packages are JupyterLab's own, listed with its bundle
    names = {name for name, _ in npm}
    assert {"jupyterlab_pygments", "css-loader", "@jupyterhub/jupyter-server-proxy"} <= names
    assert {"@jupyterlab/apputils", "@lumino/widgets", "@codemirror/view"} <= names
    assert all(version and purl.endswith(f"@{version}") for (_, version), purl in npm.items())


def test_sbom_of_an_image_that_is_not_here_says_so_in_one_line():
    result = subprocess.run(
        [sys.executable, "-m", "invoke", "sbom", "hubforge/absent:0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == "error: no image 'hubforge/absent:0' here; build it or pull it first"
