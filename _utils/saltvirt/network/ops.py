"""libvirt calls on virtual networks: define, update, start, stop, undefine, autostart, inventory.

Every function takes an open libvirt connection (:mod:`saltvirt.connection`) and raises the
library's errors (:class:`NotFound`, :class:`AlreadyExists`, :class:`VirtError`) with one-line
messages that name the network and what to do.
"""

import contextlib

from saltvirt import connection
from saltvirt.connection import libvirt
from saltvirt.connection import libvirt_errors as _libvirt_errors
from saltvirt.errors import AlreadyExists, VirtError
from saltvirt.network import xml as netxml

LEASE_TYPES = {0: "ipv4", 1: "ipv6"}  # VIR_IP_ADDR_TYPE_IPV4 / _IPV6


def lookup(conn, name):
    return connection.lookup(conn.networkLookupByName, name, libvirt.VIR_ERR_NO_NETWORK,
                             f"network {name} is not defined on this hypervisor (virt.list_networks lists "
                             "the networks)", f"network {name}")


def exists(conn, name):
    return name in list_names(conn)


def list_names(conn):
    with _libvirt_errors("listing the networks"):
        return sorted(net.name() for net in conn.listAllNetworks())


def _definition(net):
    """The persistent definition's XML (what the network starts with next)."""
    if not net.isActive():
        return net.XMLDesc(0)
    return connection.inactive_xml(net, libvirt.VIR_NETWORK_XML_INACTIVE)


def get_xml(conn, name, inactive=False):
    """The network's XML: what runs, or (``inactive``) the definition it starts with next."""
    net = lookup(conn, name)
    with _libvirt_errors(f"network {name}"):
        return _definition(net) if inactive else net.XMLDesc(0)


def leases(net):
    """The DHCP leases libvirt's dnsmasq gave on ``net`` (``type`` as ipv4/ipv6)."""
    try:
        found = net.DHCPLeases() if net.isActive() else []
    except libvirt.libvirtError:
        return []  # no DHCP on this network (bridge/hostdev modes): no leases
    for lease in found:
        lease["type"] = LEASE_TYPES.get(lease.get("type"), "unknown")
    return found


def _bridge_name(net):
    try:
        return net.bridgeName()
    except libvirt.libvirtError:
        return None  # macvtap and hostdev networks have no bridge


def info(conn, name=None):
    """``{name: {uuid, bridge, autostart, active, persistent, leases}}`` of one or all networks
    (``{}`` when ``name`` is not defined, as the classic ``virt.network_info`` returns)."""
    out = {}
    with _libvirt_errors("reading the networks"):
        for net in conn.listAllNetworks():
            if name is not None and net.name() != name:
                continue
            out[net.name()] = {
                "uuid": net.UUIDString(),
                "bridge": _bridge_name(net),
                "autostart": bool(net.autostart()),
                "active": bool(net.isActive()),
                "persistent": bool(net.isPersistent()),
                "leases": leases(net),
            }
    return out


def define(conn, spec):
    """Define the network of ``spec``, start it (``spec.start``) and set its autostart flag.

    All or nothing: a network that cannot start is undefined again, so a failed call leaves
    nothing behind. Returns True.
    """
    if exists(conn, spec.name):
        raise AlreadyExists(f"network {spec.name} is already defined: change it with virt.network_update "
                            "(or the virt.network_defined state), or remove it with virt.network_undefine")
    document = netxml.build(spec)
    with _libvirt_errors(f"defining network {spec.name}"):
        net = conn.networkDefineXML(document)
    try:
        with _libvirt_errors(f"network {spec.name}"):
            if spec.start:
                net.create()
            net.setAutostart(1 if spec.autostart else 0)
    except VirtError:
        with contextlib.suppress(libvirt.libvirtError):
            if net.isActive():
                net.destroy()
            net.undefine()
        raise
    return True


def update(conn, spec, test=False):
    """Bring the definition of the network to ``spec``.

    Compares the persistent definition (not the running one: libvirt applies a new
    definition when the network next starts) and rewrites only the settings that differ,
    keeping everything salt-virt does not model. Returns ``{"changed", "changes": {setting:
    {old, new}}, "restart_needed"}``; ``restart_needed`` is true when the network runs with
    the old settings.
    """
    net = lookup(conn, spec.name)
    with _libvirt_errors(f"network {spec.name}"):
        view = netxml.NetworkXml.parse(_definition(net))
        active = bool(net.isActive())
    changes = netxml.change(view, spec)
    if changes and not test:
        with _libvirt_errors(f"updating network {spec.name}"):
            conn.networkDefineXML(view.to_xml())
    return {"changed": bool(changes), "changes": changes, "restart_needed": bool(changes) and active}


def start(conn, name):
    return connection.act(f"starting network {name}", lookup(conn, name).create)


def stop(conn, name):
    return connection.act(f"stopping network {name}", lookup(conn, name).destroy)


def undefine(conn, name):
    """Remove the definition (a running network keeps running until stopped, as in libvirt)."""
    return connection.act(f"undefining network {name}", lookup(conn, name).undefine)


def set_autostart(conn, name, on):
    return connection.act(f"network {name}", lookup(conn, name).setAutostart, 1 if on else 0)
