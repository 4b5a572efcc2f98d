"""A release to a local registry (Debian's docker-registry on loopback): push, verify, pull back, reuse."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import docker
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ..support.livestack import current_images
from ..support.registry import loopback_registry

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
VERSION = "9.8.7"
NAMESPACE = "hftest"
SECRET = "fake-token-must-never-show"


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    with loopback_registry(tmp_path_factory.mktemp("registry")) as host:
        yield host


def invoke(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=1800,
    )


@pytest.fixture(scope="module")
def signing_key(tmp_path_factory) -> tuple[Path, Path]:
    """A release key as `openssl ecparam -name prime256v1 -genkey | openssl pkcs8 -topk8` writes it: (key, public
    key)."""
    folder = tmp_path_factory.mktemp("keys")
    key = ec.generate_private_key(ec.SECP256R1())
    (folder / "release.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    (folder / "release.pub").write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return folder / "release.key", folder / "release.pub"


@pytest.fixture(scope="module")
def released(registry, signing_key):
    result = invoke(
        "release",
        "--version",
        VERSION,
        "--registry",
        registry,
        "--namespace",
        NAMESPACE,
        "--push",
        "--allow-dirty",
        "--verbose",
        "--signing-key",
        str(signing_key[0]),
        env={"DOCKERHUB_USERNAME": "ci", "DOCKERHUB_TOKEN": SECRET},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_no_secret_in_any_output(released):
    assert SECRET not in released.stdout + released.stderr


@pytest.mark.parametrize("image", ["hub", "lab", "gpu-probe"])
def test_pulled_back_by_digest_with_the_version_label(registry, released, image):
    client = docker.from_env()
    digests = set()
    for tag in (VERSION, "9.8", "9", "latest"):
        digests.add(client.api.inspect_distribution(f"{registry}/{NAMESPACE}/{image}:{tag}")["Descriptor"]["digest"])
    assert len(digests) == 1  # every version tag is the same image
    digest = digests.pop()
    pulled = client.images.pull(f"{registry}/{NAMESPACE}/{image}@{digest}")
    assert pulled.labels["org.opencontainers.image.version"] == VERSION
    assert len(pulled.labels["org.opencontainers.image.revision"]) == 40
    # verifiable: the provenance names the built image, whose layers the pulled image has byte for byte, and the
    # release's own config is as reproducible (its time is SOURCE_DATE_EPOCH, not the moment of the release)
    provenance = json.loads((ROOT / "dist" / f"{image}-{VERSION}.provenance.json").read_text())
    assert pulled.attrs["RootFS"]["Layers"] == provenance["built"]["layers"]
    assert client.images.get(provenance["built"]["image_id"]).attrs["RootFS"]["Layers"] == provenance["built"]["layers"]
    assert pulled.attrs["Created"].startswith("2026-01-01T00:00:00")
    assert provenance["rebuild"]["steps"][0] == f"git checkout {provenance['git']['sha']}"
    local = client.images.get(f"{registry}/{NAMESPACE}/{image}:{VERSION}")
    assert f"{registry}/{NAMESPACE}/{image}@{digest}" in local.attrs["RepoDigests"]


def test_sbom_lists_what_is_really_installed(released):
    sbom = json.loads((ROOT / "dist" / f"hub-{VERSION}.cdx.json").read_text())
    purls = {c["purl"] for c in sbom["components"]}
    assert any(p.startswith("pkg:pypi/jupyterhub@5.5.4") for p in purls)
    assert any(p.startswith("pkg:deb/debian/python3.11@") for p in purls)
    assert any(p.startswith("pkg:deb/debian/nodejs@") for p in purls)
    provenance = json.loads((ROOT / "dist" / f"hub-{VERSION}.provenance.json").read_text())
    assert len(provenance["git"]["sha"]) == 40 and provenance["digest"].startswith("sha256:")
    assert "images/hub/requirements.lock" in provenance["locks"]
    probe = json.loads((ROOT / "dist" / f"gpu-probe-{VERSION}.cdx.json").read_text())
    assert {c["name"] for c in probe["components"]} >= {"busybox-static", "libc6"}


@pytest.mark.parametrize("image", ["hub", "lab", "gpu-probe"])
def test_provenance_digest_is_the_registry_digest_of_every_version_tag(registry, released, image):
    """It was the digest of the key tag, the last one pushed: the built image, not the labelled `hub:X.Y.Z`."""
    client = docker.from_env()
    provenance = json.loads((ROOT / "dist" / f"{image}-{VERSION}.provenance.json").read_text())
    git12 = provenance["git"]["sha"][:12]
    assert sorted(provenance["tags"]) == sorted([VERSION, "9.8", "9", "latest", f"sha-{git12}"])
    for tag in provenance["tags"]:
        remote = client.api.inspect_distribution(f"{registry}/{NAMESPACE}/{image}:{tag}")["Descriptor"]["digest"]
        assert remote == provenance["digest"] == provenance["tags"][tag], tag
    # the key tag (the full key, as the cache index names it) is the remote cache's built image, without release labels
    index = json.loads((ROOT / "dist" / f"cache-index-{VERSION}.json").read_text())["images"][image]
    (full_key,) = [key for key in index if key.startswith(provenance["key"])]
    key_tag = client.api.inspect_distribution(f"{registry}/{NAMESPACE}/{image}:{full_key}")["Descriptor"]["digest"]
    assert key_tag == index[full_key]["digest"] and key_tag != provenance["digest"]


@pytest.mark.parametrize("image", ["hub", "lab", "gpu-probe"])
def test_invoke_verify_checks_the_signed_attestations_of_a_released_image(registry, released, signing_key, image):
    provenance = json.loads((ROOT / "dist" / f"{image}-{VERSION}.provenance.json").read_text())
    result = invoke("verify", f"{registry}/{NAMESPACE}/{image}:{VERSION}", "--key", str(signing_key[1]))
    assert result.returncode == 0, result.stdout + result.stderr
    assert provenance["digest"] in result.stdout and provenance["git"]["sha"] in result.stdout


def test_one_changed_byte_of_an_attestation_fails_verification(registry, released, signing_key):
    """A copy of the hub's provenance statement with one byte changed, attached with the original signature."""
    from hubforge.release import attest, oci

    client = oci.Registry(registry)
    path = f"{NAMESPACE}/hub"
    digest = json.loads((ROOT / "dist" / f"hub-{VERSION}.provenance.json").read_text())["digest"]
    tag = oci.referrers_tag(digest)
    index, _ = client.manifest(path, tag)
    entry = next(
        m for m in json.loads(index)["manifests"] if m["annotations"][attest.PREDICATE].endswith("provenance/v1")
    )
    manifest = json.loads(client.manifest(path, entry["digest"])[0])
    data = bytearray(client.blob(path, manifest["layers"][0]["digest"]))
    data[data.index(b'"version":"' + VERSION.encode()) + len('"version":"')] ^= 1  # 9.8.7 -> 8.8.7
    manifest["layers"][0].update(digest=client.put_blob(path, bytes(data)), size=len(data))
    client.attach(path, manifest, {"artifactType": attest.ARTIFACT_TYPE})
    try:
        result = invoke("verify", f"{registry}/{NAMESPACE}/hub:{VERSION}", "--key", str(signing_key[1]))
        assert result.returncode == 1
        assert result.stderr.strip().splitlines() == [result.stderr.strip()]  # one line, no traceback
        assert "the signature does not match this key" in result.stderr
    finally:
        client.put_manifest(path, tag, index, oci.OCI_INDEX)  # the index as the release left it


def test_cache_from_pulls_instead_of_building(registry, released):
    client = docker.from_env()
    plan = invoke("build", "--target", "gpu-probe", "--plan")
    key = next(
        line.split("hubforge/gpu-probe:")[1].split()[0]
        for line in plan.stdout.splitlines()
        if "hubforge/gpu-probe:" in line
    )
    built = client.images.get(f"hubforge/gpu-probe:{key}").id
    for tag in (f"hubforge/gpu-probe:{key}", "hubforge/gpu-probe:dev"):
        client.images.remove(tag, force=True)
    result = invoke(
        "build",
        "--target",
        "gpu-probe",
        "--cache-from",
        f"{registry}/{NAMESPACE}",
        "--cache-index",
        str(ROOT / "dist" / f"cache-index-{VERSION}.json"),
    )
    assert result.returncode == 0, result.stderr
    assert "pulled from the cache" in result.stdout and "building" not in result.stdout
    # the cache holds the built image itself, not the release's labelled copy: the same bytes as a build of the key
    assert client.images.get(f"hubforge/gpu-probe:{key}").id == built


@pytest.fixture
def upstream(registry):
    """A stand-in for Docker Hub's debian:bookworm-slim: the current base, pushed to the local registry.

    Yields the digest-pinned reference; removes the pulled base and the stand-in's local tags afterwards.
    """
    client = docker.from_env()
    base = current_images()[0]["base"]
    repository = f"{registry}/library/debian"
    client.images.get(base).tag(repository, "bookworm-slim")
    client.images.push(repository, "bookworm-slim")
    digest = client.api.inspect_distribution(f"{repository}:bookworm-slim")["Descriptor"]["digest"]
    client.images.remove(f"{repository}:bookworm-slim")  # so the build really pulls
    pulled_before = {tag for image in client.images.list("hubforge/base") for tag in image.tags}
    yield f"{repository}:bookworm-slim@{digest}", digest
    added = {
        tag for image in client.images.list("hubforge/base") + client.images.list(repository) for tag in image.tags
    }
    for tag in added - pulled_before:  # the same image id carries the bootstrapped base's tags: untag only
        client.images.remove(tag, noprune=True)
    with contextlib.suppress(docker.errors.ImageNotFound):  # the digest reference a successful pull leaves
        client.images.remove(f"{repository}@{digest}", noprune=True)


def test_base_pull_takes_the_digest_pinned_upstream_from_a_registry(upstream):
    reference, digest = upstream
    env = {"INVOKE_HUBFORGE_UPSTREAM": reference}
    result = invoke("build", "--target", "base", "--base", "pull", env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    plan = invoke("build", "--target", "base", "--base", "pull", "--plan", env=env)
    key = next(
        line.split("hubforge/base:")[1].split()[0] for line in plan.stdout.splitlines() if "hubforge/base:" in line
    )
    assert "up to date" in plan.stdout  # the base is a cached target in pull mode too
    pulled = docker.from_env().images.get(f"hubforge/base:{key}")
    assert reference.split(":bookworm-slim@")[0] + "@" + digest in pulled.attrs["RepoDigests"]
    assert key != current_images()[0]["base"].split(":")[1]  # the upstream digest, not the mirror recipe, keys it


def test_base_pull_refuses_a_digest_the_registry_does_not_have(upstream):
    reference, _ = upstream
    wrong = reference.split("@")[0] + "@sha256:" + "0" * 64
    result = invoke("build", "--target", "base", "--base", "pull", env={"INVOKE_HUBFORGE_UPSTREAM": wrong})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]  # one line, no traceback
    assert "cannot pull" in result.stderr and "sha256:" + "0" * 64 in result.stderr
