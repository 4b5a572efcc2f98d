"""A registry on loopback for the tests (Debian's docker-registry, which `.ci/run` installs): releases are pushed to
it and pulled back from it, as from Docker Hub."""

from __future__ import annotations

import contextlib
import io
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import requests

from .helpers import wait_until
from .livestack import current_images, free_port

NAMESPACE = "hftest"  # where the tests' releases go in a loopback registry


@contextlib.contextmanager
def loopback_registry(folder: Path) -> Iterator[str]:
    """host:port of a registry serving from `folder` on 127.0.0.1; its images and every local tag of it go after."""
    binary = shutil.which("docker-registry") or "/usr/bin/docker-registry"
    if not Path(binary).exists():
        pytest.fail("Debian's docker-registry is missing: apt-get install docker-registry (.ci/run does)")
    port = free_port()
    config = folder / "config.yml"
    config.write_text(
        f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {folder / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\nlog:\n  level: warn\n"
    )
    process = subprocess.Popen([binary, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    session = requests.Session()
    session.trust_env = False
    host = f"127.0.0.1:{port}"
    try:
        wait_until(lambda: session.get(f"http://{host}/v2/", timeout=2).status_code == 200, 30, "the registry")
        yield host
    finally:
        process.terminate()
        process.wait(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)
        client = docker.from_env()
        for image in client.images.list():
            for ref in image.tags + [d for d in image.attrs.get("RepoDigests") or [] if d.startswith(host)]:
                if ref.startswith(host):
                    with contextlib.suppress(docker.errors.APIError):
                        client.images.remove(ref, noprune=False)


def push_release(registry: str, version: str, hub_dockerfile: str) -> dict[str, str]:
    """Today's proxy, lab and gpu-probe, and a hub built FROM today's with `hub_dockerfile`'s lines (no network), pushed
    under `version`; returns name -> the registry's digest."""
    client = docker.from_env()
    images, _ = current_images()
    dockerfile = f"FROM {images['hub']}\n{hub_dockerfile}\n"
    hub, _ = client.images.build(fileobj=io.BytesIO(dockerfile.encode()), network_mode="none", rm=True)
    digests = {}
    for name, image in (("hub", hub), ("proxy", None), ("lab", client.images.get(images["lab"])), ("gpu-probe", None)):
        image = image or client.images.get(images[name])
        repository = f"{registry}/{NAMESPACE}/{name}"
        image.tag(repository, version)
        for line in client.api.push(repository, tag=version, stream=True, decode=True):
            assert "error" not in line, line
            digests[name] = (line.get("aux") or {}).get("Digest", digests.get(name))
        client.images.remove(f"{repository}:{version}")  # the upgrade pulls it back by digest
    return digests
