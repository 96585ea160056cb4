"""How libvirt is asked to migrate: migration options turned into flag names and typed parameters (pure)."""

from dataclasses import dataclass, field

from saltvirt.errors import InvalidArgument, VirtError, install_hint
from saltvirt.migration.common import check_copy_mode, libvirt, positive_int

# Typed parameter names of virDomainMigrate3 (libvirt's VIR_MIGRATE_PARAM_* values).
PARAM_BANDWIDTH = "bandwidth"
PARAM_URI = "migrate_uri"
PARAM_DISKS = "migrate_disks"
PARAM_PARALLEL = "parallel.connections"
PARAM_BANDWIDTH_POSTCOPY = "bandwidth.postcopy"


@dataclass
class Plan:
    """How libvirt is asked to migrate: flag names (``VIR_MIGRATE_`` + name), typed params."""

    flags: list
    params: dict
    mode: str  # peer2peer | peer2peer+tls | tunnelled | direct | direct+tls
    peer2peer: bool
    copy_storage: object = None
    notes: list = field(default_factory=list)

    def flag_value(self):
        if libvirt is None:
            raise VirtError(f"libvirt-python is not installed; {install_hint('libvirt-python')}")
        value = 0
        for name in self.flags:
            value |= getattr(libvirt, f"VIR_MIGRATE_{name}")
        return value

    def to_dict(self):
        return {
            "flags": list(self.flags),
            "params": dict(self.params),
            "mode": self.mode,
            "copy_storage": self.copy_storage,
            "notes": list(self.notes),
        }


def plan(*, live=True, offline=False, persistent=True, undefinesource=True, copy_storage=None,
         migrate_disks=None, max_bandwidth=None, postcopy=False, auto_converge=False,
         compressed=False, parallel_connections=None, tunnel=False, tls=False, unsafe=False,
         migration_uri=None, peer2peer=True, postcopy_bandwidth=None, postcopy_resume=False):
    """Turn migration options into a :class:`Plan` (flag names and typed parameters).

    ``postcopy_bandwidth`` (MiB/s) limits the pages pulled after the switch-over;
    ``postcopy_resume`` resumes a post-copy migration that failed after the switch-over (both
    copies paused): the same flags, plus VIR_MIGRATE_POSTCOPY_RESUME.

    ``tunnel`` sends everything through the libvirt daemons' TLS connection (port 16514):
    peer-to-peer + tunnelled. libvirt 9.0 cannot combine that with copy-storage, so a tunnelled
    migration that copies disks uses peer-to-peer + TLS instead (QEMU's own TLS streams: the
    memory and the disks are still encrypted) and says so in ``notes``.
    """
    check_copy_mode(copy_storage)
    notes = []
    flags = _what_moves(live, offline, persistent, undefinesource, copy_storage, postcopy)
    transport, tunnel, tls, peer2peer = _transport(tunnel, tls, peer2peer, copy_storage, migration_uri,
                                                   parallel_connections, notes)
    flags += transport
    if (postcopy_bandwidth is not None or postcopy_resume) and not postcopy:
        raise InvalidArgument("postcopy_bandwidth and postcopy_resume only apply with postcopy=True")
    flags += [name for name, wanted in (("UNSAFE", unsafe), ("POSTCOPY", postcopy),
                                        ("POSTCOPY_RESUME", postcopy_resume),
                                        ("AUTO_CONVERGE", auto_converge), ("COMPRESSED", compressed),
                                        ("PARALLEL", parallel_connections is not None)) if wanted]
    params = _params(parallel_connections, max_bandwidth, migration_uri, migrate_disks, copy_storage)
    if postcopy_bandwidth is not None:
        params[PARAM_BANDWIDTH_POSTCOPY] = positive_int(postcopy_bandwidth, "postcopy_bandwidth (MiB/s)")
    if tunnel:
        mode = "tunnelled"
    else:
        mode = ("peer2peer" if peer2peer else "direct") + ("+tls" if tls else "")
    return Plan(flags=flags, params=params, mode=mode, peer2peer=peer2peer,
                copy_storage=copy_storage, notes=notes)


def _what_moves(live, offline, persistent, undefinesource, copy_storage, postcopy):
    """The flags saying what is migrated: memory or the definition only, and which disks."""
    flags = []
    if offline:
        if copy_storage:
            raise InvalidArgument(
                "an offline migration only moves the definition and cannot copy disks: start "
                "the VM first or put its disks on shared storage"
            )
        if postcopy:
            raise InvalidArgument("postcopy needs a live migration, not offline")
        if not persistent:
            raise InvalidArgument("an offline migration moves the persistent definition: persistent must be True")
        flags.append("OFFLINE")
    elif live:
        flags.append("LIVE")
    if persistent:
        flags.append("PERSIST_DEST")
    if undefinesource:
        flags.append("UNDEFINE_SOURCE")
    flags += {"all": ["NON_SHARED_DISK"], "inc": ["NON_SHARED_INC"]}.get(copy_storage, [])
    return flags


def _transport(tunnel, tls, peer2peer, copy_storage, migration_uri, parallel_connections, notes):
    """The flags saying how the data travels: ``(flags, tunnel, tls, peer2peer)`` as they end up."""
    flags = []
    if tunnel and copy_storage:
        notes.append(
            "tunnelled migration with copy-storage fails on libvirt 9.0: using peer-to-peer "
            "with TLS instead (memory and disk streams are encrypted by QEMU)"
        )
        tunnel, tls, peer2peer = False, True, True
    if tunnel:
        if migration_uri:
            raise InvalidArgument("migration_uri does not apply to a tunnelled migration")
        if parallel_connections:
            raise InvalidArgument("parallel connections cannot be tunnelled: use tls=True instead")
        if tls:
            notes.append("tunnelled: the data goes through libvirt's TLS connection (tls ignored)")
            tls = False
        peer2peer = True
        flags += ["PEER2PEER", "TUNNELLED"]
    elif peer2peer:
        flags.append("PEER2PEER")
    if tls and copy_storage and parallel_connections:
        raise InvalidArgument(
            "parallel connections with TLS and copied disks fail on libvirt 9.0 (the disk "
            "stream's TLS host name check): drop parallel_connections or use shared storage"
        )
    if tls:
        flags.append("TLS")
    return flags, tunnel, tls, peer2peer


def _params(parallel_connections, max_bandwidth, migration_uri, migrate_disks, copy_storage):
    """The typed parameters of virDomainMigrate3."""
    params = {}
    if parallel_connections is not None:
        params[PARAM_PARALLEL] = positive_int(parallel_connections, "parallel_connections")
    if max_bandwidth is not None:
        params[PARAM_BANDWIDTH] = positive_int(max_bandwidth, "max_bandwidth (MiB/s)")
    if migration_uri:
        params[PARAM_URI] = str(migration_uri)
    if migrate_disks:
        if not copy_storage:
            raise InvalidArgument("migrate_disks only applies when copying storage")
        params[PARAM_DISKS] = [str(d) for d in migrate_disks]
    return params
