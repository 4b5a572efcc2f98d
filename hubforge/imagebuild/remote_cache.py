"""The remote cache's index: for each image and full key, the digest of the image built from that key.

A key is a hash of an image's inputs, not of the image, so a registry that answers for a key tag can serve any
image under it. `invoke release` therefore writes, beside the key tags it pushes, an index (dist/cache-index-
VERSION.json, attached to the release with its provenance) that names the digest of each. `invoke build
--cache-from` takes the index from the user (`--cache-index FILE`), never from the registry it pulls from, pulls
`name@digest` only, and accepts the pulled image only when it is the one the index describes. Decisions here are
pure; builder.py makes the Docker calls.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import HubforgeError

SCHEMA = "hubforge.cache-index/v1"
_FULL_KEY = re.compile(r"[0-9a-f]{64}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass(frozen=True)
class Entry:
    """What a key tag in the cache must hold: the manifest digest the registry reported when it was pushed, and the
    built image's id and layers (what a local build of the key gives, bit for bit)."""

    digest: str
    image_id: str
    layers: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"digest": self.digest, "image_id": self.image_id, "layers": list(self.layers)}


def entry_for(digest: str, inspected: Mapping[str, Any]) -> Entry:
    """The index entry of a pushed key tag: its registry digest and the local image it was pushed from."""
    return Entry(digest, inspected["Id"], tuple(inspected["RootFS"]["Layers"]))


def repository_name(repository: str) -> str:
    """The name an image has in a cache namespace: hubforge/lab-datascience -> lab-datascience."""
    return repository.split("/", 1)[1]


def remote_repository(cache_from: str, repository: str) -> str:
    return f"{cache_from.rstrip('/')}/{repository_name(repository)}"


def dump(entries: Mapping[str, Mapping[str, Entry]]) -> dict[str, Any]:
    """The index document: {"schema", "images": {name: {full key: entry}}}, sorted so that it diffs well."""
    return {
        "schema": SCHEMA,
        "images": {
            name: {key: entry.to_json() for key, entry in sorted(keys.items())}
            for name, keys in sorted(entries.items())
        },
    }


@dataclass(frozen=True)
class CacheIndex:
    source: str  # where it was read from, for messages
    images: Mapping[str, Mapping[str, Entry]]

    def entry(self, name: str, full_key: str) -> Entry | None:
        return self.images.get(name, {}).get(full_key)


def parse(document: Any, source: str) -> CacheIndex:
    """A checked index: every key a full sha256, every digest and image id a sha256 digest; one line otherwise."""
    if (
        not isinstance(document, dict)
        or document.get("schema") != SCHEMA
        or not isinstance(document.get("images"), dict)
    ):
        raise HubforgeError(
            f"{source} is not a hubforge cache index ({SCHEMA}); pass the cache-index-*.json of a release"
        )
    images: dict[str, dict[str, Entry]] = {}
    for name, keys in document["images"].items():
        for key, raw in (keys or {}).items():
            try:
                entry = Entry(raw["digest"], raw["image_id"], tuple(raw["layers"]))
            except (KeyError, TypeError) as exc:
                raise HubforgeError(
                    f"{source}: {name} {key} lacks {exc}; pass the cache-index-*.json of a release"
                ) from None
            if not _FULL_KEY.fullmatch(key) or not all(
                _DIGEST.fullmatch(d) for d in (entry.digest, entry.image_id, *entry.layers)
            ):
                raise HubforgeError(
                    f"{source}: {name} {key[:80]!r} is not a full sha256 key with sha256 digests; "
                    "pass the cache-index-*.json of a release"
                )
            images.setdefault(name, {})[key] = entry
    return CacheIndex(source, images)


def signature_path(index: Path) -> Path:
    """Where a release writes the signature of its cache index: beside it, `.sig` added."""
    return index.with_name(index.name + ".sig")


def load(path: Path, public_key: Path | None = None) -> CacheIndex:
    """The index at `path`; with `public_key`, only when `path`.sig is that key's signature of its exact bytes (an
    index fetched from where the registry lives could otherwise be rewritten with the images it vouches for)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise HubforgeError(f"cannot read the cache index {path}: {exc.strerror}; pass --cache-index FILE") from None
    if public_key is not None:
        from ..release import sign

        key = sign.load_public_key(public_key)
        try:
            signature = signature_path(path).read_text().strip()
        except OSError:
            raise HubforgeError(
                f"{path} has no signature beside it ({signature_path(path).name}); fetch it with the "
                "index from the release, or drop --cache-key to trust the index unsigned"
            ) from None
        sign.verify(key, data, signature, f"the cache index {path.name}")
    try:
        document = json.loads(data)
    except ValueError:
        raise HubforgeError(f"{path} is not JSON; pass the cache-index-*.json of a release") from None
    return parse(document, str(path))


def refusal(entry: Entry, inspected: Mapping[str, Any] | None, labels: Mapping[str, str]) -> str:
    """Why the image pulled by `entry.digest` must not stand in for a build ("" when it may).

    Docker checks a by-digest pull against the digest, so this is a second lock: the image id must be the built
    image's (Docker's classic store: the config digest) or the manifest digest (the containerd store names images
    by it), its layers those of the build, and its labels those a build of this key carries (`labels`)."""
    if inspected is None:
        return "the pull left no image in the local store"
    if inspected.get("Id") not in (entry.image_id, entry.digest):
        return f"its image id is {inspected.get('Id')}, the cache index names {entry.image_id}"
    if tuple((inspected.get("RootFS") or {}).get("Layers") or ()) != entry.layers:
        return "its layers are not those the cache index names"
    found = (inspected.get("Config") or {}).get("Labels") or {}
    for name, value in sorted(labels.items()):
        if found.get(name) != value:
            return f"its label {name} is {found.get(name)!r}, a build of this key has {value!r}"
    return ""


def tag_refusal(tag_ref: str, served: str | None, entry: Entry) -> str:
    """Why a key tag that could not be pulled by its indexed digest is refused ("" when the registry simply lacks
    it: then it is a cache miss, not an attack or a mistake worth a line)."""
    if served is None or served == entry.digest:
        return ""
    return f"{tag_ref} is {served}, not the {entry.digest} the cache index names"
