"""The hub's TLS certificate: the operator's own, or a self-signed one made once and kept in a volume."""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

SELF_SIGNED_ORG = "hubforge self-signed"


def missing_names(cert: Path, hostnames: list[str]) -> list[str]:
    """The names a self-signed certificate made by hubforge does not cover (an older one, made before the
    labs had subdomains). A certificate of anyone else's is never judged: [] for it."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        loaded = x509.load_pem_x509_certificate(cert.read_bytes())
    except (OSError, ValueError):
        return list(hostnames)  # unreadable: make a new one
    orgs = [a.value for a in loaded.issuer.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    if SELF_SIGNED_ORG not in orgs:
        return []
    try:
        sans = loaded.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return list(hostnames)
    have = {str(n) for n in sans.get_values_for_type(x509.DNSName)} | {
        str(n) for n in sans.get_values_for_type(x509.IPAddress)
    }
    return [name for name in hostnames if name not in have]


def ensure_self_signed(cert: Path, key: Path, hostnames: list[str], days: int = 825) -> bool:
    """Write a self-signed certificate and key unless both exist and cover `hostnames` (the first one is
    the subject). Returns True when it made them."""
    if cert.exists() and key.exists() and not missing_names(cert, hostnames):
        return False
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys([*hostnames, "localhost", "127.0.0.1"]):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0] if hostnames else "localhost"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, SELF_SIGNED_ORG),
        ]
    )
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
    cert.parent.mkdir(parents=True, exist_ok=True)
    key_bytes = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key_bytes)
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return True
