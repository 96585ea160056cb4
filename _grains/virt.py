"""Grains of a salt-virt hypervisor.

``virt_libvirt``: the version of the libvirt library a minion can use (e.g. ``'9.0.0'``;
absent without libvirt-python), for targeting hypervisors (``salt -G 'virt_libvirt:*'``).

Importing libvirt-python here, in the minion's main process (grains load there at start-up),
also spares every ``virt.*`` job that import: job processes are forked from the main process.
The salt-virt library itself is not imported here on purpose: a module imported by the main
process stays in every forked job as it was, so ``saltutil.sync_all`` could not update it.
"""

try:
    import libvirt
except ImportError:
    libvirt = None


def virt_libvirt():
    if libvirt is None:
        return {}
    version = libvirt.getVersion()  # major * 1,000,000 + minor * 1,000 + release
    return {"virt_libvirt": f"{version // 1000000}.{version // 1000 % 1000}.{version % 1000}"}
