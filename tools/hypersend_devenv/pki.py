"""Certificates and keys for the local control plane, generated with `cryptography`.

One cluster CA signs the API server's serving certificate and every client certificate; a separate
front-proxy CA signs the client the aggregator uses towards APIService backends (the split
Kubernetes expects); the service-account key pair signs and verifies tokens. ECDSA P-256 keys keep
generation fast. Everything lands as PEM files in one directory, written once per state dir.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=365)


@dataclass(frozen=True)
class Client:
    """A client certificate's identity: CN is the user name, O the groups."""

    file_stem: str
    common_name: str
    organizations: tuple[str, ...] = ()


REAL_NODE_NAME = "hypersend-node"
# The identities the control plane components and the admin use. kube-controller-manager and
# kube-scheduler get the user names their built-in RBAC roles are bound to; kwok and the admin are
# cluster admins (system:masters), as they are in kwokctl and kubeadm.
CLIENTS = (
    Client("admin", "kubernetes-admin", ("system:masters",)),
    Client("controller-manager", "system:kube-controller-manager"),
    Client("scheduler", "system:kube-scheduler"),
    Client("kwok", "kwok-controller", ("system:masters",)),
    # The real node: the kubelet as its Node (the Node authorizer's user and group), kube-proxy and
    # CoreDNS under the names their RBAC bindings use, and the API server's client for kubelets.
    Client("kubelet", f"system:node:{REAL_NODE_NAME}", ("system:nodes",)),
    Client("kube-proxy", "system:kube-proxy"),
    Client("coredns", "system:coredns"),
    Client("apiserver-kubelet-client", "kube-apiserver-kubelet-client", ("system:masters",)),
)
FRONT_PROXY_CLIENT = "front-proxy-client"


@dataclass(frozen=True)
class Pki:
    """Paths of the PEM files under one directory."""

    dir: Path

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def serving_cert(self) -> Path:
        return self.dir / "apiserver.crt"

    @property
    def serving_key(self) -> Path:
        return self.dir / "apiserver.key"

    @property
    def front_proxy_ca_cert(self) -> Path:
        return self.dir / "front-proxy-ca.crt"

    @property
    def front_proxy_client_cert(self) -> Path:
        return self.dir / "front-proxy-client.crt"

    @property
    def front_proxy_client_key(self) -> Path:
        return self.dir / "front-proxy-client.key"

    @property
    def sa_public_key(self) -> Path:
        return self.dir / "sa.pub"

    @property
    def sa_private_key(self) -> Path:
        return self.dir / "sa.key"

    def client_cert(self, stem: str) -> Path:
        return self.dir / f"{stem}.crt"

    def client_key(self, stem: str) -> Path:
        return self.dir / f"{stem}.key"

    def is_complete(self) -> bool:
        files = [self.ca_cert, self.serving_cert, self.serving_key, self.front_proxy_ca_cert]
        files += [self.front_proxy_client_cert, self.front_proxy_client_key]
        files += [self.sa_public_key, self.sa_private_key]
        files += [self.client_cert(c.file_stem) for c in CLIENTS]
        files += [self.client_key(c.file_stem) for c in CLIENTS]
        return all(f.exists() for f in files)


def apiserver_sans(service_ip: str) -> tuple[list[str], list[str]]:
    """DNS names and IPs the API server's certificate must cover (clients use 127.0.0.1)."""
    dns = [
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ]
    return dns, ["127.0.0.1", service_ip]


def ensure_pki(directory: Path, service_ip: str) -> Pki:
    """Write the PKI into `directory` unless a complete one is already there."""
    pki = Pki(directory)
    if pki.is_complete():
        return pki
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = _self_signed_ca("hypersend-local-ca")
    _write_key(pki.ca_key, ca_key)
    _write_cert(pki.ca_cert, ca_cert)

    dns, ips = apiserver_sans(service_ip)
    key, cert = _issue(ca_key, ca_cert, "kube-apiserver", (), server=(dns, ips))
    _write_key(pki.serving_key, key)
    _write_cert(pki.serving_cert, cert)

    for client in CLIENTS:
        key, cert = _issue(ca_key, ca_cert, client.common_name, client.organizations)
        _write_key(pki.client_key(client.file_stem), key)
        _write_cert(pki.client_cert(client.file_stem), cert)

    fp_key, fp_cert = _self_signed_ca("hypersend-front-proxy-ca")
    _write_cert(pki.front_proxy_ca_cert, fp_cert)
    key, cert = _issue(fp_key, fp_cert, FRONT_PROXY_CLIENT, ())
    _write_key(pki.front_proxy_client_key, key)
    _write_cert(pki.front_proxy_client_cert, cert)

    sa_key = ec.generate_private_key(ec.SECP256R1())
    _write_key(pki.sa_private_key, sa_key)
    pki.sa_public_key.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return pki


def issue_serving_cert(pki: Pki, stem: str, dns: list[str], ips: list[str]) -> tuple[Path, Path]:
    """A serving certificate from the cluster CA (for host processes the API server dials)."""
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise TypeError(f"{pki.ca_key} is not an EC key")
    ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    key, cert = _issue(ca_key, ca_cert, stem, (), server=(dns, ips))
    cert_path, key_path = pki.dir / f"{stem}-serving.crt", pki.dir / f"{stem}-serving.key"
    _write_key(key_path, key)
    _write_cert(cert_path, cert)
    return cert_path, key_path


def _name(common_name: str, organizations: tuple[str, ...] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def _validity() -> tuple[datetime.datetime, datetime.datetime]:
    # Back-date a little so a freshly issued certificate is valid on every process at once.
    now = datetime.datetime.now(datetime.UTC)
    return now - datetime.timedelta(minutes=5), now + VALIDITY


def _self_signed_ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    not_before, not_after = _validity()
    name = _name(common_name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _issue(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    common_name: str,
    organizations: tuple[str, ...],
    server: tuple[list[str], list[str]] | None = None,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    not_before, not_after = _validity()
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, organizations))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if server is not None:
        dns, ips = server
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
