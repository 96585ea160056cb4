"""The minion a guest is seeded with: its configuration (YAML) and its RSA key pair."""

import re

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from saltvirt.errors import InvalidArgument

# A minion id ends up in file names (pki/minions/<id>) and in YAML: keep it tame.
_MINION_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,252}$")
_RESERVED_KEYS = ("id", "master")


class _Dumper(yaml.SafeDumper):
    """SafeDumper that writes multi-line strings (PEM blocks) as ``|`` literal blocks."""


def _represent_str(dumper, value):
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _represent_str)


def dump_yaml(data):
    """YAML as the minion reads it: keys in order, PEM blocks as literal blocks."""
    return yaml.dump(data, Dumper=_Dumper, default_flow_style=False, sort_keys=False)


def check_minion_id(minion_id):
    if not isinstance(minion_id, str) or not _MINION_ID_RE.match(minion_id):
        raise InvalidArgument(
            f"invalid minion id {minion_id!r}: use letters, digits, '.', '-', '_', '@'"
        )
    return minion_id


def _check_master(master):
    masters = master if isinstance(master, (list, tuple)) else [master]
    if not masters or any(not isinstance(m, str) or not m.strip() or "\n" in m for m in masters):
        raise InvalidArgument(f"invalid master {master!r}: a host name or address (or a list)")
    return list(masters) if isinstance(master, (list, tuple)) else master


def minion_config(minion_id, master, extra=None):
    """The minion configuration as a dict: ``id`` and ``master`` first, then ``extra``.

    ``extra`` may not set ``id`` or ``master`` to something else.
    """
    conf = {"id": check_minion_id(minion_id), "master": _check_master(master)}
    for key, value in (extra or {}).items():
        if key in _RESERVED_KEYS:
            if value != conf[key]:
                raise InvalidArgument(
                    f"extra minion config sets {key!r} to {value!r}; pass it as {key} instead"
                )
            continue
        conf[key] = value
    return conf


def minion_config_text(minion_id, master, extra=None):
    """YAML text for ``/etc/salt/minion`` (used by both seeding paths)."""
    return dump_yaml(minion_config(minion_id, master, extra))


def gen_minion_keys(keysize=2048):
    """A new RSA minion key pair as ``(priv_pem, pub_pem)`` strings.

    Same format as ``salt.crypt.gen_keys``: the private key is traditional OpenSSL PEM
    (``BEGIN RSA PRIVATE KEY``), unencrypted; the public key SubjectPublicKeyInfo PEM
    (``BEGIN PUBLIC KEY``). Write ``pub_pem`` unchanged to the master's
    ``pki/minions/<id>`` and both to the minion's ``minion.pem`` / ``minion.pub``.
    """
    if isinstance(keysize, bool) or not isinstance(keysize, int) or keysize < 2048:
        raise InvalidArgument(f"invalid key size {keysize!r}: at least 2048 bits")
    key = rsa.generate_private_key(public_exponent=65537, key_size=keysize)
    priv_pem = key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.TraditionalOpenSSL,
        encryption_algorithm=serialization.NoEncryption(),
    ).decode("ascii")
    pub_pem = (
        key.public_key()
        .public_bytes(
            encoding=serialization.Encoding.PEM,
            format=serialization.PublicFormat.SubjectPublicKeyInfo,
        )
        .decode("ascii")
    )
    return priv_pem, pub_pem


def check_pem(pem, kind):
    """``pem`` as a PEM ``kind`` ("public"/"private") key ending in one newline; InvalidArgument if not."""
    if (
        not isinstance(pem, str)
        or "-----BEGIN" not in pem
        or ("PRIVATE KEY-----" in pem) != (kind == "private")
    ):
        raise InvalidArgument(f"{kind}_key_pem is not a PEM {kind} key")
    return pem.strip() + "\n"
