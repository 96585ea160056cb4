"""Grains of a salt-virt hypervisor.

``virt_libvirt``: the version of the libvirt library a minion can use (e.g. ``'9.0.0'``;
absent without libvirt-python), for targeting hypervisors (``salt -G 'virt_libvirt:*'``).

This module also imports the salt-virt library into the minion's main process (grains load
there at start-up): every job process is forked from it, so each ``virt.*`` call then starts
with libvirt and the library already imported instead of importing them again (about 0.1 s
per call).
"""

try:
    import libvirt

    # Imported for the forked job processes (see above), not used here.
    import saltvirt.migration  # noqa: F401  pylint: disable=unused-import
    import saltvirt.provision  # noqa: F401  pylint: disable=unused-import
except ImportError:
    libvirt = None


def virt_libvirt():
    if libvirt is None:
        return {}
    version = libvirt.getVersion()  # major * 1,000,000 + minor * 1,000 + release
    return {"virt_libvirt": f"{version // 1000000}.{version // 1000 % 1000}.{version % 1000}"}
