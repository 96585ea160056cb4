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
      seed_cmd: cidata             # default seeding method: cidata | seed.apply
      nic: {<profile>: [...]}      # NIC profiles, see saltvirt.profiles
      disk: {<profile>: [...]}     # disk profiles
"""

import logging
import os

import salt.utils.path
from salt.exceptions import CommandExecutionError, SaltInvocationError

try:
    from saltvirt import connection as virtconn
    from saltvirt import domain as dommod
    from saltvirt import hypervisor as hvtype
    from saltvirt import images, profiles, provision, seeding, vmops
    from saltvirt.errors import InvalidArgument, NotFound, VirtError

    HAS_SALTVIRT = True
    IMPORT_ERROR = None
except ImportError as _exc:  # libvirt-python missing, or _utils not synced
    HAS_SALTVIRT = False
    IMPORT_ERROR = str(_exc)

log = logging.getLogger(__name__)

__virtualname__ = "virt"

DEFAULT_IMAGES = "/srv/salt-images"


def __virtual__():
    if not HAS_SALTVIRT:
        return False, f"virt: the salt-virt library could not be imported ({IMPORT_ERROR}); run saltutil.sync_all"
    if virtconn.libvirt is None:
        return False, "virt: libvirt-python is not installed (pip install libvirt-python)"
    uri = __salt__["config.get"]("virt:connection:uri", "") or ""
    local = not uri or uri.startswith(("qemu:///", "qemu+unix"))
    if local and not salt.utils.path.which("libvirtd") and not os.path.exists("/run/libvirt/libvirt-sock"):
        return False, "virt: libvirtd is not installed on this minion (install libvirt-daemon)"
    return __virtualname__


# --------------------------------------------------------------------------- plumbing


def _config(key, default=None):
    return __salt__["config.get"](f"virt:{key}", default)


def _connection(kwargs):
    """Open libvirt with the caller's connection/username/password or the configured URI."""
    return virtconn.opened(
        uri=kwargs.get("connection") or _config("connection:uri") or None,
        username=kwargs.get("username") or _config("connection:auth:username"),
        password=kwargs.get("password") or _config("connection:auth:password"),
    )


def _raise(exc):
    if isinstance(exc, (InvalidArgument, NotFound)):
        raise SaltInvocationError(str(exc)) from exc
    raise CommandExecutionError(str(exc)) from exc


def _domain_call(name, action, kwargs, **extra):
    """Run ``vmops.<action>(dom, **extra)`` on domain ``name``; errors become Salt exceptions."""
    try:
        with _connection(kwargs) as conn:
            dom = vmops.lookup(conn, name)
            return getattr(vmops, action)(dom, **extra)
    except VirtError as exc:
        _raise(exc)


def _images_dir():
    return _config("images", DEFAULT_IMAGES) or DEFAULT_IMAGES


def _host_address():
    return _config("address") or __grains__.get("fqdn") or __grains__.get("host") or __opts__["id"]


# --------------------------------------------------------------------------- init


def _resolve_image(image, saltenv, image_hash=None):
    """A local path for ``image``: salt:// and http(s) go through ``cp.cache_file``."""
    if image is None:
        return None
    image = str(image)
    if image.startswith(("salt://", "http://", "https://", "ftp://")):
        cached = __salt__["cp.cache_file"](image, saltenv)
        if not cached:
            raise SaltInvocationError(f"image {image} could not be fetched (not on the file server?)")
        if image_hash:
            _verify_hash(cached, image_hash, image)
        return cached
    if not os.path.isabs(image):
        raise SaltInvocationError(f"image {image!r} must be salt://, http(s):// or an absolute path")
    if not os.path.exists(image):
        raise SaltInvocationError(f"image {image} does not exist on {__opts__['id']}")
    return image


def _verify_hash(path, expected, source):
    algo, _, digest = str(expected).partition("=")
    if not digest:
        algo, digest = "sha256", algo
    actual = __salt__["file.get_hash"](path, form=algo)
    if actual.lower() != digest.lower():
        raise SaltInvocationError(f"image {source}: {algo} is {actual}, expected {digest}")


def _base_for_overlay(image, cached, saltenv):
    """Overlays of a file-server image use a read-only copy under virt:images/base.

    The cp cache may be replaced when the master's file changes; overlays must keep the exact
    bytes they were built on, so they get their own content-addressed copy.
    """
    if not str(image).startswith(("salt://", "http://", "https://", "ftp://")):
        return cached
    digest = __salt__["cp.hash_file"](cached).get("hsum", "")[:16]
    base_dir = os.path.join(_images_dir(), "base")
    name, ext = os.path.splitext(os.path.basename(cached))
    base = os.path.join(base_dir, f"{name}-{digest}{ext}")
    if not os.path.exists(base):
        os.makedirs(base_dir, mode=0o755, exist_ok=True)
        images.clone(cached, base)
        images.protect_base(base)
    return base


def _check_resources(conn, cpu, mem):
    try:
        cpu, mem = int(cpu), int(mem)
    except (TypeError, ValueError):
        raise SaltInvocationError(f"cpu and mem must be integers (got cpu={cpu!r}, mem={mem!r})")
    node = vmops.node_info(conn)
    if cpu < 1:
        raise SaltInvocationError(f"cpu must be at least 1, not {cpu}")
    if cpu > node["cpus"]:
        raise SaltInvocationError(f"cpu {cpu} is more than this host has ({node['cpus']})")
    if mem < 1:
        raise SaltInvocationError(f"mem must be a positive number of MiB, not {mem}")
    if mem > node["phymemory"]:
        raise SaltInvocationError(f"mem {mem} MiB is more than this host has ({node['phymemory']} MiB)")
    return cpu, mem


def _graphics(enable_vnc, graphics):
    if graphics is None and not enable_vnc:
        return []
    spec = dict(graphics or {"type": "vnc"})
    if spec.get("type", "vnc") == "none":
        return []
    spec.setdefault("type", "vnc")
    spec.setdefault("listen", _config("vnc:listen", "127.0.0.1"))
    if isinstance(spec.get("listen"), dict):  # upstream shape: {type: address, address: X}
        spec["listen"] = spec["listen"].get("address")
    if spec.get("port") is None:
        spec["port"] = -1
    return [dommod.Graphics(**{k: spec[k] for k in ("type", "listen", "port", "password") if k in spec})]


def _seeder(name, seed, seed_cmd, install, pub_key, priv_key, config):
    """Build the seeding step for :func:`provision.create` (runs before the domain is defined)."""
    if not seed:
        return None, None
    method = seed_cmd or _config("seed_cmd", "cidata")
    result = {"method": method}
    if pub_key and priv_key:
        pub, priv = _pem(pub_key), _pem(priv_key)
        result["preseeded"] = True
    else:
        priv, pub = seeding.gen_minion_keys()
        result["preseeded"] = False
    result["minion_pub"] = pub
    minion_conf = dict(config or {})
    minion_conf.setdefault("master", __opts__.get("master", "salt"))

    def cidata(plans, undo):
        vm_dir = os.path.dirname(plans[0].path)
        iso = os.path.join(vm_dir, "cidata.iso")
        seeding.make_cidata(
            iso, minion_id=name, master=minion_conf.pop("master"), pub_key_pem=pub,
            priv_key_pem=priv, extra_minion_config=minion_conf,
        )
        undo.push(f"seed {iso}", provision._remove, iso)
        targets = [p.target for p in plans]
        return [dommod.Disk(target=dommod.next_disk_target(targets), source=iso, format="raw",
                            readonly=True)]

    def mount(plans, undo):
        system = plans[0].path
        res = __salt__["seed.apply"](
            system, id_=name, config=minion_conf, install=install, pub_key=pub,
            priv_key=priv, approve_key=False,
        )
        if res is not True:
            raise VirtError(f"seed.apply on {system} failed: {res}")
        return []

    if method == "cidata":
        return cidata, result
    if method == "seed.apply":
        return mount, result
    raise SaltInvocationError(f"unknown seed_cmd {method!r} (use cidata or seed.apply)")


def _pem(value):
    value = str(value)
    if "-----BEGIN" in value:
        return value
    if os.path.isfile(value):
        with open(value) as fh:
            return fh.read()
    raise SaltInvocationError(f"{value!r} is neither a PEM key nor a key file on this minion")


def init(
    name,
    cpu,
    mem,
    image=None,
    nic="default",
    interfaces=None,
    hypervisor=None,
    start=True,
    disk="default",
    disks=None,
    saltenv="base",
    seed=True,
    install=True,
    pub_key=None,
    priv_key=None,
    seed_cmd=None,
    enable_vnc=False,
    enable_qcow=False,
    graphics=None,
    boot=None,
    os_type=None,
    arch=None,
    autostart=False,
    config=None,
    image_hash=None,
    **kwargs,
):
    """
    Create a new virtual machine, seed it, and (by default) start it.

    name
        Domain name (letters, digits, ``_.+-``; at most 64 characters).
    cpu
        Number of vCPUs.
    mem
        Memory in MiB.
    image
        Disk image for the first (system) disk: ``salt://path``, ``http(s)://url`` (with
        optional ``image_hash=sha256=...``) or an absolute path on the hypervisor. It is
        copied into ``virt:images/<name>/`` (``/srv/salt-images`` by default).
    enable_qcow
        Make the system disk a qcow2 overlay backed by the (read-only) image instead of a copy.
    nic / interfaces
        NIC profile name (``virt:nic``; default: one NIC bridged to ``br0``) and/or a list of
        interfaces (``[{name: eth0, type: bridge, source: br0, mac: ...}]``) merged over it.
    disk / disks
        Disk profile name (``virt:disk``) and/or a list of disks merged over it (``name``,
        ``size`` in MiB, ``format``, ``pool`` directory, ``image``, ``overlay_image``,
        ``source_file``, ``device``, ``bus``).
    hypervisor
        ``kvm`` or ``qemu``. Default: ``kvm`` only if a probe shows it really runs guests,
        else ``qemu`` (TCG); the return says which and why.
    start
        Start the domain after it is defined (default True). Seeding always completes first.
    seed / seed_cmd / install / pub_key / priv_key / config
        Seed the system disk with a minion id, config and key pair before first boot:
        ``seed_cmd=cidata`` (cloud-init NoCloud ISO, fast) or ``seed.apply`` (mounts the image
        with libguestfs and writes the files; installs salt-minion if absent and ``install``).
        ``pub_key``/``priv_key``: PEM text or paths of a pre-generated key pair (the runner
        passes the pair it pre-accepted on the master).
    enable_vnc / graphics
        Add a VNC console (``graphics={type: vnc, listen: ..., port: ..., password: ...}``).
        It listens on ``virt:vnc:listen`` (default 127.0.0.1), never on 0.0.0.0 unless asked.
    boot, os_type, arch
        Boot devices (``[hd, cdrom, network]`` or ``{kernel, initrd, cmdline}``), OS type
        (``hvm``) and architecture (``x86_64``).
    autostart
        Start the domain when the hypervisor boots.

    CLI Example:

    .. code-block:: bash

        salt 'hypervisor*' virt.init centos1 2 512 image=/var/lib/libvirt/images/centos.img
        salt 'hypervisor*' virt.init centos1 2 512 image=/var/lib/libvirt/images/centos.qcow2 enable_qcow=True start=False
        salt 'hypervisor1' virt.init web1 1 1024 image=salt://centos.qcow2 enable_vnc=True
    """
    undo = provision.Undo()
    try:
        dommod.validate_name(name)
        with _connection(kwargs) as conn:
            cpu, mem = _check_resources(conn, cpu, mem)
            if vmops.exists(conn, name):
                raise SaltInvocationError(f"a domain named {name!r} already exists on {__opts__['id']}")
            dom_type, type_reason = hvtype.choose_type(
                hypervisor, cache_path=os.path.join(__opts__["cachedir"], "saltvirt", "kvm-probe.json")
            )
            local_image = _resolve_image(image, saltenv, image_hash)
            if local_image is not None:
                images.check_source(local_image)
                if enable_qcow:
                    local_image = _base_for_overlay(image, local_image, saltenv)
            disk_specs = profiles.merge_disks(profiles.disk_profile(disk, _config("disk")), disks)
            plans = provision.plan_disks(name, disk_specs, _images_dir(), local_image, enable_qcow)
            nics = profiles.merge_nics(profiles.nic_profile(nic, _config("nic")), interfaces)
            model = dommod.Domain(
                name=name, vcpus=cpu, memory=mem * 1024, type=dom_type,
                os_type=os_type or "hvm", arch=arch or "x86_64",
                interfaces=[
                    dommod.Interface(type=n["type"], source=n["source"], model=n["model"],
                                     **({"mac": n["mac"]} if n.get("mac") else {}))
                    for n in nics
                ],
                graphics=_graphics(enable_vnc, graphics),
                serials=[dommod.Serial(log=f"/var/log/libvirt/qemu/{name}-serial.log")],
            )
            if isinstance(boot, dict):
                model.kernel, model.initrd, model.cmdline = boot.get("kernel"), boot.get("initrd"), boot.get("cmdline")
            elif boot:
                model.boot = [boot] if isinstance(boot, str) else list(boot)
            seeder, seed_info = _seeder(
                name, seed and local_image is not None, seed_cmd, install, pub_key, priv_key, config
            )
            info = provision.create(conn, provision.Request(
                domain=model, disks=plans, start=start, seeder=seeder, autostart=autostart,
            ))
    except VirtError as exc:
        _raise(exc)
    finally:
        undo.run()
    info.update(
        host=__opts__["id"],
        hypervisor_type=dom_type,
        hypervisor_reason=type_reason,
        seeded=seed_info,
    )
    return info


# --------------------------------------------------------------------------- lifecycle


def start(name, **kwargs):
    """
    Start a defined domain.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.start centos1
    """
    return {"name": name, "started": _domain_call(name, "start", kwargs)}


def stop(name, timeout=0, **kwargs):
    """
    Shut a domain down cleanly (ACPI power button); ``timeout`` seconds to wait for it.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.stop centos1 timeout=60
    """
    return {"name": name, "stopped": _domain_call(name, "shutdown", kwargs, timeout=int(timeout))}


def shutdown(name, **kwargs):
    """
    Alias of :func:`stop` (virsh's word).

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.shutdown centos1
    """
    return stop(name, **kwargs)


def force_off(name, **kwargs):
    """
    Pull the plug: stop a domain immediately (virsh destroy).

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.force_off centos1
    """
    return {"name": name, "destroyed": _domain_call(name, "destroy", kwargs)}


def destroy(name, **kwargs):
    """
    Alias of :func:`force_off` (virsh's word; the domain stays defined).

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.destroy centos1
    """
    return force_off(name, **kwargs)


def reboot(name, **kwargs):
    """
    Ask the guest to reboot.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.reboot centos1
    """
    return {"name": name, "rebooted": _domain_call(name, "reboot", kwargs)}


def reset(name, **kwargs):
    """
    Hard-reset a running domain (like the reset button).

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.reset centos1
    """
    return {"name": name, "reset": _domain_call(name, "reset", kwargs)}


def pause(name, **kwargs):
    """
    Pause (suspend) a running domain.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.pause centos1
    """
    return {"name": name, "paused": _domain_call(name, "suspend", kwargs)}


def resume(name, **kwargs):
    """
    Resume a paused domain.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.resume centos1
    """
    return {"name": name, "resumed": _domain_call(name, "resume", kwargs)}


def undefine(name, **kwargs):
    """
    Remove a stopped domain's definition (its disks stay; see :func:`purge`).

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.undefine centos1
    """
    return {"name": name, "undefined": _domain_call(name, "undefine", kwargs)}


def purge(name, **kwargs):
    """
    Destroy and undefine a domain and delete the disks ``virt.init`` created for it
    (the files in ``virt:images/<name>/``). Base images, operator-supplied disks and ISOs
    elsewhere are never deleted.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.purge centos1
    """
    try:
        with _connection(kwargs) as conn:
            dom = vmops.lookup(conn, name)
            data = vmops.info(conn, name)
            vm_dir = os.path.join(_images_dir(), name)
            owned = vmops.owned_disks(data, vm_dir)
            vmops.destroy(dom)
            vmops.undefine(dom)
    except VirtError as exc:
        _raise(exc)
    removed = []
    for path in owned:
        try:
            os.unlink(path)
            removed.append(path)
        except FileNotFoundError:
            pass
    # The cidata seed is not a disk any more once detached, but it is ours too.
    seed_iso = os.path.join(vm_dir, "cidata.iso")
    if os.path.exists(seed_iso):
        os.unlink(seed_iso)
        removed.append(seed_iso)
    provision.remove_tree_if_empty(vm_dir)
    return {"name": name, "purged": True, "removed": removed}


def set_autostart(name, state="on", **kwargs):
    """
    Turn autostart of a domain ``on`` or ``off``.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.set_autostart centos1 on
    """
    enabled = str(state).lower() in ("on", "true", "1", "yes")
    return {"name": name, "autostart": _domain_call(name, "set_autostart", kwargs, enabled=enabled)}


def setmem(name, memory, **kwargs):
    """
    Set a domain's memory in MiB (persistent; also live when running and possible).

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.setmem centos1 1024
    """
    return {"name": name, "memory": int(memory), "set": _domain_call(name, "setmem", kwargs, memory_mib=memory)}


def setvcpus(name, vcpus, **kwargs):
    """
    Set a stopped domain's vCPU count.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.setvcpus centos1 2
    """
    return {"name": name, "vcpus": int(vcpus), "set": _domain_call(name, "setvcpus", kwargs, vcpus=vcpus)}


# --------------------------------------------------------------------------- inventory


def _with_conn(kwargs, func, *args):
    try:
        with _connection(kwargs) as conn:
            return func(conn, *args)
    except VirtError as exc:
        _raise(exc)


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


def vm_info(vm_=None, **kwargs):
    """
    Everything about one domain (or all): cpu, memory (KiB), state, graphics with the live
    host:port, disks (file, format, size, backing chain), NICs (mac, source, type, model).

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.vm_info centos1
    """

    def _info(conn):
        names = [vm_] if vm_ else vmops.list_domains(conn)
        result = {}
        address = _host_address()
        for name in names:
            data = vmops.info(conn, name)
            for gfx in data["graphics"]:
                # A console listening on loopback/any is reached through this host's address.
                gfx["host"] = address if gfx.get("listen") in (None, "0.0.0.0", "::") else gfx["listen"]
            result[name] = data
        return result

    return _with_conn(kwargs, _info)


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
        node = vmops.node_info(conn)
        images_dir = _images_dir()
        probe_dir = images_dir
        while not os.path.isdir(probe_dir):
            probe_dir = os.path.dirname(probe_dir)
        return {
            "node_info": node,
            "freemem": vmops.freemem(conn),
            "freecpu": vmops.freecpu(conn),
            "address": _host_address(),
            "images": images_dir,
            "disk_free": images.free_space_mib(probe_dir),
            "usage": vmops.domain_usage(conn),
            "vm_info": vm_info(**kwargs),
        }

    return _with_conn(kwargs, _full)


def get_graphics(vm_, **kwargs):
    """
    Graphics consoles of a domain (type, listen, host, live port).

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.get_graphics centos1
    """
    return vm_info(vm_, **kwargs)[vm_]["graphics"]


def get_disks(vm_, **kwargs):
    """
    Disks of a domain keyed by target (file, format, size, backing chain).

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.get_disks centos1
    """
    return vm_info(vm_, **kwargs)[vm_]["disks"]


def get_nics(vm_, **kwargs):
    """
    NICs of a domain keyed by MAC address (type, source, model, tap device).

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.get_nics centos1
    """
    return vm_info(vm_, **kwargs)[vm_]["nics"]


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
    works, reason = hvtype.kvm_status(os.path.join(__opts__["cachedir"], "saltvirt", "kvm-probe.json"))
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
