"""
States of salt-virt (``virt.*``): thin glue over the :mod:`saltvirt` library.
"""

import saltvirt.tlsfiles
from saltvirt.errors import VirtError

__virtualname__ = "virt"

# Options that the old upstream state forwarded to the pillar; here the master decides them.
_MASTER_SIDE_OPTIONS = ("country", "state", "locality", "organization", "expiration_days")


def __virtual__():
    return __virtualname__


def _fetch_material():
    """The ``libvirt`` pillar of this minion and where it came from, or ``(None, errors)``."""
    material = __pillar__.get("libvirt")
    if isinstance(material, dict) and all(material.get(k) for k in saltvirt.tlsfiles.MATERIAL_KEYS):
        return dict(material), "pillar"
    # Not in the compiled pillar: ask the master for it on demand. Salt 3008 masks pillar values
    # returned from inside the state pipeline unless unmask=True is passed.
    compiled = __salt__["pillar.ext"]({"libvirt": True}, unmask=True)
    material = compiled.get("libvirt") if isinstance(compiled, dict) else None
    if isinstance(material, dict) and all(material.get(k) for k in saltvirt.tlsfiles.MATERIAL_KEYS):
        return dict(material), "on-demand pillar"
    errors = compiled.get("_errors") if isinstance(compiled, dict) else None
    return None, errors


def keys(name, basepath="/etc/pki", **kwargs):
    """
    Ensure the libvirt and QEMU TLS keys and certificates of this hypervisor are in place.

    The material comes from the ``libvirt`` pillar (the ``libvirt`` ext_pillar on the master, see
    ``docs/pki.rst``); if the minion's pillar has none, it is requested on demand with
    ``pillar.ext``. Written under ``basepath``:

    - ``CA/cacert.pem``, ``libvirt/servercert.pem``, ``libvirt/clientcert.pem`` (0644)
    - ``libvirt/private/serverkey.pem``, ``libvirt/private/clientkey.pem`` (0600)
    - ``qemu/ca-cert.pem``, ``qemu/server-cert.pem``, ``qemu/client-cert.pem`` (0644)
    - ``qemu/server-key.pem``, ``qemu/client-key.pem`` (0640, group ``libvirt-qemu``; 0600 if
      that group does not exist)

    Changes list the files by path, never their contents. libvirtd reads its certificates at
    start: restart it (``watch`` this state) to use new ones.

    name
        The state ID; not used.

    basepath
        Directory holding ``CA``, ``libvirt`` and ``qemu``. Default ``/etc/pki``.

    .. code-block:: yaml

        libvirt_keys:
          virt.keys
    """
    ret = {"name": name, "result": False, "changes": {}, "comment": ""}
    ignored = sorted(k for k in kwargs if not k.startswith("__"))
    if ignored:
        warning = (
            f"virt.keys ignores {', '.join(ignored)}: certificate settings such as "
            f"{', '.join(_MASTER_SIDE_OPTIONS)} are set on the master (libvirt_pki in the "
            "master config)"
        )
        ret["warnings"] = [warning]

    material, source = _fetch_material()
    if material is None:
        detail = f": {'; '.join(map(str, source))}" if source else ""
        ret["comment"] = (
            "No libvirt TLS material in the pillar of this minion, not even on demand. "
            "Enable the 'libvirt' ext_pillar on the master (ext_pillar: [{libvirt: {}}]) or keep "
            f"'libvirt' in its on_demand_ext_pillar{detail}"
        )
        return ret

    test = bool(__opts__.get("test"))
    try:
        changes = saltvirt.tlsfiles.sync(material, basepath=basepath, test=test)
    except VirtError as exc:
        ret["comment"] = str(exc)
        return ret

    ret["changes"] = changes
    if not changes:
        ret["result"] = True
        ret["comment"] = f"libvirt TLS files under {basepath} are up to date"
    elif test:
        ret["result"] = None
        ret["comment"] = f"{len(changes)} libvirt TLS path(s) under {basepath} would change"
    else:
        ret["result"] = True
        ret["comment"] = f"{len(changes)} libvirt TLS path(s) under {basepath} changed ({source})"
    return ret
