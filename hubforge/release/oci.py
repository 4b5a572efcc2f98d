"""A small client of the OCI distribution API: manifests, blobs and referrers, for the release's attestations.

Images are pushed by the Docker daemon (docker_io); what the daemon cannot do (push an artifact manifest whose
`subject` is an image, list an image's referrers) goes straight to the registry here.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import urllib.parse
from dataclasses import dataclass
from typing import Any

import requests

from ..errors import HubforgeError

DOCKER_HUB_API = "registry-1.docker.io"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
EMPTY = "application/vnd.oci.empty.v1+json"  # the config of an artifact that has none (OCI image spec 1.1)
MANIFEST_TYPES = (
    OCI_MANIFEST,
    OCI_INDEX,
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
TIMEOUT = 60.0


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def split_reference(reference: str) -> tuple[str, str, str]:
    """(registry host, repository path, tag or digest) of `host/ns/name:tag`, `ns/name@sha256:…` (Docker Hub), …"""
    name, at, digest = reference.partition("@")
    tag = ""
    if not at:
        slash = name.rfind("/")
        if ":" in name[slash + 1 :]:
            name, tag = name.rsplit(":", 1)
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        host, path = first, rest
    else:
        host, path = DOCKER_HUB_API, name if "/" in name else f"library/{name}"
    if host in ("docker.io", "index.docker.io"):
        host = DOCKER_HUB_API
    return host, path, digest or tag or "latest"


def is_loopback(host: str) -> bool:
    """Docker's own rule: a registry on 127.0.0.0/8 or localhost is spoken to over plain http."""
    bare = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
    return bare == "localhost" or bare.startswith("127.") or bare == "[::1]"


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int

    def to_json(self, **extra: Any) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size, **extra}


class Registry:
    """One registry host. Credentials (user, password or token) answer its Basic or Bearer challenge."""

    def __init__(self, host: str, credentials: tuple[str, str] | None = None, session: Any = None) -> None:
        self.host, self.credentials = host, credentials
        self.base = f"{'http' if is_loopback(host) else 'https'}://{host}/v2/"
        self.session = session or requests.Session()
        self.session.trust_env = not is_loopback(host)  # no proxy between us and a loopback registry
        self._tokens: dict[str, str] = {}

    # -- HTTP with the registry's auth challenge -------------------------------------------------------------
    def request(self, method: str, path: str, scope: str, **kwargs: Any) -> requests.Response:
        url = path if path.startswith("http") else self.base + path
        headers = dict(kwargs.pop("headers", {}))
        if scope in self._tokens:
            headers["Authorization"] = self._tokens[scope]
        try:
            answer = self.session.request(method, url, headers=headers, timeout=TIMEOUT, **kwargs)
            if answer.status_code == 401 and scope not in self._tokens:
                self._tokens[scope] = self._authorize(answer.headers.get("WWW-Authenticate", ""), scope)
                headers["Authorization"] = self._tokens[scope]
                answer = self.session.request(method, url, headers=headers, timeout=TIMEOUT, **kwargs)
        except requests.RequestException as exc:
            raise HubforgeError(
                f"the registry {self.host} did not answer ({type(exc).__name__}); check its address and that it runs"
            ) from None
        return answer

    def _authorize(self, challenge: str, scope: str) -> str:
        scheme, _, params = challenge.partition(" ")
        fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
        if scheme.lower() == "basic" and self.credentials:
            return "Basic " + base64.b64encode(":".join(self.credentials).encode()).decode()
        if scheme.lower() != "bearer" or "realm" not in fields:
            raise HubforgeError(
                f"the registry {self.host} wants credentials; `docker login {self.host}` or set "
                "DOCKERHUB_USERNAME and DOCKERHUB_TOKEN"
            )
        query = {"service": fields.get("service", ""), "scope": fields.get("scope", scope)}
        answer = self.session.get(fields["realm"], params=query, auth=self.credentials, timeout=TIMEOUT)
        if answer.status_code != 200:
            raise HubforgeError(
                f"the registry {self.host} refused a token for {query['scope']} ({answer.status_code}); "
                "check the credentials"
            )
        token = answer.json().get("token") or answer.json().get("access_token")
        return f"Bearer {token}"

    @staticmethod
    def _scope(repository: str, push: bool = False) -> str:
        return f"repository:{repository}:{'pull,push' if push else 'pull'}"

    # -- manifests and blobs ---------------------------------------------------------------------------------
    def manifest(self, repository: str, reference: str) -> tuple[bytes, Descriptor] | None:
        """A manifest's bytes and descriptor, checked against its digest; None when the registry has none there."""
        answer = self.request(
            "GET",
            f"{repository}/manifests/{reference}",
            self._scope(repository),
            headers={"Accept": ", ".join(MANIFEST_TYPES)},
        )
        if answer.status_code == 404:
            return None
        _raise_for(answer, f"{repository}:{reference}")
        body = answer.content
        digest = digest_of(body)
        expected = reference if reference.startswith("sha256:") else answer.headers.get("Docker-Content-Digest", digest)
        if digest != expected:
            raise HubforgeError(
                f"the registry served {repository}@{expected} with the digest {digest}; do not trust it"
            )
        media_type = answer.headers.get("Content-Type", "").split(";")[0] or json.loads(body).get("mediaType", "")
        return body, Descriptor(media_type, digest, len(body))

    def blob(self, repository: str, digest: str) -> bytes:
        """A blob's bytes, checked against its digest."""
        answer = self.request("GET", f"{repository}/blobs/{digest}", self._scope(repository))
        _raise_for(answer, f"{repository}@{digest}")
        if digest_of(answer.content) != digest:
            raise HubforgeError(f"the registry served the blob {repository}@{digest} with other bytes; do not trust it")
        return answer.content

    def put_blob(self, repository: str, data: bytes) -> str:
        """Upload `data` (a monolithic upload: POST, then PUT with its digest) unless the registry has it."""
        digest, scope = digest_of(data), self._scope(repository, push=True)
        if self.request("HEAD", f"{repository}/blobs/{digest}", scope).status_code == 200:
            return digest
        started = self.request("POST", f"{repository}/blobs/uploads/", scope)
        _raise_for(started, f"an upload to {repository}")
        location = urllib.parse.urljoin(self.base, started.headers["Location"])
        joiner = "&" if "?" in location else "?"
        done = self.request(
            "PUT",
            f"{location}{joiner}digest={digest}",
            scope,
            data=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        _raise_for(done, f"the blob {digest} in {repository}")
        return digest

    def put_manifest(self, repository: str, reference: str, body: bytes, media_type: str) -> requests.Response:
        answer = self.request(
            "PUT",
            f"{repository}/manifests/{reference}",
            self._scope(repository, push=True),
            data=body,
            headers={"Content-Type": media_type},
        )
        _raise_for(answer, f"the manifest {repository}:{reference}")
        return answer

    # -- referrers (OCI distribution spec 1.1) ---------------------------------------------------------------
    def referrers(self, repository: str, digest: str) -> list[dict[str, Any]]:
        """The descriptors of the manifests whose subject is `digest`: the referrers API, or where the registry has
        none (distribution 2.8, as Debian ships it), the index at the referrers tag `sha256-<hex>`."""
        answer = self.request(
            "GET", f"{repository}/referrers/{digest}", self._scope(repository), headers={"Accept": OCI_INDEX}
        )
        if answer.status_code == 200 and answer.headers.get("Content-Type", "").startswith(OCI_INDEX):
            return answer.json().get("manifests", [])
        found = self.manifest(repository, referrers_tag(digest))
        return json.loads(found[0]).get("manifests", []) if found else []

    def attach(self, repository: str, manifest: dict[str, Any], descriptor_extra: dict[str, Any]) -> str:
        """Push an artifact manifest that has a `subject`; where the registry does not index it itself (no
        OCI-Subject header in its answer), add it to the referrers tag's index, as the spec asks of clients."""
        body = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
        digest = digest_of(body)
        answer = self.put_manifest(repository, digest, body, OCI_MANIFEST)
        if answer.headers.get("OCI-Subject"):
            return digest
        subject = manifest["subject"]["digest"]
        tag = referrers_tag(subject)
        found = self.manifest(repository, tag)
        index = json.loads(found[0]) if found else {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
        entry = Descriptor(OCI_MANIFEST, digest, len(body)).to_json(**descriptor_extra)
        index["manifests"] = [m for m in index.get("manifests", []) if m.get("digest") != digest] + [entry]
        self.put_manifest(repository, tag, json.dumps(index, sort_keys=True).encode(), OCI_INDEX)
        return digest


def referrers_tag(digest: str) -> str:
    """The OCI spec's fallback tag for the referrers of `digest`: `sha256-<hex>`."""
    algorithm, _, hexdigest = digest.partition(":")
    return f"{algorithm}-{hexdigest}"


def _raise_for(answer: requests.Response, what: str) -> None:
    if answer.status_code >= 400:
        raise HubforgeError(f"the registry answered {answer.status_code} for {what}: {answer.text[:200].strip()}")
