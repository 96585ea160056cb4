"""The classic dictionary forms of ``cpu`` and ``mem``, and ``numatune``, over domain XML views.

Salt 3001-3007's ``virt.init``/``virt.update`` took ``cpu`` and ``mem`` as a number or as a
dictionary (CPU topology, model and NUMA cells; memory sizes, tuning and backing). Each dictionary
is normalised here into a :class:`Section`: a flat ``{key: value}`` of what was asked for, where
every key maps to one place of the domain XML (:data:`CPU_FIELDS`, :data:`MEM_FIELDS`,
:data:`NUMATUNE_FIELDS`) or to a list of elements (CPU features, NUMA cells, huge pages, memory
nodes). The same table writes a :class:`~saltvirt.domain.xmlview.DomainXml` (a new domain, or an
update) and reads it back, so ``virt.update`` compares what libvirt reports with what was asked
for, key by key: a key that was not asked for is neither compared nor touched, and everything
the section does not model stays as it is in the XML.

Sizes take units (``1g``, ``512m``, ``1048576k``); a bare number is MiB, as in the classic
module. They are kept, compared and written in KiB.
"""

import xml.etree.ElementTree as ET  # noqa: S405 (building our own XML)
from dataclasses import dataclass, field

from saltvirt.errors import InvalidArgument
from saltvirt.units import parse_size

#: Classic keys of ``cpu`` that are refused, and why.
CPU_REFUSED = {
    "vcpus": "per-vCPU settings (enabled, hotpluggable, order)",
    "tuning": "CPU tuning (pinning, shares, quotas)",
}

# key: (path below <domain>, attribute or None for the text, kind)
CPU_FIELDS = {
    "maximum": ("vcpu", None, "int"),
    "current": ("vcpu", "current", "int"),
    "placement": ("vcpu", "placement", "str"),
    "cpuset": ("vcpu", "cpuset", "str"),
    "mode": ("cpu", "mode", "str"),
    "match": ("cpu", "match", "str"),
    "check": ("cpu", "check", "str"),
    "model": ("cpu/model", None, "str"),
    "model_fallback": ("cpu/model", "fallback", "str"),
    "model_vendor_id": ("cpu/model", "vendor_id", "str"),
    "vendor": ("cpu/vendor", None, "str"),
    "sockets": ("cpu/topology", "sockets", "int"),
    "cores": ("cpu/topology", "cores", "int"),
    "threads": ("cpu/topology", "threads", "int"),
    "cache_level": ("cpu/cache", "level", "int"),
    "cache_mode": ("cpu/cache", "mode", "str"),
    "iothreads": ("iothreads", None, "int"),
}
MEM_FIELDS = {
    "boot": ("memory", None, "size"),
    "current": ("currentMemory", None, "size"),
    "max": ("maxMemory", None, "size"),
    "slots": ("maxMemory", "slots", "int"),
    "hard_limit": ("memtune/hard_limit", None, "size"),
    "soft_limit": ("memtune/soft_limit", None, "size"),
    "swap_hard_limit": ("memtune/swap_hard_limit", None, "size"),
    "min_guarantee": ("memtune/min_guarantee", None, "size"),
    "nosharepages": ("memoryBacking/nosharepages", None, "flag"),
    "locked": ("memoryBacking/locked", None, "flag"),
    "discard": ("memoryBacking/discard", None, "flag"),
    "source": ("memoryBacking/source", "type", "str"),
    "access": ("memoryBacking/access", "mode", "str"),
    "allocation": ("memoryBacking/allocation", "mode", "str"),
}
NUMATUNE_FIELDS = {
    "memory_mode": ("numatune/memory", "mode", "str"),
    "memory_nodeset": ("numatune/memory", "nodeset", "str"),
    "memory_placement": ("numatune/memory", "placement", "str"),
}
_CHOICES = {
    "placement": ("static", "auto"),
    "mode": ("custom", "host-model", "host-passthrough", "maximum"),
    "match": ("minimum", "exact", "strict"),
    "check": ("none", "partial", "full"),
    "model_fallback": ("allow", "forbid"),
    "cache_mode": ("emulate", "passthrough", "disable"),
    "source": ("anonymous", "file", "memfd"),
    "access": ("shared", "private"),
    "allocation": ("immediate", "ondemand"),
    "memory_mode": ("strict", "preferred", "interleave", "restrictive"),
    "memory_placement": ("static", "auto"),
}
_FEATURE_POLICIES = ("force", "require", "optional", "disable", "forbid")


def kib(value, what):
    """``value`` (a size; a bare number is MiB) in KiB; an error naming ``what`` if it is not one."""
    try:
        size = parse_size(value, "M")
    except InvalidArgument as exc:
        raise InvalidArgument(f"{what}: {exc}") from None
    if size % 1024 or size <= 0:
        raise InvalidArgument(f"{what}: {value!r} must be a positive whole number of KiB")
    return size // 1024


def _int(value, what, low=1):
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).isdigit() or int(value) < low:
        raise InvalidArgument(f"{what} must be an integer >= {low}, not {value!r}")
    return int(value)


def _cpuset(value, what):
    text = str(value).replace(" ", "")
    ok = text and all(part.lstrip("^").replace("-", "", 1).isdigit() for part in text.split(","))
    if not ok:
        raise InvalidArgument(f"{what} {value!r} is not a CPU/node set like '0-3,^2'")
    return text


@dataclass
class Section:
    """What one argument (``cpu``, ``mem``, ``numatune``) asks of a domain's XML."""

    name: str
    fields: dict
    want: dict = field(default_factory=dict)  # flat key -> value, only what was asked for
    lists: dict = field(default_factory=dict)  # 'features' | 'numa' | 'hugepages' | 'memnodes' -> value

    def read(self, view):
        """The section's keys as ``view`` has them (only the keys this section manages)."""
        have = {key: _get(view, *self.fields[key]) for key in self.want}
        if "current" in have and have["current"] is None and self.name == "cpu" and self.want["current"] is not None:
            have["current"] = _get(view, *self.fields["maximum"])  # libvirt drops current == maximum
        for key in self.lists:
            have[key] = _LIST_IO[key][0](view)
        return have

    def write(self, view):
        """Set every key asked for in ``view``; other elements and attributes stay."""
        for key, value in self.want.items():
            _set(view, *self.fields[key], value)
        for key, value in self.lists.items():
            _LIST_IO[key][1](view, value)
        cpu = view.find("cpu") if self.name == "cpu" else None
        if cpu is not None and not (cpu.attrib or len(cpu)):
            view.remove_path("cpu")  # all its settings removed: libvirt's default CPU

    def differences(self, view):
        """``{key: (have, want)}`` for each key ``view`` does not have as asked for."""
        have, out = self.read(view), {}
        defaults = CPU_NULL_DEFAULTS if self.name == "cpu" else {}
        for key, value in {**self.want, **self.lists}.items():
            if value is None and have.get(key) in defaults.get(key, ()):
                continue  # removed, and libvirt wrote its default back
            if not _same(key, have.get(key), value):
                out[key] = (have.get(key), value)
        return out


def _same(key, have, want):
    if want is None and key in _LIST_IO:  # a list given as null: none left
        return not have
    if key == "features":  # only the features asked for; libvirt may list more
        return all((have or {}).get(name) == policy for name, policy in want.items())
    if key == "numa":
        cells = {c["id"]: c for c in have or []}
        return all(c["id"] in cells and all(cells[c["id"]].get(k) == v for k, v in c.items()) for c in want)
    return have == want


# --------------------------------------------------------------------------- reading/writing one key


def _get(view, path, attr, kind):
    elem = view.find(path)
    if kind == "flag":
        return elem is not None
    if elem is None:
        return None
    raw = elem.get(attr) if attr else (elem.text or "").strip() or None
    if raw is None:
        return None
    if kind == "size":
        return parse_size(raw, elem.get("unit", "KiB")) // 1024
    return int(raw) if kind == "int" and raw.isdigit() else raw


def _set(view, path, attr, kind, value):
    if kind == "flag":
        if value and view.find(path) is None:
            view.make(path)
        elif not value:
            view.remove_path(path)
        return
    if value is None:  # the classic "null": remove the setting
        elem = view.find(path)
        if elem is not None and attr:
            elem.attrib.pop(attr, None)
        if elem is not None and (not attr or not (elem.attrib or len(elem) or (elem.text or "").strip())):
            view.remove_path(path)  # an element left empty (<topology/>) would mean something else
        return
    elem = view.make(path)
    if attr:
        elem.set(attr, str(value))
        return
    elem.text = str(value)
    if kind == "size":
        elem.set("unit", "KiB")


def _read_features(view):
    return {f.get("name"): f.get("policy", "require") for f in view.element.findall("cpu/feature")}


def _write_features(view, features):
    if features is None:  # features: null removes them all
        for elem in view.element.findall("cpu/feature"):
            view.element.find("cpu").remove(elem)
        return
    cpu = view.make("cpu")
    existing = {f.get("name"): f for f in cpu.findall("feature")}
    for name, policy in features.items():
        elem = existing.get(name)
        if elem is None:
            elem = _child(cpu, "feature", before=("numa",))
        elem.set("policy", policy)
        elem.set("name", name)


def _read_cells(view):
    cells = []
    for cell in view.element.findall("cpu/numa/cell"):
        info = {"id": int(cell.get("id", len(cells))), "cpus": cell.get("cpus")}
        if cell.get("memory"):
            info["memory"] = parse_size(cell.get("memory"), cell.get("unit", "KiB")) // 1024
        for attr, key in (("discard", "discard"), ("memAccess", "mem_access")):
            if cell.get(attr):
                info[key] = cell.get(attr) == "yes" if key == "discard" else cell.get(attr)
        cells.append(info)
    return cells


def _write_cells(view, cells):
    if cells is None:  # numa: null
        view.remove_path("cpu/numa")
        return
    numa = view.make("cpu/numa")
    for old in numa.findall("cell"):
        numa.remove(old)
    for cell in cells:
        attrs = {"id": str(cell["id"]), "cpus": cell["cpus"], "memory": str(cell["memory"]), "unit": "KiB"}
        if "discard" in cell:
            attrs["discard"] = "yes" if cell["discard"] else "no"
        if "mem_access" in cell:
            attrs["memAccess"] = cell["mem_access"]
        _child(numa, "cell").attrib.update(attrs)


def _read_pages(view):
    return [{k: v for k, v in (("size", _page_kib(p)), ("nodeset", p.get("nodeset"))) if v is not None}
            for p in view.element.findall("memoryBacking/hugepages/page")]


def _page_kib(page):
    return parse_size(page.get("size"), page.get("unit", "KiB")) // 1024 if page.get("size") else None


def _write_pages(view, pages):
    hugepages = view.make("memoryBacking/hugepages")
    for old in list(hugepages):
        hugepages.remove(old)
    for page in pages:
        elem = _child(hugepages, "page")
        if "size" in page:
            elem.attrib.update(size=str(page["size"]), unit="KiB")
        if "nodeset" in page:
            elem.set("nodeset", page["nodeset"])


def _read_memnodes(view):
    return [{"cellid": int(n.get("cellid")), "mode": n.get("mode"), "nodeset": n.get("nodeset")}
            for n in view.element.findall("numatune/memnode")]


def _write_memnodes(view, memnodes):
    numatune = view.make("numatune")
    for old in numatune.findall("memnode"):
        numatune.remove(old)
    for node in memnodes:
        _child(numatune, "memnode").attrib.update(cellid=str(node["cellid"]), mode=node["mode"],
                                                  nodeset=node["nodeset"])


def _child(parent, tag, before=()):
    """A new ``<tag>`` in ``parent``, before its first child among ``before`` (schema order)."""
    elem = ET.Element(tag)
    index = next((i for i, c in enumerate(parent) if c.tag in before), len(parent))
    parent.insert(index, elem)
    return elem


def _element_io(path):
    """Read/write of an element removed as a whole (``topology: null``): libvirt may add
    attributes of its own (``dies``, ``clusters``) that a key-by-key removal would leave."""
    def read(view):
        elem = view.find(path)
        return None if elem is None else dict(elem.attrib)

    def write(view, value):
        if value is None:
            view.remove_path(path)
    return read, write


_LIST_IO = {
    "topology": _element_io("cpu/topology"),
    "cache": _element_io("cpu/cache"),
    "features": (_read_features, _write_features),
    "numa": (_read_cells, _write_cells),
    "hugepages": (_read_pages, _write_pages),
    "memnodes": (_read_memnodes, _write_memnodes),
}


# --------------------------------------------------------------------------- normalising arguments


def _refuse_unknown(value, known, refused, what):
    for key in value:
        if key in refused:
            raise InvalidArgument(f"{what}:{key} ({refused[key]}) is not supported by salt-virt: remove it")
    unknown = sorted(str(k) for k in value if k not in known)
    if unknown:
        raise InvalidArgument(f"{what}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")


def _choice(key, value, what):
    if key in _CHOICES and value not in _CHOICES[key]:
        raise InvalidArgument(f"{what}: {value!r} is not one of {', '.join(_CHOICES[key])}")
    return value


def cpu_section(cpu, update=False):
    """``(vCPU count, Section or None)`` for ``cpu``: a number of vCPUs, or the classic dict.

    ``update``: the dict changes an existing domain, as :func:`mem_section`'s: a key given as
    None (``null``) removes that setting (``topology``, ``cache``, ``features`` and ``numa`` as a
    whole; what libvirt then writes back, :data:`CPU_NULL_DEFAULTS`, satisfies it; the model's
    name cannot be removed), and without ``maximum``/``current``/``topology`` the vCPU count stays
    as it is (the count returned is None). A new domain ignores null keys, as before."""
    if not isinstance(cpu, dict):
        try:
            count = int(cpu)
        except (TypeError, ValueError, OverflowError):
            raise InvalidArgument(f"cpu and mem must be integers (got cpu={cpu!r})") from None
        if count < 1 or isinstance(cpu, bool):
            raise InvalidArgument(f"cpu must be at least 1, not {cpu!r}")
        return count, None
    cpu = _classic_feature(cpu)
    _refuse_unknown(cpu, ("placement", "cpuset", "current", "maximum", "mode", "match", "check", "model",
                          "vendor", "topology", "cache", "features", "numa", "iothreads"), CPU_REFUSED, "cpu")
    if "maximum" in cpu and cpu["maximum"] is None:
        raise InvalidArgument("cpu: maximum cannot be removed (null): give a number of vCPUs")
    if "model" in cpu and (cpu["model"] is None or (isinstance(cpu["model"], dict) and "name" in cpu["model"]
                                                    and cpu["model"]["name"] is None)):
        raise InvalidArgument("cpu:model cannot be removed (null): libvirt gives a CPU without a model its default "
                              "model; give the model wanted, or mode: host-model / host-passthrough")
    want, lists = _cpu_removals(cpu) if update else ({}, {})
    for key in ("placement", "mode", "match", "check", "vendor"):
        if cpu.get(key) is not None:
            want[key] = _choice(key, str(cpu[key]), f"cpu:{key}")
    for key in ("current", "maximum", "iothreads"):
        if cpu.get(key) is not None:
            want[key] = _int(cpu[key], f"cpu:{key}")
    if cpu.get("cpuset") is not None:
        want["cpuset"] = _cpuset(cpu["cpuset"], "cpu:cpuset")
    model = cpu.get("model")
    if model is not None:
        model = model if isinstance(model, dict) else {"name": model}
        _refuse_unknown(model, ("name", "fallback", "vendor_id"), {}, "cpu:model")
        for key, flat in (("name", "model"), ("fallback", "model_fallback"), ("vendor_id", "model_vendor_id")):
            if model.get(key) is not None:
                want[flat] = _choice(flat, str(model[key]), f"cpu:model:{key}")
            elif update and key in model:
                want[flat] = None
    _sub_dict(cpu, "topology", ("sockets", "cores", "threads"), want, lambda k, v: _int(v, f"cpu:topology:{k}"))
    _sub_dict(cpu, "cache", ("level", "mode"), want,
              lambda k, v: _int(v, "cpu:cache:level") if k == "level" else _choice("cache_mode", v, "cpu:cache:mode"),
              prefix="cache_")
    if cpu.get("features"):
        lists["features"] = _features(cpu["features"])
    if cpu.get("numa"):
        lists["numa"] = _cells(cpu["numa"])
    if update and all(cpu.get(key) is None for key in ("maximum", "current", "topology")):
        return None, Section("cpu", CPU_FIELDS, want, lists)  # the vCPU count stays as it is
    return _vcpu_count(want), Section("cpu", CPU_FIELDS, want, lists)


#: What libvirt writes back for a ``cpu`` setting removed (null): a null is then satisfied.
CPU_NULL_DEFAULTS = {"placement": ("static",), "mode": ("custom",), "match": ("exact",), "check": ("none", "partial"),
                     "model_fallback": ("allow",)}

#: What a ``cpu`` key given as null removes (an existing domain).
_CPU_NULLS = ("placement", "cpuset", "current", "mode", "match", "check", "vendor", "iothreads")


def _cpu_removals(cpu):
    """``(want, lists)`` removing what ``cpu`` gives as null; null inside ``topology`` or
    ``cache`` is refused (libvirt needs their attributes together: remove the whole)."""
    want, lists = {}, {}
    for key, value in cpu.items():
        if value is None and key in _CPU_NULLS:
            want[key] = None
        elif value is None and key in ("topology", "cache", "features", "numa"):
            lists[key] = None
        elif key in ("topology", "cache") and isinstance(value, dict) and None in value.values():
            raise InvalidArgument(f"cpu:{key}: a single key cannot be removed (null): give {key}: null to remove "
                                  f"the {key}, or all its values")
    return want, lists


def _sub_dict(parent, name, keys, want, convert, prefix=""):
    value = parent.get(name)
    if value is None:
        return
    if not isinstance(value, dict):
        raise InvalidArgument(f"cpu:{name} must be a dict of {', '.join(keys)}")
    _refuse_unknown(value, keys, {}, f"cpu:{name}")
    for key in keys:
        if value.get(key) is not None:
            want[prefix + key] = convert(key, value[key])


def _vcpu_count(want):
    topology = [want.get(k) for k in ("sockets", "cores", "threads")]
    product = None
    if any(topology):
        product = 1
        for count in topology:
            product *= count or 1
    maximum = want.get("maximum") or product or want.get("current")
    if maximum is None:
        raise InvalidArgument("cpu: give maximum, current or topology: the number of vCPUs is not known")
    if product is not None and product != maximum:
        raise InvalidArgument(f"cpu: topology gives {product} vCPUs (sockets x cores x threads), maximum {maximum}: "
                              "make them agree")
    if (want.get("current") or maximum) > maximum:
        raise InvalidArgument(f"cpu: current {want['current']} exceeds maximum {maximum}")
    want["maximum"] = maximum
    return maximum


def _classic_feature(cpu):
    """The classic state documentation writes one feature as ``feature: {name, policy}``: the
    same as ``features: {name: policy}``."""
    if "feature" not in cpu:
        return cpu
    one = cpu["feature"]
    if not isinstance(one, dict) or "name" not in one or set(one) - {"name", "policy"}:
        raise InvalidArgument(f"cpu:feature={one!r} must be {{name, policy}} (or give features: {{name: policy}})")
    features = _features(cpu.get("features") or {})
    if str(one["name"]) in features:
        raise InvalidArgument(f"cpu: feature {one['name']} given in both feature and features: give it once")
    features[str(one["name"])] = one.get("policy") or "require"
    return {**{k: v for k, v in cpu.items() if k != "feature"}, "features": features}


def _features(features):
    if isinstance(features, (list, tuple)):  # [pcid, ...]: required
        features = {name: "require" for name in features}
    if not isinstance(features, dict):
        raise InvalidArgument("cpu:features must be a dict of feature name: policy")
    out = {}
    for name, policy in features.items():
        policy = policy or "require"
        if policy not in _FEATURE_POLICIES:
            raise InvalidArgument(f"cpu:features:{name}: {policy!r} is not one of {', '.join(_FEATURE_POLICIES)}")
        out[str(name)] = policy
    return out


def _cells(numa):
    if not isinstance(numa, dict):
        raise InvalidArgument("cpu:numa must be a dict of cell id: {cpus, memory, discard, memAccess}")
    cells = []
    for cell_id, cell in sorted(numa.items(), key=lambda item: int(item[0])):
        what = f"cpu:numa:{cell_id}"
        cell = cell or {}
        _refuse_unknown(cell, ("cpus", "memory", "discard", "memAccess"),
                        {"distances": "NUMA distances"}, what)
        if cell.get("cpus") is None or cell.get("memory") is None:
            raise InvalidArgument(f"{what}: cpus and memory must be given")
        info = {"id": _int(cell_id, what, low=0), "cpus": _cpuset(cell["cpus"], f"{what}:cpus"),
                "memory": kib(cell["memory"], f"{what}:memory")}
        if cell.get("discard") is not None:
            info["discard"] = bool(cell["discard"])
        if cell.get("memAccess") is not None:
            info["mem_access"] = _choice("access", cell["memAccess"], f"{what}:memAccess")
        cells.append(info)
    return cells


def mem_section(mem, update=False):
    """``(MiB at boot, Section or None)`` for ``mem``: a size (bare number: MiB), or the classic dict.

    ``update``: the dict changes an existing domain, as the classic ``virt.update``: a key given
    as None (``null``) removes that setting, and without ``boot`` the memory size stays as it is
    (the MiB returned are None; ``current`` alone is the new balloon target)."""
    if not isinstance(mem, dict):
        if isinstance(mem, (int, float)) and not isinstance(mem, bool) and mem < 1:
            raise InvalidArgument(f"mem must be a positive number of MiB, not {mem!r}")
        return kib(mem, "mem") // 1024, None
    _refuse_unknown(mem, tuple(MEM_FIELDS) + ("hugepages",), {}, "mem")
    if any(key in mem and mem[key] is None for key in ("boot", "current")):
        raise InvalidArgument("mem: boot and current cannot be removed (null): give a size")
    want, lists = _mem_values(mem, update)
    if mem.get("hugepages") is not None:
        lists["hugepages"] = _pages(mem["hugepages"])
    if update and want.get("boot") is None:
        # An existing VM keeps its boot memory; current alone moves only the balloon target
        # (as the classic virt.update), which a running guest takes at once (domain.memlive).
        if want.get("max") is not None:
            raise InvalidArgument("mem: max needs boot given with it")
        return None, Section("mem", MEM_FIELDS, {k: v for k, v in want.items() if k != "boot"}, lists)
    want.setdefault("boot", want.get("current"))
    want.setdefault("current", want.get("boot"))
    if want["boot"] is None or want["current"] is None:
        raise InvalidArgument("mem: give boot or current: the memory of the VM is not known")
    if want["current"] > want["boot"]:
        raise InvalidArgument(f"mem: current {want['current']} KiB exceeds boot {want['boot']} KiB")
    if ("max" in want) != ("slots" in want):
        raise InvalidArgument("mem: max and slots go together (memory hot-plug)")
    if (want.get("max") or want["boot"]) < want["boot"]:
        raise InvalidArgument("mem: max must be at least boot")
    if want["boot"] < 1024:
        raise InvalidArgument("mem: at least 1 MiB")
    return want["boot"] // 1024, Section("mem", MEM_FIELDS, want, lists)


def _mem_values(mem, update):
    """The flat values of a ``mem`` dict; with ``update`` a None value is kept: remove it."""
    want, lists = {}, {}
    for key, (_path, _attr, kind) in MEM_FIELDS.items():
        value = mem.get(key)
        if value is None:
            if update and key in mem:
                want[key] = False if kind == "flag" else None
            continue
        if kind == "size":
            want[key] = kib(value, f"mem:{key}")
        elif kind == "int":
            want[key] = _int(value, f"mem:{key}")
        elif kind == "flag":
            want[key] = bool(value)
        else:
            want[key] = _choice(key, str(value), f"mem:{key}")
    return want, lists


def _pages(pages):
    if isinstance(pages, dict):
        pages = [pages]
    if not isinstance(pages, list):
        raise InvalidArgument("mem:hugepages must be a list of {size, nodeset}")
    out = []
    for page in pages:
        _refuse_unknown(page, ("size", "nodeset"), {}, "mem:hugepages")
        item = {}
        if page.get("size") is not None:
            item["size"] = kib(page["size"], "mem:hugepages:size")
        if page.get("nodeset") is not None:
            item["nodeset"] = _cpuset(page["nodeset"], "mem:hugepages:nodeset")
        out.append(item)
    return out


def numatune_section(numatune):
    """The :class:`Section` of the classic ``numatune`` (``{memory: {mode, nodeset, placement},
    memnodes: {cell id: {mode, nodeset}}}``), or None."""
    if numatune is None:
        return None
    if not isinstance(numatune, dict):
        raise InvalidArgument("numatune must be a dict with memory and/or memnodes")
    _refuse_unknown(numatune, ("memory", "memnodes"), {}, "numatune")
    want, lists = {}, {}
    memory = numatune.get("memory") or {}
    _refuse_unknown(memory, ("mode", "nodeset", "placement"), {}, "numatune:memory")
    for key in ("mode", "placement"):
        if memory.get(key) is not None:
            want[f"memory_{key}"] = _choice(f"memory_{key}", memory[key], f"numatune:memory:{key}")
    if memory.get("nodeset") is not None:
        want["memory_nodeset"] = _cpuset(memory["nodeset"], "numatune:memory:nodeset")
    memnodes = numatune.get("memnodes")
    if memnodes:
        lists["memnodes"] = []
        for cell_id, node in sorted(memnodes.items(), key=lambda item: int(item[0])):
            what = f"numatune:memnodes:{cell_id}"
            _refuse_unknown(node or {}, ("mode", "nodeset"), {}, what)
            if not node or node.get("nodeset") is None:
                raise InvalidArgument(f"{what}: nodeset must be given")
            lists["memnodes"].append({"cellid": _int(cell_id, what, low=0),
                                      "mode": _choice("memory_mode", node.get("mode", "strict"), f"{what}:mode"),
                                      "nodeset": _cpuset(node["nodeset"], f"{what}:nodeset")})
    if not want and not lists:
        raise InvalidArgument("numatune: empty: give memory and/or memnodes")
    return Section("numatune", NUMATUNE_FIELDS, want, lists)
