"""What of a ``mem`` dictionary a running guest takes at once (``virt.update``).

libvirt changes three things of a running QEMU guest's memory: the balloon target
(``current``, up to the memory the guest was started with: ``setMemoryFlags``) and the
memory cgroup's limits (``soft_limit``, ``hard_limit`` and ``swap_hard_limit``:
``setMemoryParameters``). Everything else of the dictionary (``boot``, ``max``/``slots``,
``min_guarantee``, the backing and huge pages) is only read when QEMU starts, so it is written
to the definition for the next boot, as before. A limit given as None (remove it) waits for
the next boot too.

:func:`split` cuts the differences of a ``mem`` section into parts, each applied by one
libvirt call (:func:`apply`) to the running guest and the definition together; a part the
running guest refuses (no memory cgroup, a hard limit under locked memory...) is written to
the definition only and reported ``next_boot``.
"""

from saltvirt.domain import tuning
from saltvirt.errors import InvalidArgument

try:
    import libvirt
except ImportError:  # split() works without it
    libvirt = None

LIVE = "live"
NEXT_BOOT = "next_boot"
#: A section applied in parts, some live, some on next boot (``virt.update``'s report).
PARTLY_LIVE = "partly live"
#: Keys changed by one libvirt call each on a running guest, in the order applied. A hard
#: limit and the swap limit above it go together: libvirt checks one against the other.
LIVE_GROUPS = (("current",), ("soft_limit",), ("hard_limit", "swap_hard_limit"))
_LIMITS = ("soft_limit", "hard_limit", "swap_hard_limit")


def _live_ok(key, new, live_max_kib, limits):
    if new is None:
        return False  # removing a limit: libvirt has no "unset" for a running guest
    if key == "current":
        return new <= live_max_kib  # the balloon never inflates past the boot memory
    return limits


def limits_settable(dom):
    """Whether the running ``dom`` has memory limits libvirt can change (its memory cgroup):
    without one every limit waits for the next boot, which ``test=True`` then predicts."""
    try:
        dom.memoryParameters(0)
    except libvirt.libvirtError:
        return False
    return True


def subsection(section, keys):
    """A :class:`~saltvirt.domain.tuning.Section` of ``section`` that asks for ``keys`` only."""
    return tuning.Section(section.name, section.fields, {k: section.want[k] for k in keys if k in section.want},
                          {k: section.lists[k] for k in keys if k in section.lists})


def check(section, view):
    """Refuse a ``current`` given without ``boot`` above the boot memory of the definition
    ``view`` (libvirt would silently lower it, and the next call would find it changed again)."""
    if getattr(section, "name", None) != "mem" or "boot" in section.want:
        return
    current = section.want.get("current")
    boot = tuning.Section("mem", section.fields, {"boot": None}).read(view)["boot"]
    if None not in (boot, current) and current > boot:
        raise InvalidArgument(f"mem: current {current} KiB exceeds the VM's boot memory {boot} KiB: "
                              "give boot too (applied on next boot)")


def split(found, live_max_kib, limits=True):
    """``[(keys, live)]``: the differences ``found`` (``{key: (old, new)}`` of a ``mem``
    section) in parts, those a running guest of ``live_max_kib`` KiB takes first (``live``
    True), then the rest (``live`` False), if any. ``limits``: see :func:`limits_settable`."""
    left, parts = dict(found), []
    for group in LIVE_GROUPS:
        keys = [k for k in group if k in left and _live_ok(k, left[k][1], live_max_kib, limits)]
        if keys:
            parts.append((keys, True))
            for key in keys:
                del left[key]
    if left:
        parts.append((list(left), False))
    return parts


def apply(dom, section):
    """Apply a live part of :func:`split` (a :func:`subsection`) to the running guest and its
    definition at once; raises libvirt's error when the guest refuses it (nothing changed)."""
    flags = libvirt.VIR_DOMAIN_AFFECT_LIVE | libvirt.VIR_DOMAIN_AFFECT_CONFIG
    if "current" in section.want:
        dom.setMemoryFlags(section.want["current"], flags)
    params = {k: section.want[k] for k in _LIMITS if k in section.want}
    if params:
        dom.setMemoryParameters(params, flags)


def merged(entry, old, new, when):
    """A section's summary ``entry`` (``{old, new, when}``) with another part of it: ``when``
    stays ``live`` or ``next_boot`` when every part is, else becomes ``partly live`` with the
    keys of each (``live``, ``next_boot``)."""
    if entry["when"] == PARTLY_LIVE:
        whens = {**dict.fromkeys(entry["live"], LIVE), **dict.fromkeys(entry["next_boot"], NEXT_BOOT)}
    else:
        whens = dict.fromkeys(entry["new"], entry["when"])
    whens.update(dict.fromkeys(new, when))
    out = {"old": {**entry["old"], **old}, "new": {**entry["new"], **new}}
    if len(set(whens.values())) == 1:
        return dict(out, when=when)
    return dict(out, when=PARTLY_LIVE, live=[k for k in out["new"] if whens[k] == LIVE],
                next_boot=[k for k in out["new"] if whens[k] == NEXT_BOOT])
