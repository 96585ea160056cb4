"""The ``libvirt`` pillar: each hypervisor's libvirt/QEMU TLS material, issued by the master's CA
on demand, and the operator's client certificate (never in pillar)."""

import fnmatch
import logging
import os

from cryptography import x509

from saltvirt.errors import InvalidArgument
from saltvirt.pki.ca import (
    DEFAULT_CA_COMMON_NAME,
    DEFAULT_CA_EXPIRATION_DAYS,
    DEFAULT_EXPIRATION_DAYS,
    DEFAULT_KEY_TYPE,
    DEFAULT_RENEW_DAYS,
    DEFAULT_RSA_KEY_SIZE,
    KINDS,
    CertificateAuthority,
)
from saltvirt.pki.files import make_private_dir, write_file
from saltvirt.pki.names import SUBJECT_FIELDS, normalize_dns_name, normalize_ip, unique, validate_minion_id

log = logging.getLogger(__name__)

#: The operator's client certificate (issued on the master, never in pillar).
DEFAULT_OPERATOR_NAME = "salt-virt-operator"
OPERATOR_DIR = "operator"

#: The keys of the ``libvirt`` pillar, named after the files libvirt expects.
PILLAR_KEYS = (
    "cacert.pem", "servercert.pem", "serverkey.pem", "clientcert.pem", "clientkey.pem",
    "qemu-servercert.pem", "qemu-serverkey.pem", "qemu-clientcert.pem", "qemu-clientkey.pem",
)

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
    candidates, addresses = [minion_id], []
    if config.get("use_grains", True):
        candidates += [grains.get(g) for g in _NAME_GRAINS]
        addresses = [value for grain in _IP_GRAINS for value in _as_list(grains.get(grain))]
    names = _usable(minion_id, [str(c) for c in candidates if c], normalize_dns_name, "a DNS name")
    ips = _usable(minion_id, addresses, normalize_ip, "an IP address")
    names += [
        normalize_dns_name(n, allow_wildcard=True)
        for n in _per_minion(minion_id, config.get("extra_names"), "extra_names")
    ]
    ips += [normalize_ip(a) for a in _per_minion(minion_id, config.get("extra_ips"), "extra_ips")]
    return unique(names), unique(ips)


def _usable(minion_id, values, normalize, what):
    """``values`` that ``normalize`` accepts, normalized; the others are left out (and logged)."""
    usable = []
    for value in values:
        try:
            usable.append(normalize(value))
        except InvalidArgument:
            log.debug("not %s, left out of %s's certificate: %r", what, minion_id, value)
    return usable


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
    subject = {field: config[field] for field, _ in SUBJECT_FIELDS}
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
    subject = {field: config[field] for field, _ in SUBJECT_FIELDS}
    ca = _authority(config, subject, clock)
    directory = os.path.join(ca.ca_dir, OPERATOR_DIR)
    make_private_dir(directory)
    key_pem, cert_pem = ca.issue(
        name, "client", **subject, expiration_days=config["expiration_days"],
        renew_days=config["renew_days"], directory=os.path.join(directory, "issued"),
    )
    # The pkipath layout libvirt clients read (issue() keeps its own copies under issued/).
    write_file(os.path.join(directory, "cacert.pem"), ca.cert_pem.encode(), 0o644)
    write_file(os.path.join(directory, "clientcert.pem"), cert_pem.encode(), 0o644)
    write_file(os.path.join(directory, "clientkey.pem"), key_pem.encode(), 0o600)
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    return {"pkipath": directory, "subject": cert.subject.rfc4514_string()}
