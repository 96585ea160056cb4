"""Disk and NIC profiles (``virt:disk`` / ``virt:nic``) normalised into plain dicts.

Operators write profiles in several shapes that Salt Virt has accepted over the years::

    virt:
      nic:
        default:                       # list of named dicts
          - name: eth0
            bridge: br0
        two:                           # mapping name -> settings
          eth0: {bridge: br0}
          eth1: {network: default}
      disk:
        default:
          - system:                    # list of single-key dicts
              size: 8192               # MiB
        big:
          - name: system
            size: 32G
            format: qcow2

Everything is normalised to ``[{"name": ..., <settings>}]`` in declaration order.
"""

from saltvirt.errors import InvalidArgument, NotFound
from saltvirt.units import parse_size

# The seed's defaults: one NIC bridged to br0, one system disk.
DEFAULT_NIC_PROFILE = [{"name": "eth0", "type": "bridge", "source": "br0", "model": "virtio"}]
DEFAULT_DISK_PROFILE = [{"name": "system", "size": 8192, "format": "qcow2"}]

NIC_KEYS = {"name", "type", "source", "bridge", "network", "model", "mac"}
DISK_KEYS = {
    "name", "size", "format", "pool", "image", "overlay_image", "source_file", "device",
    "bus", "model", "readonly", "image_hash",
}


def _entries(profile, kind, name):
    """Yield (entry_name, settings) whatever shape the profile was written in."""
    if isinstance(profile, dict):
        items = list(profile.items())
    elif isinstance(profile, list):
        items = []
        for index, item in enumerate(profile):
            if not isinstance(item, dict):
                raise InvalidArgument(f"{kind} profile {name!r}: entry {index} is not a mapping")
            if "name" in item:
                items.append((item["name"], {k: v for k, v in item.items() if k != "name"}))
            elif len(item) == 1 and isinstance(next(iter(item.values())), (dict, type(None))):
                key, value = next(iter(item.items()))
                items.append((key, value or {}))
            else:
                raise InvalidArgument(f"{kind} profile {name!r}: entry {index} has no name")
    else:
        raise InvalidArgument(f"{kind} profile {name!r} must be a list or a mapping")
    for entry_name, settings in items:
        if not isinstance(settings, dict):
            raise InvalidArgument(f"{kind} profile {name!r}: {entry_name!r} must be a mapping")
        yield str(entry_name), dict(settings)


def _lookup(profiles, name, kind, default):
    profiles = profiles or {}
    if name in profiles:
        return profiles[name]
    if name == "default":
        return default
    known = ", ".join(sorted(set(profiles) | {"default"}))
    raise NotFound(f"unknown {kind} profile {name!r} (known: {known}; set them in virt:{kind})")


def nic_profile(name, profiles=None):
    """Return the NICs of profile ``name`` as ``[{"name", "type", "source", "model", "mac"}]``."""
    nics = []
    for nic_name, settings in _entries(_lookup(profiles, name, "nic", DEFAULT_NIC_PROFILE), "nic", name):
        unknown = set(settings) - NIC_KEYS
        if unknown:
            raise InvalidArgument(f"nic {nic_name!r}: unknown settings {', '.join(sorted(unknown))}")
        nic = {"name": nic_name, "model": settings.get("model", "virtio"), "mac": settings.get("mac")}
        # 'bridge: br0' / 'network: default' are shorthands for type + source.
        if "bridge" in settings:
            nic.update(type="bridge", source=settings["bridge"])
        elif "network" in settings:
            nic.update(type="network", source=settings["network"])
        else:
            nic.update(type=settings.get("type", "bridge"), source=settings.get("source"))
        if nic["type"] == "bridge" and not nic["source"]:
            nic["source"] = "br0"
        nics.append(nic)
    return nics


def disk_profile(name, profiles=None):
    """Return the disks of profile ``name`` as ``[{"name", "size" (bytes or None), ...}]``."""
    disks = []
    for disk_name, settings in _entries(_lookup(profiles, name, "disk", DEFAULT_DISK_PROFILE), "disk", name):
        disks.append(_disk(disk_name, settings))
    return disks


def _disk(disk_name, settings):
    unknown = set(settings) - DISK_KEYS
    if unknown:
        raise InvalidArgument(f"disk {disk_name!r}: unknown settings {', '.join(sorted(unknown))}")
    disk = dict(settings, name=disk_name)
    if disk.get("size") is not None:
        disk["size"] = parse_size(disk["size"], default_unit="MiB")  # profiles count in MiB
        if disk["size"] <= 0:
            raise InvalidArgument(f"disk {disk_name!r}: size must be positive")
    if "model" in disk and "bus" not in disk:
        disk["bus"] = disk.pop("model")
    return disk


def merge_disks(profile_disks, overrides):
    """Apply the ``disks=[...]`` argument over a profile: same name updates, new names append."""
    merged = {d["name"]: dict(d) for d in profile_disks}
    order = [d["name"] for d in profile_disks]
    for index, item in enumerate(overrides or []):
        if not isinstance(item, dict) or "name" not in item:
            raise InvalidArgument(f"disks[{index}] must be a mapping with a 'name'")
        disk = _disk(str(item["name"]), {k: v for k, v in item.items() if k != "name"})
        if disk["name"] in merged:
            merged[disk["name"]].update(disk)
        else:
            merged[disk["name"]] = disk
            order.append(disk["name"])
    return [merged[n] for n in order]


def merge_nics(profile_nics, overrides):
    """Apply the ``interfaces=[...]`` argument over a profile: same name replaces, new appends."""
    if not overrides:
        return profile_nics
    merged = {n["name"]: dict(n) for n in profile_nics}
    order = [n["name"] for n in profile_nics]
    for index, item in enumerate(overrides):
        if not isinstance(item, dict) or "name" not in item:
            raise InvalidArgument(f"interfaces[{index}] must be a mapping with a 'name'")
        (nic,) = nic_profile("x", {"x": [item]})
        if nic["name"] not in merged:
            order.append(nic["name"])
        # A NIC given by name replaces the profile's one whole: type and source go together.
        merged[nic["name"]] = nic
    return [merged[n] for n in order]


def all_profiles(disk_profiles=None, nic_profiles=None):
    """Every configured profile, normalised, plus ``default`` when it is not configured:
    ``{"disk": {name: disks}, "nic": {name: nics}}`` (the classic ``virt.get_profiles``)."""
    return {
        "disk": {name: disk_profile(name, disk_profiles) for name in ["default", *(disk_profiles or {})]},
        "nic": {name: nic_profile(name, nic_profiles) for name in ["default", *(nic_profiles or {})]},
    }
