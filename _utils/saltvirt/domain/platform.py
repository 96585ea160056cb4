"""A domain's boot and platform settings: firmware (BIOS, UEFI), direct kernel boot, boot
order, what a guest reboot does, the clock and hypervisor features.

The classic arguments (``boot``, ``boot_dev``, ``stop_on_reboot``, ``clock``,
``hypervisor_features``) become one flat dictionary of *settings* (:func:`normalize`), keyed
``boot:kernel``, ``boot:initrd``, ``boot:cmdline``, ``boot:loader``, ``boot:nvram``,
``boot:efi``, ``boot_dev``, ``stop_on_reboot``, ``clock`` and ``hypervisor_features:<name>``.
:func:`read` gives the same dictionary for existing domain XML and :func:`write` changes
domain XML (a :class:`~saltvirt.domain.xmlview.DomainXml`) to match, so that creating a
domain, comparing it (``virt.update``) and changing it go through one mapping. A value of
None removes the setting (``boot: {kernel: null}``); a key not in the dictionary is left alone.

UEFI: ``efi: True`` asks libvirt to pick the firmware (``<os firmware='efi'>``, libvirt's
firmware autoselection); ``loader`` (and ``nvram``, the template of the variable store) name
it. Either way the VM's variable store is its own file, ``nvram.fd`` in the VM's directory,
made from the template on first start and removed by ``virt.purge``.

Every file named here is read by QEMU, so each path must resolve under the operator's roots
(:class:`saltvirt.storage.paths.Roots`): kernels and initrds under the image roots, loaders and
variable templates under the firmware directories too.
"""

import xml.etree.ElementTree as ET

from saltvirt.errors import InvalidArgument

BOOT_KEYS = ("kernel", "initrd", "cmdline", "loader", "nvram", "efi")
BOOT_DEVICES = ("hd", "cdrom", "network", "fd")
TIMERS = ("platform", "hpet", "kvmclock", "pit", "rtc", "tsc", "hypervclock", "armvtimer")
TIMER_ATTRS = ("track", "tickpolicy", "frequency", "mode", "present")
CATCHUP_ATTRS = ("threshold", "slew", "limit")
#: Classic hypervisor feature names and their element under ``<features>`` (``state='on|off'``).
FEATURES = {"kvm-hint-dedicated": "kvm/hint-dedicated", "kvm-hidden": "kvm/hidden",
            "kvm-poll-control": "kvm/poll-control", "kvm-pv-ipi": "kvm/pv-ipi"}
#: Settings that are not compared but written with others (the VM's own variable store).
NVRAM_PATH = "nvram_path"
#: Settings :class:`saltvirt.domain.model.Domain` has fields of its own for (kernel, boot...).
DOMAIN_FIELDS = ("boot:kernel", "boot:initrd", "boot:cmdline", "boot_dev", "stop_on_reboot")


def _fail(message):
    raise InvalidArgument(message)


# --------------------------------------------------------------------------- arguments


def _boot(boot, roots, settings):
    unknown = sorted(set(boot) - set(BOOT_KEYS))
    if unknown:
        _fail(f"boot: unknown key(s) {', '.join(unknown)}: use {', '.join(BOOT_KEYS)}")
    efi = boot.get("efi")
    if efi is not None and not isinstance(efi, bool):
        _fail(f"boot:efi must be True or False, not {efi!r}")
    if efi is not None and (boot.get("loader") or boot.get("nvram")):
        _fail("boot: give either efi (libvirt picks the firmware) or loader/nvram, not both")
    if boot.get("nvram") and not boot.get("loader"):
        _fail("boot:nvram (the variable store's template) needs boot:loader")
    for key in ("kernel", "initrd", "loader", "nvram"):
        if key in boot and boot[key] is not None and roots is not None:
            check = roots.image if key in ("kernel", "initrd") else roots.firmware
            check(boot[key], what=f"boot:{key}")
    if boot.get("cmdline") is not None and not isinstance(boot["cmdline"], str):
        _fail(f"boot:cmdline must be a string, not {boot['cmdline']!r}")
    settings.update({f"boot:{k}": boot[k] for k in BOOT_KEYS if k in boot})
    if efi is False:  # back to BIOS: no firmware of any kind
        settings.update({"boot:loader": None, "boot:nvram": None})


def boot_devices(value):
    """``"cdrom hd"`` (classic) or ``[cdrom, hd]`` as a checked list."""
    devices = value.split() if isinstance(value, str) else value
    if not isinstance(devices, (list, tuple)) or not devices:
        _fail(f"boot_dev must be a space-separated list like 'cdrom hd', not {value!r}")
    bad = [d for d in devices if d not in BOOT_DEVICES]
    if bad:
        _fail(f"boot_dev: unknown device(s) {', '.join(map(str, bad))}: use {', '.join(BOOT_DEVICES)}")
    return list(devices)


def _yes(value):
    return "yes" if value else "no"


def _timer(name, conf):
    if name not in TIMERS:
        _fail(f"clock:timers: unknown timer {name!r}: use {', '.join(TIMERS)}")
    if conf is None:
        return None
    if not isinstance(conf, dict):
        _fail(f"clock:timers:{name} must be a dictionary like {{present: False}}")
    unknown = sorted(set(conf) - set(TIMER_ATTRS) - set(CATCHUP_ATTRS))
    if unknown:
        _fail(f"clock:timers:{name}: unknown key(s) {', '.join(unknown)}: use "
              f"{', '.join(TIMER_ATTRS + CATCHUP_ATTRS)}")
    timer = {}
    for key, value in conf.items():
        if value is None:
            continue
        if key == "present":
            timer[key] = _yes(value) if isinstance(value, bool) else str(value)
        else:
            timer[key] = str(value)
    return timer


def normalize_clock(clock):
    """The classic ``clock`` dict as ``{offset, timezone, adjustment, timers}`` (strings)."""
    if not isinstance(clock, dict):
        _fail(f"clock must be a dictionary like {{utc: False}} or {{timezone: Europe/Paris}}, not {clock!r}")
    unknown = sorted(set(clock) - {"utc", "timezone", "adjustment", "timers"})
    if unknown:
        _fail(f"clock: unknown key(s) {', '.join(unknown)}: use utc, timezone, adjustment, timers")
    offset = "utc" if clock.get("utc", True) else "localtime"
    if clock.get("timezone"):
        offset = "timezone"
    adjustment = clock.get("adjustment")
    if adjustment is not None:
        if offset == "timezone":
            _fail("clock: adjustment goes with utc or local time, not with a timezone")
        if str(adjustment) != "reset" and not str(adjustment).lstrip("-").isdigit():
            _fail(f"clock:adjustment must be seconds or 'reset', not {adjustment!r}")
    timers = clock.get("timers") or {}
    if not isinstance(timers, dict):
        _fail("clock:timers must be a dictionary {timer name: {settings}}")
    normalized = {name: _timer(name, conf) for name, conf in timers.items()}
    return {"offset": offset, "timezone": clock.get("timezone") if offset == "timezone" else None,
            "adjustment": None if adjustment is None else str(adjustment),
            "timers": {k: v for k, v in sorted(normalized.items()) if v is not None}}


def _features(features, settings):
    if not isinstance(features, dict):
        _fail(f"hypervisor_features must be a dictionary like {{kvm-hint-dedicated: True}}, not {features!r}")
    for name, value in features.items():
        if name not in FEATURES:
            _fail(f"hypervisor_features: unknown feature {name!r}: use {', '.join(FEATURES)}")
        if value is not None and not isinstance(value, bool):
            _fail(f"hypervisor_features:{name} must be True, False or None, not {value!r}")
        settings[f"hypervisor_features:{name}"] = value


def normalize(boot=None, boot_dev=None, stop_on_reboot=None, clock=None, hypervisor_features=None,
              roots=None, nvram_path=None):
    """The settings the arguments ask for (absent arguments: no key). ``roots``: the
    :class:`~saltvirt.storage.paths.Roots` every path must lie under; ``nvram_path``: the VM's
    own variable store, used when the settings turn UEFI on."""
    settings = {}
    if isinstance(boot, dict):
        _boot(boot, roots, settings)
    elif boot is not None:
        if boot_dev is not None:
            _fail("boot (as a list of devices) and boot_dev both given: pass boot_dev only")
        boot_dev = boot
    if boot_dev is not None:
        settings["boot_dev"] = boot_devices(boot_dev)
    if stop_on_reboot is not None:
        settings["stop_on_reboot"] = bool(stop_on_reboot)
    if clock is not None:
        settings["clock"] = normalize_clock(clock)
    if hypervisor_features is not None:
        _features(hypervisor_features, settings)
    if settings.get("boot:efi") or settings.get("boot:loader"):
        settings[NVRAM_PATH] = nvram_path
    return settings


def check(settings, name, cpu_mode=None):
    """What libvirt would refuse later, said now."""
    if settings.get("hypervisor_features:kvm-hint-dedicated") and cpu_mode != "host-passthrough":
        _fail(f"{name}: hypervisor_features kvm-hint-dedicated needs the host-passthrough CPU mode (KVM)")


# --------------------------------------------------------------------------- XML


def _clock(view):
    elem = view.find("clock")
    if elem is None:
        return None
    timers = {}
    for timer in elem.findall("timer"):
        values = {k: timer.get(k) for k in TIMER_ATTRS if timer.get(k) is not None}
        catchup = timer.find("catchup")
        if catchup is not None:
            values.update({k: catchup.get(k) for k in CATCHUP_ATTRS if catchup.get(k) is not None})
        timers[timer.get("name")] = values
    offset = elem.get("offset", "utc")
    if offset == "variable":  # libvirt's spelling of utc/localtime with a number of seconds
        offset = elem.get("basis", "utc")
    return {"offset": offset, "timezone": elem.get("timezone"),
            "adjustment": elem.get("adjustment"), "timers": dict(sorted(timers.items()))}


def read(view):
    """The settings of a :class:`~saltvirt.domain.xmlview.DomainXml` (every key)."""
    os_el = view.find("os")
    efi = os_el is not None and os_el.get("firmware") == "efi"
    loader, nvram = view.find("os/loader"), view.find("os/nvram")
    settings = {
        "boot:kernel": view.kernel, "boot:initrd": view.initrd, "boot:cmdline": view.cmdline,
        # With libvirt's autoselection the loader it picked is not the caller's setting.
        "boot:loader": None if efi or loader is None else (loader.text or "").strip() or None,
        "boot:nvram": None if efi or nvram is None else nvram.get("template"),
        "boot:efi": efi,
        NVRAM_PATH: None if nvram is None else (nvram.text or "").strip() or None,
        "boot_dev": view.boot or None,
        "stop_on_reboot": view.on_reboot == "destroy",
        "clock": _clock(view),
    }
    for name, path in FEATURES.items():
        elem = view.find(f"features/{path}")
        settings[f"hypervisor_features:{name}"] = None if elem is None else elem.get("state") == "on"
    return settings


def beyond_fields(settings):
    """The settings the domain model keeps in ``Domain.platform``: not its own fields, not unset."""
    return {k: v for k, v in settings.items()
            if k not in DOMAIN_FIELDS and v is not None and not (k == "boot:efi" and not v)}


def uefi(settings):
    """Whether the settings boot UEFI firmware (libvirt's pick or a named pflash loader)."""
    return bool(settings.get("boot:efi") or settings.get("boot:loader"))


def comparable(settings):
    """The settings as a running domain and its definition can be compared: libvirt's live
    XML spells out the firmware it picked, so only "UEFI or not" is compared."""
    firmware = ("boot:efi", "boot:loader", "boot:nvram", NVRAM_PATH)
    return {"uefi": uefi(settings), **{k: v for k, v in settings.items() if k not in firmware}}


def _write_clock(view, clock):
    """Replace ``<clock>`` where it is (else where libvirt puts it: before ``<on_poweroff>``)."""
    root, old = view.element, view.find("clock")
    anchor = old if old is not None else root.find("on_poweroff")
    index = list(root).index(anchor) if anchor is not None else len(root)
    if old is not None:
        root.remove(old)
    if clock is None:
        return
    attrs = {k: clock.get(k) for k in ("offset", "timezone", "adjustment") if clock.get(k) is not None}
    elem = ET.Element("clock", attrs)
    root.insert(index, elem)
    for name, values in (clock.get("timers") or {}).items():
        timer = ET.SubElement(elem, "timer", {"name": name, **{k: values[k] for k in TIMER_ATTRS if k in values}})
        catchup = {k: values[k] for k in CATCHUP_ATTRS if k in values}
        if catchup:
            ET.SubElement(timer, "catchup", catchup)


def _write_firmware(view, settings):
    """Loader, variable store and ``firmware='efi'``, consistently. An existing variable store
    keeps its path (and an unchanged loader its other attributes, e.g. ``secure``)."""
    os_el = view.make("os")
    if "boot:efi" in settings:
        efi = bool(settings["boot:efi"])
    else:  # a loader asked for replaces libvirt's choice
        efi = os_el.get("firmware") == "efi" and not settings.get("boot:loader")
    loader = settings.get("boot:loader", None if efi else _text(view, "os/loader"))
    template = settings.get("boot:nvram", None if efi else _attr(view, "os/nvram", "template"))
    path = _text(view, "os/nvram") or settings.get(NVRAM_PATH)
    os_el.attrib.pop("firmware", None)
    if efi:
        os_el.set("firmware", "efi")
    if not loader or _text(view, "os/loader") != loader:
        view.remove_path("os/loader")
    if loader:
        elem = view.make("os/loader")
        elem.text = loader
        elem.attrib.update(readonly=elem.get("readonly", "yes"), type=elem.get("type", "pflash"))
    view.remove_path("os/nvram")
    if (efi or loader) and path:
        ET.SubElement(os_el, "nvram", {"template": template} if template else {}).text = path


def _text(view, path):
    elem = view.find(path)
    return None if elem is None else (elem.text or "").strip() or None


def _attr(view, path, name):
    elem = view.find(path)
    return None if elem is None else elem.get(name)


def write(view, settings):
    """Change ``view`` to match ``settings`` (keys not there are left alone)."""
    for key in ("kernel", "initrd", "cmdline"):
        if f"boot:{key}" in settings:
            setattr(view, key, settings[f"boot:{key}"])
    if any(k in settings for k in ("boot:efi", "boot:loader", "boot:nvram")):
        _write_firmware(view, settings)
    if "boot_dev" in settings:
        os_el = view.make("os")
        for old in os_el.findall("boot"):
            os_el.remove(old)
        for dev in settings["boot_dev"] or ():
            ET.SubElement(os_el, "boot", dev=dev)
    if "stop_on_reboot" in settings:
        view.on_reboot = "destroy" if settings["stop_on_reboot"] else "restart"
    if "clock" in settings:
        _write_clock(view, settings["clock"])
    for name, path in FEATURES.items():
        key = f"hypervisor_features:{name}"
        if key in settings:
            if settings[key] is None:
                view.remove_path(f"features/{path}")
            else:
                view.make(f"features/{path}").set("state", "on" if settings[key] else "off")
            parent = view.find(f"features/{path.split('/')[0]}")
            if parent is not None and not len(parent) and not parent.attrib:
                view.remove_path(f"features/{path.split('/')[0]}")


def text(key, value):
    """A setting's value in a one-line comment (``clock timezone Europe/Paris, timers hpet rtc``)."""
    if key == "clock" and value:
        words = [value["offset"] if value["offset"] != "timezone" else f"timezone {value['timezone']}"]
        if value.get("adjustment") is not None:
            words.append(f"adjustment {value['adjustment']}")
        if value.get("timers"):
            words.append("timers " + " ".join(value["timers"]))
        return ", ".join(words)
    if isinstance(value, list):
        return " ".join(value)
    return "none" if value is None else str(value)


def differences(current, wanted):
    """``[(key, old, new)]`` of the wanted settings that ``current`` does not have."""
    found = []
    for key, new in wanted.items():
        if key == NVRAM_PATH:
            continue
        old = current.get(key)
        if key == "boot:efi" and not new and not (old or current.get("boot:loader")):
            continue  # BIOS asked for, BIOS it is
        if key == "boot_dev" and new == ["hd"] and old is None:
            continue  # libvirt's default
        if old != new and not (key == "stop_on_reboot" and bool(old) == bool(new)):
            found.append((key, old, new))
    return found
