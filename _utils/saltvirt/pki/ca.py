"""The master's CA for libvirt/QEMU TLS (:class:`CertificateAuthority`) and the certificates it
issues, kept under ``ca_dir`` and reused until they must change."""

import contextlib
import datetime
import logging
import os
import stat

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from saltvirt import fileio
from saltvirt.errors import InvalidArgument, VirtError
from saltvirt.pki import certs
from saltvirt.pki.files import make_private_dir, os_error, read, write_file
from saltvirt.pki.names import (
    SUBJECT_FIELDS,
    build_name,
    normalize_dns_name,
    normalize_ip,
    positive_days,
    unique,
    validate_minion_id,
)

log = logging.getLogger(__name__)

DEFAULT_CA_COMMON_NAME = "Salt Virt CA"
DEFAULT_CA_EXPIRATION_DAYS = 3650
DEFAULT_EXPIRATION_DAYS = 365
DEFAULT_RENEW_DAYS = 30
DEFAULT_KEY_TYPE = "rsa"
DEFAULT_RSA_KEY_SIZE = 3072

CA_KEY_FILE = "cakey.pem"
CA_CERT_FILE = "cacert.pem"
ISSUED_DIR = "issued"
LOCK_FILE = ".lock"

KINDS = ("server", "client", "qemu-server", "qemu-client")

#: Each kind of certificate says what it is for in its subject's organizational unit. libvirtd
#: accepts as clients only certificates whose DN carries the libvirt client unit
#: (:data:`ALLOWED_CLIENT_DN`); QEMU's own pair (group-readable by QEMU's user, used for
#: migration streams) carries another, so a key QEMU can read never opens libvirtd.
UNITS = {
    "server": "salt-virt-libvirt-server",
    "client": "salt-virt-libvirt-client",
    "qemu-server": "salt-virt-qemu-server",
    "qemu-client": "salt-virt-qemu-client",
}

#: The ``tls_allowed_dn_list`` entry of every hypervisor's libvirtd.conf (libvirt matches it
#: like a shell glob against the client certificate's DN).
ALLOWED_CLIENT_DN = f"*OU={UNITS['client']}*"

class CertificateAuthority:
    """The master's CA for libvirt/QEMU TLS, kept in ``ca_dir``.

    ``subject`` is a mapping with ``common_name`` (default ``Salt Virt CA``), ``country``,
    ``state``, ``locality`` and ``organization``; like ``expiration_days`` it only matters when the
    CA is created. ``clock`` returns the current time as an aware UTC datetime (tests move it).

    Every operation holds an exclusive lock on ``ca_dir/.lock`` so that concurrent salt-master
    workers neither create two CAs nor interleave writes for the same minion.
    """

    def __init__(
        self,
        ca_dir,
        subject=None,
        expiration_days=DEFAULT_CA_EXPIRATION_DAYS,
        key_type=DEFAULT_KEY_TYPE,
        key_size=DEFAULT_RSA_KEY_SIZE,
        clock=None,
    ):
        if not ca_dir or not isinstance(ca_dir, str):
            raise InvalidArgument(f"ca_dir must be a directory path, got {ca_dir!r}")
        self.ca_dir = os.path.abspath(ca_dir)
        self.subject = dict(subject or {})
        unknown = set(self.subject) - {"common_name", *(f for f, _ in SUBJECT_FIELDS)}
        if unknown:
            raise InvalidArgument(f"unknown CA subject fields: {', '.join(sorted(unknown))}")
        self.expiration_days = positive_days(expiration_days, "CA expiration_days")
        if key_type not in ("rsa", "ec"):
            raise InvalidArgument(f"key_type must be 'rsa' or 'ec', got {key_type!r}")
        self.key_type = key_type
        self.key_size = int(key_size)
        if key_type == "rsa" and self.key_size < 2048:
            raise InvalidArgument(f"RSA keys must have at least 2048 bits, got {self.key_size}")
        self._clock = clock or certs.utcnow
        self._key = None
        self._cert = None

    # -- paths --------------------------------------------------------------------------------

    @property
    def key_path(self):
        return os.path.join(self.ca_dir, CA_KEY_FILE)

    @property
    def cert_path(self):
        return os.path.join(self.ca_dir, CA_CERT_FILE)

    def issued_dir(self, minion_id):
        return os.path.join(self.ca_dir, ISSUED_DIR, validate_minion_id(minion_id))

    # -- CA -----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self):
        make_private_dir(self.ca_dir)
        path = os.path.join(self.ca_dir, LOCK_FILE)
        held = contextlib.ExitStack()
        try:
            held.enter_context(fileio.locked(path))
        except OSError as exc:
            raise os_error("open lock file", path, exc) from exc
        with held:
            yield

    def ensure(self):
        """Create the CA on first use, load it afterwards; return ``self``.

        Raises :class:`VirtError` if ``ca_dir`` cannot be used, if only one of the key and the
        certificate exists, if they do not belong together, or if the CA certificate has expired.
        """
        with self._locked():
            self._load_or_create()
        return self

    @property
    def certificate(self):
        """The CA certificate (:class:`cryptography.x509.Certificate`), loaded if need be."""
        if self._cert is None:
            self.ensure()
        return self._cert

    @property
    def cert_pem(self):
        """The CA certificate as PEM text; this is what hypervisors need, never the key."""
        return certs.cert_pem(self.certificate).decode()

    def _load_or_create(self):
        key_pem = read(self.key_path)
        cert_pem = read(self.cert_path)
        if key_pem is None and cert_pem is None:
            self._create()
            return
        if key_pem is None or cert_pem is None:
            present, missing = (
                (self.cert_path, self.key_path)
                if key_pem is None
                else (self.key_path, self.cert_path)
            )
            raise VirtError(
                f"incomplete CA in {self.ca_dir}: {present} exists but {missing} does not. Restore "
                "the missing file from a backup, or move the directory aside to start a new CA "
                "(every hypervisor then needs new certificates)."
            )
        try:
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError) as exc:
            raise VirtError(f"cannot load the CA key {self.key_path}: {exc}") from exc
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
        except ValueError as exc:
            raise VirtError(f"cannot load the CA certificate {self.cert_path}: {exc}") from exc
        if not certs.same_public_key(key, cert):
            raise VirtError(f"the CA key {self.key_path} does not belong to {self.cert_path}")
        mode = stat.S_IMODE(os.stat(self.key_path).st_mode)
        if mode & 0o077:
            log.warning("CA key %s has mode %04o; it should be 0600", self.key_path, mode)
        now = self._clock()
        if cert.not_valid_after_utc <= now:
            raise VirtError(
                f"the CA certificate {self.cert_path} expired on "
                f"{cert.not_valid_after_utc:%Y-%m-%d}. "
                f"Move {self.ca_dir} aside so that a new CA is created, then apply virt.keys on "
                "every hypervisor."
            )
        self._key, self._cert = key, cert

    def _create(self):
        subject = dict(self.subject)
        common_name = subject.pop("common_name", None) or DEFAULT_CA_COMMON_NAME
        name = build_name(common_name, **subject)
        key = certs.new_key(self.key_type, self.key_size)
        cert = certs.ca_certificate(key, name, self._clock(), self.expiration_days)
        # Key first: if writing the certificate fails, the next run reports an incomplete CA
        # rather than ever handing out a CA certificate whose key is lost.
        write_file(self.key_path, certs.key_pem(key), 0o600)
        write_file(self.cert_path, certs.cert_pem(cert), 0o644)
        log.info("created the libvirt TLS CA in %s", self.ca_dir)
        self._key, self._cert = key, cert

    # -- issuing ------------------------------------------------------------------------------

    def issue(
        self,
        minion_id,
        kind="server",
        names=(),
        ips=(),
        country=None,
        state=None,
        locality=None,
        organization=None,
        expiration_days=DEFAULT_EXPIRATION_DAYS,
        renew_days=DEFAULT_RENEW_DAYS,
        directory=None,
    ):
        """Return ``(key_pem, cert_pem)`` (text) of ``minion_id``'s ``kind`` certificate.

        ``kind`` is ``server`` or ``qemu-server`` (extended key usage serverAuth, subject
        alternative names ``names`` + ``ips``: libvirt and QEMU check the host name or address a
        client connected to against them) or ``client`` / ``qemu-client`` (clientAuth;
        ``names``/``ips`` are added as alternative names if given). The subject is
        ``C, ST, L, O`` from the arguments, ``OU`` from :data:`UNITS` and ``CN=minion_id``.

        The stored pair under ``directory`` (default ``ca_dir/issued/<minion_id>/``) is
        returned unchanged unless it is
        missing or unreadable, expires within ``renew_days``, has other names/addresses/subject,
        or was not signed by this CA; then a new key and certificate replace it.
        """
        minion_id = validate_minion_id(minion_id)
        if kind not in KINDS:
            raise InvalidArgument(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        dns = unique(normalize_dns_name(n, allow_wildcard=True) for n in names or ())
        addresses = unique(normalize_ip(a) for a in ips or ())
        expiration_days, renew_days = _lifetime(expiration_days, renew_days)
        subject = build_name(
            minion_id, country=country, state=state, locality=locality, organization=organization,
            unit=UNITS[kind],
        )
        with self._locked():
            self._load_or_create()
            directory = directory or self.issued_dir(minion_id)
            make_private_dir(os.path.dirname(directory))
            make_private_dir(directory)
            key_path = os.path.join(directory, f"{kind}-key.pem")
            cert_path = os.path.join(directory, f"{kind}-cert.pem")
            stored = self._load_issued(key_path, cert_path)
            reason = self._renewal_reason(stored, kind, subject, dns, addresses, renew_days)
            if reason is None:
                key_pem, cert_pem = stored[2], stored[3]
            else:
                log.info("issuing a %s certificate for %s: %s", kind, minion_id, reason)
                key = certs.new_key(self.key_type, self.key_size)
                cert = self._sign(key, kind, subject, dns, addresses, expiration_days)
                key_pem, cert_pem = certs.key_pem(key), certs.cert_pem(cert)
                write_file(key_path, key_pem, 0o600)
                write_file(cert_path, cert_pem, 0o644)
            return key_pem.decode(), cert_pem.decode()

    @staticmethod
    def _load_issued(key_path, cert_path):
        key_pem, cert_pem = read(key_path), read(cert_path)
        if key_pem is None or cert_pem is None:
            return None
        try:
            key = serialization.load_pem_private_key(key_pem, password=None)
            cert = x509.load_pem_x509_certificate(cert_pem)
        except (ValueError, TypeError) as exc:
            log.warning(
                "stored certificate %s is unreadable (%s); issuing a new one", cert_path, exc
            )
            return None
        return key, cert, key_pem, cert_pem

    def _renewal_reason(self, stored, kind, subject, dns, addresses, renew_days):
        """Why the stored pair cannot be reused, or ``None`` if it can."""
        if stored is None:
            return "no usable certificate stored"
        key, cert = stored[0], stored[1]
        if not certs.same_public_key(key, cert):
            return "the stored key does not match the certificate"
        if not certs.signed_by(cert, self._cert):
            return "the certificate was signed by another CA"
        if cert.subject != subject:
            return f"subject changed from {cert.subject.rfc4514_string()}"
        if certs.san_of(cert) != (set(dns), set(addresses)):
            return "the requested names or IP addresses changed"
        if certs.eku_of(cert) != {certs.EKU[kind]}:
            return "extended key usage differs"
        not_after = cert.not_valid_after_utc
        margin = datetime.timedelta(days=renew_days)
        # A certificate capped at the CA's own expiry cannot get any longer by re-issuing it.
        if not_after - self._clock() <= margin and not_after < self._cert.not_valid_after_utc:
            return f"it expires on {not_after:%Y-%m-%d}, within {renew_days} days"
        return None

    def _sign(self, key, kind, subject, dns, addresses, expiration_days):
        now = self._clock()
        not_after = min(
            now + datetime.timedelta(days=expiration_days), self._cert.not_valid_after_utc
        )
        if not_after < now + datetime.timedelta(days=expiration_days):
            log.warning(
                "the CA in %s expires on %s; certificates issued now end then too",
                self.ca_dir,
                not_after.date(),
            )
        return certs.leaf_certificate(key, kind, subject, dns, addresses, self._key, self._cert, now, not_after)


def _lifetime(expiration_days, renew_days):
    """``(expiration_days, renew_days)`` checked: a certificate must outlive its renewal margin."""
    expiration_days = positive_days(expiration_days, "expiration_days")
    renew_days = int(renew_days)
    if not 0 <= renew_days < expiration_days:
        raise InvalidArgument(
            f"renew_days ({renew_days}) must be between 0 and expiration_days "
            f"({expiration_days}), or every request would issue a new certificate"
        )
    return expiration_days, renew_days
