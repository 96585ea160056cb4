"""Creating a new domain: plan its disks, clone them, seed, define, start — all or nothing.

Every step registers its undo; when a later step fails the undos run in reverse, so a failed
``virt.init`` leaves no disk, no defined domain and no half-written file behind.
"""

import contextlib
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field

from saltvirt.domain import model as dommod
from saltvirt.domain import platform as domplatform
from saltvirt.domain import vmops
from saltvirt.errors import InvalidArgument, VirtError
from saltvirt.storage import images, paths, volumes

log = logging.getLogger(__name__)

EXTENSIONS = {"qcow2": "qcow2", "raw": "img"}


class Undo:
    """A stack of compensating actions, run in reverse when the transaction fails."""

    def __init__(self):
        self._steps = []

    def push(self, what, func, *args):
        self._steps.append((what, func, args))

    def run(self):
        errors = []
        while self._steps:
            what, func, args = self._steps.pop()
            try:
                func(*args)
            except Exception as exc:  # keep undoing the rest; report at the end
                errors.append(f"{what}: {exc}")
                log.error("rollback of %s failed: %s", what, exc)
        return errors

    def forget(self):
        self._steps.clear()


@dataclass
class DiskPlan:
    """One disk of the new domain and how to make it."""

    name: str
    target: str
    path: str
    format: str
    size: int | None = None  # bytes
    source: str | None = None  # local image to clone from
    source_format: str | None = None  # its format, as inspected (never probed again)
    overlay: bool = False
    existing: bool = False  # an operator-supplied file: attached, never created or removed
    device: str = "disk"
    bus: str = "virtio"
    readonly: bool = False
    volume_pool: str | None = None  # a libvirt pool of block volumes: made through libvirt
    volume: str | None = None  # the volume's name in it (``path`` is known once it exists)

    def to_disk(self):
        where = {"source_dev": self.path} if self.volume_pool else {"source": self.path}
        return dommod.Disk(target=self.target, format=self.format, device=self.device, bus=self.bus,
                           readonly=self.readonly, **where)


def plan_disks(vm_name, disks, images_dir, default_image=None, enable_qcow=False, formats=None):
    """Turn normalised disk specs (see :mod:`saltvirt.provision.profiles`) into :class:`DiskPlan`.

    The first disk gets ``default_image`` unless it names its own ``image``. ``enable_qcow``
    (or a disk's ``overlay_image: True``) makes a qcow2 overlay on the image instead of a copy.
    ``formats``: ``{image path: format}`` of inspected images, used instead of probing them.
    Disks in a ``pool`` directory, which other VMs share, are named ``<vm>-<disk>``.
    """
    formats = formats or {}
    plans, targets = [], []
    for index, spec in enumerate(disks):
        bus = spec.get("bus") or "virtio"
        device = spec.get("device", "disk")
        target = dommod.next_disk_target(targets, "sata" if device == "cdrom" and bus == "virtio" else bus)
        targets.append(target)
        image = spec.get("image") or (default_image if index == 0 else None)
        source_file = spec.get("source_file")
        if source_file:
            plans.append(DiskPlan(
                name=spec["name"], target=target, path=source_file, existing=True,
                format=spec.get("format") or formats.get(source_file) or images.info(source_file)["format"],
                device=device,
                bus="sata" if device == "cdrom" and bus == "virtio" else bus,
                readonly=bool(spec.get("readonly", device == "cdrom")),
            ))
            continue
        overlay = bool(spec.get("overlay_image", enable_qcow)) and image is not None
        if spec.get("volume_pool"):
            plans.append(_volume_plan(vm_name, spec, target, image, formats, overlay))
            continue
        fmt = "qcow2" if overlay else spec.get("format")
        if image is None and not spec.get("size"):
            raise InvalidArgument(f"disk {spec['name']!r} has neither an image nor a size")
        source_format = formats.get(image) if image else None
        if fmt is None:
            fmt = (source_format or images.info(image)["format"]) if image else "qcow2"
        if fmt not in EXTENSIONS:
            raise InvalidArgument(f"disk {spec['name']!r}: format must be qcow2 or raw, not {fmt!r}")
        directory = spec.get("pool") or os.path.join(images_dir, vm_name)
        if not os.path.isabs(directory):
            raise InvalidArgument(f"disk {spec['name']!r}: pool must be an absolute directory")
        filename = paths.disk_stem(vm_name, spec["name"], bool(spec.get("pool")))
        plans.append(DiskPlan(
            name=spec["name"], target=target, format=fmt, size=spec.get("size"),
            path=os.path.join(directory, f"{filename}.{EXTENSIONS[fmt]}"),
            source=image, source_format=source_format, overlay=overlay, device=device, bus=bus,
            readonly=bool(spec.get("readonly", False)),
        ))
    return plans


def _volume_plan(vm_name, spec, target, image, formats, overlay):
    """A disk in a pool of block volumes: a raw copy of its image (no overlay on a block device)."""
    if overlay and spec.get("overlay_image"):
        raise InvalidArgument(f"disk {spec['name']!r}: overlay_image needs a directory pool, not the block "
                              f"volumes of pool {spec['volume_pool']} (its image is copied in whole instead)")
    if image is None and not spec.get("size"):
        raise InvalidArgument(f"disk {spec['name']!r} has neither an image nor a size")
    return DiskPlan(name=spec["name"], target=target, path="", format="raw", size=spec.get("size"), source=image,
                    source_format=formats.get(image) if image else None, device=spec.get("device", "disk"),
                    bus=spec.get("bus") or "virtio", readonly=bool(spec.get("readonly", False)),
                    volume_pool=spec["volume_pool"], volume=paths.disk_stem(vm_name, spec["name"], True))


@dataclass
class Request:
    """Everything :func:`create` needs, already validated by the caller's arguments."""

    domain: dommod.Domain
    disks: list[DiskPlan]
    start: bool = True
    # seeder(plans, vm_dir, undo) -> extra dommod.Disk list (e.g. a cidata ISO); runs
    # after the disks exist and before the domain is defined, so a guest never boots unseeded.
    seeder: Callable | None = None
    autostart: bool = False
    created_dirs: list[str] = field(default_factory=list)
    # progress(dict) of image copies, and their (base seconds, minimum MiB/s) time limit.
    progress: Callable | None = None
    copy_limits: tuple | None = None


def make_dir(path, undo):
    missing = []
    while not os.path.isdir(path):
        missing.append(path)
        path = os.path.dirname(path)
    for directory in reversed(missing):
        # QEMU runs as its own user: it must be able to traverse to the (0600, relabelled) disks.
        os.mkdir(directory, 0o755)
        undo.push(f"directory {directory}", _rmdir_if_empty, directory)


def _rmdir_if_empty(path):
    with contextlib.suppress(FileNotFoundError, OSError):
        os.rmdir(path)


def remove_file(path):
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def space_needed(plans, overcommit=False):
    """``{directory: bytes}`` the new disks of ``plans`` may come to occupy.

    A full copy counts its source's allocation; an overlay or a blank disk is thin, but grows
    up to its virtual size as the guest writes: counted whole unless ``overcommit`` (then only
    a copy counts).
    """
    needed = {}
    for plan in plans:
        if plan.existing or plan.volume_pool:  # libvirt refuses a volume its pool has no room for
            continue
        directory = os.path.dirname(plan.path)
        if plan.source and not plan.overlay:
            src = images.info(plan.source, plan.source_format)
            grow = images._size(plan.size) if plan.size else 0  # pylint: disable=protected-access
            nbytes = max(src["actual_size"] or 0, grow if not overcommit else 0)
        elif overcommit:
            continue
        elif plan.size:
            nbytes = images._size(plan.size)  # pylint: disable=protected-access
        else:
            nbytes = images.info(plan.source, plan.source_format)["virtual_size"] or 0
        needed[directory] = needed.get(directory, 0) + nbytes
    return needed


def check_space(plans, overcommit=False, headroom_mib=1024):
    """Refuse, before anything is written, disks that would not fit in their filesystem with
    ``headroom_mib`` to spare (a full filesystem pauses every VM writing to it)."""
    for directory, nbytes in space_needed(plans, overcommit).items():
        probe = directory
        while not os.path.isdir(probe):
            probe = os.path.dirname(probe)
        free = images.free_space_mib(probe)
        need = -(-nbytes // images.MIB)
        if need + headroom_mib > free:
            how = "" if overcommit else (" (thin disks counted at their virtual size; virt:disk_overcommit: "
                                         "True counts them as they fill)")
            raise InvalidArgument(
                f"not enough space in {directory}: the new disks need {need} MiB{how}, {free} MiB are free and "
                f"{headroom_mib} MiB stay spare (virt:disk_headroom_mib); free space or choose another host"
            )


def build_disks(plans, undo, progress=None, copy_limits=None, conn=None):
    """Create every planned disk (clone, overlay or blank; a pool's volume through ``conn``),
    registering undos; full copies report to ``progress`` and may take ``copy_limits`` of their
    size."""
    for plan in plans:
        if plan.volume_pool:
            volumes.create_disk_volume(conn, plan, undo)
            continue
        if plan.existing:
            if not os.path.exists(plan.path):
                raise InvalidArgument(f"disk {plan.name!r}: {plan.path} does not exist")
            continue
        make_dir(os.path.dirname(plan.path), undo)
        if os.path.lexists(plan.path):
            raise InvalidArgument(
                f"disk {plan.name!r}: {plan.path} already exists (left from another VM?); "
                "remove it or choose another name"
            )
        if plan.source:
            images.check_source(plan.source, fmt=plan.source_format)
            images.clone(plan.source, plan.path, fmt=plan.format, overlay=plan.overlay, size=plan.size,
                         source_format=plan.source_format, progress=progress, copy_limits=copy_limits)
            undo.push(f"disk {plan.path}", remove_file, plan.path)
            if plan.overlay:
                # Every overlay depends on this file's exact bytes from now on.
                images.protect_base(plan.source)
        else:
            images.create_blank(plan.path, plan.size, plan.format)
            undo.push(f"disk {plan.path}", remove_file, plan.path)


def create(conn, request):
    """Create the domain described by ``request`` on ``conn``; return its :func:`vmops.info`."""
    dom_model = request.domain
    dom_model.check()
    if vmops.exists(conn, dom_model.name):
        raise InvalidArgument(f"a domain named {dom_model.name!r} already exists on this host")
    undo = Undo()
    try:
        build_disks(request.disks, undo, request.progress, request.copy_limits, conn)
        nvram = dom_model.platform.get(domplatform.NVRAM_PATH)
        if nvram:  # libvirt makes a UEFI VM's variable store on first start, not its directory
            make_dir(os.path.dirname(nvram), undo)
            undo.push(f"variable store {nvram}", remove_file, nvram)
        dom_model.disks = [plan.to_disk() for plan in request.disks]
        if request.seeder is not None:
            dom_model.disks.extend(request.seeder(request.disks, undo) or [])
        dom = vmops.define(conn, dom_model.to_xml())
        undo.push(f"domain {dom_model.name}", vmops.undefine_quietly, dom)
        if request.autostart:
            dom.setAutostart(1)
        if request.start:
            vmops.start(dom)
            undo.push(f"running domain {dom_model.name}", vmops.destroy_quietly, dom)
    except BaseException as exc:
        errors = undo.run()
        if errors:
            raise VirtError(f"{exc} (and rollback failed: {'; '.join(errors)})") from exc
        raise
    undo.forget()
    return vmops.info(conn, dom_model.name)


def remove_tree_if_empty(path):
    """Remove a VM directory once it holds nothing."""
    if os.path.isdir(path) and not os.listdir(path):
        shutil.rmtree(path, ignore_errors=True)
