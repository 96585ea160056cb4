"""
Salt Virt execution module: create and manage libvirt domains on a hypervisor minion.

This is thin glue over the ``saltvirt`` library (``_utils/saltvirt``): arguments, Salt
configuration (``virt:*`` from minion config, grains or pillar) and ``__salt__`` calls here;
libvirt, images and XML there.

Configuration (all optional)::

    virt:
      connection:
        uri: qemu:///system        # libvirt URI (+ username/password for SASL)
      images: /srv/salt-images     # where VM disks are created (one directory per VM)
      address: hyper1.example.com  # how other hypervisors and consoles reach this one
      vnc:
        listen: 127.0.0.1          # VNC consoles listen here (never 0.0.0.0 unless asked)
      seed_cmd: cidata             # default seeding method: cidata | seed.apply | <mod.fun>
      seed_install_cmd: null       # seed.apply: run when the image has no salt-minion, e.g.
                                   #   "cp -a /srv/salt-onedir/. {root}/opt/saltstack/salt"
      seed_install_timeout: 900
      guestfs: {force_tcg: auto, timeout: 600}   # libguestfs (seed.apply), see guestfs module
      image_copy: {base_timeout: 600, min_rate_mib: 10}   # a copy may take base + size at rate
      nic: {<profile>: [...]}      # NIC profiles, see saltvirt.provision.profiles
      disk: {<profile>: [...]}     # disk profiles
      tunnel: False                # migrate through the libvirt daemons' TLS connection
      domain_xml:                  # what define_xml_* / create_xml_* accept (docs/security.rst)
        firmware_roots: [/usr/share/OVMF, ...]
        devices: [/dev/urandom, ...]
        allow: []                  # hostdev, qemu_namespace, seclabel, executables, interface:direct...
"""

import logging
import os
import sys

from salt.exceptions import SaltInvocationError

# The minion's main process may hold the library preloaded (_grains/virt.py): read it anew
# if saltutil.sync_all has replaced its files since.
if hasattr(sys.modules.get("saltvirt"), "unload_if_stale"):
    sys.modules["saltvirt"].unload_if_stale()

try:
    from saltvirt import coexist, migration, saltglue
    from saltvirt import connection as virtconn
    from saltvirt import console as vconsole
    from saltvirt import progress as vprogress
    from saltvirt import settings as vsettings
    from saltvirt.domain import definexml, snapshots, stats, vmops
    from saltvirt.domain import pending as vpending
    from saltvirt.errors import InvalidArgument, NotFound, VirtError
    from saltvirt.host import capabilities as hostcaps
    from saltvirt.host import devices as hostdevices
    from saltvirt.migration import node as migration_node
    from saltvirt.migration.options import MigrationOptions
    from saltvirt.operations import evacuate as opevacuate
    from saltvirt.pki import attest, sealed
    from saltvirt.provision import change as provision_change
    from saltvirt.provision import lifecycle, profiles
    from saltvirt.provision import sources as provision_sources
    from saltvirt.provision import vm as provision_vm
    from saltvirt.provision.spec import UpdateSpec, VmSpec
    from saltvirt.storage import bases, images


    HAS_SALTVIRT = True
    IMPORT_ERROR = None
except ImportError as _exc:  # _utils not synced, or a Python library it needs is missing
    HAS_SALTVIRT = False
    try:
        from saltvirt.errors import import_advice

        IMPORT_ERROR = import_advice(_exc)
    except ImportError:
        IMPORT_ERROR = (f"the salt-virt library could not be imported ({_exc}); run saltutil.sync_all, "
                        "or install salt-virt into the Python that runs Salt")

log = logging.getLogger(__name__)

__virtualname__ = "virt"

def __virtual__():
    if not HAS_SALTVIRT:
        return False, f"virt: {IMPORT_ERROR}"
    return saltglue.virtual(__virtualname__, __salt__["config.get"], __opts__, __file__)


# --------------------------------------------------------------------------- plumbing


def _settings():
    """This minion's ``virt:*`` settings for the library (:mod:`saltvirt.settings`)."""
    return vsettings.from_salt(__salt__["config.get"], __opts__, __grains__, __salt__, sizer=_remote_size)


def _remote_size(url, saltenv):
    """Bytes of a salt:// or http(s) image before it is fetched (for progress percentages), or None."""
    if not str(url).startswith("salt://"):
        return provision_sources.http_size(url)
    import salt.fileclient  # noqa: PLC0415 - only when an image is fetched

    client = salt.fileclient.get_file_client(__opts__)
    try:
        _hash, stat = client.hash_and_stat_file(url, saltenv)
    finally:
        client.destroy()
    return stat[6] if isinstance(stat, (list, tuple)) and len(stat) > 6 else None


def _config(key, default=None):
    return __salt__["config.get"](f"virt:{key}", default)


def _connection(kwargs):
    """Open libvirt with the caller's connection/username/password or the configured URI."""
    return _settings().opened(kwargs)


_salt_errors = saltglue.salt_errors if HAS_SALTVIRT else None
# The classic name of a function's first argument (vm_ or name) as a keyword; unknown keywords refused.
_classic = saltglue.classic_args if HAS_SALTVIRT else (lambda *_a, **_k: (lambda func: func))


def _domain_call(name, action, kwargs, **extra):
    """Run ``vmops.<action>(dom, **extra)`` on domain ``name``; errors become Salt exceptions."""
    with _salt_errors(), _connection(kwargs) as conn:
        return getattr(vmops, action)(vmops.lookup(conn, name), **extra)


def _serial_log(name):
    return vsettings.HostSettings.serial_log(name)


def _images_dir():
    with _salt_errors():
        return _settings().images_dir


def _roots(conn):
    """The directories a call may name on this hypervisor (:class:`saltvirt.storage.paths.Roots`)."""
    with _salt_errors():
        return _settings().roots(vmops.pool_targets(conn))


def _host_address():
    return _settings().address


def _vm_file(name, what):
    with _salt_errors():
        return _settings().vm_file(name, what)


# --------------------------------------------------------------------------- init


def init(name, cpu, mem, image=None, progress_tag=None, **kwargs):
    """
    Create a new virtual machine, seed it, and (by default) start it.

    name
        Domain name (letters, digits, ``_.+-``; at most 64 characters). Classic name: ``vm_``.
    cpu
        Number of vCPUs, or the classic dict (``topology: {sockets, cores, threads}``,
        ``model``, ``mode``, ``features``, ``numa``, ``current``/``maximum``...; see
        ``docs/hardware.rst``).
    mem
        Memory in MiB, a size such as ``1g``, or the classic dict (``boot``, ``current``,
        ``max``/``slots``, ``hard_limit``, ``soft_limit``, ``hugepages``...).
    numatune
        ``{memory: {mode, nodeset}, memnodes: {cell: {mode, nodeset}}}``.
    serials / consoles
        Lists of ``{type: pty|tcp|file|unix, ...}`` (``port``, ``host``, ``protocol`` for
        tcp; ``path`` under ``virt:attach_roots`` for file/unix). Serial port 0 always logs
        to ``/var/log/libvirt/qemu/<name>-serial.log``; consoles other than port 0's alias
        are virtio.
    host_devices
        Node device names (``virt.node_devices``) to pass through; only those the operator
        allows in ``virt:host_devices:allowed`` (default none).
    cloud_init
        ``{user_data, meta_data, network_config}`` added to the cidata seed ISO, merged with
        the minion's seeding (which keeps the id, master and keys; see ``docs/seeding.rst``).
        Defaults: ``virt:cloud_init``.
    image
        Disk image for the first (system) disk: ``salt://path``, ``http(s)://url`` (with
        optional ``image_hash=sha256=...``) or an absolute path on the hypervisor. It is
        copied into ``virt:images/<name>/`` (``/srv/salt-images`` by default).
    enable_qcow
        Make the system disk a qcow2 overlay backed by the (read-only) image instead of a copy.
    nic / interfaces
        NIC profile name (``virt:nic``; default: one NIC bridged to ``br0``; classic name
        ``nic_profile``) and/or a list of interfaces (``[{name: eth0, type: bridge, source: br0,
        mac: ...}]``) merged over it.
    disk / disks
        Disk profile name (``virt:disk``; classic name ``disk_profile``) and/or a list of disks
        merged over it (``name``, ``size`` in MiB, ``format``, ``pool`` (a directory or a
        libvirt pool's name: ``docs/storage.rst``), ``image``, ``overlay_image``, ``source_file``,
        ``device``, ``bus``).
    hypervisor
        ``kvm`` or ``qemu`` (classic name ``vm_type``). Default: ``kvm`` only if a probe shows it
        really runs guests, else ``qemu`` (TCG); the return says which and why.
    start
        Start the domain after it is defined (default True). Seeding always completes first.
    seed / seed_cmd / install / pub_key / priv_key / config / seed_install_cmd / seed_device
        Seed the system disk with a minion id, config and key pair before first boot.
        ``seed_cmd`` (default ``virt:seed_cmd``, else ``cidata``; other values only among
        ``virt:seed_cmds``):

        * ``cidata`` -- a cloud-init NoCloud ISO attached read-only (milliseconds; the guest
          needs cloud-init or an equivalent that reads it);
        * ``seed.apply`` -- mount the system disk with libguestfs and write
          ``/etc/salt/minion`` and the keys into it (25-40 s under TCG). If the image has no
          salt-minion and ``install`` is true, ``virt:seed_install_cmd`` (or the one of
          ``virt:seed_install_cmds`` that ``seed_install_cmd`` names; ``{root}`` is the mounted
          tree) installs it, and without one that is an error; with ``install=False`` the config
          and keys are still written. ``seed_device=/dev/sda2`` picks the filesystem (default:
          the largest Linux one);
        * any other ``module.function`` -- called like Salt's ``seed.apply``
          (``path, id_=, config=, install=, pub_key=, priv_key=, approve_key=False``) and must
          return True.

        ``config``: extra minion configuration (``master`` defaults to this minion's master).
        ``pub_key``/``priv_key``: PEM text or paths (under ``virt:attach_roots``) of a
        pre-generated key pair.
    enable_vnc / graphics
        Add a VNC console (``graphics={type: vnc, listen: ..., port: ..., password: ...}``).
        It listens on ``virt:vnc:listen`` (default 127.0.0.1), never on 0.0.0.0 unless asked,
        on an automatic port (5900 up) unless ``port`` is given. ``password`` (1 to 8
        characters) protects it; without one a password is generated (``virt:vnc:password:
        none`` in the hypervisor's config turns that off; only then is ``password: False``
        accepted). Returns and ``vm_info`` only say ``password_set``; ask for the password with
        ``salt-run virt.console <vm> show_password=True``.
    boot / boot_dev
        ``boot_dev``: boot devices in order, ``"cdrom hd"`` (default ``hd``; also a list, or
        ``boot`` as a list). ``boot``: ``{kernel, initrd, cmdline}`` boots a kernel directly;
        ``efi: True`` boots UEFI firmware that libvirt picks (OVMF), ``loader`` (and
        ``nvram``, the variable store's template) names it. A UEFI VM's variable store is its
        own ``nvram.fd`` in ``virt:images/<name>/``, removed by ``virt.purge``. Kernels and
        initrds must lie under ``virt:image_roots``, loaders and templates under
        ``virt:domain_xml:firmware_roots`` (``/usr/share/OVMF``, ``/usr/share/qemu``...) too.
    stop_on_reboot
        True: the VM stops instead of rebooting (e.g. after an installer's first stage).
    clock
        ``{utc: False}`` (local time), ``{timezone: Europe/Paris}``, ``adjustment`` (seconds
        or ``reset``) and ``timers`` (``{rtc: {tickpolicy: catchup}, hpet: {present: False}}``).
    hypervisor_features
        ``{kvm-hint-dedicated: True}`` (needs KVM's host-passthrough CPU), ``kvm-hidden``,
        ``kvm-poll-control``, ``kvm-pv-ipi``: True (on), False (off), None (libvirt's default).
    os_type, arch
        OS type (``hvm``) and architecture (``x86_64``).
    autostart
        Start the domain when the hypervisor boots.
    saltenv / image_hash
        The file server environment of ``salt://`` images; ``sha256=<digest>`` of the image.
    master_hash
        ``sha256=<digest>`` of a ``salt://`` image as the master's file server has it (``salt-run
        virt.init`` passes it): an overlay whose base this hypervisor made from exactly that
        version uses the base without asking the master again. Anything else fetches as usual.
    progress_tag
        The event tag of the progress reports of image fetches and copies (step, bytes,
        percent, MiB/s, about once a second) sent to the master's bus; default
        ``saltvirt/init/<name>/progress``. ``salt-run virt.init`` sets its own and prints them.
        A copy may take ``virt:image_copy:base_timeout`` (600) seconds plus its size at
        ``virt:image_copy:min_rate_mib`` (10) MiB/s.

    Any other argument is refused with an error naming it (see
    :class:`saltvirt.provision.spec.VmSpec`).

    CLI Example:

    .. code-block:: bash

        salt 'hypervisor*' virt.init centos1 2 512 image=/var/lib/libvirt/images/centos.img
        salt 'hypervisor*' virt.init centos1 2 512 image=/var/lib/libvirt/images/centos.qcow2 \
            enable_qcow=True start=False
        salt 'hypervisor1' virt.init web1 1 1024 image=salt://centos.qcow2 enable_vnc=True
        salt 'hypervisor1' virt.init web2 1 1024 image=salt://centos.qcow2 graphics='{type: vnc, password: True}'
        salt 'hypervisor1' virt.init web3 '{topology: {sockets: 1, cores: 2}}' '{boot: 1g, current: 768m}' \
            image=salt://centos.qcow2 serials='[{type: tcp, port: 4555, protocol: telnet}]'
        salt 'hypervisor1' virt.init uefi1 1 1024 image=salt://debian.qcow2 boot='{efi: True}'
        salt 'hypervisor1' virt.init inst1 1 1024 disks='[{name: cd, device: cdrom, source_file: /srv/iso/d.iso}]' \
            boot_dev='cdrom hd' stop_on_reboot=True clock='{utc: False}'
    """
    with _salt_errors():
        spec = VmSpec.from_kwargs("virt.init", name=name, cpu=cpu, mem=mem, image=image, **kwargs)
        settings = _settings()
        sink = vprogress.event_sink(settings, progress_tag or vprogress.init_tag(spec.name), name=spec.name)
        with _connection(spec.extra) as conn:
            result = provision_vm.create_vm(conn, spec, settings, progress=sink)
        _attest_key(spec.name, result.get("seeded"), kwargs.get("__pub_jid"))
        return result


def _attest_key(name, report, jid):
    """Sign VM ``name``'s minion public key in ``report``, with the id of the job answering it
    (``jid``), for the master, which accepts it only with this hypervisor's signature for the
    job it published (:mod:`saltvirt.pki.attest`: another minion could send an answer in this
    one's name, or replay one this hypervisor gave about an earlier VM of the name)."""
    if isinstance(report, dict) and report.get("minion_pub"):
        try:
            report["minion_pub_signature"] = attest.sign(
                attest.minion_key(__opts__), attest.KEY, __opts__["id"], name,
                attest.key_statement(report["minion_pub"], jid))
        except VirtError as exc:  # the VM stands; the master refuses the unsigned key and removes it
            log.error("virt: the minion key of %s is not signed: %s", name, exc)
    return report


# --------------------------------------------------------------------------- lifecycle


def _lifecycle_call(action, name, kwargs):
    """``saltvirt.provision.lifecycle.<action>(conn, name, settings)``, errors made Salt's."""
    with _salt_errors(), _connection(kwargs) as conn:
        return getattr(lifecycle, action)(conn, name, _settings())


@_classic("vm_")
def start(name, **kwargs):
    """
    Start a defined domain. A VM's cidata seed (which holds its minion key) serves its first
    boot only: on any later start it is detached and deleted first (see :func:`unseed`).

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.start centos1
    """
    return _lifecycle_call("start", name, kwargs)


def init_status(name, **kwargs):
    """
    What this hypervisor has of a VM ``virt.init`` may have been creating: whether the domain
    is defined, its state, the public key its seed carries (signed with this minion's key for
    this job: ``minion_pub_signature``), the files in its directory. The runner's
    ``virt.reconcile`` decides from it.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.init_status web1
    """
    return _attest_key(name, _lifecycle_call("init_status", name, kwargs), kwargs.get("__pub_jid"))


def seeded_vms(**kwargs):
    """
    The defined domains that ``virt.init`` seeded with a minion key (their directory under
    ``virt:images`` holds the public half): what the master should hold keys for.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.seeded_vms
    """
    with _salt_errors(), _connection(kwargs) as conn:
        return lifecycle.seeded_vms(conn, _settings())


def remove_leftovers(name, **kwargs):
    """
    Remove what an interrupted ``virt.init`` left of a VM that was never defined: its
    directory under ``virt:images`` (disks, seed). Refused while a domain of that name exists
    (use :func:`purge`).

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.remove_leftovers web1
    """
    return _lifecycle_call("remove_leftovers", name, kwargs)


def unseed(name, **kwargs):
    """
    Detach a VM's cidata seed ISO (its minion key and config for the first boot) and delete
    it. Run once the VM's minion has authenticated (the master's reactor can, see
    ``docs/seeding.rst``); :func:`start` does it on any start after the first boot. The ISO is
    removed from the persistent definition and, when the guest lets it go, from the running
    one. Nothing to do is not an error.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.unseed centos1
    """
    return _lifecycle_call("unseed", name, kwargs)


@_classic("vm_")
def stop(name, timeout=0, **kwargs):
    """
    Shut a domain down cleanly (ACPI power button); ``timeout`` seconds to wait for it.

    Returns ``stopped`` (the domain is off) and ``requested`` (the power button was pressed).
    Without a timeout only the request is sent: ``stopped`` is False until the guest obeys.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.stop centos1 timeout=60
        salt hypervisor1 virt.stop centos1
    """
    status = _domain_call(name, "shutdown", kwargs, timeout=int(timeout))
    return {"name": name, "stopped": status in ("stopped", "not running"), "requested": status != "not running",
            "status": status}


@_classic("vm_")
def shutdown(name, **kwargs):
    """
    Alias of :func:`stop` (virsh's word).

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.shutdown centos1
    """
    return stop(name, **kwargs)


@_classic("vm_")
def force_off(name, **kwargs):
    """
    Pull the plug: stop a domain immediately (virsh destroy).

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.force_off centos1
    """
    return {"name": name, "destroyed": _domain_call(name, "destroy", kwargs)}


@_classic("vm_")
def destroy(name, **kwargs):
    """
    Alias of :func:`force_off` (virsh's word; the domain stays defined).

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.destroy centos1
    """
    return force_off(name, **kwargs)


@_classic("vm_")
def reboot(name, **kwargs):
    """
    Ask the guest to reboot.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.reboot centos1
    """
    return {"name": name, "rebooted": _domain_call(name, "reboot", kwargs)}


@_classic("vm_")
def reset(name, **kwargs):
    """
    Hard-reset a running domain (like the reset button).

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.reset centos1
    """
    return {"name": name, "reset": _domain_call(name, "reset", kwargs)}


@_classic("vm_")
def pause(name, **kwargs):
    """
    Pause (suspend) a running domain.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.pause centos1
    """
    return {"name": name, "paused": _domain_call(name, "suspend", kwargs)}


@_classic("vm_")
def resume(name, **kwargs):
    """
    Resume a paused domain.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.resume centos1
    """
    return {"name": name, "resumed": _domain_call(name, "resume", kwargs)}


@_classic("vm_")
def undefine(name, **kwargs):
    """
    Remove a stopped domain's definition (its disks stay; see :func:`purge`).

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.undefine centos1
    """
    return {"name": name, "undefined": _domain_call(name, "undefine", kwargs)}


@_classic("vm_")
def purge(name, dirs=False, removables=False, **kwargs):
    """
    Destroy and undefine a domain and delete the disks ``virt.init`` created for it
    (the files in ``virt:images/<name>/``, and its ``<name>-<disk>`` volumes in libvirt
    pools). Base images, operator-supplied disks and ISOs
    elsewhere are never deleted. If one of its own disks has become the base of another
    image (or is a disk of another domain), nothing is done and the users are named.
    The classic ``dirs`` and ``removables`` are accepted and have no effect (the VM's own
    directory goes, with its seed ISO; nothing else is ever removed).

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.purge centos1
    """
    return _lifecycle_call("purge", name, kwargs)


@_classic("vm_")
def set_autostart(name, state="on", **kwargs):
    """
    Turn autostart of a domain ``on`` or ``off``.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.set_autostart centos1 on
    """
    enabled = str(state).lower() in ("on", "true", "1", "yes")
    return {"name": name, "autostart": _domain_call(name, "set_autostart", kwargs, enabled=enabled)}


@_classic("vm_")
def setmem(name, memory, config=None, **kwargs):
    """
    Set a domain's memory in MiB (persistent; also live when running and possible). The
    classic ``config`` is accepted; the definition always changes.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.setmem centos1 1024
    """
    return {"name": name, "memory": int(memory), "set": _domain_call(name, "setmem", kwargs, memory_mib=memory)}


@_classic("vm_")
def setvcpus(name, vcpus, config=None, **kwargs):
    """
    Set a stopped domain's vCPU count. The classic ``config`` is accepted; the definition
    always changes.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.setvcpus centos1 2
    """
    return {"name": name, "vcpus": int(vcpus), "set": _domain_call(name, "setvcpus", kwargs, vcpus=vcpus)}


# --------------------------------------------------------------------------- update, snapshots


def update(name, cpu=None, mem=None, disk=None, disks=None, nic=None, interfaces=None, graphics=None,
           enable_vnc=False, autostart=None, live=True, test=False, saltenv="base", enable_qcow=False,
           boot=None, boot_dev=None, stop_on_reboot=None, clock=None, hypervisor_features=None, **kwargs):
    """
    Bring an existing domain in line with ``virt.init``-style arguments: vCPUs, memory, new
    disks, NICs, graphics, autostart. Whatever is not given is left alone. Each change is
    applied to the running guest where libvirt and QEMU allow it (``live``: memory up to the
    domain's maximum, hot-plugged virtio disks and NICs, a NIC moved to another bridge, a
    new console password), else only to the persistent definition, effective when the
    domain next starts (``next_boot``: vCPUs, memory above the maximum, consoles, NIC
    models; a reboot inside the guest is not enough, the VM must be stopped and started).

    cpu / mem
        vCPUs; memory in MiB (or a size); or the classic dicts of ``virt.init``, compared on
        the keys given and applied on next boot, except a ``mem`` dict's ``current`` and
        memory limits, which a running guest takes at once (``when: partly live`` names the
        keys of each part).
    numatune / serials / consoles / host_devices
        As for ``virt.init``, applied on next boot. ``serials``, ``consoles`` and
        ``host_devices`` are the whole lists (``[]``: none besides the logged serial port 0).
    disk / disks
        Disk profile and disks as for ``virt.init``. Disks not there yet are created in
        ``virt:images/<name>/`` (or their ``pool``) and attached; existing disks are never
        removed or resized. The first disk is the system disk, whatever its file name.
    nic / interfaces
        NIC profile and interfaces as for ``virt.init``, matched by ``mac`` or in order.
        Missing ones are added; a matched one with another type, source or model is
        changed. Interfaces are never removed.
    graphics / enable_vnc
        As for ``virt.init``; ``graphics: none`` removes the console. ``password: True``
        keeps any existing password (a new one is made, and returned once, if there is none).
    autostart
        True / False.
    boot / boot_dev / stop_on_reboot / clock / hypervisor_features
        As for ``virt.init``, each compared on its own and written to the definition
        (``next_boot``); only the ``boot`` keys given are changed, a key set to None is
        removed (``boot: {kernel: null}``), ``efi: False`` goes back to BIOS. ``clock`` is
        replaced as a whole.
    live
        False: change only the definition, never the running guest.
    test
        Only report what would change.

    Returns ``changes`` (``{cpu|mem|graphics|autostart: {old, new, when}, disks|nics: {name:
    {old, new, when, action}}}``; memory in MiB), the ``live`` and ``next_boot`` lists and a
    ``comment``.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.update centos1 mem=1024
        salt hypervisor1 virt.update centos1 cpu=2 test=True
        salt hypervisor1 virt.update centos1 disks='[{name: data, size: 4096}]'
        salt hypervisor1 virt.update centos1 cpu='{topology: {sockets: 1, cores: 2, threads: 1}}'
        salt hypervisor1 virt.update centos1 boot='{efi: True}' boot_dev='cdrom hd' stop_on_reboot=False
    """
    with _salt_errors():
        spec = UpdateSpec.from_kwargs(
            "virt.update", name=name, cpu=cpu, mem=mem, disk=disk, disks=disks, nic=nic, interfaces=interfaces,
            graphics=graphics, enable_vnc=enable_vnc, autostart=autostart, live=live, test=test, saltenv=saltenv,
            enable_qcow=enable_qcow, boot=boot, boot_dev=boot_dev, stop_on_reboot=stop_on_reboot, clock=clock,
            hypervisor_features=hypervisor_features, **kwargs)
        with _connection(spec.extra) as conn:
            changes, generated = provision_change.update_vm(conn, spec, _settings())
    return provision_change.report(spec, changes, generated)


def pending_changes(name, **kwargs):
    """
    What a running domain's persistent definition has that its guest does not run with yet
    (changes made "on next boot"); empty when nothing is pending or the domain is stopped.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.pending_changes centos1
    """

    return _with_conn(kwargs, lambda conn: vpending.pending_of(vmops.lookup(conn, name)))


def snapshot(domain, name=None, suffix=None, **kwargs):
    """
    Take a libvirt snapshot of a domain (internal qcow2 snapshot of its writable disks, and
    of its memory when it runs). ``name`` defaults to ``<domain>-<YYYYmmdd-HHMMSS>``;
    ``suffix`` is appended to it. Writable raw disks cannot hold one: libvirt refuses.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.snapshot centos1
        salt hypervisor1 virt.snapshot centos1 name=before-upgrade
    """
    snap_name = name or snapshots.default_name(domain)
    if suffix:
        snap_name = f"{snap_name}-{suffix}"
    created = _with_conn(kwargs, lambda conn: snapshots.create(vmops.lookup(conn, domain), snap_name))
    return {"name": domain, "snapshot": created}


def list_snapshots(domain=None, **kwargs):
    """
    Snapshot names of one domain (or all), oldest first: ``{domain: [names]}``.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.list_snapshots centos1
    """

    def _list(conn):
        doms = [domain] if domain else vmops.list_domains(conn)
        return {d: snapshots.names(vmops.lookup(conn, d)) for d in doms}

    return _with_conn(kwargs, _list)


@_classic("vm_")
def revert_snapshot(name, vm_snapshot=None, cleanup=False, test=False, **kwargs):
    """
    Revert domain ``name`` to snapshot ``vm_snapshot`` (default: the one the current snapshot
    was taken after). Its disks, and for a snapshot of a running domain its memory and
    running state, come back as they were. ``cleanup=True`` deletes the snapshots taken after
    it. Returns ``{reverted, deleted}`` (``deleted``: names, or ``"N/A"`` without cleanup);
    ``test=True`` returns what would be done and changes nothing.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.revert_snapshot centos1 before-upgrade
        salt hypervisor1 virt.revert_snapshot centos1 cleanup=True
    """
    return _with_conn(kwargs, lambda conn: snapshots.revert(vmops.lookup(conn, name), vm_snapshot, bool(cleanup),
                                                            bool(test)))


def delete_snapshots(name, *names, **kwargs):
    """
    Delete snapshots of domain ``name``: the ones named, or all of them with ``all=True``. An
    unknown name deletes nothing. Returns ``{available: {name: [descriptions] or "N/A"},
    deleted: {snapshot: description}}`` (description: ``name``, ``created``, ``running``,
    ``current``).

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.delete_snapshots centos1 before-upgrade
        salt hypervisor1 virt.delete_snapshots centos1 all=True
    """
    everything = bool(kwargs.pop("all", False))
    with _salt_errors():
        saltglue.refuse_unknown("virt.delete_snapshots", kwargs, ("all",))
    return _with_conn(kwargs, lambda conn: snapshots.delete(vmops.lookup(conn, name), names, everything))


# --------------------------------------------------------------------------- domains from XML


def _xml_call(function, kwargs, func, *args, **extra):
    """``func(conn, settings, *args, **extra)``; only the connection arguments besides."""
    with _salt_errors():
        saltglue.refuse_unknown(function, kwargs)
        settings = _settings()
        with _connection(kwargs) as conn:
            return func(conn, settings, *args, **extra)


def define_xml_str(xml, **kwargs):
    """
    Define a persistent domain from its libvirt XML. Returns True.

    The XML is checked first (``docs/security.rst``): every host file or device it names must
    lie under this hypervisor's roots (``virt:attach_roots`` and libvirt pools' directories for
    writable files, plus ``virt:image_roots`` for read-only ones, plus
    ``virt:domain_xml:firmware_roots`` for firmware), no writable disk may be another
    domain's, and host device passthrough, ``<qemu:commandline>``, interface scripts, custom
    security labels and interfaces other than ``bridge``/``network`` are refused unless
    ``virt:domain_xml:allow`` lists them. A refusal names every problem and defines nothing.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.define_xml_str "$(cat web1.xml)"
    """
    return _xml_call("virt.define_xml_str", kwargs, definexml.apply, xml)


def define_xml_path(path, **kwargs):
    """
    Define a persistent domain from the XML file ``path`` on the hypervisor, checked as for
    :func:`define_xml_str`. The file must lie under ``virt:attach_roots``, ``virt:image_roots``
    or a pool's directory; errors never quote its content. Returns True.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.define_xml_path /var/lib/libvirt/images/web1.xml
    """
    return _xml_call("virt.define_xml_path", kwargs, definexml.apply_file, path)


def create_xml_str(xml, **kwargs):
    """
    Start a transient domain (gone when it stops) from its libvirt XML, checked as for
    :func:`define_xml_str`. Returns True.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.create_xml_str "$(cat scratch.xml)"
    """
    return _xml_call("virt.create_xml_str", kwargs, definexml.apply, xml, transient=True)


def create_xml_path(path, **kwargs):
    """
    Start a transient domain from the XML file ``path`` on the hypervisor, checked as for
    :func:`define_xml_path`. Returns True.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.create_xml_path /var/lib/libvirt/images/scratch.xml
    """
    return _xml_call("virt.create_xml_path", kwargs, definexml.apply_file, path, transient=True)


# --------------------------------------------------------------------------- inventory


def _with_conn(kwargs, func, *args):
    with _salt_errors(), _connection(kwargs) as conn:
        return func(conn, *args)


def list_domains(**kwargs):
    """
    Names of all domains on this hypervisor.

    CLI Example:

    .. code-block:: bash

        salt 'hypervisor*' virt.list_domains
    """
    return _with_conn(kwargs, vmops.list_domains)


def list_active_vms(**kwargs):
    """
    Names of running domains.

    CLI Example:

    .. code-block:: bash

        salt 'hypervisor*' virt.list_active_vms
    """
    return _with_conn(kwargs, vmops.list_domains, True)


def list_inactive_vms(**kwargs):
    """
    Names of defined but stopped domains.

    CLI Example:

    .. code-block:: bash

        salt 'hypervisor*' virt.list_inactive_vms
    """
    return _with_conn(kwargs, vmops.list_domains, False)


@_classic("name")
def vm_info(vm_=None, **kwargs):
    """
    Everything about one domain (or all): cpu, memory (KiB), state, graphics with the live
    host:port, disks (file, format, size, backing chain), NICs (mac, source, type, model).

    A graphics console's ``host`` is where other machines reach it: this hypervisor's
    ``virt:address`` when it listens on all addresses or on loopback (``local_only: True``:
    only through an SSH tunnel), else its listen address. ``password_set`` says whether it has
    a password; the password itself is never reported.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.vm_info centos1
    """

    def _info(conn):
        names = [vm_] if vm_ else vmops.list_domains(conn)
        result = {}
        for name in names:
            try:
                data = vmops.info(conn, name)
            except NotFound:
                if vm_:
                    raise
                continue  # gone since the listing (migrated away, undefined)
            data["graphics"] = provision_vm.console_graphics(_settings(), conn, name, data["graphics"])
            result[name] = data
        return result

    return _with_conn(kwargs, _info)


@_classic("name")
def vm_state(vm_=None, **kwargs):
    """
    State of one domain (or all): ``{name: running|shutoff|paused|...}``.

    CLI Example:

    .. code-block:: bash

        salt 'hypervisor*' virt.vm_state centos1
    """

    def _state(conn):
        names = [vm_] if vm_ else vmops.list_domains(conn)
        return {name: vmops.state(vmops.lookup(conn, name)) for name in names}

    return _with_conn(kwargs, _state)


def node_info(**kwargs):
    """
    Host facts: CPUs, memory (MiB), CPU model, libvirt/hypervisor versions.

    CLI Example:

    .. code-block:: bash

        salt 'hypervisor*' virt.node_info
    """
    return _with_conn(kwargs, vmops.node_info)


def implementation():
    """
    Which implementation of Salt's ``virt`` modules this minion loads, and whether
    ``saltext-virt`` (which ships modules named ``virt`` too) is installed next to salt-virt.

    Returns ``salt_virt`` and ``saltext_virt`` (version and path, ``None`` when not installed),
    ``active`` (for the execution and state modules: ``salt-virt`` or ``saltext-virt`` and the
    file Salt loads), ``conflict`` (both installed) and ``message`` (what is active and how to
    choose, see ``docs/install.rst``). The ``virt_implementation`` grain says the same on a
    minion where saltext-virt's module is the active one, which has no such function.

    CLI Example:

    .. code-block:: bash

        salt 'hypervisor*' virt.implementation
    """
    return coexist.report(__opts__, ("modules", "states"))


def freemem(**kwargs):
    """
    MiB of host memory not given to running domains.

    CLI Example:

    .. code-block:: bash

        salt 'hypervisor*' virt.freemem
    """
    return _with_conn(kwargs, vmops.freemem)


def freecpu(**kwargs):
    """
    Host CPUs not given to running domains.

    CLI Example:

    .. code-block:: bash

        salt 'hypervisor*' virt.freecpu
    """
    return _with_conn(kwargs, vmops.freecpu)


def full_info(**kwargs):
    """
    Node info, free memory/CPU, free space for new disks, and every domain's :func:`vm_info`:
    what the runner needs to place VMs and print ``virt.query``.

    CLI Example:

    .. code-block:: bash

        salt 'hypervisor*' virt.full_info
    """

    def _full(conn):
        return dict(_capacity(conn), vm_info=vm_info(**kwargs))

    return _with_conn(kwargs, _full)


def capacity(**kwargs):
    """
    What placement needs of this hypervisor, and nothing more: node info, free memory, CPUs and
    space for new disks, and each domain's name, state, vCPUs and memory (``usage``). The survey
    of ``salt-run virt.init`` and ``virt.drain``; cheaper than :func:`full_info`, which also
    describes every domain.

    CLI Example:

    .. code-block:: bash

        salt 'hypervisor*' virt.capacity
    """
    return _with_conn(kwargs, _capacity)


def _capacity(conn):
    """What placement needs of this host (see :func:`saltvirt.placement.place`)."""
    images_dir = _images_dir()
    probe_dir = images_dir
    while not os.path.isdir(probe_dir):
        probe_dir = os.path.dirname(probe_dir)
    node, usage = vmops.node_info(conn), vmops.domain_usage(conn)
    return {
        "node_info": node,
        "freemem": vmops.freemem(conn, usage),
        "freecpu": vmops.freecpu(conn, usage),
        "address": _host_address(),
        "images": images_dir,
        "disk_free": images.free_space_mib(probe_dir),
        "usage": usage,
    }


def migrate_survey(name, **kwargs):
    """
    This hypervisor's capacity (node info, free memory and disk space, the domains' usage: what
    placement needs) and, when domain ``name`` is defined here, its :func:`migrate_source_info`
    under ``migrate_source`` (probe files included). The first step of ``salt-run
    virt.migrate``: where the VM is, where it could go, and what the target must check, in one
    round trip.

    CLI Example:

    .. code-block:: bash

        salt 'hypervisor*' virt.migrate_survey centos1
    """

    def _survey(conn):
        info = _capacity(conn)
        if vmops.exists(conn, name):
            info["migrate_source"] = migrate_source_info(name, **kwargs)
        return info

    return _with_conn(kwargs, _survey)


@_classic("name")
def get_graphics(vm_, show_password=False, seal_to=None, **kwargs):
    """
    Graphics consoles of a domain (type, listen, host, live port, ``password_set``).

    show_password
        Also return each console's ``password``. The answer of this job is kept in the job
        cache and crosses the event bus like any other: prefer ``salt-run virt.console <vm>
        show_password=True``, which asks with ``seal_to``.
    seal_to
        A one-time X25519 public key (base64) of the caller: the password comes back as
        ``password_sealed``, readable by the holder of its private key only.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.get_graphics centos1
        salt hypervisor1 virt.get_graphics centos1 show_password=True
    """

    def _graphics_of(conn):
        # One read of the secure XML serves password_set and, when asked, the passwords.
        secure = vconsole.secure_graphics(vmops.lookup(conn, vm_))
        graphics = vconsole.console_graphics(vmops.info(conn, vm_)["graphics"], _host_address(), secure)
        if show_password:
            for gfx, device in zip(graphics, secure, strict=False):
                if seal_to and device.password:
                    gfx["password_sealed"] = sealed.seal(seal_to, device.password)
                elif not seal_to:
                    gfx["password"] = device.password
        return graphics

    return _with_conn(kwargs, _graphics_of)


@_classic("name")
def console_info(vm_, **kwargs):
    """
    How to reach a domain's consoles from elsewhere: the domain's state, this hypervisor's
    address (``virt:address``) and its graphics (type, listen, live port, ``host``,
    ``local_only``, ``password_set``). The runner's ``virt.console`` builds on it.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.console_info centos1
    """

    def _console(conn):
        dom = vmops.lookup(conn, vm_)
        graphics = vmops.model(dom).to_info()["graphics"]
        return {
            "name": vm_,
            "state": vmops.state(dom),
            "address": _host_address(),
            "graphics": provision_vm.console_graphics(_settings(), conn, vm_, graphics),
        }

    return _with_conn(kwargs, _console)


@_classic("name")
def get_disks(vm_, **kwargs):
    """
    Disks of a domain keyed by target (file, format, size, backing chain).

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.get_disks centos1
    """
    return vm_info(vm_, **kwargs)[vm_]["disks"]


@_classic("name")
def get_nics(vm_, **kwargs):
    """
    NICs of a domain keyed by MAC address (type, source, model, tap device).

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.get_nics centos1
    """
    return vm_info(vm_, **kwargs)[vm_]["nics"]


@_classic("name")
def get_xml(vm_, inactive=False, **kwargs):
    """
    The domain's XML as libvirt has it (``inactive=True``: the persistent definition).

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.get_xml centos1
    """

    def _xml(conn):
        dom = vmops.lookup(conn, vm_)
        return dom.XMLDesc(virtconn.libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0)

    return _with_conn(kwargs, _xml)


def capabilities(**kwargs):
    """
    libvirt's host capabilities XML, plus whether KVM really works here.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.capabilities
    """
    xml = _with_conn(kwargs, lambda conn: conn.getCapabilities())
    works, reason = _settings().kvm_works()
    return {"xml": xml, "kvm_works": works, "kvm_reason": reason}


def is_hyper(**kwargs):
    """
    True when this minion runs a reachable libvirt hypervisor.

    CLI Example:

    .. code-block:: bash

        salt '*' virt.is_hyper
    """
    try:
        with _connection(kwargs) as conn:
            conn.getInfo()
    except VirtError:
        return False
    return True


# --------------------------------------------------------------------------- classic statistics and host facts


def _xml_of(vm_, kwargs):
    return _with_conn(kwargs, lambda conn: vmops.lookup(conn, vm_).XMLDesc(0))


@_classic("name")
def get_macs(vm_, **kwargs):
    """
    The MAC addresses of a domain's network interfaces, as a list in device order.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.get_macs centos1
    """
    with _salt_errors():
        return stats.macs(_xml_of(vm_, kwargs))


@_classic("name")
def get_loader(vm_, **kwargs):
    """
    The firmware loader of a domain: ``path`` (the string ``"None"`` when it boots the default
    BIOS) and the loader's attributes (``readonly``, ``type``, ``secure``...).

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.get_loader centos1
    """
    with _salt_errors():
        return stats.loader(_xml_of(vm_, kwargs))


@_classic("name")
def vm_cputime(vm_=None, **kwargs):
    """
    CPU time of one domain (or of every domain): ``{name: {cputime, cputime_percent}}``.
    ``cputime`` is in nanoseconds; ``cputime_percent`` divides it by the host's CPUs and the
    domain's vCPUs, as Salt's classic function did.

    CLI Example:

    .. code-block:: bash

        salt 'hypervisor*' virt.vm_cputime
        salt hypervisor1 virt.vm_cputime centos1
    """

    def _cputime(conn):
        host_cpus = stats.host_cpus(conn)
        return stats.per_domain(conn, vm_, lambda dom: stats.cputime(dom, host_cpus))

    return _with_conn(kwargs, _cputime)


@_classic("name")
def vm_netstats(vm_=None, **kwargs):
    """
    Network counters of one domain (or of every domain), summed over its interfaces:
    ``{name: {rx_bytes, rx_packets, rx_errs, rx_drop, tx_bytes, tx_packets, tx_errs, tx_drop}}``.
    A stopped domain, or an interface without a host device (user-mode networking), counts zero.

    CLI Example:

    .. code-block:: bash

        salt 'hypervisor*' virt.vm_netstats
        salt hypervisor1 virt.vm_netstats centos1
    """
    return _with_conn(kwargs, lambda conn: stats.per_domain(conn, vm_, stats.netstats))


@_classic("name")
def vm_diskstats(vm_=None, **kwargs):
    """
    Block counters of one domain (or of every running domain), summed over its disks:
    ``{name: {rd_req, rd_bytes, wr_req, wr_bytes, errs}}``. A stopped domain counts zero.

    CLI Example:

    .. code-block:: bash

        salt 'hypervisor*' virt.vm_diskstats
        salt hypervisor1 virt.vm_diskstats centos1
    """
    return _with_conn(kwargs, lambda conn: stats.per_domain(conn, vm_, stats.diskstats, active_only=True))


@_classic("name")
def ctrl_alt_del(vm_, **kwargs):
    """
    Press Ctrl+Alt+Del in a running domain's console. True when the keys were sent.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.ctrl_alt_del centos1
    """
    return _with_conn(kwargs, lambda conn: stats.send_ctrl_alt_del(vmops.lookup(conn, vm_)))


@_classic("name")
def migrate_start_postcopy(vm_, **kwargs):
    """
    Switch a domain's live migration, in progress and started with post-copy allowed
    (``postcopy=True``), to post-copy mode. True when libvirt switched it; an error when the
    domain is not migrating.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.migrate_start_postcopy centos1
    """
    return _with_conn(kwargs, lambda conn: stats.start_postcopy(vmops.lookup(conn, vm_)))


def get_hypervisor(**kwargs):
    """
    The hypervisor libvirt drives on this minion: ``kvm`` when it offers KVM domains, ``qemu``
    when it emulates only (TCG), else the driver's name (``xen``, ``bhyve``...); ``None`` when
    no libvirt is reachable here.

    CLI Example:

    .. code-block:: bash

        salt '*' virt.get_hypervisor
    """
    try:
        with _connection(kwargs) as conn:
            return hostcaps.hypervisor_name(conn)
    except VirtError:
        return None


def virt_type():
    """
    What kind of machine this minion itself is, as Salt's ``virtual`` grain says (``physical``,
    ``kvm``, ``VMware``...): the classic function returned the grain.

    CLI Example:

    .. code-block:: bash

        salt '*' virt.virt_type
    """
    return __grains__.get("virtual")


def domain_capabilities(emulator=None, arch=None, machine=None, domain=None, **kwargs):
    """
    What a domain may use on this host for an emulator, architecture, machine type and domain
    type (``kvm``, ``qemu``; libvirt's default for those not given): ``emulator``, ``domain``,
    ``machine``, ``arch``, ``max_vcpus``, ``iothreads``, ``os`` (the firmware loaders),
    ``cpu`` (the supported CPU modes and models), ``devices`` and ``features``. The possible
    values are in :func:`all_capabilities`.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.domain_capabilities arch=x86_64 domain=kvm
    """
    return _with_conn(kwargs, hostcaps.domain_capabilities, emulator, arch, machine, domain)


def all_capabilities(**kwargs):
    """
    The host's capabilities (``host``: ``{host, guests}``, the CPU, NUMA topology, security
    models, each guest architecture with its machines and domain types) and the
    :func:`domain_capabilities` of every guest domain type (``domains``), in one call.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.all_capabilities
    """
    return _with_conn(kwargs, hostcaps.all_capabilities)


def cpu_baseline(full=False, migratable=False, out="libvirt", **kwargs):
    """
    The CPU definition every domain on this host can be given (libvirt's baseline of the host
    CPU).

    full
        List every CPU feature, not only those on top of the CPU model.
    migratable
        Leave out the features that would prevent migrating the domain.
    out
        ``libvirt`` (default): the ``<cpu>`` XML for a domain definition; ``salt``: a dict
        ``{model, vendor, features: [{name, policy}]}``.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.cpu_baseline
        salt hypervisor1 virt.cpu_baseline full=True out=salt
    """
    return _with_conn(kwargs, lambda conn: hostcaps.cpu_baseline(conn, full, migratable, out))


def node_devices(**kwargs):
    """
    The host's devices a guest may be given: PCI devices (but bridges) and USB devices (but root
    hubs), each with ``name``, ``caps``, ``address``, vendor and product ids and names, and the
    physical network interfaces (``name``, MAC ``address``, ``device name``, link ``state``).

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.node_devices
    """
    return _with_conn(kwargs, hostdevices.node_devices)


def get_profiles(hypervisor=None, **kwargs):
    """
    The disk and NIC profiles of this hypervisor (``virt:disk`` and ``virt:nic``), normalised
    as ``virt.init`` uses them, with the built-in ``default`` ones when not configured:
    ``{disk: {profile: [disks]}, nic: {profile: [nics]}}``.

    hypervisor
        A domain type of this host (``kvm``, ``qemu``): an error when the host offers no such
        type. Profiles are the same for every type here.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.get_profiles
    """
    if hypervisor:

        def _check(conn):
            offered = hostcaps.hypervisor_types(hostcaps.capabilities(conn))
            if hypervisor not in offered:
                raise InvalidArgument(f"hypervisor {hypervisor!r} is not offered here "
                                      f"(offered: {', '.join(offered) or 'none'})")

        _with_conn(kwargs, _check)
    with _salt_errors():
        settings = _settings()
        return profiles.all_profiles(settings.get("disk"), settings.get("nic"))


# --------------------------------------------------------------------------- base images


def image_users(path, **kwargs):
    """
    The images that use ``path`` as a base on this hypervisor, among the disks of every
    domain and the qcow2 files under ``virt:images``: ``direct`` overlays (backed by it),
    ``indirect`` ones (through another overlay) and ``domains`` (which domains use each).

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.image_users /var/lib/libvirt/images/centos.qcow2
    """
    return _with_conn(kwargs, lambda conn: bases.find_users(conn, path, _images_dir()))


def rebase_base(base, new_base=None, safe=True, live_pull=False, missing_ok=False, **kwargs):
    """
    Make a base image safe to change or remove: copy it (to ``new_base``, default
    ``<base>.<YYYYmmddTHHMMSS>``, read-only like a base) and rebase every overlay that uses
    it on this hypervisor onto the copy. The overlays keep their content (``safe``: qemu-img
    checks it cluster by cluster). Afterwards the old base has no user and can be changed or
    removed (:func:`remove_image`).

    Overlays of running VMs cannot be rebased under QEMU: then nothing is done and the VMs
    are named; stop them first, or pass ``live_pull=True`` to flatten those overlays live
    with a libvirt block pull (they then depend on no base at all and grow by the data
    they pull in).

    ``missing_ok=True`` (used by ``salt-run virt.rebase``): no such file here is not an error.

    Returns ``base``, ``new_base``, ``rebased`` (``[{overlay, domains, how, backing}]``,
    ``how`` is ``rebase`` or ``pull``), ``indirect`` users (which follow their own backing
    file) and ``seconds``.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.rebase_base /var/lib/libvirt/images/centos.qcow2
        salt hypervisor1 virt.rebase_base /srv/salt-images/base/centos-1f2e.qcow2 \
            new_base=/srv/salt-images/base/centos-v2.qcow2
    """
    if missing_ok and not os.path.exists(base):
        return {"base": base, "present": False, "new_base": None, "rebased": [], "indirect": []}
    result = _with_conn(kwargs, lambda conn: bases.rebase_users(
        conn, base, _images_dir(), new_base=new_base, safe=bool(safe), live_pull=bool(live_pull)))
    result["present"] = True
    return result


def remove_image(path, **kwargs):
    """
    Delete a disk image file, unless it is still in use: the base of any overlay (domain
    disks and qcow2 files under ``virt:images``) or a disk of any domain. The refusal names
    the users; move overlays off a base first with :func:`rebase_base`. Only images where base
    images live are removed: ``<virt:images>/base``, libvirt pools' directories and
    ``virt:image_roots`` (never a VM's directory or any other host file).

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.remove_image /var/lib/libvirt/images/centos.qcow2
    """
    def _remove(conn):
        try:
            real = _roots(conn).image(path, "image to remove")
        except InvalidArgument as exc:
            raise SaltInvocationError(str(exc)) from exc
        return bases.remove(conn, real, _images_dir())

    return _with_conn(kwargs, _remove)


# --------------------------------------------------------------------------- migration


def _migration_call(func, kwargs, *args, **extra):
    """``func(conn, settings, *args, **extra)`` on this host's libvirt; errors made Salt's."""
    with _salt_errors(), _connection(kwargs) as conn:
        return func(conn, _settings(), *args, **extra)


def _options(function, kwargs):
    """The migration options among ``kwargs`` (connection arguments set aside)."""
    with _salt_errors():
        return MigrationOptions.from_kwargs(
            function, **{k: v for k, v in kwargs.items() if k not in ("connection", "username", "password")})


def migrate_source_info(name, dest=None, probe=True, **kwargs):
    """
    Describe a domain for migrating it away: state, CPU, NICs, disks with sizes and backing
    chains, this host's UUID and CPU. With ``probe`` (default) an empty probe file is left next
    to each disk so the target can tell shared storage (remove them with
    :func:`migrate_cleanup` ``probe=...``). With ``dest`` (a host or libvirt URI) it also checks
    that this host can reach the target's libvirt. Used by ``salt-run virt.migrate``.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.migrate_source_info centos1 probe=False
    """
    return _migration_call(migration_node.source_info, kwargs, name, dest=dest, probe=probe)


def migrate_preflight(facts, copy_storage=None, offline=False, source=None, **kwargs):
    """
    Check that this hypervisor can take the VM described by ``facts`` (the return of
    :func:`migrate_source_info` on its host): not the same host, no domain of that name or
    UUID here, vCPUs, free memory, guest CPU compatible (``compareHypervisorCPU``; the host CPU
    for host-passthrough guests), machine and domain type, bridges/networks, and per disk
    whether it is on storage both hosts share (the source's probe file is visible here), must
    be copied (base images of qcow2 overlays present here, free space) or is read-only and
    must be fetched. With ``source`` (host name or URI), also whether this host reaches the
    source's libvirt (:func:`migrate_in` needs it). Changes nothing.

    CLI Example:

    .. code-block:: bash

        salt-run virt.migrate centos1 hypervisor2 test=True   # what operators run
        salt hypervisor2 virt.migrate_preflight \
            "$(salt hypervisor1 virt.migrate_source_info centos1 probe=False --out=json --static | jq -c .hypervisor1)"
    """
    return _migration_call(migration_node.preflight, kwargs, facts, copy_storage=copy_storage, offline=offline,
                           source=source)


def migrate_in(name, facts, source, dest=None, copy_storage=None, offline=False, token=None,
               progress_tag=None, **kwargs):
    """
    Pull domain ``name`` to this hypervisor from ``source`` (host name or libvirt URI) in one
    call: the checks of :func:`migrate_preflight` on ``facts`` (the return of
    :func:`migrate_source_info` on the source), the target's disks pre-created
    (journaled under ``token``), then the migration, started on the source's libvirt, which
    drives it peer to peer to ``dest`` (how the source reaches this host; default: this host's
    ``virt:address``). This is what ``salt-run virt.migrate`` runs (one Salt job instead of three);
    it leaves the recovery after a failure to the runner. Options as for :func:`migrate`.

    Returns the checks and the storage plan, then ``refused: True`` (nothing changed), the
    migration's result, or ``error``; the job fails (non-zero retcode) unless the VM moved.

    CLI Example:

    .. code-block:: bash

        salt-run virt.migrate centos1 hypervisor2   # what operators run
        salt hypervisor2 virt.migrate_in centos1 \
            "$(salt hypervisor1 virt.migrate_source_info centos1 --out=json --static | jq -c .hypervisor1)" hypervisor1
    """
    options = _options("virt.migrate_in", {k: v for k, v in kwargs.items() if k in MigrationOptions.names()})
    result = _migration_call(migration_node.pull, kwargs, name, facts, source, dest=dest,
                             copy_storage=copy_storage, offline=offline, token=token,
                             progress_tag=progress_tag, options=options)
    if result.get("refused") or result.get("error"):
        __context__["retcode"] = 1
    return result


@_classic("vm_", strict=False)
def migrate(name, target, offline=False, copy_storage=None, migrate_disks=None, unsafe=False, probe=None,
            progress_tag=None, **kwargs):
    """
    Live-migrate domain ``name`` from this hypervisor to ``target`` (a host name, which becomes
    ``qemu+tls://<target>/system``, or a full libvirt URI). The VM keeps running here if
    anything fails.

    This call migrates only: disks must be on storage the target shares, or pre-created there
    for ``copy_storage``. ``salt-run virt.migrate`` does the whole job (pre-flight, disk
    preparation, verification, cleanup) and is what operators should use.

    live / offline
        Live migration (default); ``offline=True`` moves only the definition of a stopped VM.
    persistent / undefinesource
        Define the VM on the target / undefine it here (both default True).
    copy_storage
        ``all`` or ``inc`` (only the top of qcow2 overlays): QEMU copies the non-shared disks
        (``migrate_disks``: their targets, e.g. ``[vda]``) into files pre-created on the target.
    max_bandwidth / max_downtime
        MiB/s for the migration stream; the longest pause of the guest at switch-over in ms.
    postcopy / auto_converge / compressed / parallel_connections
        libvirt's post-copy (switches after one memory pass; a failure after the switch can no
        longer be rolled back), CPU throttling, XBZRLE compression, parallel streams.
    postcopy_bandwidth / postcopy_stall
        MiB/s for the pages pulled after the switch; seconds without progress after it before
        the post-copy is paused (default 60: it then fails in a state ``virt.migrate_recover``
        continues from, instead of waiting for ever).
    tunnel
        Send the data through libvirt's TLS connection (port 16514). Default: ``virt:tunnel``.
        With copy_storage this becomes peer-to-peer + TLS (libvirt 9.0 cannot tunnel disks).
    tls / migration_uri / peer2peer / unsafe
        QEMU-level TLS; the data stream's URI; peer-to-peer (default) or client-driven;
        VIR_MIGRATE_UNSAFE (disks shared on a local filesystem).
    timeout
        Abort the migration after this many seconds (the VM stays here).
    probe / progress_tag
        Set by the runner: probe files to remove first; event tag for progress events.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.migrate centos1 hyper2.example.com
        salt hypervisor1 virt.migrate centos1 qemu+tls://10.0.0.12/system max_bandwidth=100
    """
    options = _options("virt.migrate", kwargs)
    if probe:
        migration.remove_probes(probe.get("dirs"), probe.get("token"))
    return _migration_call(migration_node.push, kwargs, name, target, options, copy_storage=copy_storage,
                           offline=offline, migrate_disks=migrate_disks, unsafe=unsafe, progress_tag=progress_tag)


def migrate_recover(name, target, progress_tag=None, **kwargs):
    """
    Resume a post-copy migration of ``name`` that failed after the switch-over (both copies
    paused, ``postcopy-failed``), from this host (the source) to ``target``: the guest's pages
    still here are sent and the VM runs on ``target``. Options as for :func:`migrate`
    (``postcopy`` is implied). ``salt-run virt.migrate`` calls it by itself when a post-copy
    migration fails after the switch-over.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.migrate_recover centos1 hypervisor2
    """
    options = _options("virt.migrate_recover", dict(kwargs, postcopy=True))
    return _migration_call(migration_node.push, kwargs, name, target, options, progress_tag=progress_tag,
                           postcopy_resume=True)


def migrate_status(name, **kwargs):
    """
    Where domain ``name`` stands on this host after a migration: defined, active, state and
    reason (``migrated_in``: running because it arrived by migration), persistent, and the
    last completed job's statistics (downtime, time, data transferred).

    CLI Example:

    .. code-block:: bash

        salt hypervisor2 virt.migrate_status centos1
    """
    return _with_conn(kwargs, migration.domain_status, name)


def migrate_cleanup(name, token=None, probe=None, remove_domain=False, uuid=None, stale=None,
                    wait=30, **kwargs):
    """
    Undo or finish a migration on this host.

    token
        Remove the files and directories the migration pre-created under this token
        (never a file a domain here uses). With ``remove_domain=True`` and ``uuid`` first
        destroy and undefine this host's leftover copy of the domain (same UUID only).
        Waits up to ``wait`` seconds for libvirtd if it is restarting.
    probe
        ``{token, dirs}``: remove the probe files of :func:`migrate_source_info`.
    stale
        After a successful migration with copied disks: remove these now-stale copies,
        only inside ``virt:images/<name>/`` and only if no domain here uses them.

    CLI Example:

    .. code-block:: bash

        salt hypervisor2 virt.migrate_cleanup centos1 token=3f2a9c remove_domain=True uuid=...
    """
    with _salt_errors():
        return migration_node.cleanup(_settings(), name, token=token, probe=probe, remove_domain=remove_domain,
                                      uuid=uuid, stale=stale, wait=wait, connect_args=kwargs)


# --------------------------------------------------------------------------- operations


def definitions(name=None, **kwargs):
    """
    The persistent definition (XML without console passwords), state and autostart of every
    domain here (or of ``name`` only): what ``salt-run virt.remember`` keeps on the master
    so that ``virt.evacuate`` can restart them elsewhere if this hypervisor dies. Each record
    carries this minion's ``signature``, without which the master keeps nothing.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.definitions
    """
    found = _with_conn(kwargs, vmops.definitions, name)
    # Signed: virt.evacuate defines and starts what the master keeps (saltvirt.pki.attest).
    key = attest.minion_key(__opts__)
    return {vm: attest.signed(key, attest.DEFINITION, __opts__["id"], vm, record) for vm, record in found.items()}


def evacuate_in(name, xml, start=True, **kwargs):
    """
    Define (and start) ``name`` here from the definition the master kept, for ``salt-run
    virt.evacuate``. Read-only disks this host does not see (a seed ISO) are left out; a
    writable disk it does not see refuses the VM. If libvirt's lock manager refuses the start
    (the disk is in use on another host) nothing is left defined here.

    CLI Example:

    .. code-block:: bash

        salt hypervisor2 virt.evacuate_in web1 "$(cat web1.xml)"
    """
    listen = _config("vnc:listen", "127.0.0.1")
    return _with_conn(kwargs, opevacuate.restart_here, name, xml, listen, bool(start))
