"""Throwaway certificate authorities for the tests: a CA in a folder, and the certificates it issues for 127.0.0.1
(the mutual TLS tests, the Kubernetes control plane's serving and client certificates)."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SERVER_AND_CLIENT = (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH)


class Authority:
    """A certificate authority in a folder: its certificate (`ca_file`), and the certificates it issues."""

    def __init__(self, folder: Path, name: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.key, self.name = folder, ec.generate_private_key(ec.SECP256R1()), _name(name)
        cert = (
            _builder(self.name, self.name, self.key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.ca_file = write_pem(folder / f"{name}.crt", cert.public_bytes(serialization.Encoding.PEM))

    def issue(
        self, name: str, organization: str = "", usages: tuple[x509.ObjectIdentifier, ...] = SERVER_AND_CLIENT
    ) -> tuple[Path, Path]:
        """A certificate for `name` (in `organization`, if any) on 127.0.0.1 and localhost; its files (cert, key)."""
        key = ec.generate_private_key(ec.SECP256R1())
        sans = x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        )
        cert = (
            _builder(_name(name, organization), self.name, key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
            .add_extension(sans, critical=False)
            .sign(self.key, hashes.SHA256())
        )
        cert_file = write_pem(self.folder / f"{name}.crt", cert.public_bytes(serialization.Encoding.PEM))
        return cert_file, write_pem(self.folder / f"{name}.key", private_pem(key))


def private_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def write_pem(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o600)
    return path


def _name(common_name: str, organization: str = "") -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization)] if organization else []
    return x509.Name([*attributes, x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
