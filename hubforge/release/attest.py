"""Attestations in the registry: each released image's SBOM and provenance, signed and attached to its digest.

Each attestation is an OCI artifact manifest whose `subject` is the image's manifest and whose one layer is a signed
in-toto statement (sign.py); its signature rides in the layer's annotations, where cosign keeps its own. A verifier
finds them by the image's digest (the referrers API, or the referrers tag), checks every signature with the release's
public key, and checks that each statement names the digest it was found by.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from ..errors import HubforgeError
from . import oci, sign

ARTIFACT_TYPE = "application/vnd.in-toto+json"
SIGNATURE = "dev.cosignproject.cosign/signature"
PREDICATE = "in-toto.io/predicate-type"
REQUIRED = (sign.PREDICATE_SBOM, sign.PREDICATE_PROVENANCE)


def artifact_manifest(
    subject: oci.Descriptor, layer: oci.Descriptor, predicate_type: str, signature: str | None
) -> dict[str, Any]:
    """The OCI artifact manifest of one statement (OCI image spec 1.1: empty config, `artifactType`, `subject`)."""
    annotations = {PREDICATE: predicate_type, **({SIGNATURE: signature} if signature else {})}
    return {
        "schemaVersion": 2,
        "mediaType": oci.OCI_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": oci.Descriptor(oci.EMPTY, oci.digest_of(b"{}"), 2).to_json(),
        "layers": [layer.to_json(annotations=annotations)],
        "subject": subject.to_json(),
        "annotations": {PREDICATE: predicate_type},
    }


def attach(
    registry: oci.Registry,
    repository: str,
    digest: str,
    predicates: Mapping[str, Any],
    key: ec.EllipticCurvePrivateKey | None,
) -> list[str]:
    """Attach one statement per predicate to `repository@digest` (signed when there is a key); their digests."""
    _, path, _ = oci.split_reference(f"{repository}@{digest}")
    found = registry.manifest(path, digest)
    if found is None:
        raise HubforgeError(
            f"the registry has no {repository}@{digest} to attach the SBOM and provenance to; push again"
        )
    subject = found[1]
    registry.put_blob(path, b"{}")
    attached = []
    for predicate_type, predicate in predicates.items():
        data = sign.statement(repository, digest, predicate_type, predicate)
        layer = oci.Descriptor(ARTIFACT_TYPE, registry.put_blob(path, data), len(data))
        manifest = artifact_manifest(subject, layer, predicate_type, sign.sign(key, data) if key else None)
        attached.append(
            registry.attach(path, manifest, {"artifactType": ARTIFACT_TYPE, "annotations": {PREDICATE: predicate_type}})
        )
    return attached


@dataclass(frozen=True)
class Verified:
    """An image whose attestations all verified: its digest and each statement's predicate by type."""

    reference: str
    digest: str
    predicates: dict[str, Any]


def verify_image(registry: oci.Registry, reference: str, key: ec.EllipticCurvePublicKey) -> Verified:
    """Fetch every in-toto attestation of `reference`, check each signature with `key` and that each names the digest
    the reference resolves to; an SBOM and a provenance must be among them."""
    _, path, tag = oci.split_reference(reference)
    found = registry.manifest(path, tag)
    if found is None:
        raise HubforgeError(f"the registry has no {reference}; check the name and tag")
    digest = found[1].digest
    predicates: dict[str, Any] = {}
    for entry in registry.referrers(path, digest):
        if entry.get("artifactType") == ARTIFACT_TYPE:
            predicate_type, predicate = verify_attestation(registry, path, digest, entry["digest"], key)
            predicates[predicate_type] = predicate
    missing = [p for p in REQUIRED if p not in predicates]
    if missing:
        raise HubforgeError(
            f"{reference} ({digest}) has no signed {' or '.join(missing)} attached; it was not released "
            "by `invoke release --push --signing-key`, or the registry lost them"
        )
    provenance_digest = predicates[sign.PREDICATE_PROVENANCE].get("digest")
    if provenance_digest != digest:
        raise HubforgeError(
            f"{reference}: the signed provenance names {provenance_digest}, the registry serves {digest}"
        )
    return Verified(reference, digest, predicates)


def verify_attestation(
    registry: oci.Registry, path: str, digest: str, manifest_digest: str, key: ec.EllipticCurvePublicKey
) -> tuple[str, Any]:
    """(predicate type, predicate) of one attached attestation, once its subject, signature and statement check."""
    found = registry.manifest(path, manifest_digest)
    if found is None:
        raise HubforgeError(f"the registry lists the attestation {manifest_digest} of {digest} but does not serve it")
    manifest = json.loads(found[0])
    if (manifest.get("subject") or {}).get("digest") != digest or len(manifest.get("layers", [])) != 1:
        raise HubforgeError(f"the attestation {manifest_digest} is not about {digest}; the registry's index is wrong")
    layer = manifest["layers"][0]
    data = registry.blob(path, layer["digest"])
    signature = (layer.get("annotations") or {}).get(SIGNATURE)
    if not signature:
        raise HubforgeError(
            f"the attestation {manifest_digest} of {digest} is not signed; sign releases with --signing-key"
        )
    sign.verify(key, data, signature, f"the attestation {manifest_digest} of {digest}")
    document = sign.read_statement(data)
    if digest not in sign.subject_digests(document):
        raise HubforgeError(
            f"the signed attestation {manifest_digest} is about {sorted(sign.subject_digests(document))}, "
            f"not {digest}: it was moved from another image"
        )
    return document["predicateType"], document.get("predicate")
