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
      nic: {<profile>: [...]}      # NIC profiles, see saltvirt.profiles
      disk: {<profile>: [...]}     # disk profiles
      tunnel: False                # migrate through the libvirt daemons' TLS connection
"""

import contextlib
import hashlib
import importlib.util
import logging
import os
import secrets
import sys
import time

import salt.utils.path
from salt.exceptions import CommandExecutionError, SaltInvocationError

# The minion's main process may hold the library preloaded (_grains/virt.py): read it anew
# if saltutil.sync_all has replaced its files since.
if hasattr(sys.modules.get("saltvirt"), "unload_if_stale"):
    sys.modules["saltvirt"].unload_if_stale()

try:
    from saltvirt import (
        bases,
        coexist,
        fileio,
        images,
        migration,
        profiles,
        provision,
        sealed,
        seeding,
        snapshots,
        vmops,
    )
    from saltvirt import connection as virtconn
    from saltvirt import console as vconsole
    from saltvirt import domain as dommod
    from saltvirt import errors as verrors
    from saltvirt import hypervisor as hvtype
    from saltvirt import paths as vpaths
    from saltvirt import update as vupdate
    from saltvirt.errors import InvalidArgument, NotFound, VirtError
    from saltvirt.operations import evacuate as opevacuate

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

DEFAULT_IMAGES = "/srv/salt-images"


def __virtual__():
    if not HAS_SALTVIRT:
        return False, f"virt: {IMPORT_ERROR}" + _saltext_note()
    if virtconn.libvirt is None:
        return False, (f"virt: libvirt-python is not installed; {verrors.install_hint('libvirt-python')}"
                       + _saltext_note())
    uri = __salt__["config.get"]("virt:connection:uri", "") or ""
    local = not uri or uri.startswith(("qemu:///", "qemu+unix"))
    if local and not salt.utils.path.which("libvirtd") and not os.path.exists("/run/libvirt/libvirt-sock"):
        return False, "virt: libvirtd is not installed on this minion (install libvirt-daemon)" + _saltext_note()
    coexist.warn_once(__opts__, ("modules", "states"), "execution module")
    return __virtualname__


def _saltext_note():
    """Added to a refusal when saltext-virt is installed: its ``virt`` is shadowed by this file."""
    try:
        found = importlib.util.find_spec("saltext.virt") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        return ""
    return (f"; saltext-virt is installed too, but Salt loads this file ({__file__}) as the virt "
            "module, not saltext-virt's: install what is missing above, or remove salt-virt to use "
            "saltext-virt (docs/install.rst, Coexistence)")


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


def _serial_log(name):
    return f"/var/log/libvirt/qemu/{name}-serial.log"


def _images_dir():
    try:
        return vpaths.images_dir(_config("images"))
    except InvalidArgument as exc:
        raise SaltInvocationError(str(exc)) from exc


def _roots(conn):
    """The directories a call may name on this hypervisor (:class:`saltvirt.paths.Roots`)."""
    try:
        return vpaths.Roots(
            _images_dir(), vmops.pool_targets(conn),
            image_roots=_config("image_roots", list(vpaths.DEFAULT_IMAGE_ROOTS)),
            attach_roots=_config("attach_roots", []),
        )
    except InvalidArgument as exc:
        raise SaltInvocationError(str(exc)) from exc


def _host_address():
    return _config("address") or __grains__.get("fqdn") or __grains__.get("host") or __opts__["id"]


# --------------------------------------------------------------------------- init


_REMOTE = ("salt://", "http://", "https://", "ftp://")


@contextlib.contextmanager
def _image_locks(sources):
    """Hold the lock of every remote image in ``sources`` from its download to its last copy.

    ``cp.cache_file`` rewrites a cached file in place: a concurrent fetch of the same image
    would change the bytes being hashed, inspected or cloned. One lock per image, taken in a
    fixed order, so inits of different images do not wait for each other.
    """
    lock_dir = os.path.join(__opts__["cachedir"], "saltvirt", "image-locks")
    os.makedirs(lock_dir, mode=0o700, exist_ok=True)
    keys = sorted({hashlib.sha256(str(s).encode()).hexdigest()[:24] for s in sources if str(s).startswith(_REMOTE)})
    with contextlib.ExitStack() as stack:
        for key in keys:
            stack.enter_context(fileio.locked(os.path.join(lock_dir, f"{key}.lock")))
        yield


def _space_policy():
    """``virt:disk_overcommit`` (thin disks counted as they fill, not at their virtual size) and
    ``virt:disk_headroom_mib`` (kept free in every filesystem disks go to)."""
    return {"overcommit": bool(_config("disk_overcommit", False)),
            "headroom_mib": int(_config("disk_headroom_mib", 1024))}


def _image_policy():
    policy = _config("image_policy", {}) or {}
    return {
        "allow_backing": bool(policy.get("allow_backing", False)),
        "max_virtual_size": policy.get("max_virtual_size"),
        "require_hash": policy.get("require_hash", True),
    }


def _resolve_image(image, saltenv, image_hash=None, roots=None):
    """``(local path, format)`` of ``image``, inspected (:func:`saltvirt.images.inspect_untrusted`).

    salt:// (the master's file server) and http(s)/ftp go through ``cp.cache_file``; downloads
    need ``image_hash`` unless ``virt:image_policy:require_hash`` is False. A local path must
    lie under the roots of :func:`_roots`. Call it inside :func:`_image_locks`.
    """
    if image is None:
        return None, None
    image = str(image)
    policy = _image_policy()
    if image.startswith(_REMOTE):
        if not image.startswith("salt://") and not image_hash and policy["require_hash"]:
            raise SaltInvocationError(
                f"image {image}: a download needs image_hash=sha256=<digest> (or the operator's "
                "virt:image_policy:require_hash: False)"
            )
        local = __salt__["cp.cache_file"](image, saltenv)
        if not local:
            raise SaltInvocationError(f"image {image} could not be fetched (not on the file server?)")
    else:
        if not os.path.isabs(image):
            raise SaltInvocationError(f"image {image!r} must be salt://, http(s):// or an absolute path")
        try:
            local = roots.image(image)
        except InvalidArgument as exc:
            raise SaltInvocationError(str(exc)) from exc
        if not os.path.exists(local):
            raise SaltInvocationError(f"image {image} does not exist on {__opts__['id']}")
    if image_hash:
        _verify_hash(local, image_hash, image)
    try:
        found = images.inspect_untrusted(local, policy["allow_backing"], policy["max_virtual_size"])
    except InvalidArgument as exc:
        raise SaltInvocationError(f"image {image}: {exc}") from exc
    return local, found["format"]


def _verify_hash(path, expected, source):
    algo, _, digest = str(expected).partition("=")
    if not digest:
        algo, digest = "sha256", algo
    actual = __salt__["file.get_hash"](path, form=algo)
    if actual.lower() != digest.lower():
        raise SaltInvocationError(f"image {source}: {algo} is {actual}, expected {digest}")


def _base_for_overlay(image, cached, saltenv, fmt=None):
    """Overlays of a file-server image use a read-only copy under virt:images/base.

    The cp cache may be replaced when the master's file changes; overlays must keep the exact
    bytes they were built on, so they get their own content-addressed copy.
    """
    if not str(image).startswith(_REMOTE):
        return cached
    digest = __salt__["cp.hash_file"](cached).get("hsum", "")[:16]
    base_dir = os.path.join(_images_dir(), "base")
    name, ext = os.path.splitext(os.path.basename(cached))
    base = os.path.join(base_dir, f"{name}-{digest}{ext}")
    os.makedirs(base_dir, mode=0o755, exist_ok=True)
    # World-readable: a shared base holds no VM's secrets and every QEMU must read it.
    return images.shared_base(cached, base, source_format=fmt)["filename"]


def _check_resources(conn, cpu, mem):
    try:
        cpu, mem = int(cpu), int(mem)
    except (TypeError, ValueError, OverflowError):
        raise SaltInvocationError(f"cpu and mem must be integers (got cpu={cpu!r}, mem={mem!r})") from None
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
    """``(devices, generated password or None)`` for ``enable_vnc``/``graphics``.

    A VNC console gets a generated password unless the call gives one (``virt:vnc:password:
    none`` on the hypervisor turns that off). It is kept in the domain definition only;
    ``salt-run virt.console <vm> show_password=True`` tells it to whoever asks.
    """
    if graphics is None and not enable_vnc:
        return [], None
    if isinstance(graphics, str):
        graphics = {"type": graphics}
    if graphics is not None and not isinstance(graphics, dict):
        raise SaltInvocationError(f"graphics must be a dict like {{type: vnc, password: True}}, not {graphics!r}")
    spec = dict(graphics or {"type": "vnc"})
    if spec.get("type", "vnc") == "none":
        return [], None
    spec.setdefault("type", "vnc")
    spec.setdefault("listen", _config("vnc:listen", "127.0.0.1"))
    if isinstance(spec.get("listen"), dict):  # upstream shape: {type: address, address: X}
        spec["listen"] = spec["listen"].get("address")
    if spec.get("port") is None:
        spec["port"] = -1
    generated = None
    password = spec.pop("password", None)
    if spec["type"] == "vnc":
        try:
            password = vconsole.console_password(password, _config("vnc:password"))
        except InvalidArgument as exc:
            raise SaltInvocationError(str(exc)) from exc
    if password is True:
        generated = spec["password"] = vconsole.gen_password()
    elif password not in (None, False, ""):
        spec["password"] = str(password)
    return [dommod.Graphics(**{k: spec[k] for k in ("type", "listen", "port", "password") if k in spec})], generated


def _console_graphics(conn, name, graphics):
    """Inventory graphics with the reachable ``host``, ``local_only`` and a true ``password_set``
    (libvirt hides passwords unless asked for secure XML; the password itself never leaves)."""
    if not graphics:
        return []
    secure = vconsole.secure_graphics(vmops.lookup(conn, name))
    return vconsole.console_graphics(graphics, _host_address(), secure)


SEED_METHODS = ("cidata", "seed.apply")
SEED_ISO = "cidata.iso"
SEED_PUB = "minion.pub"
FIRST_BOOT = ".first-boot"  # marks a seeded VM's first boot as done


def _guestfs_env():
    force = _config("guestfs:force_tcg", "auto")
    if isinstance(force, str) and force.lower() == "auto":
        force = not hvtype.kvm_status(os.path.join(__opts__["cachedir"], "saltvirt", "kvm-probe.json"))[0]
    return seeding.libguestfs_env(bool(force))


def _guestfs_state_dir():
    return _config("guestfs:state_dir", seeding.STATE_DIR) or seeding.STATE_DIR


def _seed_method(seed_cmd):
    """The seeding method: built in, or an execution function the operator configured
    (``virt:seed_cmd`` or one of ``virt:seed_cmds``); a call chooses, it does not invent."""
    configured = _config("seed_cmd", "cidata") or "cidata"
    method = seed_cmd or configured
    if method in SEED_METHODS:
        return method
    allowed = {configured, *(_config("seed_cmds", []) or [])}
    if method not in allowed:
        raise SaltInvocationError(
            f"seed_cmd {method!r} is not configured on this hypervisor: use cidata, seed.apply, or a "
            "function the operator listed in virt:seed_cmds"
        )
    if isinstance(method, str) and "." in method and method in __salt__:
        return method
    raise SaltInvocationError(
        f"unknown seed_cmd {method!r}: use cidata, seed.apply, or the name of an execution "
        "function with seed.apply's signature"
    )


def _install_cmd(choice):
    """``seed_install_cmd`` of a call: the name of one of ``virt:seed_install_cmds`` (commands
    run as root on the hypervisor come from its configuration only)."""
    if choice is None:
        return _config("seed_install_cmd")
    commands = _config("seed_install_cmds", {}) or {}
    if choice not in commands:
        known = ", ".join(sorted(commands)) or "none configured"
        raise SaltInvocationError(
            f"seed_install_cmd {choice!r} is not one of virt:seed_install_cmds ({known}): commands "
            "come from the hypervisor's configuration, a call only names one"
        )
    return commands[choice]


def _seeder(name, seed, seed_cmd, install, pub_key, priv_key, config, options=None, roots=None):
    """Build the seeding step for :func:`provision.create` (runs before the domain is defined).

    ``cidata``: a NoCloud ISO attached as a read-only disk. ``seed.apply``: salt-virt's mount
    seeder (:func:`saltvirt.seeding.seed_image`, libguestfs) writes config and keys into the
    system disk. Any other ``module.function`` is called like Salt's ``seed.apply``. Whatever
    the method, a failure raises (the caller rolls the disks back) and no guestfs mount of
    the disk is left behind.
    """
    if not seed:
        return None, None
    options = options or {}
    method = _seed_method(seed_cmd)
    result = {"method": method}
    if pub_key and priv_key:
        pub, priv = _pem(pub_key, roots), _pem(priv_key, roots)
        result["preseeded"] = True
    else:
        priv, pub = seeding.gen_minion_keys()
        result["preseeded"] = False
    result["minion_pub"] = pub
    minion_conf = dict(config or {})
    master = minion_conf.pop("master", None) or __opts__.get("master", "salt")
    # Check what can be checked before any disk is copied.
    install_cmd = _install_cmd(options.get("seed_install_cmd")) if method == "seed.apply" else None
    try:
        seeding.minion_config(name, master, minion_conf)
    except InvalidArgument as exc:
        raise SaltInvocationError(str(exc)) from exc

    def cidata(plans, undo):
        started = time.monotonic()
        # The VM's own directory whatever the disks' layout: a pool directory is shared, and
        # the ISO holds this VM's private key.
        iso = _seed_iso(name)
        provision.make_dir(os.path.dirname(iso), undo)
        undo.push(f"seed {iso}", provision._remove, iso)
        seeding.make_cidata(
            iso, minion_id=name, master=master, pub_key_pem=pub, priv_key_pem=priv,
            extra_minion_config=minion_conf,
        )
        result["seconds"] = round(time.monotonic() - started, 3)
        targets = [p.target for p in plans]
        return [dommod.Disk(target=dommod.next_disk_target(targets), source=iso, format="raw",
                            readonly=True)]

    def mount(plans, undo):
        system = plans[0]
        try:
            info = seeding.seed_image(
                system.path, minion_id=name, master=master, pub_key_pem=pub, priv_key_pem=priv,
                extra_minion_config=minion_conf, install=bool(install), install_cmd=install_cmd,
                install_timeout=int(_config("seed_install_timeout", 900)),
                device=options.get("seed_device") or None, fmt=system.format, env=_guestfs_env(),
                mount_timeout=int(_config("guestfs:timeout", 600)), state_dir=_guestfs_state_dir(),
            )
        except InvalidArgument as exc:
            raise SaltInvocationError(str(exc)) from exc
        result.update(info)
        return []

    def custom(plans, undo):
        system = plans[0].path
        started = time.monotonic()
        try:
            res = __salt__[method](
                system, id_=name, config=dict(minion_conf, master=master), install=install,
                pub_key=pub, priv_key=priv, approve_key=False,
            )
        except Exception as exc:  # pylint: disable=broad-except
            raise VirtError(f"seeding {system} with {method} failed: {exc}") from exc
        finally:
            # Salt core's seed.apply does not unmount when it raises half-way.
            released = seeding.release(system, state_dir=_guestfs_state_dir())
            if released:
                log.warning("virt.init: %s left %d guestfs mount(s) of %s: released", method,
                            len(released), system)
        if res is not True:
            kind = repr(res) if isinstance(res, (bool, type(None))) else type(res).__name__
            detail = f": {res}" if isinstance(res, str) and "PRIVATE KEY" not in res else ""
            raise VirtError(f"seeding {system} with {method} failed: it returned {kind}{detail}")
        result["seconds"] = round(time.monotonic() - started, 3)
        return []

    step = {"cidata": cidata, "seed.apply": mount}.get(method, custom)

    def seeder(plans, undo):
        # The public half next to the VM, so that the master can accept the key even when
        # the runner that started this init is gone (salt-run virt.reconcile).
        pub_file = os.path.join(_images_dir(), name, SEED_PUB)
        provision.make_dir(os.path.dirname(pub_file), undo)
        undo.push(f"seed {pub_file}", provision._remove, pub_file)
        fileio.write_atomic(pub_file, pub.encode(), 0o644)
        return step(plans, undo)

    return seeder, result


def _check_disk_files(conn, specs, roots, formats):
    """Disk specs of a call with every host path they name checked against ``roots``.

    Names become file names (validated like VM names); ``pool`` must be a pool's or an image
    root's directory; ``source_file`` must lie under the attach roots, be no domain's disk,
    and is inspected like an image when its format is not given.
    """
    checked, in_use = [], None
    policy = _image_policy()
    for spec in specs:
        spec = dict(spec)
        try:
            vpaths.validate_disk_name(spec.get("name"))
            if spec.get("pool"):
                spec["pool"] = roots.disk_dir(spec["pool"], f"disk {spec['name']}: pool")
            if spec.get("source_file"):
                path = spec["source_file"] = roots.attach(spec["source_file"], f"disk {spec['name']}: source_file")
                in_use = bases.domain_disks(conn) if in_use is None else in_use
                if path in in_use:
                    users = ", ".join(sorted({u["domain"] for u in in_use[path]}))
                    raise InvalidArgument(f"disk {spec['name']}: {path} is a disk of {users}: refused")
                if not spec.get("format") and os.path.isfile(path):
                    formats[path] = images.inspect_untrusted(
                        path, policy["allow_backing"], policy["max_virtual_size"])["format"]
        except InvalidArgument as exc:
            raise SaltInvocationError(str(exc)) from exc
        checked.append(spec)
    return checked


def _disk_image(spec, saltenv, roots, formats):
    """The local, inspected image of a disk spec's own ``image`` (a base for overlays)."""
    local, fmt = _resolve_image(spec["image"], saltenv, spec.get("image_hash"), roots)
    if spec.get("overlay_image"):
        local = _base_for_overlay(spec["image"], local, saltenv, fmt)
    formats[local] = fmt
    return local


def _pem(value, roots):
    value = str(value)
    if "-----BEGIN" in value:
        return value
    try:
        path = roots.attach(value, "seed key")
    except InvalidArgument as exc:
        raise SaltInvocationError(str(exc)) from exc
    if os.path.isfile(path):
        with open(path) as fh:
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
        Seed the system disk with a minion id, config and key pair before first boot.
        ``seed_cmd`` (default ``virt:seed_cmd``, else ``cidata``):

        * ``cidata`` -- a cloud-init NoCloud ISO attached read-only (milliseconds; the guest
          needs cloud-init or an equivalent that reads it);
        * ``seed.apply`` -- mount the system disk with libguestfs and write
          ``/etc/salt/minion`` and the keys into it (25-40 s under TCG). If the image has no
          salt-minion and ``install`` is true, ``seed_install_cmd`` (or
          ``virt:seed_install_cmd``; ``{root}`` is the mounted tree) installs it, and without
          one that is an error; with ``install=False`` the config and keys are still written.
          ``seed_device=/dev/sda2`` picks the filesystem (default: the largest Linux one);
        * any other ``module.function`` -- called like Salt's ``seed.apply``
          (``path, id_=, config=, install=, pub_key=, priv_key=, approve_key=False``) and must
          return True.

        ``config``: extra minion configuration (``master`` defaults to this minion's master).
        ``pub_key``/``priv_key``: PEM text or paths of a pre-generated key pair (the runner
        passes the pair it pre-accepted on the master).
    enable_vnc / graphics
        Add a VNC console (``graphics={type: vnc, listen: ..., port: ..., password: ...}``).
        It listens on ``virt:vnc:listen`` (default 127.0.0.1), never on 0.0.0.0 unless asked,
        on an automatic port (5900 up) unless ``port`` is given. ``password`` (1 to 8
        characters) protects it; without one a password is generated (``virt:vnc:password:
        none`` in the hypervisor's config turns that off; only then is ``password: False``
        accepted). Returns and ``vm_info`` only say ``password_set``; ask for the password with
        ``salt-run virt.console <vm> show_password=True``.
    boot, os_type, arch
        Boot devices (``[hd, cdrom, network]`` or ``{kernel, initrd, cmdline}``), OS type
        (``hvm``) and architecture (``x86_64``).
    autostart
        Start the domain when the hypervisor boots.

    CLI Example:

    .. code-block:: bash

        salt 'hypervisor*' virt.init centos1 2 512 image=/var/lib/libvirt/images/centos.img
        salt 'hypervisor*' virt.init centos1 2 512 image=/var/lib/libvirt/images/centos.qcow2 \
            enable_qcow=True start=False
        salt 'hypervisor1' virt.init web1 1 1024 image=salt://centos.qcow2 enable_vnc=True
        salt 'hypervisor1' virt.init web2 1 1024 image=salt://centos.qcow2 graphics='{type: vnc, password: True}'
    """
    try:
        dommod.validate_name(name)
        with contextlib.ExitStack() as stack:
            conn = stack.enter_context(_connection(kwargs))
            cpu, mem = _check_resources(conn, cpu, mem)
            if vmops.exists(conn, name):
                raise SaltInvocationError(f"a domain named {name!r} already exists on {__opts__['id']}")
            gfx_devices, _generated = _graphics(enable_vnc, graphics)
            dom_type, type_reason = hvtype.choose_type(
                hypervisor, cache_path=os.path.join(__opts__["cachedir"], "saltvirt", "kvm-probe.json")
            )
            roots = _roots(conn)
            disk_specs = profiles.merge_disks(profiles.disk_profile(disk, _config("disk")), disks)
            locks = _image_locks([image] + [d.get("image") for d in disk_specs if d.get("image")])
            stack.enter_context(locks)  # released once the disks are made (or rolled back)
            local_image, image_format = _resolve_image(image, saltenv, image_hash, roots)
            if local_image is not None:
                images.check_source(local_image, fmt=image_format)
                if enable_qcow:
                    local_image = _base_for_overlay(image, local_image, saltenv, image_format)
            formats = {local_image: image_format}
            disk_specs = _check_disk_files(conn, disk_specs, roots, formats)
            for spec in disk_specs:
                if spec.get("image"):
                    spec["image"] = _disk_image(spec, saltenv, roots, formats)
            plans = provision.plan_disks(name, disk_specs, _images_dir(), local_image, enable_qcow, formats)
            provision.check_space(plans, **_space_policy())
            nics = profiles.merge_nics(profiles.nic_profile(nic, _config("nic")), interfaces)
            model = dommod.Domain(
                name=name, vcpus=cpu, memory=mem * 1024, type=dom_type,
                os_type=os_type or "hvm", arch=arch or "x86_64",
                interfaces=[
                    dommod.Interface(type=n["type"], source=n["source"], model=n["model"],
                                     **({"mac": n["mac"]} if n.get("mac") else {}))
                    for n in nics
                ],
                graphics=gfx_devices,
                serials=[dommod.Serial(log=_serial_log(name))],
            )
            if isinstance(boot, dict):
                model.kernel, model.initrd, model.cmdline = boot.get("kernel"), boot.get("initrd"), boot.get("cmdline")
            elif boot:
                model.boot = [boot] if isinstance(boot, str) else list(boot)
            seeder, seed_info = _seeder(
                name, seed and local_image is not None, seed_cmd, install, pub_key, priv_key, config,
                {k: kwargs[k] for k in ("seed_install_cmd", "seed_device") if k in kwargs}, roots,
            )
            info = provision.create(conn, provision.Request(
                domain=model, disks=plans, start=start, seeder=seeder, autostart=autostart,
            ))
            if start and os.path.exists(_seed_iso(name)):
                fileio.write_atomic(_first_boot_marker(name), b"", 0o600)  # its one seeded boot
            info["graphics"] = _console_graphics(conn, name, info.get("graphics"))
    except VirtError as exc:
        _raise(exc)
    info.update(
        host=__opts__["id"],
        hypervisor_type=dom_type,
        hypervisor_reason=type_reason,
        seeded=seed_info,
    )
    return info


# --------------------------------------------------------------------------- lifecycle


def _seed_iso(name):
    return os.path.join(_images_dir(), name, SEED_ISO)


def _first_boot_marker(name):
    return os.path.join(_images_dir(), name, FIRST_BOOT)


def start(name, **kwargs):
    """
    Start a defined domain. A VM's cidata seed (which holds its minion key) serves its first
    boot only: on any later start it is detached and deleted first (see :func:`unseed`).

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.start centos1
    """
    ret = {"name": name}
    if os.path.exists(_seed_iso(name)):
        if os.path.exists(_first_boot_marker(name)):
            ret["unseeded"] = unseed(name, **kwargs)["removed"] is not None
        else:
            fileio.write_atomic(_first_boot_marker(name), b"", 0o600)
    ret["started"] = _domain_call(name, "start", kwargs)
    return ret


def init_status(name, **kwargs):
    """
    What this hypervisor has of a VM ``virt.init`` may have been creating: whether the domain
    is defined, its state, the public key its seed carries, the files in its directory. The
    runner's ``virt.reconcile`` decides from it.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.init_status web1
    """
    vm_dir = os.path.join(_images_dir(), name)
    pub_file = os.path.join(vm_dir, SEED_PUB)
    try:
        with _connection(kwargs) as conn:
            defined = vmops.exists(conn, name)
            state = vmops.state(vmops.lookup(conn, name)) if defined else None
    except VirtError as exc:
        _raise(exc)
    pub = None
    if os.path.isfile(pub_file):
        with open(pub_file) as fh:
            pub = fh.read()
    files = sorted(os.listdir(vm_dir)) if os.path.isdir(vm_dir) else []
    return {"name": name, "defined": defined, "state": state, "minion_pub": pub, "files": files}


def seeded_vms(**kwargs):
    """
    The defined domains that ``virt.init`` seeded with a minion key (their directory under
    ``virt:images`` holds the public half): what the master should hold keys for.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.seeded_vms
    """
    images_dir = _images_dir()
    try:
        with _connection(kwargs) as conn:
            names = vmops.list_domains(conn)
    except VirtError as exc:
        _raise(exc)
    return sorted(n for n in names if os.path.isfile(os.path.join(images_dir, n, SEED_PUB)))


def remove_leftovers(name, **kwargs):
    """
    Remove what an interrupted ``virt.init`` left of a VM that was never defined: its
    directory under ``virt:images`` (disks, seed). Refused while a domain of that name exists
    (use :func:`purge`).

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.remove_leftovers web1
    """
    try:
        dommod.validate_name(name)
        with _connection(kwargs) as conn:
            if vmops.exists(conn, name):
                raise SaltInvocationError(f"{name} is defined on {__opts__['id']}: purge it instead")
    except VirtError as exc:
        _raise(exc)
    vm_dir = os.path.join(_images_dir(), name)
    removed = []
    if os.path.isdir(vm_dir):
        for root, dirs, files in os.walk(vm_dir, topdown=False):
            for entry in files:
                os.unlink(os.path.join(root, entry))
                removed.append(os.path.join(root, entry))
            for entry in dirs:
                os.rmdir(os.path.join(root, entry))
        os.rmdir(vm_dir)
    return {"name": name, "removed": removed}


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
    iso = _seed_iso(name)
    try:
        with _connection(kwargs) as conn:
            detached = vmops.detach_file_disk(vmops.lookup(conn, name), iso)
    except VirtError as exc:
        _raise(exc)
    removed = None
    if os.path.exists(iso):
        os.unlink(iso)
        removed = iso
    return {"name": name, "detached": detached, "removed": removed}


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
    elsewhere are never deleted. If one of its own disks has become the base of another
    image (or is a disk of another domain), nothing is done and the users are named.

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
            # A disk of this VM may have become the base of another image (or a disk of
            # another domain): then nothing is destroyed or deleted.
            bases.refuse_if_used(conn, owned, _images_dir(), ignore=owned, domain=name)
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
    # The cidata seed is not a disk any more once detached, but it is ours too, and so is the
    # console log virt.init configured (a later VM of the same name must not append to it).
    for path in (*(os.path.join(vm_dir, f) for f in (SEED_ISO, SEED_PUB, FIRST_BOOT)), _serial_log(name)):
        if os.path.exists(path):
            os.unlink(path)
            removed.append(path)
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


# --------------------------------------------------------------------------- update, snapshots


def _int_arg(value, what):
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise SaltInvocationError(f"{what} must be an integer, not {value!r}") from None


def _wanted(cpu, mem, disk, disks, nic, interfaces, graphics, enable_vnc, autostart, live, enable_qcow):
    """A :class:`vupdate.Wanted` from ``virt.init``-style arguments (None: unmanaged)."""
    wanted = vupdate.Wanted(vcpus=_int_arg(cpu, "cpu"), memory_mib=_int_arg(mem, "mem"),
                            autostart=autostart, live=bool(live))
    if disk is not None or disks is not None:
        specs = profiles.merge_disks(profiles.disk_profile(disk or "default", _config("disk")), disks)
        if specs and enable_qcow:
            specs[0].setdefault("overlay_image", True)
        wanted.disks = specs
    if nic is not None or interfaces is not None:
        wanted.nics = profiles.merge_nics(profiles.nic_profile(nic or "default", _config("nic")), interfaces)
    if graphics is not None or enable_vnc:
        devices, generated = _graphics(enable_vnc, graphics)
        if generated:
            devices[0].password = vupdate.ANY_PASSWORD  # any password will do; made if missing
        wanted.graphics = devices
    return wanted


def _complete_new_disks(changes, vm_dir, saltenv, test, roots, formats):
    """Resolve the images of new disks; return ``{disk name: local image}``."""
    local = {}
    for change in changes:
        if change.kind != "disk":
            continue
        spec = change.spec
        if spec.get("source_file"):
            if not spec.get("format") and spec["source_file"] in formats:
                vupdate.complete_disk(change, vm_dir, formats[spec["source_file"]])
            continue
        if not spec.get("image"):
            continue
        if test and str(spec["image"]).startswith(_REMOTE):
            continue  # nothing is fetched for a dry run
        path = local[change.key] = _disk_image(spec, saltenv, roots, formats)
        vupdate.complete_disk(change, vm_dir, formats[path])
    return local


def update(name, cpu=None, mem=None, disk=None, disks=None, nic=None, interfaces=None, graphics=None,
           enable_vnc=False, autostart=None, live=True, test=False, saltenv="base", enable_qcow=False,
           **kwargs):
    """
    Bring an existing domain in line with ``virt.init``-style arguments: vCPUs, memory, new
    disks, NICs, graphics, autostart. Whatever is not given is left alone. Each change is
    applied to the running guest where libvirt and QEMU allow it (``live``: memory up to the
    domain's maximum, hot-plugged virtio disks and NICs, a NIC moved to another bridge, a
    new console password), else only to the persistent definition, effective when the
    domain next starts (``next_boot``: vCPUs, memory above the maximum, consoles, NIC
    models; a reboot inside the guest is not enough, the VM must be stopped and started).

    cpu / mem
        vCPUs; memory in MiB.
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
    """
    vm_dir = os.path.join(_images_dir(), name)
    try:
        with contextlib.ExitStack() as stack:
            conn = stack.enter_context(_connection(kwargs))
            dom = vmops.lookup(conn, name)
            if cpu is not None or mem is not None:
                _check_resources(conn, cpu if cpu is not None else 1, mem if mem is not None else 1)
            wanted = _wanted(cpu, mem, disk, disks, nic, interfaces, graphics, enable_vnc, autostart,
                             live, enable_qcow)
            roots, formats = _roots(conn), {}
            if wanted.disks:
                wanted.disks = _check_disk_files(conn, wanted.disks, roots, formats)
                stack.enter_context(_image_locks([d.get("image") for d in wanted.disks if d.get("image")]))
            secure = virtconn.libvirt.VIR_DOMAIN_XML_SECURE
            config = dommod.Domain.from_xml(dom.XMLDesc(secure | virtconn.libvirt.VIR_DOMAIN_XML_INACTIVE))
            running = dommod.Domain.from_xml(dom.XMLDesc(secure)) if dom.isActive() else None
            changes = vupdate.diff(config, wanted, vm_dir, live=running, autostart=bool(dom.autostart()))
            local = _complete_new_disks(changes, vm_dir, saltenv, test, roots, formats)
            generated = None
            if changes and not test:

                def build(change):
                    spec, undo = change.spec, provision.Undo()
                    plan = provision.DiskPlan(
                        name=spec["name"], target=change.device.target, path=change.device.source,
                        format=change.device.format, size=spec.get("size"), source=local.get(change.key),
                        source_format=formats.get(local.get(change.key)),
                        overlay=bool(spec.get("overlay_image")) and change.key in local,
                        device=change.device.device, bus=change.device.bus, readonly=change.device.readonly,
                    )
                    provision.check_space([plan], **_space_policy())
                    provision.build_disks([plan], undo)
                    return undo.run

                changes, generated = vupdate.apply(conn, dom, changes, build_disk=build)
    except VirtError as exc:
        _raise(exc)
    result = {
        "name": name,
        "test": bool(test),
        "changes": vupdate.report(changes),
        "live": [c.key for c in changes if c.when == vupdate.LIVE],
        "next_boot": [c.key for c in changes if c.when == vupdate.NEXT_BOOT],
        "comment": "; ".join(vupdate.describe(changes)) or f"{name} is up to date",
    }
    if generated:
        # Never the password itself: returns reach the job cache and the event bus.
        result["vnc_password_generated"] = True
    return result


def pending_changes(name, **kwargs):
    """
    What a running domain's persistent definition has that its guest does not run with yet
    (changes made "on next boot"); empty when nothing is pending or the domain is stopped.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.pending_changes centos1
    """

    def _pending(conn):
        dom = vmops.lookup(conn, name)
        if not dom.isActive():
            return []
        return vupdate.pending(vmops.model(dom), vmops.model(dom, inactive=True))

    return _with_conn(kwargs, _pending)


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
            data["graphics"] = _console_graphics(conn, name, data["graphics"])
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


def _capacity(conn):
    """What placement needs of this host (see :func:`saltvirt.placement.place`)."""
    images_dir = _images_dir()
    probe_dir = images_dir
    while not os.path.isdir(probe_dir):
        probe_dir = os.path.dirname(probe_dir)
    return {
        "node_info": vmops.node_info(conn),
        "freemem": vmops.freemem(conn),
        "freecpu": vmops.freecpu(conn),
        "address": _host_address(),
        "images": images_dir,
        "disk_free": images.free_space_mib(probe_dir),
        "usage": vmops.domain_usage(conn),
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
            "graphics": _console_graphics(conn, vm_, graphics),
        }

    return _with_conn(kwargs, _console)


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


def _migration_dir():
    return os.path.join(__opts__["cachedir"], "saltvirt", "migrations")


def _uri(target):
    try:
        return migration.dest_uri(target)
    except InvalidArgument as exc:
        raise SaltInvocationError(str(exc)) from exc


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
    try:
        with _connection(kwargs) as conn:
            facts = migration.source_facts(conn, name, probe=probe)
            if dest:
                facts["dest_check"] = _reach(conn, _uri(dest))
    except VirtError as exc:
        _raise(exc)
    facts["images"] = _images_dir()
    facts["address"] = _host_address()
    return facts


def _reach(conn, uri):
    try:
        with virtconn.opened(uri) as dconn:
            same = migration.host_uuid(dconn) == migration.host_uuid(conn)
    except VirtError as exc:
        return {"uri": uri, "ok": False, "detail": str(exc)}
    if same:
        return {"uri": uri, "ok": False, "detail": f"{uri} is this very host (same host UUID)"}
    return {"uri": uri, "ok": True, "detail": f"{__opts__['id']} reaches {uri}"}


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
    if not isinstance(facts, dict) or "disks" not in facts:
        raise SaltInvocationError("facts must be the dict returned by virt.migrate_source_info")
    try:
        with _connection(kwargs) as conn:
            report = migration.preflight(conn, facts, copy_storage=copy_storage, offline=offline,
                                         unsafe_fs=_config("migration:unsafe_fs", []) or [])
    except VirtError as exc:
        _raise(exc)
    if source:
        sconn, check = migration.reach_source(_uri(source))
        if sconn is not None:
            sconn.close()
        report["checks"].insert(0, check)
        report["ok"] = report["ok"] and check["ok"]
    report["host"] = __opts__["id"]
    return report


def migrate_prepare(name, create, token, source=None, **kwargs):
    """
    Pre-create on this host the disks an incoming migration copies into (``create``: the
    ``storage:create`` list of :func:`migrate_preflight`): qcow2 overlays on the same base,
    blank images of the same format and virtual size, and read-only files downloaded from the
    ``source`` host's libvirt (host name or URI). All or nothing; what was made is journaled
    under ``token`` for :func:`migrate_cleanup`.

    CLI Example:

    .. code-block:: bash

        salt hypervisor2 virt.migrate_prepare centos1 \
            '[{path: /srv/salt-images/centos1/system.qcow2, kind: blank, format: qcow2,
              virtual_size: 8589934592}]' 3f2a9c
    """
    try:
        journal = migration.journal_path(_migration_dir(), token)
        migration.prune_journals(_migration_dir())
        if any(item.get("kind") == "fetch" for item in create):
            if not source:
                raise SaltInvocationError("read-only disks are fetched from the source: pass source=<host or URI>")
            with virtconn.opened(_uri(source)) as sconn:
                record = migration.prepare_disks(create, journal, sconn, name)
        else:
            record = migration.prepare_disks(create, journal, None, name)
    except VirtError as exc:
        _raise(exc)
    return {"name": name, "token": token, "host": __opts__["id"], "created": record["created"],
            "dirs": record["dirs"]}


def migrate_in(name, facts, source, dest=None, copy_storage=None, offline=False, token=None,
               progress_tag=None, **kwargs):
    """
    Pull domain ``name`` to this hypervisor from ``source`` (host name or libvirt URI) in one
    call: the checks of :func:`migrate_preflight` on ``facts`` (the return of
    :func:`migrate_source_info` on the source), the disks of :func:`migrate_prepare`
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
    if not isinstance(facts, dict) or "disks" not in facts or facts.get("name") != name:
        raise SaltInvocationError(f"facts must be the dict virt.migrate_source_info returned for {name}")
    options = {k: kwargs[k] for k in migration.PULL_OPTIONS if k in kwargs}
    if options.get("tunnel") is None:
        options["tunnel"] = bool(_config("tunnel", False))
    token = str(token or secrets.token_hex(8))
    dest = _uri(dest or _host_address())

    def _event(data):
        __salt__["event.fire_master"](dict(data, name=name, host=__opts__["id"]), progress_tag)

    try:
        journal = migration.journal_path(_migration_dir(), token)
        migration.prune_journals(_migration_dir())
        with _connection(kwargs) as conn:
            result = migration.migrate_in(
                conn, facts, _uri(source), dest, journal, copy_storage=copy_storage, offline=offline,
                unsafe_fs=_config("migration:unsafe_fs", []) or [],
                progress=_event if progress_tag else None,
                announce=(lambda step, **data: _event(dict(data, step=step))) if progress_tag else None,
                **options,
            )
    except VirtError as exc:
        _raise(exc)
    result.update(host=__opts__["id"], token=token, dest_uri=dest)
    if result.get("refused") or result.get("error"):
        __context__["retcode"] = 1
    return result


def migrate(
    name,
    target,
    live=True,
    offline=False,
    persistent=True,
    undefinesource=True,
    copy_storage=None,
    migrate_disks=None,
    max_bandwidth=None,
    max_downtime=None,
    postcopy=False,
    auto_converge=False,
    compressed=False,
    parallel_connections=None,
    tunnel=None,
    tls=False,
    unsafe=False,
    migration_uri=None,
    peer2peer=True,
    timeout=None,
    probe=None,
    progress_tag=None,
    **kwargs,
):
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
    uri = _uri(target)
    if tunnel is None:
        tunnel = bool(_config("tunnel", False))
    if probe:
        migration.remove_probes(probe.get("dirs"), probe.get("token"))

    def _report(data):
        __salt__["event.fire_master"](dict(data, name=name, host=__opts__["id"]), progress_tag)

    try:
        with _connection(kwargs) as conn:
            try:
                dconn = virtconn.connect(uri)
            except VirtError as exc:
                raise SaltInvocationError(f"cannot migrate {name}: {exc}") from exc
            try:
                if migration.host_uuid(dconn) == migration.host_uuid(conn):
                    raise SaltInvocationError(f"{uri} is this very host ({__opts__['id']}): nothing to migrate")
                result = migration.migrate(
                    conn, name, uri, live=live, offline=offline, persistent=persistent,
                    undefinesource=undefinesource, copy_storage=copy_storage,
                    migrate_disks=migrate_disks, max_bandwidth=max_bandwidth,
                    max_downtime=max_downtime, postcopy=postcopy, auto_converge=auto_converge,
                    compressed=compressed, parallel_connections=parallel_connections,
                    tunnel=tunnel, tls=tls, unsafe=unsafe, migration_uri=migration_uri,
                    peer2peer=peer2peer, timeout=timeout, dest_conn=dconn,
                    progress=_report if progress_tag else None,
                )
            finally:
                dconn.close()
    except migration.MigrationFailed as exc:
        state = exc.source_state or {}
        where = (f"{name} is still {state.get('state')} on {__opts__['id']}" if state.get("defined")
                 else f"{name} is no longer defined on {__opts__['id']}")
        raise CommandExecutionError(f"{exc}; {where}") from exc
    except VirtError as exc:
        _raise(exc)
    result["source"] = __opts__["id"]
    return result


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
        Remove the files and directories :func:`migrate_prepare` made under this token
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
    result = {"name": name, "host": __opts__["id"]}
    if probe:
        result["probes_removed"] = migration.remove_probes(probe.get("dirs"), probe.get("token"))
    if not token and not stale:
        return result
    conn, deadline, error = None, time.monotonic() + float(wait), None
    while conn is None:
        try:
            conn = virtconn.connect(
                uri=kwargs.get("connection") or _config("connection:uri") or None,
                username=kwargs.get("username") or _config("connection:auth:username"),
                password=kwargs.get("password") or _config("connection:auth:password"),
            )
        except VirtError as exc:
            error = str(exc)
            if time.monotonic() > deadline:
                break
            time.sleep(1)
    try:
        if token:
            journal = migration.journal_path(_migration_dir(), token)
            result.update(migration.cleanup(conn, journal, name=name, uuid=uuid, remove_domain=remove_domain))
            if conn is None:
                result["error"] = f"{result.get('error')}: {error}"
        if stale:
            if conn is None:
                result["stale"] = {"removed": [], "kept": list(stale), "error": error}
            else:
                vm_dir = os.path.join(_images_dir(), name)
                if not vmops.exists(conn, name):
                    # The VM lives elsewhere now: its seed bookkeeping here goes with its disks.
                    stale = [*stale, *(os.path.join(vm_dir, f) for f in (SEED_PUB, FIRST_BOOT))]
                result["stale"] = migration.remove_stale(conn, name, stale, vm_dir)
    except VirtError as exc:
        _raise(exc)
    finally:
        if conn is not None:
            conn.close()
    return result


# --------------------------------------------------------------------------- operations


def definitions(name=None, **kwargs):
    """
    The persistent definition (XML without console passwords), state and autostart of every
    domain here (or of ``name`` only): what ``salt-run virt.remember`` keeps on the master
    so that ``virt.evacuate`` can restart them elsewhere if this hypervisor dies.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.definitions
    """

    def _definitions(conn):
        names = [name] if name and vmops.exists(conn, name) else ([] if name else vmops.list_domains(conn))
        out = {}
        for vm in names:
            try:
                dom = vmops.lookup(conn, vm)
                if dom.isPersistent():
                    out[vm] = {"xml": dom.XMLDesc(virtconn.libvirt.VIR_DOMAIN_XML_INACTIVE),
                               "state": vmops.state(dom), "autostart": bool(dom.autostart())}
            except (NotFound, virtconn.libvirt.libvirtError):
                continue  # gone since the listing
        return out

    return _with_conn(kwargs, _definitions)


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
