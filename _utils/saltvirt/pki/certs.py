"""Keys and certificates (pure cryptography): new keys, PEM, the CA's and the leaves' certificates,
and the checks that decide whether a stored certificate can be reused."""

import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from saltvirt.errors import InvalidArgument

# Certificates start a little in the past so that a hypervisor whose clock lags the master's
# does not reject a certificate issued a moment ago.
_BACKDATE = datetime.timedelta(minutes=5)

EKU = {
    "server": ExtendedKeyUsageOID.SERVER_AUTH,
    "client": ExtendedKeyUsageOID.CLIENT_AUTH,
    "qemu-server": ExtendedKeyUsageOID.SERVER_AUTH,
    "qemu-client": ExtendedKeyUsageOID.CLIENT_AUTH,
}


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc)  # noqa: UP017 (Python 3.10)


def new_key(key_type, key_size):
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    raise InvalidArgument(f"key_type must be 'rsa' or 'ec', got {key_type!r}")


def key_pem(key):
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def cert_pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def same_public_key(key, cert):
    encoding = serialization.Encoding.DER
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    return key.public_key().public_bytes(encoding, fmt) == cert.public_key().public_bytes(
        encoding, fmt
    )


def san_of(cert):
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set(), set()
    return set(san.get_values_for_type(x509.DNSName)), set(san.get_values_for_type(x509.IPAddress))


def eku_of(cert):
    try:
        return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return set()


def signed_by(cert, ca_cert):
    if cert.issuer != ca_cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _key_usage(ca):
    """Critical key usage: certificate and CRL signing for the CA; digitalSignature +
    keyEncipherment for a leaf (libvirt's and QEMU's checks require both, whatever the key type)."""
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=not ca,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _builder(subject, issuer, public, now, not_after, ca):
    """What every certificate here starts with: names, key, serial, lifetime, constraints, usage."""
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
        .add_extension(_key_usage(ca), critical=True)
    )


def ca_certificate(key, name, now, days):
    """The self-signed certificate of a CA with ``key`` and subject ``name``, valid ``days``."""
    public = key.public_key()
    return (
        _builder(name, name, public, now, now + datetime.timedelta(days=days), ca=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )


def leaf_certificate(key, kind, subject, dns, addresses, ca_key, ca_cert, now, not_after):
    """A ``kind`` certificate (see :data:`EKU`) for ``key``, signed by the CA's ``ca_key``.

    ``dns`` and ``addresses`` become its subject alternative names.
    """
    public = key.public_key()
    builder = (
        _builder(subject, ca_cert.subject, public, now, not_after, ca=False)
        .add_extension(x509.ExtendedKeyUsage([EKU[kind]]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if dns or addresses:
        general_names = [x509.DNSName(n) for n in dns] + [x509.IPAddress(a) for a in addresses]
        builder = builder.add_extension(x509.SubjectAlternativeName(general_names), critical=False)
    return builder.sign(ca_key, hashes.SHA256())
