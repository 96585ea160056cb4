"""Seeding new guests with a pre-accepted Salt minion.

The fast path is cloud-init's NoCloud datasource: :func:`make_cidata` writes a small ISO 9660
image labelled ``cidata`` (pure Python, no mounting, no guest tools) that is attached to the
guest as a CD-ROM. Its ``user-data`` uses cloud-init's ``salt_minion`` module, which writes
``/etc/salt/minion`` from ``conf`` and the key pair into the minion's pki directory.

The keys come from :func:`gen_minion_keys` in exactly the format ``salt.crypt.gen_keys``
produces, so the public key stored on the master under ``pki/minions/<id>`` matches what the
minion presents byte for byte (modulo the trailing newline Salt strips on both sides).
"""

import io
import os
import re
import secrets

import pycdlib
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from saltvirt.errors import InvalidArgument, NotFound

__all__ = ["make_cidata", "minion_config", "minion_config_text", "gen_minion_keys", "CIDATA_LABEL"]

CIDATA_LABEL = "cidata"

# A minion id ends up in file names (pki/minions/<id>) and in YAML: keep it tame.
_MINION_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,252}$")
_HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
_RESERVED_KEYS = ("id", "master")


class _Dumper(yaml.SafeDumper):
    """SafeDumper that writes multi-line strings (PEM blocks) as ``|`` literal blocks."""


def _represent_str(dumper, value):
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _represent_str)


def _dump(data):
    return yaml.dump(data, Dumper=_Dumper, default_flow_style=False, sort_keys=False)


def _check_minion_id(minion_id):
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
    conf = {"id": _check_minion_id(minion_id), "master": _check_master(master)}
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
    return _dump(minion_config(minion_id, master, extra))


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


def _check_pem(pem, kind):
    if (
        not isinstance(pem, str)
        or "-----BEGIN" not in pem
        or ("PRIVATE KEY-----" in pem) != (kind == "private")
    ):
        raise InvalidArgument(f"{kind}_key_pem is not a PEM {kind} key")
    return pem.strip() + "\n"


def _user_data(minion_id, master, pub_key_pem, priv_key_pem, extra_minion_config):
    doc = {
        "salt_minion": {
            "conf": minion_config(minion_id, master, extra_minion_config),
            "public_key": _check_pem(pub_key_pem, "public"),
            "private_key": _check_pem(priv_key_pem, "private"),
        }
    }
    return "#cloud-config\n" + _dump(doc)


def _meta_data(instance_id, hostname):
    return _dump({"instance-id": instance_id, "local-hostname": hostname})


def make_cidata(
    dest,
    *,
    minion_id,
    master,
    pub_key_pem,
    priv_key_pem,
    extra_minion_config=None,
    hostname=None,
    instance_id=None,
):
    """Write a cloud-init NoCloud seed ISO (volume id ``cidata``) to ``dest``; return its path.

    It holds ``meta-data`` (``instance-id``: ``instance_id`` or the minion id;
    ``local-hostname``: ``hostname`` or the minion id) and ``user-data`` (``#cloud-config``
    with a ``salt_minion`` section: ``conf`` = the minion config, ``public_key`` /
    ``private_key`` = the PEM pair). The file is mode 0600 (it holds a private key), written
    under a temporary name and renamed over ``dest``; nothing is left behind on failure.
    Names are ISO level 3 with Rock Ridge and Joliet, like ``genisoimage -J -r``.
    """
    dest = os.path.abspath(os.fspath(dest))
    hostname = hostname or minion_id
    if not isinstance(hostname, str) or not _HOSTNAME_RE.match(hostname):
        raise InvalidArgument(f"invalid hostname {hostname!r}; pass hostname= explicitly")
    files = (
        ("meta-data", _meta_data(instance_id or _check_minion_id(minion_id), hostname)),
        (
            "user-data",
            _user_data(minion_id, master, pub_key_pem, priv_key_pem, extra_minion_config),
        ),
    )
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, vol_ident=CIDATA_LABEL, joliet=3, rock_ridge="1.09")
    for name, text in files:
        data = text.encode("utf-8")
        iso.add_fp(
            io.BytesIO(data),
            len(data),
            "/" + name.replace("-", "").upper() + ".;1",
            rr_name=name,
            joliet_path="/" + name,
        )

    directory, base = os.path.split(dest)
    if not os.path.isdir(directory):
        raise NotFound(f"destination directory {directory} does not exist")
    tmp = os.path.join(directory, f".{base}.part-{secrets.token_hex(4)}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            iso.write_fp(handle)
        os.chmod(tmp, 0o600)  # exactly 0600 whatever the umask
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    finally:
        iso.close()
    return dest
