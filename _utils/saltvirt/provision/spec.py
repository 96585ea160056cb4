"""The VM spec: one validated description of a VM, passed between the Salt glue and the library.

:meth:`VmSpec.from_kwargs` turns the keyword arguments of ``virt.init`` (and of the states that
create VMs) into a :class:`VmSpec`: classic argument names of Salt 3001-3007 are accepted
(``vm_``, ``disk_profile``, ``nic_profile``, ``vm_type``), Salt's own ``__pub_*`` keys and the
connection arguments are set aside, and any other unknown argument is refused with an error
that names it, instead of being dropped silently.
"""

import dataclasses
import difflib
import re
from dataclasses import dataclass, field

from saltvirt.domain import platform, tuning
from saltvirt.errors import InvalidArgument

#: Classic names of Salt 3001-3007 ``virt`` and the name used here.
ALIASES = {"vm_": "name", "disk_profile": "disk", "nic_profile": "nic", "vm_type": "hypervisor"}
#: How to reach libvirt: consumed by the glue, not part of the VM.
CONNECTION_ARGS = ("connection", "username", "password")
#: Names salt-virt gives libvirt networks and pools.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")


def check_name(kind, name):
    """Refuse a ``kind`` (``network``, ``pool``) name outside :data:`NAME_RE`."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise InvalidArgument(f"{kind} name {name!r} is not valid: use letters, digits and _.+- "
                              "(at most 64 characters, starting with a letter or digit)")


class _FromKwargs:
    """``from_kwargs`` for the spec dataclasses: classic names mapped, unknown names refused."""

    REQUIRED = ()
    #: Classic names accepted for the fields, and the function whose ``sys.doc`` lists them.
    ALIASES = ALIASES
    DOC = "virt.init"

    @classmethod
    def field_names(cls):
        return [f.name for f in dataclasses.fields(cls) if f.name != "extra"]

    @classmethod
    def from_kwargs(cls, function, **kwargs):
        """A spec from Salt keyword arguments; raises :class:`InvalidArgument` on unknown ones."""
        known, extra, unknown = {}, {}, []
        names = set(cls.field_names())
        for key, value in kwargs.items():
            if key.startswith("__"):  # __pub_fun, __pub_jid...: Salt's, not the caller's
                continue
            if key in CONNECTION_ARGS:
                extra[key] = value
                continue
            name = cls.ALIASES.get(key, key)
            if name not in names:
                unknown.append(key)
            elif name in known and known[name] != value:
                raise InvalidArgument(f"{function}: {key} and {name} both given (with different values): pass one")
            else:
                known[name] = value
        if unknown:
            raise InvalidArgument(_unknown_message(function, unknown, sorted(names | set(cls.ALIASES)), cls.DOC))
        missing = [n for n in cls.REQUIRED if known.get(n) is None]
        if missing:
            raise InvalidArgument(f"{function}: {', '.join(missing)} must be given")
        return cls(**known, extra=extra)


@dataclass
class VmSpec(_FromKwargs):
    """Everything ``virt.init`` needs to create one VM (see its docstring for each field)."""

    REQUIRED = ("name", "cpu", "mem")

    name: str
    cpu: int | dict  # vCPUs, or the classic dict (saltvirt.domain.tuning)
    mem: int | str | dict  # MiB, a size ('1g'), or the classic dict
    image: str | None = None
    image_hash: str | None = None
    master_hash: str | None = None  # the master's sha256 of a salt:// image (sources.known_base)
    saltenv: str = "base"
    hypervisor: str | None = None  # kvm | qemu | None (probe)
    start: bool = True
    autostart: bool = False
    disk: str = "default"  # disk profile
    disks: list | None = None
    nic: str = "default"  # NIC profile
    interfaces: list | None = None
    enable_qcow: bool = False
    enable_vnc: bool = False
    graphics: dict | str | None = None
    boot: list | dict | str | None = None
    os_type: str | None = None
    arch: str | None = None
    seed: bool = True
    seed_cmd: str | None = None
    seed_install_cmd: str | None = None
    seed_device: str | None = None
    install: bool = True
    pub_key: str | None = None
    priv_key: str | None = None
    config: dict | None = None
    # Classic hardware arguments (saltvirt.provision.hardware); None: the defaults.
    numatune: dict | None = None
    serials: list | None = None
    consoles: list | None = None
    host_devices: list | None = None
    cloud_init: dict | None = None  # the caller's user-data/meta-data/network-config (cidata)
    # Boot and platform (saltvirt.domain.platform): boot also takes {kernel, initrd, cmdline,
    # loader, nvram, efi}; boot_dev "cdrom hd"; clock and hypervisor_features as classic Salt.
    boot_dev: str | list | None = None
    stop_on_reboot: bool = False
    clock: dict | None = None
    hypervisor_features: dict | None = None
    extra: dict = field(default_factory=dict, repr=False)  # set aside: connection arguments


@dataclass
class UpdateSpec(_FromKwargs):
    """What ``virt.update`` should bring an existing VM to; None leaves a setting alone."""

    REQUIRED = ("name",)

    name: str
    cpu: int | dict | None = None
    mem: int | str | dict | None = None
    disk: str | None = None
    disks: list | None = None
    nic: str | None = None
    interfaces: list | None = None
    graphics: dict | str | None = None
    enable_vnc: bool = False
    enable_qcow: bool = False
    autostart: bool | None = None
    live: bool = True
    test: bool = False
    saltenv: str = "base"
    # Classic hardware arguments (saltvirt.provision.hardware); None: leave alone.
    numatune: dict | None = None
    serials: list | None = None
    consoles: list | None = None
    host_devices: list | None = None
    # Boot and platform, as for VmSpec; None leaves them alone (boot: keys not given, too).
    boot: list | dict | str | None = None
    boot_dev: str | list | None = None
    stop_on_reboot: bool | None = None
    clock: dict | None = None
    hypervisor_features: dict | None = None
    extra: dict = field(default_factory=dict, repr=False)


def _unknown_message(function, unknown, known, doc="virt.init"):
    hints = []
    for key in sorted(unknown):
        close = difflib.get_close_matches(key, known, n=1)
        hints.append(f"{key} (did you mean {close[0]}?)" if close else key)
    return (f"{function}: unknown argument(s) {', '.join(hints)}: salt-virt does not support "
            f"them: remove them (sys.doc {doc} lists the arguments)")


def platform_settings(spec, roots, nvram_path):
    """The :mod:`saltvirt.domain.platform` settings a :class:`VmSpec`/:class:`UpdateSpec` asks for."""
    return platform.normalize(boot=spec.boot, boot_dev=spec.boot_dev, stop_on_reboot=spec.stop_on_reboot,
                              clock=spec.clock, hypervisor_features=spec.hypervisor_features, roots=roots,
                              nvram_path=nvram_path)


def check_values(spec, update=False):
    """Refuse now, without the hypervisor, the values ``virt.init`` would refuse later: the
    classic ``cpu``/``mem`` dictionaries, ``numatune``, ``clock``, ``boot_dev`` and
    ``hypervisor_features`` (so that a state's ``test=True`` predicts the refusal).
    ``update``: ``spec`` changes an existing VM (see :func:`~saltvirt.domain.tuning.mem_section`,
    :func:`~saltvirt.domain.tuning.cpu_section`)."""
    if isinstance(spec.cpu, dict):
        tuning.cpu_section(spec.cpu, update)
    if isinstance(spec.mem, dict):
        tuning.mem_section(spec.mem, update)
    tuning.numatune_section(spec.numatune)
    settings = platform.normalize(boot_dev=spec.boot_dev, stop_on_reboot=spec.stop_on_reboot, clock=spec.clock,
                                  hypervisor_features=spec.hypervisor_features)
    cpu_mode = spec.cpu.get("mode") if isinstance(spec.cpu, dict) else None
    if not (update and cpu_mode is None):  # an existing VM keeps its own CPU mode: libvirt judges it
        platform.check(settings, f"VM {spec.name}", cpu_mode)
