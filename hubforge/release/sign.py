"""Signed statements about released images: in-toto statements, signed with an ECDSA P-256 key as cosign signs blobs.

A signature is the base64 of an ECDSA-SHA256 signature (DER) over the statement's exact bytes, so a statement
and its signature also verify with `cosign verify-blob --key hubforge.pub --signature FILE.sig FILE`.
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ..errors import HubforgeError

STATEMENT = "https://in-toto.io/Statement/v1"
PREDICATE_SBOM = "https://cyclonedx.org/bom"
PREDICATE_PROVENANCE = "https://github.com/hubforge/hubforge/provenance/v1"
KEY_HINT = (
    "make one with `openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt -out hubforge.key`"
)


def statement(repository: str, digest: str, predicate_type: str, predicate: Any) -> bytes:
    """The in-toto statement that `predicate` is about the image `repository@digest`, as the bytes that are signed."""
    algorithm, _, hexdigest = digest.partition(":")
    document = {
        "_type": STATEMENT,
        "subject": [{"name": repository, "digest": {algorithm: hexdigest}}],
        "predicateType": predicate_type,
        "predicate": predicate,
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def read_statement(data: bytes) -> dict[str, Any]:
    """A statement's fields, once its signature is checked; one line when it is not an in-toto statement."""
    try:
        document = json.loads(data)
    except ValueError:
        document = None
    if not isinstance(document, dict) or document.get("_type") != STATEMENT or not document.get("subject"):
        raise HubforgeError("the attestation is not an in-toto statement with a subject; it was not made by a release")
    return document


def subject_digests(document: dict[str, Any]) -> set[str]:
    return {
        f"{algorithm}:{value}"
        for subject in document["subject"]
        for algorithm, value in subject.get("digest", {}).items()
    }


# -- keys ------------------------------------------------------------------------------------------------------
def load_private_key(path: Path, password: str | None = None) -> ec.EllipticCurvePrivateKey:
    """A PEM (PKCS#8 or SEC1) ECDSA P-256 private key, the kind `cosign verify-blob --key` checks against."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password.encode() if password else None)
    except FileNotFoundError:
        raise HubforgeError(f"no signing key {path}; {KEY_HINT}") from None
    except (ValueError, TypeError) as exc:
        raise HubforgeError(f"{path} is not a PEM private key this password opens ({exc}); {KEY_HINT}") from None
    return _p256(key, path)


def load_public_key(path: Path) -> ec.EllipticCurvePublicKey:
    """A PEM public key (`openssl ec -in hubforge.key -pubout`, or cosign's `cosign.pub`)."""
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except FileNotFoundError:
        raise HubforgeError(f"no public key {path}; pass the release's public key with --key") from None
    except ValueError as exc:
        raise HubforgeError(
            f"{path} is not a PEM public key ({exc}); pass the release's public key with --key"
        ) from None
    return _p256(key, path)


def _p256(key: Any, path: Path) -> Any:
    if not isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)) or key.curve.name != "secp256r1":
        raise HubforgeError(f"{path} is not an ECDSA P-256 key; {KEY_HINT}")
    return key


def public_pem(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> bytes:
    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


# -- signatures -------------------------------------------------------------------------------------------------
def sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> str:
    return base64.b64encode(key.sign(data, ec.ECDSA(hashes.SHA256()))).decode()


def verify(key: ec.EllipticCurvePublicKey, data: bytes, signature: str, what: str) -> None:
    """Raise, in one line naming `what`, unless `signature` is the key's signature of exactly `data`."""
    try:
        key.verify(base64.b64decode(signature, validate=True), data, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, binascii.Error, ValueError):
        raise HubforgeError(
            f"{what}: the signature does not match this key; the attestation was changed or signed by "
            "another key, do not trust the image"
        ) from None
