"""Releases name what was pushed: the digest of every version tag, signed SBOM and provenance attached to it."""

from __future__ import annotations

import hashlib
import json
import re
from types import SimpleNamespace

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from hubforge.errors import HubforgeError
from hubforge.release import attest, oci, pipeline, sign
from hubforge.release import plan as rel

from ..support.helpers import rootfs_tar

REGISTRY = "127.0.0.1:5000"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


class Answer:
    def __init__(self, status_code: int, content: bytes = b"", headers: dict | None = None) -> None:
        self.status_code, self.content, self.headers = status_code, content, headers or {}
        self.text = content.decode(errors="replace")

    def json(self):
        return json.loads(self.content)


class DistributionWithoutReferrers:
    """Stands in for Debian's docker-registry (distribution 2.8) over HTTP: blobs and manifests by digest or tag, no
    referrers API (404) and no OCI-Subject header, so clients keep the referrers tag `sha256-<hex>` themselves."""

    trust_env = True

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[str, tuple[bytes, str]] = {}
        self.tags: dict[tuple[str, str], str] = {}

    def get(self, url: str, **kwargs) -> Answer:
        return self.request("GET", url, **kwargs)

    def request(self, method: str, url: str, headers=None, data=None, **_) -> Answer:
        path, _, query = url.split("/v2/", 1)[1].partition("?")
        repository, kind, reference = re.fullmatch(r"(.+)/(manifests|blobs|referrers)/(.*)", path).groups()
        if kind == "referrers":
            return Answer(404, b'{"errors":[{"code":"NOT_FOUND"}]}')
        if kind == "manifests":
            return self._manifest(method, repository, reference, data, (headers or {}).get("Content-Type", ""))
        if reference.startswith("uploads"):
            if method == "POST":
                return Answer(202, headers={"Location": f"/v2/{repository}/blobs/uploads/1"})
            digest = query.removeprefix("digest=")
            assert oci.digest_of(data) == digest
            self.blobs[digest] = data
            return Answer(201)
        found = self.blobs.get(reference)
        return Answer(200, found) if found is not None else Answer(404)

    def _manifest(self, method: str, repository: str, reference: str, body: bytes, media_type: str) -> Answer:
        if method == "PUT":
            return Answer(201, headers={"Docker-Content-Digest": self.put(repository, reference, body, media_type)})
        digest = reference if reference.startswith("sha256:") else self.tags.get((repository, reference))
        if digest not in self.manifests:
            return Answer(404)
        body, media_type = self.manifests[digest]
        return Answer(200, body, {"Content-Type": media_type, "Docker-Content-Digest": digest})

    def put(self, repository: str, reference: str, body: bytes, media_type: str) -> str:
        digest = oci.digest_of(body)
        self.manifests[digest] = (body, media_type)
        if not reference.startswith("sha256:"):
            self.tags[(repository, reference)] = digest
        return digest


class DaemonPushingTo:
    """Stands in for the Docker daemon: tags images, and pushes each tag's image to a registry as a manifest whose
    digest depends on the image; the key tag's image (the built one) differs from the version tags' (labelled)."""

    def __init__(self, registry: DistributionWithoutReferrers) -> None:
        self.registry, self.images, self.pushed = registry, {}, {}
        self.client = SimpleNamespace(version=lambda: {"Version": "28.2.2"})

    def tag(self, image: str, repository: str, tag: str) -> None:
        self.images[f"{repository}:{tag}"] = self.images.get(image, image)

    def push(self, repository: str, tag: str) -> str:
        ref = f"{repository}:{tag}"
        body = json.dumps({"mediaType": DOCKER_MANIFEST, "image": self.images[ref]}).encode()
        self.pushed[ref] = self.registry.put(repository.split("/", 1)[1], tag, body, DOCKER_MANIFEST)
        return self.pushed[ref]

    def remote_digest(self, ref: str) -> str:
        return self.pushed[ref]

    def inspect(self, ref: str) -> dict:
        image = self.images.get(ref, ref)
        return {
            "Id": image,
            "RootFS": {"Layers": ["sha256:" + "1" * 64]},
            "RepoDigests": [f"{r.rsplit(':', 1)[0]}@{d}" for r, d in self.pushed.items() if self.images[r] == image],
        }

    def read_filesystem(self, image: str, read):
        return read(rootfs_tar({"usr/lib/python3/dist-packages/six-1.16.0.egg-info": b"Name: six\nVersion: 1.16.0\n"}))


@pytest.fixture
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def publish(tmp_path, monkeypatch, key, tags: tuple[str, ...]):
    """`publish` of the hub, pushed under `tags`, to a registry without a referrers API; (registry, daemon,
    provenance)."""
    registry = DistributionWithoutReferrers()
    daemon = DaemonPushingTo(registry)
    daemon.images["hubforge/hub:k1"] = "built"
    builder = SimpleNamespace(
        docker=daemon, normalize=lambda raw, ref, labels, keep: daemon.images.__setitem__(ref, "labelled")
    )
    hub = SimpleNamespace(
        target=SimpleNamespace(name="hub", flavor="default", repository="hubforge/hub"),
        key="k1",
        remote_key="k1",
        ref="hubforge/hub:k1",
    )
    base = SimpleNamespace(
        target=SimpleNamespace(name="base", flavor="default", repository="hubforge/base"),
        key="b1",
        remote_key="b1",
        ref="hubforge/base:b1",
    )
    monkeypatch.setattr(rel, "provenance", lambda *args, **kwargs: {"key": "k1", "git": {"sha": "a" * 40}})
    real = oci.Registry
    monkeypatch.setattr(oci, "Registry", lambda host, credentials: real(host, credentials, session=registry))
    monkeypatch.setattr(pipeline, "stored_credentials", lambda host: None)
    request = pipeline.Request(rel.parse_version("1.2.3"), REGISTRY, "ns")
    push = rel.Push("hub", "hubforge/hub:k1", f"{REGISTRY}/ns/hub", tags)
    pipeline.publish(builder, tmp_path, request, [hub, base], [push], "a" * 40, None, lambda message: None, key)
    monkeypatch.undo()
    return registry, daemon, json.loads((tmp_path / "dist/hub-1.2.3.provenance.json").read_text())


@pytest.fixture
def released(tmp_path, monkeypatch, key):
    return publish(tmp_path, monkeypatch, key, ("1.2.3", "1.2", "1", "latest", "sha-abcdef123456", "k1"))


def test_an_image_pushed_only_under_its_key_is_described_by_that_tags_digest(tmp_path, monkeypatch, key):
    """The swarm's registry image is released under its key tag alone: its provenance names that tag's digest."""
    _, daemon, provenance = publish(tmp_path, monkeypatch, key, ("k1",))
    assert provenance["digest"] == daemon.pushed[f"{REGISTRY}/ns/hub:k1"] and provenance["tags"] == {
        "k1": provenance["digest"]
    }


def test_provenance_names_the_digest_of_every_version_tag_not_the_key_tag(released):
    """It named the key tag's digest (the last pushed): provenance.digest was sha256:586a… where 1.2.3 had
    sha256:6cc8…."""
    _, daemon, provenance = released
    versions = {
        tag: daemon.pushed[f"{REGISTRY}/ns/hub:{tag}"] for tag in ("1.2.3", "1.2", "1", "latest", "sha-abcdef123456")
    }
    assert provenance["tags"] == versions
    assert set(versions.values()) == {provenance["digest"]}
    assert daemon.pushed[f"{REGISTRY}/ns/hub:k1"] != provenance["digest"]  # the key tag is the built image, unlabelled


def test_version_tags_with_different_digests_are_refused_in_one_line():
    with pytest.raises(
        HubforgeError,
        match=r"^hub: the registry gives its version tags different digests \(1.2.3 sha256:a, "
        r"latest sha256:b\); push again$",
    ):
        pipeline.release_digest("hub", {"1.2.3": "sha256:a", "latest": "sha256:b"})
    assert pipeline.release_digest("hub", {"1.2.3": "sha256:a", "latest": "sha256:a"}) == "sha256:a"


def test_attached_sbom_and_provenance_verify_against_the_version_tag(released, key):
    registry, _, provenance = released
    client = oci.Registry(REGISTRY, session=registry)
    verified = attest.verify_image(client, f"{REGISTRY}/ns/hub:1.2.3", key.public_key())
    assert verified.digest == provenance["digest"]
    assert verified.predicates[sign.PREDICATE_PROVENANCE] == provenance
    sbom = verified.predicates[sign.PREDICATE_SBOM]
    assert [c["purl"] for c in sbom["components"]] == ["pkg:pypi/six@1.16.0"]
    # the referrers tag of the OCI spec holds both, for a registry without the referrers API
    index = json.loads(client.manifest("ns/hub", oci.referrers_tag(provenance["digest"]))[0])
    assert sorted(m["annotations"][attest.PREDICATE] for m in index["manifests"]) == sorted(attest.REQUIRED)


def test_another_key_does_not_verify(released):
    registry, _, _ = released
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(HubforgeError, match="the signature does not match this key"):
        attest.verify_image(oci.Registry(REGISTRY, session=registry), f"{REGISTRY}/ns/hub:latest", other)


def forge(registry: DistributionWithoutReferrers, digest: str, change) -> None:
    """Attach, beside the real attestations, a copy of the provenance's whose statement `change` altered and whose
    manifest keeps the original signature."""
    client = oci.Registry(REGISTRY, session=registry)
    for entry in client.referrers("ns/hub", digest):
        manifest = json.loads(client.manifest("ns/hub", entry["digest"])[0])
        layer = manifest["layers"][0]
        if layer["annotations"][attest.PREDICATE] != sign.PREDICATE_PROVENANCE:
            continue
        data = change(client.blob("ns/hub", layer["digest"]))
        layer.update(digest=client.put_blob("ns/hub", data), size=len(data))
        client.attach("ns/hub", manifest, {"artifactType": attest.ARTIFACT_TYPE})


def test_one_changed_byte_of_an_attached_statement_fails_verification(released, key):
    registry, _, provenance = released
    forge(registry, provenance["digest"], lambda data: data.replace(b'"key":"k1"', b'"key":"k2"'))
    with pytest.raises(HubforgeError, match="the signature does not match this key"):
        attest.verify_image(oci.Registry(REGISTRY, session=registry), f"{REGISTRY}/ns/hub:1.2.3", key.public_key())


def test_a_signed_statement_about_another_image_is_refused(released, key):
    registry, _, provenance = released
    client = oci.Registry(REGISTRY, session=registry)
    other = "sha256:" + "0" * 64
    data = sign.statement(f"{REGISTRY}/ns/hub", other, sign.PREDICATE_PROVENANCE, {"digest": other})
    layer = oci.Descriptor(attest.ARTIFACT_TYPE, client.put_blob("ns/hub", data), len(data))
    subject = client.manifest("ns/hub", provenance["digest"])[1]
    client.attach(
        "ns/hub",
        attest.artifact_manifest(subject, layer, sign.PREDICATE_PROVENANCE, sign.sign(key, data)),
        {"artifactType": attest.ARTIFACT_TYPE},
    )
    with pytest.raises(HubforgeError, match="it was moved from another image"):
        attest.verify_image(client, f"{REGISTRY}/ns/hub:1.2.3", key.public_key())


def test_an_image_without_attestations_or_with_unsigned_ones_is_refused(key):
    registry = DistributionWithoutReferrers()
    client = oci.Registry(REGISTRY, session=registry)
    registry.put("ns/hub", "1.0.0", b'{"mediaType":"x"}', DOCKER_MANIFEST)
    with pytest.raises(HubforgeError, match=r"has no signed https://cyclonedx.org/bom or .*provenance/v1 attached"):
        attest.verify_image(client, f"{REGISTRY}/ns/hub:1.0.0", key.public_key())
    digest = client.manifest("ns/hub", "1.0.0")[1].digest
    attest.attach(client, f"{REGISTRY}/ns/hub", digest, {sign.PREDICATE_SBOM: {}, sign.PREDICATE_PROVENANCE: {}}, None)
    with pytest.raises(HubforgeError, match="is not signed; sign releases with --signing-key"):
        attest.verify_image(client, f"{REGISTRY}/ns/hub:1.0.0", key.public_key())


def test_a_registry_serving_other_bytes_for_a_digest_is_caught(released, key):
    registry, _, provenance = released
    body, media_type = registry.manifests[provenance["digest"]]
    registry.manifests[provenance["digest"]] = (body + b" ", media_type)
    with pytest.raises(HubforgeError, match="do not trust it"):
        attest.verify_image(oci.Registry(REGISTRY, session=registry), f"{REGISTRY}/ns/hub:1.2.3", key.public_key())


# -- signatures and keys ------------------------------------------------------------------------------------------
def test_a_signature_verifies_and_fails_on_any_changed_byte(key):
    data = sign.statement("hubforge/hub", "sha256:" + "ab" * 32, sign.PREDICATE_PROVENANCE, {"digest": "sha256:ab"})
    signature = sign.sign(key, data)
    sign.verify(key.public_key(), data, signature, "hub")
    for position in (0, len(data) // 2, len(data) - 1):
        changed = bytearray(data)
        changed[position] ^= 1
        with pytest.raises(HubforgeError, match="^hub: the signature does not match this key"):
            sign.verify(key.public_key(), bytes(changed), signature, "hub")
    with pytest.raises(HubforgeError, match="does not match"):
        sign.verify(key.public_key(), data, "not base64!", "hub")


def test_keys_load_from_pem_files_as_openssl_and_cosign_write_them(tmp_path, key):
    private = tmp_path / "hubforge.key"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")
        )
    )
    public = tmp_path / "hubforge.pub"
    public.write_bytes(sign.public_pem(key))
    loaded = sign.load_private_key(private, "pw")
    sign.verify(sign.load_public_key(public), b"x", sign.sign(loaded, b"x"), "x")
    assert public.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")  # what `cosign verify-blob --key` reads


@pytest.mark.parametrize(
    "make",
    [
        lambda path: None,
        lambda path: path.write_text("not a key"),
        lambda path: path.write_bytes(
            ec.generate_private_key(ec.SECP384R1()).private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        ),
    ],
)
def test_a_missing_or_wrong_key_is_one_line_that_says_how_to_make_one(tmp_path, make):
    path = tmp_path / "hubforge.key"
    make(path)
    with pytest.raises(HubforgeError, match=r"openssl ecparam -name prime256v1") as caught:
        sign.load_private_key(path)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("reference", "parts"),
    [
        ("127.0.0.1:5000/hftest/hub:9.8.7", ("127.0.0.1:5000", "hftest/hub", "9.8.7")),
        ("hubforge/hub:1.4.0", ("registry-1.docker.io", "hubforge/hub", "1.4.0")),
        ("docker.io/hubforge/hub", ("registry-1.docker.io", "hubforge/hub", "latest")),
        ("debian", ("registry-1.docker.io", "library/debian", "latest")),
        ("ghcr.io/team/lab@sha256:" + "a" * 64, ("ghcr.io", "team/lab", "sha256:" + "a" * 64)),
        ("localhost:5000/lab", ("localhost:5000", "lab", "latest")),
    ],
)
def test_references_split_as_docker_splits_them(reference, parts):
    assert oci.split_reference(reference) == parts


def test_only_loopback_registries_are_spoken_to_over_http():
    assert [oci.Registry(host).base.split(":")[0] for host in ("127.0.0.1:5000", "localhost:5000", "ghcr.io")] == [
        "http",
        "http",
        "https",
    ]


def test_the_statement_is_an_in_toto_statement_about_the_digest():
    data = sign.statement("r/hub", "sha256:" + "c" * 64, sign.PREDICATE_SBOM, {"bomFormat": "CycloneDX"})
    document = sign.read_statement(data)
    assert document["_type"] == "https://in-toto.io/Statement/v1"
    assert sign.subject_digests(document) == {"sha256:" + "c" * 64}
    assert (
        hashlib.sha256(data).hexdigest()
        == hashlib.sha256(
            sign.statement("r/hub", "sha256:" + "c" * 64, sign.PREDICATE_SBOM, {"bomFormat": "CycloneDX"})
        ).hexdigest()
    )  # canonical
    with pytest.raises(HubforgeError, match="not an in-toto statement"):
        sign.read_statement(b'{"predicate": {}}')


def test_the_cache_index_is_signed_with_the_release_key_and_a_changed_byte_fails(tmp_path, monkeypatch, key):
    """A cache index fetched from where the registry lives could be rewritten together with the images it vouches
    for: `invoke build --cache-key` accepts it only with the release key's signature of its exact bytes."""
    from hubforge.imagebuild import remote_cache

    publish(tmp_path, monkeypatch, key, ("1.2.3", "k1"))
    index = tmp_path / "dist" / "cache-index-1.2.3.json"
    public = tmp_path / "release.pub.pem"
    public.write_bytes(sign.public_pem(key))
    signature = remote_cache.signature_path(index).read_text().strip()
    sign.verify(
        sign.load_public_key(public), index.read_bytes(), signature, "the cache index"
    )  # what load checks first
    data = bytearray(index.read_bytes())
    data[data.index(b'"k1"') + 2] = ord("2")  # one byte: the index now vouches under another key
    index.write_bytes(bytes(data))
    with pytest.raises(HubforgeError, match="the cache index cache-index-1.2.3.json: the signature does not match"):
        remote_cache.load(index, public)
