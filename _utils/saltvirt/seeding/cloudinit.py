"""The caller's cloud-init data, merged with salt-virt's minion seeding in one cidata ISO.

``cloud_init`` (a ``virt.init`` argument; defaults from ``virt:cloud_init`` in the hypervisor's
config or pillar, which the call's values override key by key) is a dict of up to three
documents:

``user_data``
    A ``#cloud-config`` document: YAML text starting with ``#cloud-config``, or a dict. Its keys
    are merged with salt-virt's (dicts merged recursively; for any other value the caller's
    wins), except the ``salt_minion`` section: salt-virt writes the minion's identity and keys.
    The caller's ``salt_minion:conf`` is added to the minion configuration (``config`` of
    ``virt.init`` wins over it); it may not set ``id`` or ``master`` to something else.
    ``public_key``, ``private_key`` and ``pki_dir`` are refused: the key pair is the one the
    master is told about. Other ``salt_minion`` keys (``pkg_name``, ``service_name``,
    ``config_dir``, ``grains``) pass. Scripts and MIME multi-part user-data are refused: they
    cannot be merged.
``meta_data``
    A dict (or YAML text) merged over salt-virt's ``instance-id`` and ``local-hostname``.
``network_config``
    Cloud-init network configuration (version 1 or 2), a dict or YAML text, written as the
    ISO's ``network-config``.
"""

import yaml

from saltvirt.errors import InvalidArgument

KEYS = ("user_data", "meta_data", "network_config")
_MINION_KEY_MATERIAL = ("public_key", "private_key", "pki_dir")


def _document(value, what, header=None):
    if value is None:
        return {}
    if isinstance(value, str):
        if header and not value.lstrip().startswith(header):
            raise InvalidArgument(f"cloud_init:{what} must be a {header} document (or a dict): scripts and "
                                  "multi-part user-data cannot be merged with the minion's seeding")
        try:
            value = yaml.safe_load(value) or {}
        except yaml.YAMLError as exc:
            raise InvalidArgument(f"cloud_init:{what} is not valid YAML: {exc}".splitlines()[0]) from None
    if not isinstance(value, dict):
        raise InvalidArgument(f"cloud_init:{what} must be a mapping, not {type(value).__name__}")
    return value


def deep_merge(base, over):
    """``over`` merged into a copy of ``base``: dicts recursively, anything else replaced."""
    out = dict(base)
    for key, value in over.items():
        out[key] = deep_merge(out[key], value) if isinstance(out.get(key), dict) and isinstance(value, dict) else value
    return out


def normalise(defaults, given):
    """``{user_data, meta_data, network_config}`` dicts from the operator's ``defaults`` and the
    call's ``given`` (either None); unknown keys refused."""
    docs = {}
    for source, name in ((defaults, "virt:cloud_init"), (given, "cloud_init")):
        if source is None:
            continue
        if not isinstance(source, dict):
            raise InvalidArgument(f"{name} must be a dict of {', '.join(KEYS)}")
        unknown = sorted(str(k) for k in source if k.replace("-", "_") not in KEYS)
        if unknown:
            raise InvalidArgument(f"{name}: unknown key(s) {', '.join(unknown)} (known: {', '.join(KEYS)})")
        for key, value in source.items():
            key = key.replace("-", "_")
            doc = _document(value, key, "#cloud-config" if key == "user_data" else None)
            docs[key] = deep_merge(docs.get(key, {}), doc)
    network = docs.get("network_config")
    if network is not None and network.get("version") not in (1, 2):
        raise InvalidArgument("cloud_init:network_config needs version: 1 or 2 (cloud-init's network config)")
    return docs


def minion_extras(user_data):
    """``(user_data without salt_minion, salt_minion:conf, other salt_minion keys)``; the key
    material is refused."""
    user_data = dict(user_data or {})
    section = user_data.pop("salt_minion", None) or {}
    if not isinstance(section, dict):
        raise InvalidArgument("cloud_init:user_data:salt_minion must be a mapping")
    refused = [k for k in _MINION_KEY_MATERIAL if k in section]
    if refused:
        raise InvalidArgument(f"cloud_init:user_data:salt_minion:{refused[0]} is refused: the minion's keys are the "
                              "ones salt-virt generates (or pub_key/priv_key of virt.init)")
    section = dict(section)
    conf = section.pop("conf", None) or {}
    if not isinstance(conf, dict):
        raise InvalidArgument("cloud_init:user_data:salt_minion:conf must be a mapping")
    return user_data, conf, section


def merged_user_data(caller_user_data, salt_minion):
    """The ``#cloud-config`` dict: the caller's keys (without ``salt_minion``) and salt-virt's
    ``salt_minion`` section, which comes last and wins."""
    rest, _conf, extras = minion_extras(caller_user_data)
    return {**rest, "salt_minion": {**extras, **salt_minion}}
