"""Issue 26, part 1: `invoke build --cache-from` takes only the image that a cache index names by digest.

The loopback registry (Debian's docker-registry, as the release tests use) holds two namespaces: `genuine`, where the
built gpu-probe is pushed under its full key, and `impostor`, which serves another image under the same key tag.
The index names the genuine digest, as `invoke release` writes it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import docker
import pytest

from hubforge.docker_io import Docker
from hubforge.imagebuild import remote_cache
from hubforge.imagebuild.builder import Builder, Settings, Step
from hubforge.imagebuild.targets import Graph

from ..support.livestack import current_images
from .test_release import invoke, registry  # noqa: F401  (the loopback registry fixture)

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def planned(target: str) -> Step:
    """The plan's step of an image that `invoke build` has built."""
    settings = Settings(root=ROOT, cache_dir=Path(os.path.expanduser("~/.cache/hubforge")))
    step = Builder(settings, Docker(), say=lambda message: None).plan(Graph().closure([target]))[-1]
    assert step.exists, f"{step.ref} is not built; run `invoke build`"
    return step


def push(client: docker.DockerClient, image, repository: str, tag: str) -> str:
    image.tag(repository, tag)
    client.images.push(repository, tag)
    return client.api.inspect_distribution(f"{repository}:{tag}")["Descriptor"]["digest"]


@pytest.fixture
def caches(registry, tmp_path):  # noqa: F811
    """(the index file, the genuine namespace, the impostor namespace, the step, the built image id)."""
    client = docker.from_env()
    step = planned("gpu-probe")
    built = client.images.get(step.ref)
    genuine, impostor = f"{registry}/genuine", f"{registry}/impostor"
    digest = push(client, built, f"{genuine}/gpu-probe", step.remote_key)
    push(client, client.images.get(current_images()[0]["base"]), f"{impostor}/gpu-probe", step.remote_key)
    index = tmp_path / "cache-index-9.8.7.json"
    index.write_text(
        json.dumps(remote_cache.dump({"gpu-probe": {step.remote_key: remote_cache.entry_for(digest, built.attrs)}}))
    )
    yield index, genuine, impostor, step, built.id
    if client.images.list(filters={"reference": step.ref}) == []:  # a failed test must not leave the build untagged
        built.tag(step.target.repository, step.key)


def untag_the_build(step: Step) -> None:
    """The key's local tags go (the image stays, under the registry tags), so the build must pull or build."""
    client = docker.from_env()
    for ref in (step.ref, step.target.friendly_ref):
        client.images.remove(ref, noprune=True)


def test_an_other_image_under_the_key_tag_is_refused_in_one_line_and_built_here(caches):
    index, _genuine, impostor, step, built = caches
    untag_the_build(step)
    result = invoke("build", "--target", "gpu-probe", "--cache-from", impostor, "--cache-index", str(index))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    refused = [line for line in result.stdout.splitlines() if "refused" in line]
    assert len(refused) == 1 and f"{impostor}/gpu-probe:{step.remote_key}" in refused[0], result.stdout
    assert "pulled from the cache" not in result.stdout and "building" in result.stdout
    assert docker.from_env().images.get(step.ref).id == built  # built here, bit for bit


def test_the_indexed_image_is_pulled_by_digest(caches):
    index, genuine, _impostor, step, built = caches
    untag_the_build(step)
    result = invoke("build", "--target", "gpu-probe", "--cache-from", genuine, "--cache-index", str(index))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "pulled from the cache" in result.stdout and "refused" not in result.stdout
    assert docker.from_env().images.get(step.ref).id == built


def test_check_compares_the_pulled_image_with_a_clean_build(caches):
    index, genuine, _impostor, step, built = caches
    result = invoke("build", "--check", "gpu-probe", "--cache-from", genuine, "--cache-index", str(index))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"the image from {genuine} and a build from clean" in result.stdout and "reproducible" in result.stdout


def test_cache_from_without_an_index_is_one_line(registry):  # noqa: F811
    result = invoke("build", "--target", "gpu-probe", "--cache-from", f"{registry}/genuine")
    assert result.returncode == 1 and result.stderr.strip().count("\n") == 0
    assert "--cache-from needs --cache-index FILE" in result.stderr
