"""
Salt Virt execution module, storage pools and volumes: the classic Salt 3001-3007 functions with
the same names, arguments and returns (``docs/upgrading.rst`` lists the differences,
``docs/storage.rst`` the guide).

One file of the ``virt`` execution module (Salt merges the files that share the
``__virtualname__``); the work is in ``saltvirt.storage`` (``poolxml``, ``pools``, ``volumes``,
``volxml``).
Callers granted ``virt.*`` are not trusted: pools reach host directories, devices and volume
groups only where the operator allows it (``virt:pools:allowed_targets``,
``virt:pools:allowed_devices``, ``virt:pools:allowed_source_names``, ``virt:pools:allowed_types``).
"""

import sys

from salt.exceptions import SaltInvocationError

if hasattr(sys.modules.get("saltvirt"), "unload_if_stale"):
    sys.modules["saltvirt"].unload_if_stale()

try:
    from saltvirt import saltglue
    from saltvirt import settings as vsettings
    from saltvirt.domain import vmops
    from saltvirt.storage import pools as poolops
    from saltvirt.storage import volumes as volops
    from saltvirt.storage import volxml
    from saltvirt.storage.poolxml import PoolSpec

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


def _settings():
    return vsettings.from_salt(__salt__["config.get"], __opts__, __grains__, __salt__)


def _connection(kwargs):
    """Open libvirt with the caller's connection/username/password or the configured URI."""
    return _settings().opened(kwargs)


def _call(func, kwargs, *args):
    with saltglue.salt_errors(), _connection(kwargs) as conn:
        return func(conn, *args)


def _guarded(kwargs, func, *args, roots=False, image_policy=False, **options):
    """``func(conn, *args, policy=...)``: calls that may reach host storage get the operator's
    pool policy (and the roots / image policy where files are named)."""
    with saltglue.salt_errors():
        settings = _settings()
        with _connection(kwargs) as conn:
            if roots:
                options["roots"] = settings.roots(vmops.pool_targets(conn))
            if image_policy:
                options["image_policy"] = settings.image_policy
            return func(conn, *args, policy=settings.pool_policy, **options)


def _conn_kwargs(function, kwargs):
    """The connection arguments of ``kwargs``; anything else is refused by name."""
    unknown = sorted(k for k in kwargs if not k.startswith("__") and k not in ("connection", "username", "password"))
    if unknown:
        raise SaltInvocationError(f"{function}: unknown argument(s) {', '.join(unknown)} (see sys.doc {function})")
    return kwargs


def _spec(function, name, kwargs):
    with saltglue.salt_errors():
        return PoolSpec.from_kwargs(function, name=name, **kwargs)


def pool_define(name, ptype, target=None, permissions=None, source_devices=None, source_dir=None,
                source_initiator=None, source_adapter=None, source_hosts=None, source_auth=None, source_name=None,
                source_format=None, transient=False, start=True, **kwargs):
    """
    Define a libvirt storage pool and start it (``start``, default True). Returns True. All or
    nothing: a pool that cannot start is undefined again. An existing pool is refused (see
    :func:`pool_update`). The pool is not built: see :func:`pool_build` (or the
    ``virt.pool_running`` state, which builds new pools).

    name
        Pool name (letters, digits, ``_.+-``).
    ptype
        ``dir``, ``fs``, ``netfs``, ``logical``, ``disk``, ``iscsi``, ``iscsi-direct``,
        ``rbd``, ``sheepdog``, ``gluster``, ``zfs``, ``vstorage`` (``scsi`` and ``mpath`` only
        if the operator lists them in ``virt:pools:allowed_types``).
    target
        The pool's directory (``dir``, ``fs``, ``netfs``, ``vstorage``): it must lie under one of
        ``virt:pools:allowed_targets`` (never under ``virt:images``). Other types: a ``/dev``
        path or None (libvirt's default).
    permissions
        ``{mode: '0755', owner: 107, group: 107, label: ...}`` of the target directory.
    source_devices
        ``[{path: /dev/sdb, part_separator: True}]`` (or paths): the block devices of ``fs``,
        ``logical`` and ``disk`` pools must match ``virt:pools:allowed_devices``; IQNs for
        iSCSI.
    source_dir / source_hosts / source_format / source_name / source_initiator
        Remote directory (``netfs``, ``gluster``), ``host[:port]`` list, source format
        (``nfs``, ``cifs``, ``lvm2``, ``gpt``...), volume group / RBD pool / zpool name
        (a volume group or zpool must match ``virt:pools:allowed_source_names``; a logical
        pool's volume group is its ``source_name`` or else its name), iSCSI initiator IQN.
    source_adapter
        SCSI adapter: ``{type, name, parent, managed, parent_wwnn, parent_wwpn,
        parent_fabric_wwn, wwnn, wwpn, parent_address: {unique_id, address: {domain, bus, slot,
        function}}}``.
    source_auth
        ``{type: ceph|chap, username, secret: {type: uuid|usage, value}}``, or ``{username,
        password}``: the password then goes into a libvirt secret ``pool_<name>`` (a Ceph key in
        base64), removed again by :func:`pool_undefine`.
    transient
        Create a pool that disappears when stopped (it starts whatever ``start`` says).
    connection / username / password
        libvirt URI and credentials instead of the configured ``virt:connection``.

    Unknown arguments are refused with an error that names them.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.pool_define images dir target=/srv/pools/images permissions='{mode: "0755"}'
        salt hypervisor1 virt.pool_define vms logical source_devices='[/dev/sdb]' source_name=vg_vms start=False
    """
    spec = _spec("virt.pool_define", name, dict(
        kwargs, ptype=ptype, target=target, permissions=permissions, source_devices=source_devices,
        source_dir=source_dir, source_initiator=source_initiator, source_adapter=source_adapter,
        source_hosts=source_hosts, source_auth=source_auth, source_name=source_name, source_format=source_format,
        transient=transient, start=start))
    return _guarded(spec.extra, poolops.define, spec)


def pool_update(name, ptype, target=None, permissions=None, source_devices=None, source_dir=None,
                source_initiator=None, source_adapter=None, source_hosts=None, source_auth=None, source_name=None,
                source_format=None, test=False, details=False, **kwargs):
    """
    Bring the definition of storage pool ``name`` to these settings (arguments as for
    :func:`pool_define`). Returns True if it needed (``test=True``: needs) a change.

    Only the settings given are compared, and only those that differ rewritten; the rest of the
    pool's XML (uuid, what libvirt filled in) is kept. A running pool uses the new definition
    once stopped and started again. The changed pool must pass the same checks as a new one.

    details
        Return ``{changed, changes: {setting: {old, new}}, restart_needed}`` instead of a bool.
    connection / username / password
        libvirt URI and credentials instead of the configured ``virt:connection``.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.pool_update images dir target=/srv/pools/images permissions='{mode: "0750"}' test=True
    """
    spec = _spec("virt.pool_update", name, dict(
        kwargs, ptype=ptype, target=target, permissions=permissions, source_devices=source_devices,
        source_dir=source_dir, source_initiator=source_initiator, source_adapter=source_adapter,
        source_hosts=source_hosts, source_auth=source_auth, source_name=source_name, source_format=source_format))
    result = _guarded(spec.extra, poolops.update, spec, bool(test))
    return result if details else result["changed"]


def list_pools(**kwargs):
    """
    Names of the storage pools on this hypervisor.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.list_pools
    """
    return _call(poolops.list_names, _conn_kwargs("virt.list_pools", kwargs))


def pool_info(name=None, **kwargs):
    """
    ``{name: {uuid, state, capacity, allocation, free, autostart, persistent, target_path,
    type}}`` of storage pool ``name``, or of every pool without a name; ``{}`` if there is no
    such pool. ``state``: inactive, building, running, degraded or inaccessible; sizes in bytes.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.pool_info default
    """
    return _call(poolops.info, _conn_kwargs("virt.pool_info", kwargs), name)


def pool_get_xml(name, inactive=False, **kwargs):
    """
    The XML of storage pool ``name``: as it runs, or (``inactive=True``) the definition it
    starts with next.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.pool_get_xml default
    """
    return _call(poolops.get_xml, _conn_kwargs("virt.pool_get_xml", kwargs), name, bool(inactive))


def pool_start(name, **kwargs):
    """
    Start storage pool ``name``. Returns True.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.pool_start default
    """
    return _call(poolops.start, _conn_kwargs("virt.pool_start", kwargs), name)


def pool_build(name, **kwargs):
    """
    Build storage pool ``name``: make its directory, format its disk, create its volume group
    on its devices (checked as in :func:`pool_define`). Returns True.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.pool_build vms
    """
    return _guarded(_conn_kwargs("virt.pool_build", kwargs), poolops.build, name)


def pool_stop(name, **kwargs):
    """
    Stop storage pool ``name`` (a transient pool disappears). Returns True.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.pool_stop default
    """
    return _call(poolops.stop, _conn_kwargs("virt.pool_stop", kwargs), name)


def pool_delete(name, **kwargs):
    """
    Delete the resources of stopped storage pool ``name``: its directory (libvirt refuses one
    that holds files), its volume group... Only pools that pass the checks of
    :func:`pool_define`. Returns True.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.pool_delete images
    """
    return _guarded(_conn_kwargs("virt.pool_delete", kwargs), poolops.delete, name)


def pool_undefine(name, **kwargs):
    """
    Remove the definition of storage pool ``name`` (and the secret :func:`pool_define` made
    for its password). Returns True.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.pool_undefine images
    """
    return _call(poolops.undefine, _conn_kwargs("virt.pool_undefine", kwargs), name)


def pool_refresh(name, **kwargs):
    """
    Look again at the volumes of storage pool ``name`` (files copied in by hand...). Returns
    True.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.pool_refresh default
    """
    return _call(poolops.refresh, _conn_kwargs("virt.pool_refresh", kwargs), name)


def pool_set_autostart(name, state="on", **kwargs):
    """
    Start storage pool ``name`` when libvirtd starts (``state``: ``on``, the default, or True)
    or not (``off``, False). Returns True.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.pool_set_autostart images off
    """
    on = state is True or str(state).lower() in ("on", "true", "yes", "1")
    if not on and not (state is False or str(state).lower() in ("off", "false", "no", "0")):
        raise SaltInvocationError(f"pool_set_autostart: state={state!r} must be on or off")
    return _call(poolops.set_autostart, _conn_kwargs("virt.pool_set_autostart", kwargs), name, on)


def pool_list_volumes(name, **kwargs):
    """
    Names of the volumes of storage pool ``name`` (``[]`` while it is stopped).

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.pool_list_volumes default
    """
    return _call(poolops.list_volumes, _conn_kwargs("virt.pool_list_volumes", kwargs), name)


def pool_capabilities(**kwargs):
    """
    libvirt's storage pool capabilities: ``{computed: False, pool_types: [{name, supported,
    options: {pool: {default_format, sourceFormatType}, volume: {default_format,
    targetFormatType}}}]}``.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.pool_capabilities
    """
    return _call(poolops.capabilities, _conn_kwargs("virt.pool_capabilities", kwargs))


def volume_infos(pool=None, volume=None, **kwargs):
    """
    ``{pool: {volume: {type, key, path, capacity, allocation, used_by, backing_store,
    format}}}`` of volume ``volume`` (or all) of running pool ``pool`` (or all). ``used_by``
    lists the domains whose disks use the volume or an overlay on it.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.volume_infos default
        salt hypervisor1 virt.volume_infos default centos1-system.qcow2
    """
    return _call(volops.infos, _conn_kwargs("virt.volume_infos", kwargs), pool, volume)


def volume_define(pool, name, size, allocation=0, format=None, type=None, permissions=None,  # noqa: A002
                  backing_store=None, nocow=False, **kwargs):
    """
    Create volume ``name`` (a file or LV name: no ``/``, no ``..``) of ``size`` MiB in storage
    pool ``pool``. Returns True.

    allocation
        MiB allocated at once (a logical pool allocates the whole size).
    format
        ``qcow2``, ``raw``... (``virt.pool_capabilities`` lists each pool type's formats).
    type
        ``file``, ``block``, ``dir``, ``network``, ``netdir``, ``ploop`` or None (libvirt
        chooses from the pool).
    permissions
        ``{mode, owner, group, label}`` of the new file.
    backing_store
        ``{path, format}`` of the volume's backing file (never guessed): under the
        hypervisor's image roots (``virt:image_roots``, the pools' directories).
    nocow
        Turn copy-on-write off for the file (btrfs).

    The pool must pass the checks of :func:`pool_define`.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.volume_define images data.qcow2 8192 format=qcow2
    """
    return _guarded(_conn_kwargs("virt.volume_define", kwargs), volops.define, pool, name, size, roots=True,
                    allocation=allocation, fmt=format, vtype=type, permissions=permissions,
                    backing_store=backing_store, nocow=nocow)


def volume_upload(pool, volume, file, offset=0, length=0, sparse=False, **kwargs):
    """
    Write ``file``, a disk image on the hypervisor, into volume ``volume`` of storage pool
    ``pool`` over libvirt's upload stream (the volume keeps its size: create it big enough).
    Returns True.

    file
        Under the hypervisor's image roots (``virt:images/base``, ``virt:image_roots``, the
        pools' directories); inspected like any image from a caller (no backing file, no
        external data file, ``virt:image_policy:max_virtual_size``).
    offset / length
        Where in the volume to start writing, and how many bytes (0: all of the file).
    sparse
        Skip the file's holes (keeps a raw volume sparse).

    The pool must pass the checks of :func:`pool_define`.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.volume_upload images data.qcow2 /var/lib/libvirt/images/data.qcow2
    """
    return _guarded(_conn_kwargs("virt.volume_upload", kwargs), volops.upload, pool, volume, file, roots=True,
                    image_policy=True, offset=offset, length=length, sparse=sparse)


def volume_delete(pool, volume, **kwargs):
    """
    Delete volume ``volume`` of storage pool ``pool`` (a pool that passes the checks of
    :func:`pool_define`). Returns True.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.volume_delete images data.qcow2
    """
    return _guarded(_conn_kwargs("virt.volume_delete", kwargs), volops.delete, pool, volume)


def volume_resize(pool, volume, size, **kwargs):
    """
    Grow volume ``volume`` of storage pool ``pool`` to ``size`` MiB (shrinking is refused: it
    loses data). Returns True. Not in classic Salt.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.volume_resize images data.qcow2 16384
    """
    return _guarded(_conn_kwargs("virt.volume_resize", kwargs), volops.resize, pool, volume, size)


def _xml_pool(pool):
    """The pool of ``define_vol_xml_*``: the argument, else ``virt:storagepool``, else ``default``."""
    with saltglue.salt_errors():
        return pool or _settings().get("storagepool", "default") or "default"


def define_vol_xml_str(xml, pool=None, **kwargs):
    """
    Create a volume from its libvirt XML in storage pool ``pool``. Returns True.

    pool
        The storage pool (default: ``virt:storagepool`` of the hypervisor's config, else
        ``default``). It must be running and pass the checks of :func:`pool_define`.

    The XML is checked before libvirt sees it, with the limits of :func:`volume_define`: the
    name has no ``/`` or ``..``, a ``<target><path>`` lies in the pool's directory, a
    ``<backingStore>`` has a ``<format>`` and its ``<path>`` lies under the image roots;
    ``<encryption>``, ``<source>`` extents and elements outside libvirt's volume schema are
    refused (``docs/storage.rst``). A refusal names every problem and creates nothing.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.define_vol_xml_str "$(cat data.xml)" pool=images
    """
    pool = _xml_pool(pool)
    return _guarded(_conn_kwargs("virt.define_vol_xml_str", kwargs), volxml.define, pool, xml, roots=True)


def define_vol_xml_path(path, pool=None, **kwargs):
    """
    Create a volume from the libvirt XML file ``path`` on the hypervisor, checked as for
    :func:`define_vol_xml_str`, in storage pool ``pool`` (same default). The file must lie
    where ``virt.define_xml_path`` reads files (``virt:attach_roots``,
    ``virt:image_roots``, a pool's directory, ``<virt:images>/base``), be a regular file of at
    most 1 MiB; errors never quote its content. Returns True.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 virt.define_vol_xml_path /srv/volumes/data.xml pool=images
    """
    pool = _xml_pool(pool)
    return _guarded(_conn_kwargs("virt.define_vol_xml_path", kwargs), volxml.define_file, pool, path, roots=True)
