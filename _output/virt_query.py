"""
Outputter for ``salt-run virt.query`` / ``virt.vm_info``: Salt Virt's classic text layout.

.. code-block:: text

    hypervisor1
        centos1
            CPU: 2
            Memory: 524288
            State: running
            Graphics: vnc - hypervisor1:5900
            Disk - vda:
                Size: 2.0G
                File: /srv/salt-images/centos1/system.qcow2
                File Format: qcow2
            Nic - 52:54:00:98:08:77:
                Source: br0
                Type: bridge

``--out=json`` (or yaml) bypasses it and prints the structured data.
"""

__virtualname__ = "virt_query"


def __virtual__():
    return __virtualname__


def _size(nbytes):
    if nbytes is None:
        return "unknown"
    value = float(nbytes)
    for unit in ("B", "K", "M", "G", "T"):
        if value < 1024 or unit == "T":
            return f"{value:.1f}{unit}" if unit != "B" else f"{int(value)}B"
        value /= 1024
    return f"{value:.1f}T"


def _vm_lines(name, info, indent):
    pad, pad2, pad3 = " " * indent, " " * (indent + 4), " " * (indent + 8)
    lines = [f"{pad}{name}"]
    lines.append(f"{pad2}CPU: {info.get('cpu')}")
    lines.append(f"{pad2}Memory: {info.get('memory')}")
    lines.append(f"{pad2}State: {info.get('state')}")
    for gfx in info.get("graphics") or []:
        port = gfx.get("port")
        lines.append(f"{pad2}Graphics: {gfx.get('type')} - {gfx.get('host') or gfx.get('listen')}:{port}")
    for target, disk in sorted((info.get("disks") or {}).items()):
        lines.append(f"{pad2}Disk - {target}:")
        lines.append(f"{pad3}Size: {_size(disk.get('size'))}")
        lines.append(f"{pad3}File: {disk.get('file')}")
        lines.append(f"{pad3}File Format: {disk.get('format')}")
        if disk.get("backing"):
            lines.append(f"{pad3}Backing: {' -> '.join(disk['backing'])}")
    for mac, nic in sorted((info.get("nics") or {}).items()):
        lines.append(f"{pad2}Nic - {mac}:")
        lines.append(f"{pad3}Source: {nic.get('source')}")
        lines.append(f"{pad3}Type: {nic.get('type')}")
    return lines


def output(data, **kwargs):  # pylint: disable=unused-argument
    """Render ``{hypervisor: {"vm_info": {name: info}, ...}}`` as text."""
    if not isinstance(data, dict):
        return str(data)
    lines = []
    for host in sorted(h for h in data if h != "retcode"):  # retcode: salt-run's exit status
        entry = data[host] if isinstance(data[host], dict) else {"error": data[host]}
        lines.append(host)
        if "error" in entry:
            lines.append(f"    ERROR: {entry['error']}")
            continue
        if entry.get("cordoned"):
            lines.append(f"    CORDONED: {entry['cordoned']}")
        node = entry.get("node_info") or {}
        if node:
            lines.append(
                f"    Host: {node.get('cpus')} CPUs, {node.get('phymemory')} MiB; "
                f"free: {entry.get('freecpu')} CPUs, {entry.get('freemem')} MiB"
            )
        vms = entry.get("vm_info") or {}
        if not vms:
            lines.append("    (no VMs)")
        for name in sorted(vms):
            lines.extend(_vm_lines(name, vms[name], 4))
    return "\n".join(lines)
