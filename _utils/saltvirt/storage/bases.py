"""Base images of qcow2 overlays on one hypervisor: who uses them, rebasing, removal.

A base must never change while overlays use it: each overlay stores only the clusters its
guest wrote and reads everything else from the base. To change or drop a base, first copy it
and move its overlays onto the copy (:func:`rebase_users`); :func:`remove` refuses to delete an
image that any domain disk or image file still uses.

Overlays are looked for among the disks of every domain on the connection and the qcow2
files under the images directory (``virt:images``): an overlay of a stopped, undefined or
half-made VM counts as a user too.
"""

import os
import stat
import time

from saltvirt import cmd
from saltvirt.domain import vmops
from saltvirt.errors import InvalidArgument, NotFound, VirtError
from saltvirt.storage import images

try:
    import libvirt
except ImportError:
    libvirt = None

_QCOW2_MAGIC = b"QFI\xfb"
PULL_TIMEOUT = 3600


def _real(path):
    return os.path.realpath(os.fspath(path))


def is_qcow2(path):
    """Cheap check of the qcow2 magic, without running qemu-img."""
    try:
        with open(path, "rb") as handle:
            return handle.read(4) == _QCOW2_MAGIC
    except OSError:
        return False


def image_files(directory):
    """qcow2 files under ``directory`` (recursively; hidden temporary files left out)."""
    found = []
    if not directory or not os.path.isdir(directory):
        return found
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = os.path.join(root, name)
            if not name.startswith(".") and os.path.isfile(path) and is_qcow2(path):
                found.append(path)
    return found


def domain_disks(conn):
    """``{real path: [{domain, target, state}]}`` of every file disk of every domain."""
    disks = {}
    for dom in conn.listAllDomains(0):
        model = vmops.model(dom, inactive=True)
        active = bool(dom.isActive())
        for disk in model.disks:
            if disk.source:
                disks.setdefault(_real(disk.source), []).append(
                    {"domain": model.name, "target": disk.target, "running": active,
                     "state": vmops.state(dom)})
        if active:
            # A running domain may use files its definition does not (hot-plugged, live).
            for disk in vmops.model(dom).disks:
                entries = disks.setdefault(_real(disk.source), []) if disk.source else []
                if disk.source and not any(e["domain"] == model.name for e in entries):
                    entries.append({"domain": model.name, "target": disk.target, "running": True,
                                    "state": vmops.state(dom)})
    return disks


def _nearest_backing(path):
    chain = images._chain_files(path)  # pylint: disable=protected-access
    return chain[0] if chain else None


def inventory(conn, images_dir):
    """The candidates to look among for users of a base: ``(domain_disks, candidate paths)``."""
    disks = domain_disks(conn) if conn is not None else {}
    candidates = list(dict.fromkeys([*disks, *(_real(p) for p in image_files(images_dir))]))
    return disks, candidates


def find_users(conn, base, images_dir, _inventory=None):
    """Who uses ``base``.

    Returns ``{"base", "direct": [...], "indirect": [...], "domains": {path: [...]}}``:
    ``direct`` overlays have ``base`` as their backing file, ``indirect`` ones reach it
    deeper down their chain (through a direct one); ``domains`` says which domains use each
    of them (and ``base`` itself, when a domain has it as a disk).
    """
    base_real = _real(base)
    disks, candidates = _inventory or inventory(conn, images_dir)
    users = sorted(images.users_of(base_real, candidates))
    direct = [u for u in users if _nearest_backing(u) == base_real]
    indirect = [u for u in users if u not in direct]
    domains = {p: disks[_real(p)] for p in [base_real, *users] if _real(p) in disks}
    return {"base": base_real, "direct": direct, "indirect": indirect, "domains": domains}


def _describe_user(path, domains):
    uses = domains.get(_real(path)) or []
    if not uses:
        return f"{path} (no domain)"
    return f"{path} ({', '.join(u['domain'] + ' ' + u['state'] for u in uses)})"


def default_copy_name(base, now=None):
    """``<base>.<YYYYmmddTHHMMSS>``: where the copy of a base goes unless told."""
    return f"{base}.{time.strftime('%Y%m%dT%H%M%S', time.localtime(now))}"


def copy_image(source, dest):
    """An exact, sparse copy of ``source`` at ``dest`` (never overwritten), read-only like a base."""
    mode = stat.S_IMODE(os.stat(source).st_mode)

    def steps(tmp):
        cmd.run(["cp", "--reflink=auto", "--sparse=always", "--", source, tmp])
        os.chmod(tmp, mode)

    built = images._build(dest, steps)  # pylint: disable=protected-access
    images.protect_base(built)
    return built


def _with_write(path, func):
    """Run ``func`` with ``path`` writable by its owner (an intermediate base is read-only)."""
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & stat.S_IWUSR:
        return func()
    os.chmod(path, mode | stat.S_IWUSR)
    try:
        return func()
    finally:
        os.chmod(path, mode)


def _pull(conn, path, uses, timeout):
    """Flatten the running domain's overlay ``path`` with a libvirt block pull."""
    use = next(u for u in uses if u["running"])
    dom = vmops.lookup(conn, use["domain"])
    try:
        dom.blockRebase(use["target"], None, 0, 0)
    except libvirt.libvirtError as exc:
        raise VirtError(f"block pull of {use['target']} of {use['domain']} failed: "
                        f"{exc.get_error_message()}") from exc
    deadline = time.monotonic() + timeout
    while True:
        try:
            job = dom.blockJobInfo(use["target"], 0)
        except libvirt.libvirtError as exc:
            raise VirtError(f"block pull of {use['domain']} {use['target']}: {exc.get_error_message()}") from exc
        if not job:
            break
        if time.monotonic() > deadline:
            dom.blockJobAbort(use["target"], 0)
            raise VirtError(f"block pull of {use['domain']} {use['target']} took longer than {timeout}s: aborted")
        time.sleep(0.2)
    return use["domain"]


def rebase_users(conn, base, images_dir, new_base=None, safe=True, live_pull=False,
                 pull_timeout=PULL_TIMEOUT):
    """Copy ``base`` to ``new_base`` and move every overlay that uses it onto the copy.

    Overlays of stopped domains (and overlay files no domain uses) are rebased with
    ``qemu-img rebase`` (``safe``: the guest-visible content is checked cluster by cluster
    and kept; the copy is identical, so nothing is copied into the overlay). An overlay a
    running domain uses cannot be rebased under it: the whole call is refused before
    anything is done, naming those domains, unless ``live_pull`` is true: then each such
    overlay is flattened live with a libvirt block pull (it stops depending on any base and
    grows by the data it pulls in). Overlays reaching ``base`` through another overlay
    (``indirect``) follow that one and need nothing.

    Returns ``{"base", "new_base", "rebased": [{overlay, domains, how, backing}], "indirect",
    "seconds"}``. A failure part-way leaves the overlays done so far on the copy (their
    content is the same) and raises :class:`VirtError` listing them.
    """
    started = time.monotonic()
    base = os.path.abspath(os.fspath(base))
    if not os.path.isfile(base):
        raise NotFound(f"base image {base} does not exist")
    base_real = _real(base)
    new_base = os.path.abspath(new_base) if new_base else default_copy_name(base)
    if os.path.lexists(new_base):
        raise InvalidArgument(f"{new_base} already exists: name another copy with new_base=")
    if os.path.dirname(new_base) and not os.path.isdir(os.path.dirname(new_base)):
        raise NotFound(f"directory {os.path.dirname(new_base)} does not exist")
    users = find_users(conn, base_real, images_dir)
    domains = users["domains"]
    if base_real in domains:
        raise InvalidArgument(
            f"{base} is itself a disk of {', '.join(u['domain'] for u in domains[base_real])}: "
            "it is not only a base; stop using it as a disk first")
    running = [p for p in users["direct"] if any(u["running"] for u in domains.get(p, []))]
    if running and not live_pull:
        raise InvalidArgument(
            f"{len(running)} overlay(s) of {base} belong to running VMs: "
            f"{'; '.join(_describe_user(p, domains) for p in running)}. Stop them first "
            "(qemu-img cannot rebase an image QEMU has open), or pass live_pull=True to "
            "flatten their overlays live with a block pull")
    copy_image(base_real, new_base)
    rebased = []
    for overlay in users["direct"]:
        uses = domains.get(overlay, [])
        try:
            if overlay in running:
                _pull(conn, overlay, uses, pull_timeout)
                after = images.info(overlay)
                if after["backing_file"]:
                    raise VirtError(f"{overlay} still has backing file {after['backing_file']} after the pull")
                how, backing = "pull", None
            else:
                _with_write(overlay, lambda o=overlay: images.rebase(o, new_base, safe=safe))
                after = images.info(overlay)
                if _real(after["backing_file"] or "") != _real(new_base):
                    raise VirtError(f"{overlay} is backed by {after['backing_file']} after the rebase")
                how, backing = "rebase", after["backing_file"]
        except VirtError as exc:
            done = ", ".join(r["overlay"] for r in rebased) or "none"
            raise VirtError(f"moving {overlay} off {base} failed: {exc} (copy {new_base} kept; "
                            f"overlays already on it: {done})") from exc
        rebased.append({"overlay": overlay, "domains": [u["domain"] for u in uses], "how": how,
                        "backing": backing})
    return {
        "base": base,
        "new_base": new_base,
        "rebased": rebased,
        "indirect": users["indirect"],
        "seconds": round(time.monotonic() - started, 3),
    }


def refuse_if_used(conn, paths, images_dir, ignore=(), domain=None):
    """Raise :class:`InvalidArgument` if any of ``paths`` is the base of an image or a disk
    of a domain; the images in ``ignore`` and the disks of ``domain`` do not count."""
    ignore = {_real(p) for p in ignore}
    stock = inventory(conn, images_dir)
    problems = []
    for path in paths:
        users = find_users(conn, path, images_dir, _inventory=stock)
        overlays = [u for u in users["direct"] + users["indirect"] if _real(u) not in ignore]
        if overlays:
            problems.append(f"{path} is the base of {len(overlays)} image(s): "
                            f"{'; '.join(_describe_user(u, users['domains']) for u in overlays)}")
        others = [u["domain"] for u in users["domains"].get(_real(path), []) if u["domain"] != domain]
        if others:
            problems.append(f"{path} is a disk of {', '.join(sorted(set(others)))}")
    if problems:
        raise InvalidArgument(" / ".join(problems))


def remove(conn, path, images_dir):
    """Delete image ``path`` unless something uses it (see :func:`refuse_if_used`)."""
    path = os.path.abspath(os.fspath(path))
    if not os.path.lexists(path):
        raise NotFound(f"image {path} does not exist")
    if not os.path.isfile(path):
        raise InvalidArgument(f"{path} is not a regular file")
    refuse_if_used(conn, [path], images_dir)
    os.unlink(path)
    return {"path": path, "removed": True}
