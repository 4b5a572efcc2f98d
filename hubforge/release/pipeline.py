"""The release pipeline: which images and tags, then label, push, verify digests, SBOM and provenance.

It prints nothing itself: progress goes to the `say` callback, as the builder's does, so the terminal
(app.py) decides how it looks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..docker_io import Docker, stored_credentials
from ..errors import HubforgeError
from ..imagebuild import remote_cache
from ..imagebuild.builder import REVISION_LABEL, Builder, Step
from ..imagebuild.targets import DEFAULT_SET
from . import attest, oci, sign
from . import plan as rel
from .sbom import Inventory, cyclonedx, image_inventory

Say = Callable[[str], None]


@dataclass(frozen=True)
class Request:
    version: rel.Version
    registry: str
    namespace: str
    flavors: tuple[str, ...] = ()


def release_steps(builder: Builder, flavors: tuple[str, ...]) -> list[Step]:
    """The plan of every released image (and the base): the default set plus the named lab flavours."""
    for flavor in flavors:
        builder.graph.select("lab", flavor)  # one clear line for an unknown flavour
    return builder.plan(builder.graph.closure(list(DEFAULT_SET) + [f"lab-{flavor}" for flavor in flavors]))


def pushes_for(request: Request, steps: list[Step], git_sha: str) -> list[rel.Push]:
    return rel.plan(steps, request.registry, request.namespace, request.version, git_sha[:12])


def publish(
    builder: Builder,
    root: Path,
    request: Request,
    steps: list[Step],
    pushes: list[rel.Push],
    git_sha: str,
    credentials: tuple[str, str] | None,
    say: Say,
    signing_key: Any = None,
) -> None:
    """Label and push every tag, check that the registry holds what was pushed, then write each image's SBOM and
    provenance to dist/ and attach them to the image's digest in the registry (signed with `signing_key`)."""
    docker = builder.docker
    if credentials:
        docker.login(request.registry if request.registry != rel.DOCKER_HUB else "", *credentials)
    host = oci.split_reference(rel.repository(request.registry, request.namespace, "hub"))[0]
    registry = oci.Registry(host, credentials or stored_credentials(host))  # for what the daemon cannot push
    base = next(s for s in steps if s.target.name == "base")
    by_name = {s.target.name: s for s in steps}
    dist = root / "dist"
    tools = rel.tool_versions(docker.client.version().get("Version", "?"))
    version = request.version
    index: dict[str, dict[str, remote_cache.Entry]] = {}
    for item in pushes:
        step = by_name[item.target]
        labels = {"org.opencontainers.image.version": str(version), REVISION_LABEL: git_sha}
        released = f"{item.repository}:{item.tags[0]}"
        if item.target != "base":  # the built image with two more labels, as reproducible as it is
            builder.normalize(item.source, released, labels, keep=True)
        else:
            docker.tag(item.source, item.repository, item.tags[0])
        digests: dict[str, str] = {}
        for tag in item.tags:
            # The key tag is the remote cache of `invoke build --cache-from`: the built image itself, so that a pull by
            # key gives the bytes a build of that key gives (the version tags carry the release's two labels).
            image = item.source if tag == step.remote_key else released
            docker.tag(image, item.repository, tag)
            pushed = docker.push(item.repository, tag)
            remote = docker.remote_digest(f"{item.repository}:{tag}")
            local = {d.split("@", 1)[1] for d in docker.inspect(image).get("RepoDigests", []) if "@" in d}
            if remote != pushed or pushed not in local:
                raise HubforgeError(
                    f"{item.repository}:{tag}: the registry has {remote}, the push said {pushed}, locally "
                    f"{sorted(local)}"
                )
            say(f"  pushed {item.repository}:{tag} {remote}")
            digests[tag] = remote
            if tag == step.remote_key:  # the cache index: the digest `invoke build --cache-from` may pull for this key
                index.setdefault(remote_cache.repository_name(step.target.repository), {})[tag] = (
                    remote_cache.entry_for(remote, docker.inspect(image))
                )
        if item.target == "base":
            continue
        versioned = {tag: digests[tag] for tag in item.described_by}
        digest = release_digest(item.repository, versioned)
        found = image_inventory(docker, released)  # read from outside the image: nothing in it runs
        image_name = item.repository.rsplit("/", 1)[1] + (
            "" if step.target.flavor == "default" else f"-{step.target.flavor}"
        )
        sbom = cyclonedx(released, image_name, str(version), found.python, found.debian, found.npm)
        sbom_path = rel.write_json(dist / f"{image_name}-{version}.cdx.json", sbom)
        built = docker.inspect(step.ref)
        prov = rel.provenance(
            step, base, version, git_sha, root, tools, {"image_id": built["Id"], "layers": built["RootFS"]["Layers"]}
        )
        prov.update(digest=digest, tags=versioned)
        rel.write_json(dist / f"{image_name}-{version}.provenance.json", prov)
        say(f"  {image_name}: SBOM {sbom_path.name} ({_counts(found)}), provenance written")
        attest.attach(
            registry, item.repository, digest, {sign.PREDICATE_SBOM: sbom, sign.PREDICATE_PROVENANCE: prov}, signing_key
        )
        say(
            f"  {image_name}: SBOM and provenance attached to {item.repository}@{digest}"
            + (", signed" if signing_key else ", unsigned (no --signing-key)")
        )
    index_path = rel.write_json(rel.cache_index_path(dist, version), remote_cache.dump(index))
    if signing_key:
        remote_cache.signature_path(index_path).write_text(sign.sign(signing_key, index_path.read_bytes()) + "\n")
    say(
        f"  cache index {index_path.name}: the digest of each key tag, for `invoke build --cache-from` (attach it to "
        "the "
        f"release{', with its signature ' + remote_cache.signature_path(index_path).name if signing_key else ''})"
    )


def release_digest(repository: str, versioned: Mapping[str, str]) -> str:
    """The one digest that every versioned tag of an image has in the registry: what the provenance names."""
    digests = set(versioned.values())
    if len(digests) != 1:
        shown = ", ".join(f"{tag} {digest}" for tag, digest in sorted(versioned.items()))
        raise HubforgeError(
            f"{repository}: the registry gives its version tags different digests ({shown}); push again"
        )
    return digests.pop()


def _counts(found: Inventory) -> str:
    return f"{len(found.python)} Python, {len(found.debian)} Debian, {len(found.npm)} npm packages"


def image_sbom(docker: Docker, image: str, default_dir: Path, output: Path | None) -> tuple[Path, int, int]:
    """A CycloneDX SBOM of any local image: (path, Python packages, Debian packages); npm packages are listed too."""
    labels = docker.inspect(image).get("Config", {}).get("Labels") or {}  # first: it says when the image is missing
    found = image_inventory(docker, image)
    name = image.split("/")[-1].split(":")[0]
    version = labels.get("org.opencontainers.image.version", "unknown")
    path = output or default_dir / f"{name}-{version}.cdx.json"
    rel.write_json(path, cyclonedx(image, name, version, found.python, found.debian, found.npm))
    return path, len(found.python), len(found.debian)
