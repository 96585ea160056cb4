"""
Salt Virt execution module, virtual networks: the classic Salt 3001-3007 network functions with
the same names, arguments and returns (``docs/upgrading.rst`` lists the differences).

One file of the ``virt`` execution module (Salt merges the files that share the
``__virtualname__``); the work is in ``saltvirt.network``. Connection settings as in
``_modules/virt.py`` (``virt:connection``).
"""

import sys

from salt.exceptions import SaltInvocationError

if hasattr(sys.modules.get("saltvirt"), "unload_if_stale"):
    sys.modules["saltvirt"].unload_if_stale()

try:
    from saltvirt import saltglue
    from saltvirt import settings as vsettings
    from saltvirt.network import ops as netops
    from saltvirt.network.spec import NetworkSpec

    HAS_SALTVIRT = True
    IMPORT_ERROR = None
except ImportError as _exc:  # _utils not synced, or a Python library it needs is missing
    HAS_SALTVIRT = False
    IMPORT_ERROR = f"the salt-virt library could not be imported ({_exc}); run saltutil.sync_all"

__virtualname__ = "virt"


def __virtual__():
    if not HAS_SALTVIRT:
        return False, f"virt: {IMPORT_ERROR}"
    return saltglue.virtual(__virtualname__, __salt__["config.get"], __opts__, __file__)


def _connection(kwargs):
    """Open libvirt with the caller's connection/username/password or the configured URI."""
    return vsettings.from_salt(__salt__["config.get"], __opts__, __grains__, __salt__).opened(kwargs)


def _network_spec(function, name, kwargs):
    with saltglue.salt_errors():
        return NetworkSpec.from_kwargs(function, name=name, **kwargs)


def _network_call(func, kwargs, *args):
    with saltglue.salt_errors(), _connection(kwargs) as conn:
        return func(conn, *args)


def network_define(name, bridge, forward, ipv4_config=None, ipv6_config=None, vport=None, tag=None,
                   autostart=True, start=True, mtu=None, domain=None, nat=None, interfaces=None,
                   addresses=None, physical_function=None, dns=None, **kwargs):
    """
    Define a virtual network, start it (``start``, default True) and set its autostart flag
    (``autostart``, default True). Returns True. All or nothing: a network that cannot start
    is undefined again. An existing network is refused (see :func:`network_update`).

    name
        Network name (letters, digits, ``_.+-``).
    bridge
        Bridge name (at most 15 characters). For ``nat``, ``route``, ``open`` and isolated
        networks libvirt creates it (and names it ``virbrN`` when None); for ``bridge`` it is
        an existing host bridge (Open vSwitch with ``vport: openvswitch``).
    forward
        ``nat``, ``route``, ``open``, ``bridge``, ``private``, ``vepa``, ``passthrough``,
        ``hostdev``, or None (also ``none``/``isolated``): an isolated network.
    ipv4_config / ipv6_config
        ``{cidr: 192.168.42.0/24, dhcp_ranges: [{start, end}], hosts: {ip: {mac, id, name}},
        bootp: {file, server}, tftp: /path}``. The host takes the range's first address, or
        the address given with host bits (``192.168.42.254/24``). ``hosts`` may also be a
        list of ``{ip, mac, id, name}``.
    vport
        Virtual port type (``openvswitch``...) or ``{type, parameters: {...}}``.
    tag
        VLAN id, or ``{trunk: True, tags: [{id: 42, nativeMode: untagged}, {id: 47}]}``.
    mtu
        MTU of the network's bridge, in bytes.
    domain
        DNS domain of the DHCP server: ``{name: lab.example.org, localOnly: True}`` (or the
        name alone).
    nat
        With ``forward: nat``: ``{address: {start, end}, port: {start, end}}``.
    interfaces / addresses / physical_function
        Devices for the direct modes: interface names, PCI addresses (``0000:04:00.1``) for
        ``hostdev``, the physical function's device (whitespace-separated strings or lists).
    dns
        ``{forwarders: [{domain, addr}], txt: {name: value}, hosts: {ip: [names]},
        srvs: [{name, protocol, domain, target, port, priority, weight}]}``.
    connection / username / password
        libvirt URI and credentials instead of the configured ``virt:connection``.

    Unknown arguments are refused with an error that names them.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.network_define natted natted nat \
            ipv4_config='{cidr: 192.168.42.0/24, dhcp_ranges: [{start: 192.168.42.10, end: 192.168.42.99}]}'
        salt hypervisor1 virt.network_define ovs main bridge vport=openvswitch tag=180
    """
    spec = _network_spec("virt.network_define", name, dict(
        kwargs, bridge=bridge, forward=forward, ipv4_config=ipv4_config, ipv6_config=ipv6_config, vport=vport,
        tag=tag, autostart=autostart, start=start, mtu=mtu, domain=domain, nat=nat, interfaces=interfaces,
        addresses=addresses, physical_function=physical_function, dns=dns))
    return _network_call(netops.define, spec.extra, spec)


def network_update(name, bridge, forward, ipv4_config=None, ipv6_config=None, vport=None, tag=None,
                   mtu=None, domain=None, nat=None, interfaces=None, addresses=None, physical_function=None,
                   dns=None, test=False, details=False, **kwargs):
    """
    Bring the definition of virtual network ``name`` to these settings (arguments as for
    :func:`network_define`). Returns True if it needed (``test=True``: needs) a change.

    Only the settings that differ are rewritten; everything else in the network's XML
    (uuid, MAC address, port groups, routes, bandwidth, metadata...) is kept. A running
    network keeps its old settings until it is stopped and started again.

    details
        Return ``{changed, changes: {setting: {old, new}}, restart_needed}`` instead of a
        bool.
    connection / username / password
        libvirt URI and credentials instead of the configured ``virt:connection``.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.network_update natted natted nat mtu=9000 test=True
    """
    spec = _network_spec("virt.network_update", name, dict(
        kwargs, bridge=bridge, forward=forward, ipv4_config=ipv4_config, ipv6_config=ipv6_config, vport=vport,
        tag=tag, mtu=mtu, domain=domain, nat=nat, interfaces=interfaces, addresses=addresses,
        physical_function=physical_function, dns=dns))
    result = _network_call(netops.update, spec.extra, spec, bool(test))
    return result if details else result["changed"]


def list_networks(**kwargs):
    """
    Names of the virtual networks on this hypervisor.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.list_networks
    """
    return _network_call(netops.list_names, kwargs)


def network_info(name=None, **kwargs):
    """
    ``{name: {uuid, bridge, autostart, active, persistent, leases}}`` of virtual network
    ``name``, or of every network without a name; ``{}`` if there is no such network.
    ``leases`` are the DHCP leases libvirt's dnsmasq handed out (``iface``, ``mac``,
    ``ipaddr``, ``prefix``, ``hostname``, ``expirytime``, ``type``: ipv4/ipv6...).

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.network_info natted
    """
    return _network_call(netops.info, kwargs, name)


def network_get_xml(name, inactive=False, **kwargs):
    """
    The XML of virtual network ``name``: as it runs, or (``inactive=True``) the definition it
    starts with next.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.network_get_xml natted
    """
    return _network_call(netops.get_xml, kwargs, name, bool(inactive))


def network_start(name, **kwargs):
    """
    Start defined virtual network ``name``. Returns True.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.network_start natted
    """
    return _network_call(netops.start, kwargs, name)


def network_stop(name, **kwargs):
    """
    Stop virtual network ``name`` (guests attached to it lose their link). Returns True.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.network_stop natted
    """
    return _network_call(netops.stop, kwargs, name)


def network_undefine(name, **kwargs):
    """
    Remove the definition of virtual network ``name``; a running network keeps running
    until :func:`network_stop`. Returns True.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.network_undefine natted
    """
    return _network_call(netops.undefine, kwargs, name)


def network_set_autostart(name, state="on", **kwargs):
    """
    Start virtual network ``name`` when libvirtd starts (``state``: ``on``, the default, or
    True) or not (``off``, False). Returns True.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.network_set_autostart natted off
    """
    on = state is True or str(state).lower() in ("on", "true", "yes", "1")
    if not on and not (state is False or str(state).lower() in ("off", "false", "no", "0")):
        raise SaltInvocationError(f"network_set_autostart: state={state!r} must be on or off")
    return _network_call(netops.set_autostart, kwargs, name, on)
