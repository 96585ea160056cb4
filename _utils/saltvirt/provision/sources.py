"""Where a new VM's disks come from: images fetched or found under the roots, inspected before use.

Images are untrusted input (a tenant may name one, an image source may be compromised): every
one is inspected (:func:`saltvirt.storage.images.inspect_untrusted`) with an explicit format,
local paths must lie under the configured roots, and downloads need a hash unless the operator
says otherwise (``virt:image_policy``).
"""

import contextlib
import hashlib
import json
import os
import re
import time
import urllib.parse
import urllib.request

from saltvirt import fileio
from saltvirt import progress as vprogress
from saltvirt.errors import InvalidArgument
from saltvirt.storage import bases, images, paths, volumes

REMOTE = ("salt://", "http://", "https://", "ftp://")


def is_remote(source):
    return str(source).startswith(REMOTE)


@contextlib.contextmanager
def image_locks(settings, sources):
    """Hold the lock of every remote image in ``sources`` from its download to its last copy.

    The file server's cache is rewritten in place: a concurrent fetch of the same image would
    change the bytes being hashed, inspected or cloned. One lock per image, taken in a fixed
    order, so inits of different images do not wait for each other.
    """
    lock_dir = settings.cache_path("image-locks")
    os.makedirs(lock_dir, mode=0o700, exist_ok=True)
    keys = sorted({hashlib.sha256(str(s).encode()).hexdigest()[:24] for s in sources if is_remote(s)})
    with contextlib.ExitStack() as stack:
        for key in keys:
            stack.enter_context(fileio.locked(os.path.join(lock_dir, f"{key}.lock")))
        yield


def file_hash(path, algo="sha256"):
    try:
        digest = hashlib.new(algo)
    except ValueError:
        raise InvalidArgument(f"unknown hash type {algo!r}: use sha256, sha512 or md5") from None
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_hash(path, expected, source):
    algo, _, digest = str(expected).partition("=")
    if not digest:
        algo, digest = "sha256", algo
    actual = file_hash(path, algo)
    if actual.lower() != digest.lower():
        raise InvalidArgument(f"image {source}: {algo} is {actual}, expected {digest}")


def cache_destination(cachedir, url, saltenv="base"):
    """Where Salt's file client caches ``url`` (salt:// under ``files``, downloads under
    ``extrn_files``), or None: only progress depends on it, the fetch itself says where it put
    the file."""
    parsed = urllib.parse.urlparse(str(url))
    if parsed.scheme == "salt":
        path, _, query = f"{parsed.netloc}{parsed.path}".partition("?")
        env = urllib.parse.parse_qs(query or parsed.query).get("saltenv", [saltenv])[0]
        return os.path.join(cachedir, "files", env, path.lstrip("/"))
    if parsed.scheme in ("http", "https", "ftp"):
        netloc = parsed.netloc.split("@")[-1].replace(":", "")
        name = f"{parsed.path}-{parsed.query}" if parsed.query else parsed.path
        return os.path.join(cachedir, "extrn_files", saltenv, netloc, name.lstrip("/"))
    return None


def http_size(url, timeout=10):
    """The Content-Length of an http(s) ``url`` by a HEAD request, or None (progress only)."""
    if not str(url).startswith(("http://", "https://")):
        return None
    try:
        request = urllib.request.Request(str(url), method="HEAD")  # noqa: S310 - http(s) only
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310 - http(s) only
            length = answer.headers.get("Content-Length")
        return int(length) if length else None
    except (OSError, ValueError):
        return None


def written_since(dest, since):
    """A probe for :func:`saltvirt.progress.watching`: the bytes a fetch into ``dest`` has written
    since ``since`` (epoch seconds), counting the partial files Salt writes first (``.part`` for
    downloads, ``.___atomic_write*`` for the file server)."""

    def probe():
        directory, base = os.path.split(dest)
        best = None
        with contextlib.suppress(OSError):
            for entry in os.scandir(directory):
                if entry.name == base or entry.name == f"{base}.part" or entry.name.startswith(".___atomic_write"):
                    st = entry.stat(follow_symlinks=False)
                    if st.st_mtime >= since - 1:
                        best = max(best or 0, st.st_size)
        return best

    return probe


def fetch(settings, image, saltenv, progress=None):
    """``settings.salt.fetch`` of ``image``, with its progress (step ``fetch``) sent to ``progress``
    from the growing cache file while Salt's file client works."""
    dest = cache_destination(settings.opts.get("cachedir", ""), image, saltenv) if progress else None
    if progress is None or dest is None:
        return settings.salt.fetch(image, saltenv)
    # A file already cached is what the fetch almost always keeps: its size spares asking the
    # master (a round trip on every init); a changed file only makes the percentages approximate.
    total = os.path.getsize(dest) if os.path.isfile(dest) else settings.salt.remote_size(image, saltenv)
    # No 0 % report: a fetch that moves bytes is reported by the watcher within half a second,
    # one that finds the cache current (the usual case) only by its final line.
    meter = vprogress.Meter(progress, vprogress.FETCH, what=vprogress.shown(image), total=total)
    with vprogress.watching(written_since(dest, time.time()), meter):
        local = settings.salt.fetch(image, saltenv)
    if local:
        with contextlib.suppress(OSError):
            meter.finish(os.path.getsize(local))
    return local


def resolve(settings, roots, image, saltenv="base", image_hash=None, progress=None):
    """``(local path, format)`` of ``image``, inspected; call it inside :func:`image_locks`.

    salt:// and http(s)/ftp go through the file server's cache; downloads need ``image_hash``
    unless ``virt:image_policy:require_hash`` is False. A local path must lie under ``roots``.
    ``progress(dict)`` receives the fetch's progress.
    """
    if image is None:
        return None, None
    image = str(image)
    policy = settings.image_policy
    if is_remote(image):
        if not image.startswith("salt://") and not image_hash and policy["require_hash"]:
            raise InvalidArgument(
                f"image {image}: a download needs image_hash=sha256=<digest> (or the operator's "
                "virt:image_policy:require_hash: False)"
            )
        local = fetch(settings, image, saltenv, progress)
        if not local:
            raise InvalidArgument(f"image {image} could not be fetched (not on the file server?)")
    else:
        if not os.path.isabs(image):
            raise InvalidArgument(f"image {image!r} must be salt://, http(s):// or an absolute path")
        local = roots.image(image)
        if not os.path.exists(local):
            raise InvalidArgument(f"image {image} does not exist on {settings.minion_id}")
        if progress is not None:
            # Nothing to fetch: the operator still sees the step and its size.
            vprogress.Meter(progress, vprogress.FETCH, what=vprogress.shown(image)).finish(os.path.getsize(local))
    if image_hash:
        verify_hash(local, image_hash, image)
    try:
        found = images.inspect_untrusted(local, policy["allow_backing"], policy["max_virtual_size"])
    except InvalidArgument as exc:
        raise InvalidArgument(f"image {image}: {exc}") from exc
    return local, found["format"]


def base_for_overlay(settings, image, cached, fmt=None, progress=None, saltenv="base"):
    """Overlays of a file-server image use a read-only copy under ``virt:images/base``.

    The cache may be replaced when the master's file changes; overlays must keep the exact
    bytes they were built on, so they get their own content-addressed copy. The copy made (or
    found) for a ``salt://`` image is recorded as that image's last version (:func:`known_base`).
    """
    if not is_remote(image):
        return cached
    sha256 = file_hash(cached)
    base_dir = os.path.join(settings.images_dir, "base")
    name, ext = os.path.splitext(os.path.basename(cached))
    base = os.path.join(base_dir, f"{name}-{sha256[:16]}{ext}")
    os.makedirs(base_dir, mode=0o755, exist_ok=True)
    # World-readable: a shared base holds no VM's secrets and every QEMU must read it.
    base = images.shared_base(cached, base, source_format=fmt, progress=progress,
                              copy_limits=settings.copy_limits)["filename"]
    if str(image).startswith("salt://"):
        record = _base_record(settings, image, saltenv)
        os.makedirs(os.path.dirname(record), mode=0o700, exist_ok=True)
        fileio.write_json(record, {"image": str(image), "saltenv": saltenv, "sha256": sha256, "base": base})
    return base


def _base_record(settings, image, saltenv):
    key = hashlib.sha256(f"{saltenv}\0{image}".encode()).hexdigest()[:32]
    return os.path.join(settings.images_dir, "base", ".sources", f"{key}.json")


def known_base(settings, image, saltenv, master_hash):
    """The shared base of ``salt://`` ``image`` without asking the master, or None.

    ``master_hash`` (``sha256=<digest>``) is the master's hash of the file as ``salt-run
    virt.init`` read it from the file server. When the last version of ``image`` this hypervisor
    fetched has that digest and its base is still there, the base is that version: the fetch
    (a round trip to the master and a hash of the cached file) is skipped. Any other hint,
    from anyone, only means a normal fetch: a caller can never select a version other than the
    last one fetched here.
    """
    if not master_hash or not str(image).startswith("salt://"):
        return None
    algo, _, digest = str(master_hash).partition("=")
    if algo.lower() != "sha256" or not re.fullmatch(r"[0-9a-f]{64}", digest.lower()):
        return None
    try:
        with open(_base_record(settings, image, saltenv), encoding="utf-8") as fh:
            record = json.load(fh)
    except (OSError, ValueError):
        return None
    base = record.get("base") if isinstance(record, dict) else None
    if (record.get("image"), record.get("saltenv"), record.get("sha256")) != (str(image), saltenv, digest.lower()) \
            or not isinstance(base, str) or os.path.dirname(base) != os.path.join(settings.images_dir, "base") \
            or not os.path.isfile(base):
        return None
    return base


def check_disk_files(settings, conn, specs, roots, formats):
    """Disk specs of a call with every host path they name checked against ``roots``.

    Names become file names (validated like VM names); ``pool`` must be a pool's or an image
    root's directory; ``source_file`` must lie under the attach roots, be no domain's disk,
    and is inspected like an image when its format is not given (``formats`` gets it).
    """
    checked, in_use = [], None
    policy = settings.image_policy
    for spec in specs:
        spec = dict(spec)
        paths.validate_disk_name(spec.get("name"))
        if spec.get("pool") and not str(spec["pool"]).startswith("/"):  # a libvirt pool's name
            kind, where = volumes.disk_pool(conn, spec["pool"], settings.pool_policy)
            spec["pool" if kind == "dir" else "volume_pool"] = where
            if kind != "dir":
                del spec["pool"]
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
        checked.append(spec)
    return checked


def disk_image(settings, roots, spec, saltenv, formats, progress=None):
    """The local, inspected image of a disk spec's own ``image`` (a base for overlays)."""
    local, fmt = resolve(settings, roots, spec["image"], saltenv, spec.get("image_hash"), progress)
    if spec.get("overlay_image"):
        local = base_for_overlay(settings, spec["image"], local, fmt, progress, saltenv)
    formats[local] = fmt
    return local


def pem(value, roots):
    """A PEM key given as text or as a file under the attach roots."""
    value = str(value)
    if "-----BEGIN" in value:
        return value
    path = roots.attach(value, "seed key")
    if os.path.isfile(path):
        with open(path) as fh:
            return fh.read()
    raise InvalidArgument(f"{value!r} is neither a PEM key nor a key file on this minion")
