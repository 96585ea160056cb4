"""TLS material for libvirt and QEMU: a CA on the master and certificates for each minion.

The master keeps one CA (``cakey.pem`` + ``cacert.pem`` in ``ca_dir``) and, for every minion that
asked, a server and a client certificate under ``ca_dir/issued/<minion_id>/``. Issued material is
reused until it is missing, close to expiry, no longer matches what is asked for (names, IP
addresses, subject) or was signed by another CA; only then is a new key and certificate made.

:func:`libvirt_pillar` turns this into the pillar the ``virt.keys`` state writes to ``/etc/pki``.
Everything here runs on the master only; the CA key never leaves ``ca_dir``.

Key type: RSA 3072 by default (``key_type="ec"`` gives ECDSA P-256). Both are accepted by the GnuTLS
that libvirt 9.0 and QEMU 7.2 link against. Leaf certificates carry a critical key usage of
``digitalSignature`` + ``keyEncipherment``, which libvirt's and QEMU's own certificate checks
require whatever the key type.
"""

import contextlib
import datetime
import fnmatch
import ipaddress
import logging
import os
import re
import stat

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from saltvirt import fileio
from saltvirt.errors import InvalidArgument, VirtError

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

#: The operator's client certificate (issued on the master, never in pillar).
DEFAULT_OPERATOR_NAME = "salt-virt-operator"
OPERATOR_DIR = "operator"

#: The keys of the ``libvirt`` pillar, named after the files libvirt expects.
PILLAR_KEYS = (
    "cacert.pem", "servercert.pem", "serverkey.pem", "clientcert.pem", "clientkey.pem",
    "qemu-servercert.pem", "qemu-serverkey.pem", "qemu-clientcert.pem", "qemu-clientkey.pem",
)

# Certificates start a little in the past so that a hypervisor whose clock lags the master's
# does not reject a certificate issued a moment ago.
_BACKDATE = datetime.timedelta(minutes=5)

# X.509 caps a common name at 64 characters; the minion id is the common name.
_MAX_MINION_ID = 64
_DNS_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")

_SUBJECT_FIELDS = (
    ("country", NameOID.COUNTRY_NAME),
    ("state", NameOID.STATE_OR_PROVINCE_NAME),
    ("locality", NameOID.LOCALITY_NAME),
    ("organization", NameOID.ORGANIZATION_NAME),
)


def _utcnow():
    return datetime.datetime.now(datetime.timezone.utc)  # noqa: UP017 (Python 3.10)


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


def validate_minion_id(minion_id):
    """Return ``minion_id`` if it is safe as a directory name and a certificate common name.

    Raises :class:`InvalidArgument` otherwise: the id names a directory on the master, so path
    separators, ``..``, a leading dot, NUL and other control characters are refused.
    """
    if not isinstance(minion_id, str) or not minion_id:
        raise InvalidArgument(f"minion id must be a non-empty string, got {minion_id!r}")
    problems = []
    if "/" in minion_id or "\\" in minion_id:
        problems.append("contains a path separator")
    if ".." in minion_id:
        problems.append("contains '..'")
    if minion_id.startswith("."):
        problems.append("starts with '.'")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in minion_id):
        problems.append("contains a control character")
    if minion_id != minion_id.strip():
        problems.append("has leading or trailing whitespace")
    if len(minion_id) > _MAX_MINION_ID:
        problems.append(
            f"is longer than {_MAX_MINION_ID} characters (the certificate common name limit)"
        )
    if problems:
        raise InvalidArgument(f"refusing minion id {minion_id!r}: it {', '.join(problems)}")
    return minion_id


def normalize_dns_name(name, allow_wildcard=False):
    """Return ``name`` lower-cased without a trailing dot, or raise :class:`InvalidArgument`."""
    if not isinstance(name, str):
        raise InvalidArgument(f"DNS name must be a string, got {name!r}")
    value = name.strip().lower().rstrip(".")
    labels = value.split(".")
    if allow_wildcard and len(labels) > 1 and labels[0] == "*":
        labels = labels[1:]
    if not value or len(value) > 253 or not all(_DNS_LABEL.match(label) for label in labels):
        raise InvalidArgument(f"{name!r} is not a valid DNS name")
    return value


def normalize_ip(address):
    """Return ``address`` as an :mod:`ipaddress` object, or raise :class:`InvalidArgument`."""
    try:
        ip = ipaddress.ip_address(str(address).strip())
    except ValueError as exc:
        raise InvalidArgument(f"{address!r} is not a valid IP address") from exc
    if getattr(ip, "scope_id", None):
        raise InvalidArgument(f"{address!r} is a scoped address; a certificate cannot name it")
    return ip


def _unique(items):
    seen = []
    for item in items:
        if item not in seen:
            seen.append(item)
    return seen


def _positive_days(value, what):
    try:
        days = int(value)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"{what} must be a whole number of days, got {value!r}") from exc
    if days < 1:
        raise InvalidArgument(f"{what} must be at least 1 day, got {days}")
    return days


def build_name(common_name, country=None, state=None, locality=None, organization=None, unit=None):
    """An X.509 distinguished name ``C=…, ST=…, L=…, O=…, OU=…, CN=…`` (empty fields left out)."""
    attributes = []
    values = {
        "country": country,
        "state": state,
        "locality": locality,
        "organization": organization,
    }
    for field, oid in _SUBJECT_FIELDS:
        value = values[field]
        if value in (None, ""):
            continue
        value = str(value)
        if field == "country" and (len(value) != 2 or not value.isalpha()):
            raise InvalidArgument(f"country must be a two-letter code such as 'DE', got {value!r}")
        if len(value) > 64 and field != "country":
            raise InvalidArgument(f"{field} must be at most 64 characters, got {value!r}")
        attributes.append(x509.NameAttribute(oid, value))
    if unit:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit))
    if not common_name or len(common_name) > 64:
        raise InvalidArgument(f"common name must be 1 to 64 characters, got {common_name!r}")
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------


def _os_error(action, path, exc):
    return VirtError(f"cannot {action} {path}: {exc.strerror or exc}")


def _make_private_dir(path):
    """Create ``path`` (and parents) with mode 0700; an existing directory is left as it is."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except FileExistsError as exc:
        raise VirtError(f"cannot use {path} as a directory: a file of that name exists") from exc
    except OSError as exc:
        raise _os_error("create directory", path, exc) from exc
    if not os.path.isdir(path):
        raise VirtError(f"cannot use {path} as a directory: it is not one")
    if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
        raise VirtError(
            f"cannot use {path}: the salt-master user (uid {os.geteuid()}) cannot read and write it"
        )


def _write_atomic(path, data, mode):
    """Write ``data`` to ``path`` via a temporary file; it never exists with a wider mode."""
    try:
        fileio.write_atomic(path, data, mode)
    except OSError as exc:
        raise _os_error("write", path, exc) from exc


def _read(path):
    """Bytes of ``path``, or ``None`` if it does not exist."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _os_error("read", path, exc) from exc


# ---------------------------------------------------------------------------------------------
# Keys and certificates
# ---------------------------------------------------------------------------------------------


def _new_key(key_type, key_size):
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    raise InvalidArgument(f"key_type must be 'rsa' or 'ec', got {key_type!r}")


def _key_pem(key):
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def _same_public_key(key, cert):
    encoding = serialization.Encoding.DER
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    return key.public_key().public_bytes(encoding, fmt) == cert.public_key().public_bytes(
        encoding, fmt
    )


def _san_of(cert):
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set(), set()
    return set(san.get_values_for_type(x509.DNSName)), set(san.get_values_for_type(x509.IPAddress))


def _eku_of(cert):
    try:
        return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return set()


def _signed_by(cert, ca_cert):
    if cert.issuer != ca_cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


_EKU = {
    "server": ExtendedKeyUsageOID.SERVER_AUTH,
    "client": ExtendedKeyUsageOID.CLIENT_AUTH,
    "qemu-server": ExtendedKeyUsageOID.SERVER_AUTH,
    "qemu-client": ExtendedKeyUsageOID.CLIENT_AUTH,
}


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
        unknown = set(self.subject) - {"common_name", *(f for f, _ in _SUBJECT_FIELDS)}
        if unknown:
            raise InvalidArgument(f"unknown CA subject fields: {', '.join(sorted(unknown))}")
        self.expiration_days = _positive_days(expiration_days, "CA expiration_days")
        if key_type not in ("rsa", "ec"):
            raise InvalidArgument(f"key_type must be 'rsa' or 'ec', got {key_type!r}")
        self.key_type = key_type
        self.key_size = int(key_size)
        if key_type == "rsa" and self.key_size < 2048:
            raise InvalidArgument(f"RSA keys must have at least 2048 bits, got {self.key_size}")
        self._clock = clock or _utcnow
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
        _make_private_dir(self.ca_dir)
        path = os.path.join(self.ca_dir, LOCK_FILE)
        held = contextlib.ExitStack()
        try:
            held.enter_context(fileio.locked(path))
        except OSError as exc:
            raise _os_error("open lock file", path, exc) from exc
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
        return _cert_pem(self.certificate).decode()

    def _load_or_create(self):
        key_pem = _read(self.key_path)
        cert_pem = _read(self.cert_path)
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
        if not _same_public_key(key, cert):
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
        key = _new_key(self.key_type, self.key_size)
        now = self._clock()
        public = key.public_key()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + datetime.timedelta(days=self.expiration_days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
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
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(key, hashes.SHA256())
        )
        # Key first: if writing the certificate fails, the next run reports an incomplete CA
        # rather than ever handing out a CA certificate whose key is lost.
        _write_atomic(self.key_path, _key_pem(key), 0o600)
        _write_atomic(self.cert_path, _cert_pem(cert), 0o644)
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
        dns = _unique(normalize_dns_name(n, allow_wildcard=True) for n in names or ())
        addresses = _unique(normalize_ip(a) for a in ips or ())
        expiration_days = _positive_days(expiration_days, "expiration_days")
        renew_days = int(renew_days)
        if not 0 <= renew_days < expiration_days:
            raise InvalidArgument(
                f"renew_days ({renew_days}) must be between 0 and expiration_days "
                f"({expiration_days}), or every request would issue a new certificate"
            )
        subject = build_name(
            minion_id, country=country, state=state, locality=locality, organization=organization,
            unit=UNITS[kind],
        )
        with self._locked():
            self._load_or_create()
            directory = directory or self.issued_dir(minion_id)
            _make_private_dir(os.path.dirname(directory))
            _make_private_dir(directory)
            key_path = os.path.join(directory, f"{kind}-key.pem")
            cert_path = os.path.join(directory, f"{kind}-cert.pem")
            stored = self._load_issued(key_path, cert_path)
            reason = self._renewal_reason(stored, kind, subject, dns, addresses, renew_days)
            if reason is None:
                key_pem, cert_pem = stored[2], stored[3]
                return key_pem.decode(), cert_pem.decode()
            log.info("issuing a %s certificate for %s: %s", kind, minion_id, reason)
            key = _new_key(self.key_type, self.key_size)
            cert = self._sign(key, kind, subject, dns, addresses, expiration_days)
            key_pem, cert_pem = _key_pem(key), _cert_pem(cert)
            _write_atomic(key_path, key_pem, 0o600)
            _write_atomic(cert_path, cert_pem, 0o644)
            return key_pem.decode(), cert_pem.decode()

    @staticmethod
    def _load_issued(key_path, cert_path):
        key_pem, cert_pem = _read(key_path), _read(cert_path)
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
        if not _same_public_key(key, cert):
            return "the stored key does not match the certificate"
        if not _signed_by(cert, self._cert):
            return "the certificate was signed by another CA"
        if cert.subject != subject:
            return f"subject changed from {cert.subject.rfc4514_string()}"
        if _san_of(cert) != (set(dns), set(addresses)):
            return "the requested names or IP addresses changed"
        if _eku_of(cert) != {_EKU[kind]}:
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
        public = key.public_key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self._cert.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=True,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([_EKU[kind]]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
        )
        if dns or addresses:
            general_names = [x509.DNSName(n) for n in dns] + [x509.IPAddress(a) for a in addresses]
            builder = builder.add_extension(
                x509.SubjectAlternativeName(general_names), critical=False
            )
        return builder.sign(self._key, hashes.SHA256())


# ---------------------------------------------------------------------------------------------
# Pillar
# ---------------------------------------------------------------------------------------------

#: Options of :func:`libvirt_pillar` and their defaults (``ca_dir`` has none: the caller knows
#: where the master keeps its keys).
PILLAR_OPTIONS = {
    "ca_dir": None,
    "ca_common_name": DEFAULT_CA_COMMON_NAME,
    "ca_expiration_days": DEFAULT_CA_EXPIRATION_DAYS,
    "expiration_days": DEFAULT_EXPIRATION_DAYS,
    "renew_days": DEFAULT_RENEW_DAYS,
    "country": None,
    "state": None,
    "locality": None,
    "organization": None,
    "extra_names": None,
    "extra_ips": None,
    "minions": None,
    "use_grains": True,
    "on_demand": False,
    "operator_name": DEFAULT_OPERATOR_NAME,
    "key_type": DEFAULT_KEY_TYPE,
    "key_size": DEFAULT_RSA_KEY_SIZE,
}

_NAME_GRAINS = ("fqdn", "host", "nodename")
_IP_GRAINS = ("fqdn_ip4", "ipv4")


def pillar_config(config):
    """``config`` merged over :data:`PILLAR_OPTIONS`; unknown options raise InvalidArgument."""
    config = dict(config or {})
    unknown = set(config) - set(PILLAR_OPTIONS)
    if unknown:
        raise InvalidArgument(
            f"unknown libvirt pillar options: {', '.join(sorted(unknown))} "
            f"(known: {', '.join(sorted(PILLAR_OPTIONS))})"
        )
    merged = {**PILLAR_OPTIONS, **{k: v for k, v in config.items() if v is not None}}
    if not merged["ca_dir"]:
        raise InvalidArgument("the libvirt pillar needs ca_dir")
    return merged


def _as_list(value):
    if value is None:
        return []
    if isinstance(value, (str, bytes)):
        return [value]
    return list(value)


def _matches(minion_id, patterns):
    if hasattr(patterns, "matches"):  # a saltvirt.trust.Hypervisors
        return patterns.matches(minion_id)
    return any(fnmatch.fnmatch(minion_id, str(p)) for p in _as_list(patterns))


def _per_minion(minion_id, value, what):
    """Values of an ``extra_names``/``extra_ips`` option for ``minion_id``.

    A list applies to every minion; a mapping of minion glob -> list applies where the glob
    matches.
    """
    if value is None:
        return []
    if isinstance(value, dict):
        found = []
        for pattern, items in value.items():
            if fnmatch.fnmatch(minion_id, str(pattern)):
                found.extend(_as_list(items))
        return found
    if isinstance(value, (list, tuple, str)):
        return _as_list(value)
    raise InvalidArgument(f"{what} must be a list or a mapping of minion glob to list")


def server_names(minion_id, grains, config):
    """``(names, ips)`` for ``minion_id``'s server certificate.

    Names: the minion id (if it is a DNS name), the grains ``fqdn``, ``host`` and ``nodename``,
    then ``extra_names``. Addresses: the grains ``fqdn_ip4`` and ``ipv4`` (loopback included:
    hypervisors sharing one machine listen on 127.0.0.N), then ``extra_ips``. Grain values that
    are not valid names/addresses are skipped; invalid configured values raise.
    """
    grains = grains or {}
    names, ips = [], []
    candidates = [minion_id]
    if config.get("use_grains", True):
        candidates += [grains.get(g) for g in _NAME_GRAINS]
    for candidate in candidates:
        if candidate:
            try:
                names.append(normalize_dns_name(str(candidate)))
            except InvalidArgument:
                log.debug("not a DNS name, left out of %s's certificate: %r", minion_id, candidate)
    if config.get("use_grains", True):
        for grain in _IP_GRAINS:
            for value in _as_list(grains.get(grain)):
                try:
                    ips.append(normalize_ip(value))
                except InvalidArgument:
                    log.debug(
                        "not an IP address, left out of %s's certificate: %r", minion_id, value
                    )
    names += [
        normalize_dns_name(n, allow_wildcard=True)
        for n in _per_minion(minion_id, config.get("extra_names"), "extra_names")
    ]
    ips += [normalize_ip(a) for a in _per_minion(minion_id, config.get("extra_ips"), "extra_ips")]
    return _unique(names), _unique(ips)


def _authority(config, subject, clock):
    """The CA of ``config`` (merged :data:`PILLAR_OPTIONS`), created on first use."""
    return CertificateAuthority(
        config["ca_dir"],
        subject={"common_name": config["ca_common_name"], **subject},
        expiration_days=config["ca_expiration_days"],
        key_type=config["key_type"],
        key_size=config["key_size"],
        clock=clock,
    ).ensure()


def libvirt_pillar(minion_id, grains, config, clock=None):
    """The pillar with ``minion_id``'s libvirt/QEMU TLS material, issuing it if needed.

    Returns ``{"libvirt": {key: PEM text}}`` with the keys of :data:`PILLAR_KEYS` -- libvirt's
    server and client pairs, QEMU's own server and client pairs and the CA certificate -- or
    ``{}`` if ``minion_id`` is not in the ``minions`` option (globs, or a
    :class:`saltvirt.trust.Hypervisors`; ``None`` matches nobody). The CA key is never part of it.
    ``config`` holds the options of :data:`PILLAR_OPTIONS`; ``ca_dir`` is required. ``clock``
    is for tests (see :class:`CertificateAuthority`).
    """
    minion_id = validate_minion_id(minion_id)
    config = pillar_config(config)
    if config["minions"] is None or not _matches(minion_id, config["minions"]):
        log.debug("%s does not match the libvirt pillar's minions option", minion_id)
        return {}
    subject = {field: config[field] for field, _ in _SUBJECT_FIELDS}
    ca = _authority(config, subject, clock)
    names, ips = server_names(minion_id, grains, config)
    lifetime = {"expiration_days": config["expiration_days"], "renew_days": config["renew_days"]}
    material = {"cacert.pem": ca.cert_pem}
    for kind in KINDS:
        server = kind.endswith("server")
        key_pem, cert_pem = ca.issue(
            minion_id, kind, *((names, ips) if server else ((), ())), **subject, **lifetime
        )
        prefix = "qemu-" if kind.startswith("qemu-") else ""
        role = "server" if server else "client"
        material[f"{prefix}{role}cert.pem"] = cert_pem
        material[f"{prefix}{role}key.pem"] = key_pem
    return {"libvirt": material}


def operator_pki(config, clock=None):
    """Issue (or reuse) the operator's libvirt client certificate; return its pkipath.

    The directory ``ca_dir/operator`` holds ``cacert.pem``, ``clientcert.pem`` and
    ``clientkey.pem`` (0600) in the layout libvirt's ``?pkipath=`` expects. Its DN carries the
    libvirt client unit, so every hypervisor's libvirtd accepts it. Returns
    ``{"pkipath", "subject"}``; the key stays on the master and is never returned.
    """
    config = pillar_config(config)
    name = validate_minion_id(str(config["operator_name"]))
    subject = {field: config[field] for field, _ in _SUBJECT_FIELDS}
    ca = _authority(config, subject, clock)
    directory = os.path.join(ca.ca_dir, OPERATOR_DIR)
    _make_private_dir(directory)
    key_pem, cert_pem = ca.issue(
        name, "client", **subject, expiration_days=config["expiration_days"],
        renew_days=config["renew_days"], directory=os.path.join(directory, "issued"),
    )
    # The pkipath layout libvirt clients read (issue() keeps its own copies under issued/).
    _write_atomic(os.path.join(directory, "cacert.pem"), ca.cert_pem.encode(), 0o644)
    _write_atomic(os.path.join(directory, "clientcert.pem"), cert_pem.encode(), 0o644)
    _write_atomic(os.path.join(directory, "clientkey.pem"), key_pem.encode(), 0o600)
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    return {"pkipath": directory, "subject": cert.subject.rfc4514_string()}
