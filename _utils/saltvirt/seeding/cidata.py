"""The cidata seeder: a cloud-init NoCloud seed ISO, written in pure Python (no mounting, no guest tools)."""

import io
import os
import re

import pycdlib

from saltvirt import fileio
from saltvirt.errors import InvalidArgument, NotFound
from saltvirt.seeding import cloudinit
from saltvirt.seeding.config import check_minion_id, check_pem, dump_yaml, minion_config

CIDATA_LABEL = "cidata"

_HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


def _user_data(minion_id, master, pub_key_pem, priv_key_pem, extra_minion_config, caller=None):
    _rest, caller_conf, _extras = cloudinit.minion_extras(caller)
    ours = {
        "conf": minion_config(minion_id, master, {**caller_conf, **(extra_minion_config or {})}),
        "public_key": check_pem(pub_key_pem, "public"),
        "private_key": check_pem(priv_key_pem, "private"),
    }
    return "#cloud-config\n" + dump_yaml(cloudinit.merged_user_data(caller, ours))


def _meta_data(instance_id, hostname, caller=None):
    return dump_yaml({"instance-id": instance_id, "local-hostname": hostname, **(caller or {})})


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
    cloud_init=None,
):
    """Write a cloud-init NoCloud seed ISO (volume id ``cidata``) to ``dest``; return its path.

    It holds ``meta-data`` (``instance-id``: ``instance_id`` or the minion id;
    ``local-hostname``: ``hostname`` or the minion id) and ``user-data`` (``#cloud-config``
    with a ``salt_minion`` section: ``conf`` = the minion config, ``public_key`` /
    ``private_key`` = the PEM pair). The file is mode 0600 (it holds a private key), written
    under a temporary name and renamed over ``dest``; nothing is left behind on failure.
    Names are ISO level 3 with Rock Ridge and Joliet, like ``genisoimage -J -r``.

    ``cloud_init``: the caller's documents (:func:`saltvirt.seeding.cloudinit.normalise`),
    merged as :mod:`saltvirt.seeding.cloudinit` describes; a ``network_config`` adds the
    ``network-config`` file.
    """
    dest = os.path.abspath(os.fspath(dest))
    cloud_init = cloud_init or {}
    hostname = (cloud_init.get("meta_data") or {}).get("local-hostname") or hostname or minion_id
    if not isinstance(hostname, str) or not _HOSTNAME_RE.match(hostname):
        raise InvalidArgument(f"invalid hostname {hostname!r}; pass hostname= explicitly")
    files = [
        ("meta-data", _meta_data(instance_id or check_minion_id(minion_id), hostname, cloud_init.get("meta_data"))),
        (
            "user-data",
            _user_data(minion_id, master, pub_key_pem, priv_key_pem, extra_minion_config,
                       cloud_init.get("user_data")),
        ),
    ]
    if cloud_init.get("network_config"):
        files.append(("network-config", dump_yaml(cloud_init["network_config"])))
    directory = os.path.dirname(dest)
    if not os.path.isdir(directory):
        raise NotFound(f"destination directory {directory} does not exist")
    fileio.write_atomic(dest, _iso(files), mode=0o600)
    return dest


def _iso(files):
    """The bytes of an ISO 9660 image labelled ``cidata`` holding ``files`` (``(name, text)``)."""
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, vol_ident=CIDATA_LABEL, joliet=3, rock_ridge="1.09")
    try:
        for name, text in files:
            data = text.encode("utf-8")
            iso.add_fp(
                io.BytesIO(data),
                len(data),
                "/" + name.replace("-", "").upper() + ".;1",
                rr_name=name,
                joliet_path="/" + name,
            )
        out = io.BytesIO()
        iso.write_fp(out)
        return out.getvalue()
    finally:
        iso.close()
