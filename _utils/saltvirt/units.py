"""Size parsing shared by images, domains and profiles.

Sizes are binary, as in qemu-img and libvirt: ``K`` = KiB, ``M`` = MiB, ``G`` = GiB, ``T`` = TiB.
``8G``, ``8GiB``, ``8gb`` and ``8 G`` all mean 8 GiB; a bare number uses ``default_unit``.
"""

import math
import re

from saltvirt.errors import InvalidArgument

_FACTORS = {
    "": 1,
    "B": 1,
    "K": 1024,
    "M": 1024**2,
    "G": 1024**3,
    "T": 1024**4,
    "P": 1024**5,
}

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(?:I?B)?\s*$", re.IGNORECASE)


def parse_size(value, default_unit="B"):
    """Return ``value`` in bytes (an int).

    ``value`` is an int/float (counted in ``default_unit``) or a string such as ``'512M'``,
    ``'8G'``, ``'1.5GiB'``, ``'1048576'`` (a suffix wins over ``default_unit``).
    ``default_unit``: ``'B'``/``'bytes'``, ``'K'``/``'KiB'``, ``'M'``/``'MiB'``, ``'G'``/``'GiB'``,
    ... always binary (libvirt's ``unit`` attribute values such as ``KiB`` work). Negative,
    fractional-byte and unknown values raise :class:`InvalidArgument`.
    """
    unit = str(default_unit or "").strip().upper()
    unit = "" if unit in ("B", "BYTE", "BYTES") else unit.removesuffix("B").removesuffix("I")
    if unit not in _FACTORS:
        raise InvalidArgument(f"unknown size unit {default_unit!r}")
    if isinstance(value, bool) or value is None:
        raise InvalidArgument(f"invalid size {value!r}")
    if isinstance(value, (int, float)):
        number, factor = value, _FACTORS[unit]
    elif isinstance(value, str):
        match = _SIZE_RE.match(value)
        if not match:
            raise InvalidArgument(
                f"invalid size {value!r}: use bytes or a number with K, M, G or T (e.g. '8G')"
            )
        number = float(match.group(1)) if "." in match.group(1) else int(match.group(1))
        suffix = match.group(2).upper()
        factor = _FACTORS[suffix] if suffix else _FACTORS[unit]
    else:
        raise InvalidArgument(f"invalid size {value!r}")
    if isinstance(number, float) and not math.isfinite(number):
        raise InvalidArgument(f"invalid size {value!r}: not a finite number")
    if number < 0:
        raise InvalidArgument(f"invalid size {value!r}: negative")
    total = number * factor
    if total != int(total):
        raise InvalidArgument(f"invalid size {value!r}: not a whole number of bytes")
    return int(total)


def format_size(nbytes):
    """Render a byte count the short binary way (``'8G'``, ``'512M'``, ``'1536K'``, ``'1000'``)."""
    nbytes = int(nbytes)
    for suffix in ("T", "G", "M", "K"):
        factor = _FACTORS[suffix]
        if nbytes and nbytes % factor == 0:
            return f"{nbytes // factor}{suffix}"
    return str(nbytes)
