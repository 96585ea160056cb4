"""The classic hardware arguments of ``virt.init``/``virt.update`` as XML sections.

``cpu`` and ``mem`` (numbers or the classic dicts), ``numatune``, ``serials``, ``consoles`` and
``host_devices`` become :class:`Hardware`: the vCPU count and memory size the rest of salt-virt
works with (resource checks, placement, the basic domain) and the sections
(:mod:`saltvirt.domain.tuning`, :mod:`saltvirt.domain.chardev`, :mod:`saltvirt.domain.hostdev`)
that write the rest into the domain XML and compare it for ``virt.update``.
"""

from dataclasses import dataclass, field

from saltvirt.domain import chardev, hostdev, tuning


@dataclass
class Hardware:
    vcpus: int | None = None  # None: cpu not given (virt.update leaves it alone)
    mem_mib: int | None = None
    sections: list = field(default_factory=list)
    #: cpu/mem given as plain numbers: virt.update applies them with its own live-aware logic.
    plain_cpu: bool = True
    plain_mem: bool = True


def hardware(spec, settings, roots, conn=None, update=False):
    """The :class:`Hardware` of ``spec`` (a VmSpec or UpdateSpec); ``conn`` resolves host devices.
    Without ``serials`` a new VM keeps its basic logged serial port and an existing one its serials.
    ``update``: ``spec`` changes an existing VM (a ``cpu`` or ``mem`` dict may then remove settings)."""
    out = Hardware()
    if spec.cpu is not None:
        out.vcpus, section = tuning.cpu_section(spec.cpu, update)
        out.plain_cpu = section is None
        out.sections += [section] if section else []
    if spec.mem is not None:
        out.mem_mib, section = tuning.mem_section(spec.mem, update)
        out.plain_mem = section is None
        out.sections += [section] if section else []
    numatune = tuning.numatune_section(spec.numatune)
    out.sections += [numatune] if numatune else []
    if spec.serials is not None:
        out.sections.append(chardev.Serials(chardev.serial_entries(spec.serials, settings.serial_log(spec.name),
                                                                   roots)))
    consoles = chardev.console_entries(spec.consoles, roots)
    if consoles is not None:
        out.sections.append(chardev.Consoles(consoles))
    names = hostdev.check_allowed(spec.host_devices, settings.get("host_devices:allowed", []),
                                  settings.minion_id)
    if names is not None:
        keys = hostdev.resolve(conn, names) if names else {}
        out.sections.append(hostdev.HostDevices(keys.values()))
    return out
