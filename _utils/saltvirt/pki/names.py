"""Names in certificates: minion ids, DNS names, IP addresses, distinguished names (validation)."""

import ipaddress
import re

from cryptography import x509
from cryptography.x509.oid import NameOID

from saltvirt.errors import InvalidArgument

# X.509 caps a common name at 64 characters; the minion id is the common name.
_MAX_MINION_ID = 64
_DNS_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")

SUBJECT_FIELDS = (
    ("country", NameOID.COUNTRY_NAME),
    ("state", NameOID.STATE_OR_PROVINCE_NAME),
    ("locality", NameOID.LOCALITY_NAME),
    ("organization", NameOID.ORGANIZATION_NAME),
)


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


def unique(items):
    seen = []
    for item in items:
        if item not in seen:
            seen.append(item)
    return seen


def positive_days(value, what):
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
    for field, oid in SUBJECT_FIELDS:
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
