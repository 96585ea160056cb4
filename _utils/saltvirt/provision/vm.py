"""``virt.init`` as one library call: :func:`create_vm` turns a :class:`~saltvirt.provision.spec.VmSpec`
into a defined (and, by default, started and seeded) domain, all or nothing."""

import os

from saltvirt import console, fileio, hypervisor, provision
from saltvirt.domain import model as dommod
from saltvirt.domain import platform as domplatform
from saltvirt.domain import vmops
from saltvirt.errors import InvalidArgument
from saltvirt.provision import hardware, profiles, sources
from saltvirt.provision.spec import platform_settings
from saltvirt.seeding import methods as seed_methods
from saltvirt.storage import images


def check_resources(conn, cpu, mem):
    """``(cpu, mem)`` as integers that fit this host, or a clear error."""
    try:
        cpu, mem = int(cpu), int(mem)
    except (TypeError, ValueError, OverflowError):
        raise InvalidArgument(f"cpu and mem must be integers (got cpu={cpu!r}, mem={mem!r})") from None
    node = vmops.node_info(conn)
    if cpu < 1:
        raise InvalidArgument(f"cpu must be at least 1, not {cpu}")
    if cpu > node["cpus"]:
        raise InvalidArgument(f"cpu {cpu} is more than this host has ({node['cpus']})")
    if mem < 1:
        raise InvalidArgument(f"mem must be a positive number of MiB, not {mem}")
    if mem > node["phymemory"]:
        raise InvalidArgument(f"mem {mem} MiB is more than this host has ({node['phymemory']} MiB)")
    return cpu, mem


def graphics_devices(settings, enable_vnc, graphics):
    """``(devices, generated password or None)`` for ``enable_vnc``/``graphics``.

    A VNC console gets a generated password unless the call gives one (``virt:vnc:password:
    none`` on the hypervisor turns that off). It is kept in the domain definition only.
    """
    if graphics is None and not enable_vnc:
        return [], None
    if isinstance(graphics, str):
        graphics = {"type": graphics}
    if graphics is not None and not isinstance(graphics, dict):
        raise InvalidArgument(f"graphics must be a dict like {{type: vnc, password: True}}, not {graphics!r}")
    spec = dict(graphics or {"type": "vnc"})
    if spec.get("type", "vnc") == "none":
        return [], None
    spec.setdefault("type", "vnc")
    spec.setdefault("listen", settings.get("vnc:listen", "127.0.0.1"))
    if isinstance(spec.get("listen"), dict):  # classic shape: {type: address, address: X}
        spec["listen"] = spec["listen"].get("address")
    if spec.get("port") is None:
        spec["port"] = -1
    generated = None
    password = spec.pop("password", None)
    if spec["type"] == "vnc":
        password = console.console_password(password, settings.get("vnc:password"))
    if password is True:
        generated = spec["password"] = console.gen_password()
    elif password not in (None, False, ""):
        spec["password"] = str(password)
    return [dommod.Graphics(**{k: spec[k] for k in ("type", "listen", "port", "password") if k in spec})], generated


def console_graphics(settings, conn, name, graphics):
    """Inventory graphics with the reachable ``host``, ``local_only`` and a true ``password_set``
    (libvirt hides passwords unless asked for secure XML; the password itself never leaves)."""
    if not graphics:
        return []
    secure = console.secure_graphics(vmops.lookup(conn, name))
    return console.console_graphics(graphics, settings.address, secure)


def domain_model(settings, spec, dom_type, gfx_devices, roots=None, hw=None):
    """The :class:`~saltvirt.domain.model.Domain` of ``spec`` (disks are added by the plans);
    ``hw``: its :class:`~saltvirt.provision.hardware.Hardware` sections."""
    nics = profiles.merge_nics(profiles.nic_profile(spec.nic, settings.get("nic")), spec.interfaces)
    model = dommod.Domain(
        name=spec.name, vcpus=spec.cpu, memory=spec.mem * 1024, type=dom_type,
        sections=hw.sections if hw else [],
        os_type=spec.os_type or "hvm", arch=spec.arch or "x86_64",
        interfaces=[
            dommod.Interface(type=n["type"], source=n["source"], model=n["model"],
                             **({"mac": n["mac"]} if n.get("mac") else {}))
            for n in nics
        ],
        graphics=gfx_devices,
        # With serials given, a section writes them (the logged port 0 included).
        serials=[] if spec.serials is not None else [dommod.Serial(log=settings.serial_log(spec.name))],
    )
    wanted = platform_settings(spec, roots, settings.vm_file(spec.name, "nvram"))
    model.kernel, model.initrd, model.cmdline = (wanted.get(f"boot:{k}") for k in ("kernel", "initrd", "cmdline"))
    model.boot = wanted.get("boot_dev", model.boot)
    model.on_reboot = "destroy" if wanted.get("stop_on_reboot") else "restart"
    model.platform = domplatform.beyond_fields(wanted)
    return model


def plan_disks(settings, conn, spec, roots, progress=None):
    """``(disk plans, system image)``: every image resolved and inspected, every path checked,
    space checked. Call it inside :func:`saltvirt.provision.sources.image_locks`. ``progress``
    receives the fetches' (and shared bases' copies') progress."""
    disk_specs = profiles.merge_disks(profiles.disk_profile(spec.disk, settings.get("disk")), spec.disks)
    known = sources.known_base(settings, spec.image, spec.saltenv, spec.master_hash) \
        if spec.enable_qcow and not spec.image_hash else None
    if known:
        # The base was inspected when it was made; the image policy may have changed since.
        policy = settings.image_policy
        local_image = known
        image_format = images.inspect_untrusted(known, policy["allow_backing"], policy["max_virtual_size"])["format"]
    else:
        local_image, image_format = sources.resolve(settings, roots, spec.image, spec.saltenv, spec.image_hash,
                                                    progress)
        if local_image is not None:
            images.check_source(local_image, fmt=image_format)
            if spec.enable_qcow:
                local_image = sources.base_for_overlay(settings, spec.image, local_image, image_format, progress,
                                                       spec.saltenv)
    formats = {local_image: image_format}
    disk_specs = sources.check_disk_files(settings, conn, disk_specs, roots, formats)
    for disk in disk_specs:
        if disk.get("image"):
            disk["image"] = sources.disk_image(settings, roots, disk, spec.saltenv, formats, progress)
    plans = provision.plan_disks(spec.name, disk_specs, settings.images_dir, local_image, spec.enable_qcow,
                                 formats)
    provision.check_space(plans, **settings.space_policy)
    return plans, local_image


def image_sources(settings, spec):
    disks = profiles.merge_disks(profiles.disk_profile(spec.disk, settings.get("disk")), spec.disks)
    return [spec.image] + [d.get("image") for d in disks if d.get("image")]


def create_vm(conn, spec, settings, progress=None):
    """Create the VM ``spec`` describes on ``conn``; return its info with how it was made.

    ``progress(dict)`` receives the progress of image fetches and copies (see
    :class:`saltvirt.progress.Meter`); its failures never fail the VM."""
    dommod.validate_name(spec.name)
    roots = settings.roots(vmops.pool_targets(conn))
    hw = hardware.hardware(spec, settings, roots, conn)
    spec.cpu, spec.mem = check_resources(conn, hw.vcpus, hw.mem_mib)
    if vmops.exists(conn, spec.name):
        raise InvalidArgument(f"a domain named {spec.name!r} already exists on {settings.minion_id}")
    gfx_devices, _generated = graphics_devices(settings, spec.enable_vnc, spec.graphics)
    dom_type, type_reason = hypervisor.choose_type(spec.hypervisor, cache_path=settings.kvm_probe)
    model = domain_model(settings, spec, dom_type, gfx_devices, roots, hw)  # bad settings: refused before any work
    key_pair = seed_methods.key_pair_ahead(spec)
    # Remote images stay locked until the disks are made (or rolled back).
    with sources.image_locks(settings, image_sources(settings, spec)):
        plans, local_image = plan_disks(settings, conn, spec, roots, progress)
        seeder, seed_info = seed_methods.seeder(settings, spec, roots, wanted=spec.seed and local_image is not None,
                                                key_pair=key_pair)
        info = provision.create(conn, provision.Request(
            domain=model, disks=plans, start=spec.start,
            seeder=seeder, autostart=spec.autostart, progress=progress, copy_limits=settings.copy_limits,
        ))
    if spec.start and os.path.exists(settings.vm_file(spec.name, "seed_iso")):
        fileio.write_atomic(settings.vm_file(spec.name, "first_boot"), b"", 0o600)  # its one seeded boot
    info["graphics"] = console_graphics(settings, conn, spec.name, info.get("graphics"))
    info.update(host=settings.minion_id, hypervisor_type=dom_type, hypervisor_reason=type_reason, seeded=seed_info)
    return info

