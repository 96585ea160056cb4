"""
States of salt-virt (``virt.*``).

``virt.keys`` writes the libvirt TLS files (thin glue over :mod:`saltvirt.pki.tlsfiles`). The VM
states (``virt.defined``, ``virt.running``, ``virt.stopped``, ``virt.powered_off``,
``virt.rebooted``, ``virt.snapshot``, ``virt.reverted`` and the classic names ``virt.saved``,
``virt.unpowered``), the network states (``virt.network_defined``, ``virt.network_running``)
and the storage states (``virt.pool_defined``, ``virt.pool_running``, ``virt.pool_deleted``,
``virt.volume_defined``) call the ``virt`` execution module, so that a state and the command it
stands for behave the same, ``test=True`` included. See ``docs/states.rst`` and
``docs/storage.rst``.
"""

import fnmatch
import sys
import time

from salt.exceptions import CommandExecutionError, SaltInvocationError

# The minion's main process may hold the library preloaded (_grains/virt.py): read it anew
# if saltutil.sync_all has replaced its files since.
if hasattr(sys.modules.get("saltvirt"), "unload_if_stale"):
    sys.modules["saltvirt"].unload_if_stale()

import saltvirt.coexist  # noqa: E402  (after the check above)
import saltvirt.pki.tlsfiles  # noqa: E402
from saltvirt.errors import VirtError  # noqa: E402
from saltvirt.network.spec import NetworkSpec  # noqa: E402
from saltvirt.provision.spec import VmSpec, check_values  # noqa: E402
from saltvirt.storage import volumes  # noqa: E402
from saltvirt.storage.poolxml import PoolSpec  # noqa: E402

__virtualname__ = "virt"

# Options that the old upstream state forwarded to the pillar; here the master decides them.
_MASTER_SIDE_OPTIONS = ("country", "state", "locality", "organization", "expiration_days")


def __virtual__():
    saltvirt.coexist.warn_once(__opts__, ("modules", "states"), "state module")
    return __virtualname__


def _fetch_material():
    """The ``libvirt`` pillar of this minion and where it came from, or ``(None, errors)``."""
    material = __pillar__.get("libvirt")
    if isinstance(material, dict) and all(material.get(k) for k in saltvirt.pki.tlsfiles.MATERIAL_KEYS):
        return dict(material), "pillar"
    # Not in the compiled pillar: ask the master for it on demand. Salt 3008 masks pillar values
    # returned from inside the state pipeline unless unmask=True is passed.
    compiled = __salt__["pillar.ext"]({"libvirt": True}, unmask=True)
    material = compiled.get("libvirt") if isinstance(compiled, dict) else None
    if isinstance(material, dict) and all(material.get(k) for k in saltvirt.pki.tlsfiles.MATERIAL_KEYS):
        return dict(material), "on-demand pillar"
    errors = compiled.get("_errors") if isinstance(compiled, dict) else None
    return None, errors


def keys(name, basepath="/etc/pki", **kwargs):
    """
    Ensure the libvirt and QEMU TLS keys and certificates of this hypervisor are in place.

    The material comes from the ``libvirt`` pillar (the ``libvirt`` ext_pillar on the master, see
    ``docs/pki.rst``); if the minion's pillar has none, it is requested on demand with
    ``pillar.ext``. Written under ``basepath``:

    - ``CA/cacert.pem``, ``libvirt/servercert.pem``, ``libvirt/clientcert.pem`` (0644)
    - ``libvirt/private/serverkey.pem``, ``libvirt/private/clientkey.pem`` (0600)
    - ``qemu/ca-cert.pem``, ``qemu/server-cert.pem``, ``qemu/client-cert.pem`` (0644)
    - ``qemu/server-key.pem``, ``qemu/client-key.pem`` (0640, group ``libvirt-qemu``; 0600 if
      that group does not exist): QEMU's own pairs, whose DN libvirtd does not accept as a
      client (see ``docs/security.rst``)

    Changes list the files by path, never their contents. libvirtd reads its certificates at
    start: restart it (``watch`` this state) to use new ones.

    name
        The state ID; not used.

    basepath
        Directory holding ``CA``, ``libvirt`` and ``qemu``. Default ``/etc/pki``.

    .. code-block:: yaml

        libvirt_keys:
          virt.keys
    """
    ret = {"name": name, "result": False, "changes": {}, "comment": ""}
    ignored = sorted(k for k in kwargs if not k.startswith("__"))
    if ignored:
        warning = (
            f"virt.keys ignores {', '.join(ignored)}: certificate settings such as "
            f"{', '.join(_MASTER_SIDE_OPTIONS)} are set on the master (libvirt_pki in the "
            "master config)"
        )
        ret["warnings"] = [warning]

    material, source = _fetch_material()
    if material is None:
        detail = f": {'; '.join(map(str, source))}" if source else ""
        ret["comment"] = (
            "No libvirt TLS material in the pillar of this minion, not even on demand. "
            "Enable the 'libvirt' ext_pillar on the master (ext_pillar: [{libvirt: {}}]) and make "
            f"sure this minion is in virt:hypervisors (or libvirt_pki:minions){detail}"
        )
        return ret

    test = bool(__opts__.get("test"))
    try:
        changes = saltvirt.pki.tlsfiles.sync(material, basepath=basepath, test=test)
    except VirtError as exc:
        ret["comment"] = str(exc)
        return ret

    ret["changes"] = changes
    if not changes:
        ret["result"] = True
        ret["comment"] = f"libvirt TLS files under {basepath} are up to date"
    elif test:
        ret["result"] = None
        ret["comment"] = f"{len(changes)} libvirt TLS path(s) under {basepath} would change"
    else:
        ret["result"] = True
        ret["comment"] = f"{len(changes)} libvirt TLS path(s) under {basepath} changed ({source})"
    return ret


# --------------------------------------------------------------------------- VMs

_CONNECTION_ARGS = ("connection", "username", "password")
_NOT_SHOWN = "set (not shown)"


def _password_set(result):
    """Whether ``virt.init``/``virt.update`` gave a console a password (never the password:
    state changes reach the job cache, returners and the event bus)."""
    if result.get("vnc_password_generated"):
        return True
    return any(g.get("password_set") for g in result.get("graphics") or () if isinstance(g, dict))
# Upstream Salt's state argument names for the virt.init ones.
_ALIASES = {"disk_profile": "disk", "nic_profile": "nic", "vm_type": "hypervisor"}
#: Classic hardware arguments virt.update compares too (besides cpu and mem).
_HARDWARE = ("numatune", "serials", "consoles", "host_devices")


def _conn_args(kwargs):
    return {k: kwargs[k] for k in _CONNECTION_ARGS if kwargs.get(k) is not None}


#: Boot and platform arguments virt.update compares when they are given.
_PLATFORM_ARGS = ("boot", "boot_dev", "stop_on_reboot", "clock", "hypervisor_features")


def _test():
    return bool(__opts__.get("test"))


def _vm_state(name, conn):
    return __salt__["virt.vm_state"](name, **conn).get(name)


def _define(name, start, cpu, mem, image, disk, disks, nic, interfaces, graphics, enable_vnc,
            enable_qcow, autostart, update, live, kwargs):
    ret = {"name": name, "result": True, "changes": {}, "comment": ""}
    kwargs = {_ALIASES.get(k, k): v for k, v in kwargs.items() if not k.startswith("__")}
    # The classic disk_profile/nic_profile arrive as disk/nic: they are the profiles asked for.
    disk, nic = kwargs.pop("disk", disk), kwargs.pop("nic", nic)
    conn = _conn_args(kwargs)
    test = _test()
    notes = []
    try:
        # Unknown arguments are refused before anything is asked of the hypervisor (test=True too).
        spec = VmSpec.from_kwargs(f"VM {name}", name=name, cpu=cpu or 1, mem=mem or 1, **kwargs)
    except VirtError as exc:
        ret.update(result=False, comment=str(exc))
        return ret
    try:
        exists = name in __salt__["virt.list_domains"](**conn)
        # Values virt.init / virt.update would refuse: refused now, so test=True predicts it.
        check_values(spec, update=exists)
        if not exists:
            if cpu is None or mem is None:
                ret["result"] = False
                ret["comment"] = f"VM {name} does not exist: cpu and mem are needed to create it"
                return ret
            created = {"definition": True, **({"started": True} if start else {})}
            if test:
                ret["changes"] = created
                ret["result"] = None
                ret["comment"] = f"VM {name} would be created{' and started' if start else ''}"
                return ret
            # virt.init is all or nothing: if it fails, there is no VM and no change.
            info = __salt__["virt.init"](
                name, cpu, mem, image=image, disk=disk, disks=disks, nic=nic, interfaces=interfaces,
                graphics=graphics, enable_vnc=enable_vnc, enable_qcow=enable_qcow, start=start,
                autostart=bool(autostart), **kwargs)
            ret["changes"] = created
            if _password_set(info):
                ret["changes"]["vnc_password"] = _NOT_SHOWN
            ret["comment"] = f"VM {name} created on {info.get('host')}{' and started' if start else ''}"
            return ret
        if update:
            res = __salt__["virt.update"](
                name, cpu=cpu, mem=mem, disk=disk, disks=disks, nic=nic, interfaces=interfaces,
                graphics=graphics, enable_vnc=enable_vnc, enable_qcow=enable_qcow, autostart=autostart,
                live=live, test=test, saltenv=kwargs.get("saltenv", "base"), **conn,
                **{k: kwargs[k] for k in (*_HARDWARE, *_PLATFORM_ARGS) if kwargs.get(k) is not None})
            ret["changes"].update(res["changes"])
            if _password_set(res):
                ret["changes"]["vnc_password"] = _NOT_SHOWN
            if res["changes"]:
                notes.append(("would change: " if test else "changed: ") + res["comment"])
        if start:
            state = _vm_state(name, conn)
            if state == "paused":
                ret["changes"]["resumed"] = True
                if not test:
                    __salt__["virt.resume"](name, **conn)
            elif state != "running":
                ret["changes"]["started"] = True
                if not test:
                    __salt__["virt.start"](name, **conn)
            if state != "running":
                notes.append(f"{'would be ' if test else ''}{'resumed' if state == 'paused' else 'started'}")
    except (CommandExecutionError, SaltInvocationError, VirtError) as exc:
        ret["result"] = False
        ret["comment"] = f"VM {name}: {exc}"
        if ret["changes"]:
            ret["comment"] += f" (after: {', '.join(ret['changes'])})"
        return ret
    if not ret["changes"]:
        ret["comment"] = f"VM {name} is {'running and ' if start else 'defined and '}up to date"
    else:
        ret["comment"] = f"VM {name} {'; '.join(notes)}"
        if test:
            ret["result"] = None
    return ret


def defined(name, cpu=None, mem=None, image=None, disk="default", disks=None, nic="default",
            interfaces=None, graphics=None, enable_vnc=False, enable_qcow=False, autostart=None,
            update=True, live=True, **kwargs):
    """
    Ensure a VM is defined on this hypervisor (not necessarily running), with these settings.

    A missing VM is created with ``virt.init`` (not started): every ``virt.init`` argument
    works here (``cpu``, ``mem`` in MiB, ``image``, ``enable_qcow``, ``disk``/``disks``,
    ``nic``/``interfaces``, ``graphics``/``enable_vnc``, ``seed``, ``seed_cmd``, ``config``,
    ``hypervisor``, ``boot``, ``autostart``, ``numatune``, ``serials``, ``consoles``,
    ``host_devices``, ``cloud_init``...; ``cpu`` and ``mem`` may be the classic dicts).
    Upstream's names ``disk_profile``,
    ``nic_profile`` and ``vm_type`` are accepted too.

    An existing VM is compared with ``cpu``, ``mem``, the disks, the NICs, the graphics (when
    ``graphics``/``enable_vnc`` are given), ``autostart``, ``numatune``, ``serials``,
    ``consoles`` and ``host_devices`` (when given), and brought in line
    with ``virt.update``: new disks and NICs are added, nothing is removed. Changes reach a
    running guest where possible (``live``); the others are made to its definition and the
    changes and comment say ``next_boot``: they apply when the VM is next stopped and
    started (see ``virt.rebooted``). ``update: False`` never touches an existing VM;
    ``live: False`` never touches the running guest. The image and seeding arguments only
    matter when the VM is created.

    With ``test=True`` the changes are reported and nothing is done.

    .. code-block:: yaml

        web1:
          virt.defined:
            - cpu: 2
            - mem: 1024
            - image: salt://images/debian12.qcow2
            - enable_qcow: True
            - disks:
              - name: data
                size: 4096
    """
    return _define(name, False, cpu, mem, image, disk, disks, nic, interfaces, graphics, enable_vnc,
                   enable_qcow, autostart, update, live, kwargs)


def running(name, cpu=None, mem=None, image=None, disk="default", disks=None, nic="default",
            interfaces=None, graphics=None, enable_vnc=False, enable_qcow=False, autostart=None,
            update=True, live=True, **kwargs):
    """
    Ensure a VM is defined as in :func:`defined` and running: a missing VM is created and
    started, a stopped one started, a paused one resumed.

    .. code-block:: yaml

        web1:
          virt.running:
            - cpu: 2
            - mem: 1024
            - image: salt://images/debian12.qcow2
            - enable_qcow: True
            - enable_vnc: True
    """
    return _define(name, True, cpu, mem, image, disk, disks, nic, interfaces, graphics, enable_vnc,
                   enable_qcow, autostart, update, live, kwargs)


def _virt_call(name, section, comment, needed, act, kwargs):
    """Run ``act(domain)`` on every domain matching the glob ``name`` for which
    ``needed(domain, state)`` is true; upstream Salt's shape of changes."""
    ret = {"name": name, "result": True, "changes": {}, "comment": ""}
    conn = _conn_args(kwargs)
    test = _test()
    try:
        states = __salt__["virt.vm_state"](**conn)
    except (CommandExecutionError, SaltInvocationError) as exc:
        ret.update(result=False, comment=str(exc))
        return ret
    targeted = sorted(fnmatch.filter(states, name))
    if not targeted:
        ret.update(result=False, comment=f"No domain matches {name}")
        return ret
    changed, failed, untouched = [], [], []
    for domain in targeted:
        try:
            reason = needed(domain, states[domain])
            if not reason:
                untouched.append(domain)
                continue
            entry = {"domain": domain}
            if isinstance(reason, str):
                entry["reason"] = reason
            if not test:
                entry.update(act(domain, states[domain]) or {})
            changed.append(entry)
        except (CommandExecutionError, SaltInvocationError) as exc:
            failed.append({"domain": domain, "issue": str(exc)})
    if changed:
        ret["changes"][section] = changed
    if failed:
        ret["changes"]["ignored"] = failed
        ret["result"] = False
    names = ", ".join(c["domain"] for c in changed)
    parts = []
    if changed:
        parts.append(f"Would be {section}: {names}" if test else f"{comment}: {names}")
    if untouched:
        parts.append(f"no change needed: {', '.join(untouched)}")
    if failed:
        parts.append("failed: " + "; ".join(f"{f['domain']}: {f['issue']}" for f in failed))
    ret["comment"] = ". ".join(parts)
    if test and changed and not failed:
        ret["result"] = None
    return ret


def _shutdown(domain, timeout, conn):
    """ACPI shutdown, asked again every few seconds (a guest still booting misses the first
    press), waiting up to ``timeout`` seconds in all."""
    deadline = time.monotonic() + float(timeout)
    while True:
        step = int(max(1, min(5, deadline - time.monotonic())))
        try:
            return __salt__["virt.stop"](domain, timeout=step, **conn)
        except CommandExecutionError:
            if time.monotonic() >= deadline:
                raise CommandExecutionError(
                    f"{domain} did not shut down within {timeout}s of ACPI shutdown requests "
                    "(does the guest handle the power button? virt.powered_off pulls the plug)"
                ) from None


def stopped(name, timeout=120, **kwargs):
    """
    Ensure the VMs matching ``name`` (a glob, e.g. ``web*``) are shut down: each running one
    gets ACPI shutdown requests (repeated every 5 seconds: a guest still booting misses
    them) until it is off, for up to ``timeout`` seconds (a guest that ignores the power
    button fails the state: use :func:`powered_off`). A paused VM is resumed first
    so that it can see the request. No matching VM at all is a failure.

    .. code-block:: yaml

        web*:
          virt.stopped:
            - timeout: 60
    """
    conn = _conn_args(kwargs)

    def act(domain, state):
        if state == "paused":
            __salt__["virt.resume"](domain, **conn)
        res = _shutdown(domain, timeout, conn)
        return {"shutdown": bool(res.get("stopped"))}

    return _virt_call(name, "stopped", "Machine has been shut down",
                      lambda _d, state: state not in ("shutoff", "crashed"), act, kwargs)


def powered_off(name, **kwargs):
    """
    Ensure the VMs matching ``name`` (a glob) are off, pulling the plug of those that run
    (``virsh destroy``: no clean shutdown).

    .. code-block:: yaml

        test-*:
          virt.powered_off
    """
    conn = _conn_args(kwargs)

    def act(domain, _state):
        return {"stop": bool(__salt__["virt.force_off"](domain, **conn).get("destroyed"))}

    return _virt_call(name, "unpowered", "Machine has been powered off",
                      lambda _d, state: state not in ("shutoff", "crashed"), act, kwargs)


def rebooted(name, force=False, timeout=120, **kwargs):
    """
    Reboot the running VMs matching ``name`` (a glob) whose definition has changes the
    guest does not run with yet (made "on next boot" by :func:`defined`/:func:`running`:
    vCPUs, maximum memory, consoles...). Those VMs are shut down (ACPI, up to ``timeout``
    seconds) and started again, since a reboot inside the guest keeps the same QEMU
    process and would not apply them. VMs with nothing pending are left alone, so the
    state is idempotent.

    ``force: True`` reboots every running matching VM (a guest reboot, like upstream Salt's
    ``virt.rebooted``), every time the state runs.

    .. code-block:: yaml

        web*:
          virt.rebooted:
            - require:
              - virt: web1
    """
    conn = _conn_args(kwargs)

    def needed(domain, state):
        if state != "running":
            return False
        if force:
            return True
        pending = __salt__["virt.pending_changes"](domain, **conn)
        return "pending: " + ", ".join(pending) if pending else False

    def act(domain, _state):
        if force:
            return {"reboot": bool(__salt__["virt.reboot"](domain, **conn).get("rebooted"))}
        _shutdown(domain, timeout, conn)
        __salt__["virt.start"](domain, **conn)
        return {"reboot": True, "power_cycle": True}

    return _virt_call(name, "rebooted", "Machine has been rebooted", needed, act, kwargs)


def snapshot(name, suffix=None, **kwargs):
    """
    Ensure every VM matching ``name`` (a glob) has the snapshot ``<vm>-<suffix>`` (internal
    qcow2 snapshot of its disks, plus its memory when running). A VM that has it already is
    left alone; ``suffix`` defaults to ``salt``. For a snapshot per day, put the date in the
    suffix, e.g. ``suffix: {{ None|strftime("%Y%m%d") }}``.

    .. code-block:: yaml

        web*:
          virt.snapshot:
            - suffix: before-upgrade
    """
    return _snapshot(name, suffix, "Snapshot has been taken", kwargs)


def saved(name, suffix=None, **kwargs):
    """
    The classic (deprecated) name of :func:`snapshot`: ensure every VM matching ``name`` (a
    glob) has the snapshot ``<vm>-<suffix>`` (default suffix ``salt``), taken once.

    .. code-block:: yaml

        domain*:
          virt.saved:
            - suffix: periodic
    """
    return _snapshot(name, suffix, "Snapshots has been taken", kwargs)


def _snapshot(name, suffix, comment, kwargs):
    conn = _conn_args(kwargs)
    suffix = str(suffix) if suffix not in (None, "") else "salt"

    def needed(domain, _state):
        have = __salt__["virt.list_snapshots"](domain, **conn).get(domain, [])
        return f"{domain}-{suffix}" not in have

    def act(domain, _state):
        res = __salt__["virt.snapshot"](domain, name=f"{domain}-{suffix}", **conn)
        return {"snapshot": res["snapshot"]}

    return _virt_call(name, "saved", comment, needed, act, kwargs)


def unpowered(name, **kwargs):
    """
    The classic (deprecated) name of :func:`powered_off`: pull the plug of the running VMs
    matching ``name`` (a glob); changes ``unpowered: [{domain, stop}]``.

    .. code-block:: yaml

        test-*:
          virt.unpowered
    """
    return powered_off(name, **kwargs)


def reverted(name, snapshot=None, cleanup=False, **kwargs):  # pylint: disable=redefined-outer-name
    """
    Revert the VMs matching ``name`` (a glob) to their snapshot ``snapshot`` (default: the one
    before the current snapshot), deleting the snapshots taken after it with ``cleanup``
    (``virt.revert_snapshot``). Like the classic state this is an action: every run reverts
    again, discarding what the guest changed since. ``test=True`` names the snapshot each VM
    would go back to and changes nothing.

    Changes, as the classic state's: for one VM ``{domain, current, deleted}``; for several
    ``{reverted: [{domain, current, deleted}], ignored: [{domain, issue}]}``.

    .. code-block:: yaml

        web1:
          virt.reverted:
            - snapshot: before-upgrade
            - cleanup: True
    """
    ret = {"name": name, "changes": {}, "result": False, "comment": ""}
    unknown = sorted(k for k in kwargs if k not in _CONNECTION_ARGS and not k.startswith("__"))
    if unknown:
        ret["comment"] = f"virt.reverted: unknown argument(s) {', '.join(unknown)}"
        return ret
    conn = _conn_args(kwargs)
    test = _test()
    try:
        domains = sorted(fnmatch.filter(__salt__["virt.list_domains"](**conn), name))
    except (CommandExecutionError, SaltInvocationError) as exc:
        ret["comment"] = str(exc)
        return ret
    if not domains:
        ret["comment"] = f'No domains found for criteria "{name}"'
        return ret
    done, ignored = [], []
    for domain in domains:
        try:
            res = __salt__["virt.revert_snapshot"](domain, vm_snapshot=snapshot, cleanup=cleanup, test=test, **conn)
            done.append({"domain": domain, "current": res["reverted"], "deleted": res["deleted"]})
        except (CommandExecutionError, SaltInvocationError) as exc:
            ignored.append({"domain": domain, "issue": str(exc)})
    if len(domains) == 1:
        ret["changes"] = done[0] if done else {}
    else:
        ret["changes"] = {k: v for k, v in (("reverted", done), ("ignored", ignored)) if v}
    ret["result"] = bool(done) and (None if test else True)
    plural = "s" if len(done) > 1 else ""
    parts = [f"Domain{plural} {'would be' if test else 'has been' if not plural else 'have been'} reverted: "
             + ", ".join(f"{d['domain']} to {d['current']}" for d in done)] if done else []
    parts += [f"{i['domain']}: {i['issue']}" for i in ignored]
    ret["comment"] = "; ".join(parts)
    return ret


# --------------------------------------------------------------------------- virtual networks

# The settings of a network as the classic states pass them to virt.network_define/update.
_NETWORK_SETTINGS = ("bridge", "forward", "vport", "tag", "ipv4_config", "ipv6_config", "mtu", "domain", "nat",
                     "interfaces", "addresses", "physical_function", "dns")


def _network(name, running, autostart, settings, conn, kwargs):
    """virt.network_defined / virt.network_running, with the classic states' changes and comments."""
    ret = {"name": name, "result": True, "changes": {}, "comment": ""}
    test = _test()
    try:
        # Unknown arguments and bad values are refused before libvirt is asked (test=True too).
        NetworkSpec.from_kwargs(f"network {name}", name=name, autostart=autostart, **settings, **kwargs)
    except VirtError as exc:
        ret.update(result=False, comment=str(exc))
        return ret
    notes = []
    try:
        info = __salt__["virt.network_info"](name, **conn).get(name)
        if not info:
            change = "Network defined" + (", marked for autostart" if autostart else "")
            if running:
                change += " and started"
            if not test:
                # virt.network_define is all or nothing: a network that cannot start is not left.
                __salt__["virt.network_define"](name, autostart=bool(autostart), start=running, **settings, **conn)
            ret["changes"][name] = change
            ret["comment"] = f"Network {name} {'would be ' if test else ''}{change[len('Network '):]}"
        else:
            # A bare state (no setting given) takes the network as it is: it would otherwise
            # reset it to an isolated network, the settings' defaults.
            bare = all(value is None for value in settings.values())
            res = {"changed": False} if bare else __salt__["virt.network_update"](name, test=test, details=True,
                                                                                  **settings, **conn)
            flip = bool(info["autostart"]) != bool(autostart)
            if flip and not test:
                __salt__["virt.network_set_autostart"](name, state="on" if autostart else "off", **conn)
            if res["changed"]:
                change = "Network updated" + (", autostart flag changed" if flip else "")
                notes.append(f"{'would be updated' if test else 'updated'} ({', '.join(sorted(res['changes']))})"
                             + (", autostart flag changed" if flip else ""))
                if res["restart_needed"]:
                    notes.append("it runs with its old settings until it is stopped and started again "
                                 "(virt.network_stop, virt.network_start)")
            elif flip:
                change = "Network autostart flag changed"
                notes.append(f"autostart flag {'would be ' if test else ''}{'set' if autostart else 'unset'}")
            else:
                change = None
                notes.append("settings not given, left as they are" if bare else "unchanged")
            if running and not info["active"]:
                change = f"{change} and started" if change else "Network started"
                notes.append("would be started" if test else "started")
                if not test:
                    __salt__["virt.network_start"](name, **conn)
            elif running:
                notes.append("is running")
            if change:
                ret["changes"][name] = change
            ret["comment"] = f"Network {name} " + "; ".join(notes)
    except (CommandExecutionError, SaltInvocationError) as exc:
        message = str(exc)  # the library's messages name the network already
        ret.update(result=False, comment=message if f"network {name}" in message else f"Network {name}: {message}")
        return ret
    if test and ret["changes"]:
        ret["result"] = None
    return ret


def network_defined(name, bridge=None, forward=None, vport=None, tag=None, ipv4_config=None, ipv6_config=None,
                    autostart=True, connection=None, username=None, password=None, mtu=None, domain=None,
                    nat=None, interfaces=None, addresses=None, physical_function=None, dns=None, **kwargs):
    """
    Ensure virtual network ``name`` is defined with these settings (the arguments of
    ``virt.network_define``: ``bridge``, ``forward``, ``vport``, ``tag``, ``ipv4_config``,
    ``ipv6_config``, ``mtu``, ``domain``, ``nat``, ``interfaces``, ``addresses``,
    ``physical_function``, ``dns``) and autostart flag (default True). A missing network is
    defined (not started); an existing one is compared with these settings and only those that
    differ are rewritten (``virt.network_update``); a running network keeps its old settings
    until it is stopped and started again (the comment says so). The changes are the classic
    ones (``{name: "Network defined, marked for autostart"}``, ``"Network updated"``...);
    the comment names the settings that changed. ``test=True`` reports and changes nothing.
    Unknown arguments fail the state, by name.

    With no setting at all (only ``name``, maybe ``autostart``), an existing network is taken
    as it is: only its autostart flag (and, for :func:`network_running`, its running state)
    is ensured; its settings are never reset (a missing one is defined isolated, as before).
    Give any setting and the network is compared with all of them, as above.

    .. code-block:: yaml

        natted:
          virt.network_defined:
            - bridge: natted
            - forward: nat
            - ipv4_config:
                cidr: 192.168.42.0/24
                dhcp_ranges:
                  - start: 192.168.42.10
                    end: 192.168.42.25
            - autostart: True

        ovs:
          virt.network_defined:
            - bridge: main
            - forward: bridge
            - vport: openvswitch
            - tag: 180
    """
    settings = {k: v for k, v in locals().items() if k in _NETWORK_SETTINGS}
    conn = _conn_args({"connection": connection, "username": username, "password": password})
    return _network(name, False, autostart, settings, conn, kwargs)


def network_running(name, bridge=None, forward=None, vport=None, tag=None, ipv4_config=None, ipv6_config=None,
                    autostart=True, connection=None, username=None, password=None, mtu=None, domain=None,
                    nat=None, interfaces=None, addresses=None, physical_function=None, dns=None, **kwargs):
    """
    Ensure virtual network ``name`` is defined as in :func:`network_defined` and running: a
    missing network is defined and started (all or nothing: one that cannot start is not left
    defined), a stopped one started.

    .. code-block:: yaml

        natted:
          virt.network_running:
            - bridge: natted
            - forward: nat
            - ipv4_config:
                cidr: 192.168.42.0/24
                dhcp_ranges:
                  - start: 192.168.42.10
                    end: 192.168.42.25
                  - start: 192.168.42.100
                    end: 192.168.42.150
            - autostart: True
    """
    settings = {k: v for k, v in locals().items() if k in _NETWORK_SETTINGS}
    conn = _conn_args({"connection": connection, "username": username, "password": password})
    return _network(name, True, autostart, settings, conn, kwargs)


# --------------------------------------------------------------------------- storage pools and volumes

# Pool types whose new pools are built (directory made, disk labelled, volume group created);
# a disk or volume group that exists already makes the build fail, which is then not an error.
_BUILDABLE_POOLS = ("dir", "fs", "netfs", "logical", "disk", "vstorage", "zfs")
_BUILT_ALREADY_OK = ("logical", "disk", "fs", "zfs")


def _pool_settings(ptype, target, permissions, source):
    """The classic states' ``source: {devices, dir, ...}`` as virt.pool_define's arguments."""
    settings = {"ptype": ptype, "target": target, "permissions": permissions}
    if source is not None and not isinstance(source, dict):
        raise SaltInvocationError(f"source must be a mapping of devices, dir, hosts, ..., not {source!r}")
    settings.update({f"source_{key}": value for key, value in (source or {}).items()})
    return settings


def _pool_build(name, ptype, conn, notes):
    try:
        __salt__["virt.pool_build"](name, **conn)
    except CommandExecutionError as exc:
        if ptype not in _BUILT_ALREADY_OK:
            raise
        notes.append(f"not built ({exc}); used as it is")
        return False
    return True


def _pool_new(name, running, settings, transient, autostart, conn, test, notes):
    change = "Pool defined" + (", marked for autostart" if autostart and not transient else "")
    if not test:
        __salt__["virt.pool_define"](name, transient=bool(transient), start=bool(transient), **settings, **conn)
    try:
        if settings["ptype"] in _BUILDABLE_POOLS and not transient:
            if test or _pool_build(name, settings["ptype"], conn, notes):
                change += ", built"
        if running and not transient:
            change += ", started"
            if not test:
                __salt__["virt.pool_start"](name, **conn)
        if autostart and not transient and not test:
            __salt__["virt.pool_set_autostart"](name, state="on", **conn)
    except (CommandExecutionError, SaltInvocationError):
        if not test:  # all or nothing: a pool that cannot be built or started is not left defined
            __salt__["virt.pool_undefine"](name, **conn)
        raise
    return change


def _pool_existing(name, running, settings, info, autostart, conn, test, notes):
    res = __salt__["virt.pool_update"](name, test=test, details=True, **settings, **conn)
    flip = bool(info["autostart"]) != bool(autostart) and info["persistent"]
    parts = []
    if res["changed"]:
        parts.append("Pool updated")
        notes.append(f"{'would be updated' if test else 'updated'} ({', '.join(sorted(res['changes']))})")
    if flip:
        parts.append("autostart flag changed" if parts else "Pool autostart flag changed")
        if not test:
            __salt__["virt.pool_set_autostart"](name, state="on" if autostart else "off", **conn)
    is_running = info["state"] == "running"
    if running and is_running and res["restart_needed"]:
        parts.append("restarted")
        if not test:
            __salt__["virt.pool_stop"](name, **conn)
            __salt__["virt.pool_start"](name, **conn)
    elif running and not is_running:
        parts.append("started" if parts else "Pool started")
        if not test:
            __salt__["virt.pool_start"](name, **conn)
    elif res["restart_needed"]:
        notes.append("it runs with its old definition until it is stopped and started again")
    if not parts:
        notes.append("unchanged" + ("; is running" if running else ""))
    return ", ".join(parts) or None


def _pool(name, running, settings, transient, autostart, conn, kwargs):
    """virt.pool_defined / virt.pool_running, with the classic states' changes."""
    ret = {"name": name, "result": True, "changes": {}, "comment": ""}
    test = _test()
    try:
        # Unknown arguments and bad values are refused before libvirt is asked (test=True too);
        # without ptype (the classic bare "virt.pool_running") the pool's own type is used below.
        if settings["ptype"] is not None or kwargs:
            PoolSpec.from_kwargs(f"pool {name}", name=name, **settings, **kwargs)
    except VirtError as exc:
        ret.update(result=False, comment=str(exc))
        return ret
    notes = []
    try:
        info = __salt__["virt.pool_info"](name, **conn).get(name)
        if info and settings["ptype"] is None:
            settings = dict(settings, ptype=info["type"])
            PoolSpec.from_kwargs(f"pool {name}", name=name, **settings)
        if info:
            change = _pool_existing(name, running, settings, info, autostart, conn, test, notes)
        elif settings["ptype"] is None:
            raise SaltInvocationError("it is not defined: ptype (and its settings) are needed to define it")
        else:
            change = _pool_new(name, running, settings, transient, autostart, conn, test, notes)
    except (CommandExecutionError, SaltInvocationError, VirtError) as exc:
        message = str(exc)
        ret.update(result=False, comment=message if f"pool {name}" in message else f"Pool {name}: {message}")
        return ret
    if change:
        ret["changes"][name] = change
        notes.insert(0, ("would be: " if test else "") + change[0].lower() + change[1:])
    ret["comment"] = f"Pool {name}: " + "; ".join(notes)
    if test and ret["changes"]:
        ret["result"] = None
    return ret


def pool_defined(name, ptype=None, target=None, permissions=None, source=None, transient=False, autostart=True,
                 connection=None, username=None, password=None, **kwargs):
    """
    Ensure storage pool ``name`` is defined with these settings (the arguments of
    ``virt.pool_define``; ``source`` holds the ``source_*`` ones without the prefix:
    ``devices``, ``dir``, ``hosts``, ``adapter``, ``auth``, ``name``, ``format``,
    ``initiator``) and autostart flag (default True). A new pool is defined and built (its
    directory made, its volume group created...; a device that holds one already is used as it
    is), not started; an existing one is compared and only the settings given that differ are
    rewritten. Changes are the classic ones (``{name: "Pool defined, marked for autostart,
    built"}``, ``"Pool updated"``...). Host directories, devices and volume groups must be
    allowed by the operator (``docs/storage.rst``). Unknown arguments fail the state, by name.

    .. code-block:: yaml

        images:
          virt.pool_defined:
            - ptype: dir
            - target: /srv/pools/images
            - permissions:
                mode: '0755'
    """
    settings = _pool_settings(ptype, target, permissions, source)
    conn = _conn_args({"connection": connection, "username": username, "password": password})
    return _pool(name, False, settings, transient, autostart, conn, kwargs)


def pool_running(name, ptype=None, target=None, permissions=None, source=None, transient=False, autostart=True,
                 connection=None, username=None, password=None, **kwargs):
    """
    Ensure storage pool ``name`` is defined as in :func:`pool_defined` and running: a new pool
    is defined, built and started (all or nothing: one that cannot be built or started is not
    left defined), a stopped one started, a running one whose definition changed restarted.

    .. code-block:: yaml

        vms:
          virt.pool_running:
            - ptype: logical
            - source:
                devices:
                  - path: /dev/sdb
                name: vg_vms
    """
    settings = _pool_settings(ptype, target, permissions, source)
    conn = _conn_args({"connection": connection, "username": username, "password": password})
    return _pool(name, True, settings, transient, autostart, conn, kwargs)


def _purge(name, info, conn, test, changes, unsupported):
    if info["type"] in ("iscsi", "iscsi-direct", "mpath", "scsi"):
        unsupported.append("deleting volume")
        return
    __salt__["virt.pool_refresh"](name, **conn)
    for volume in __salt__["virt.pool_list_volumes"](name, **conn):
        if test or __salt__["virt.volume_delete"](name, volume, **conn):
            changes["deleted_volumes"].append(volume)


def pool_deleted(name, purge=False, connection=None, username=None, password=None):
    """
    Ensure storage pool ``name`` is not defined: stop it and undefine it; with ``purge``, delete
    its volumes (for ever) and its resources (directory, volume group...) first. Changes:
    ``{stopped, deleted, undefined, deleted_volumes}`` as classic; actions a pool type does not
    support are named in the comment.

    .. code-block:: yaml

        images:
          virt.pool_deleted:
            - purge: True
    """
    ret = {"name": name, "changes": {}, "result": True, "comment": ""}
    conn = _conn_args({"connection": connection, "username": username, "password": password})
    test = _test()
    try:
        info = __salt__["virt.pool_info"](name, **conn).get(name)
        if not info:
            ret["comment"] = f"Storage pool could not be found: {name}"
            return ret
        changes = ret["changes"] = {"stopped": False, "deleted": False, "undefined": False, "deleted_volumes": []}
        unsupported = []
        if info["state"] == "running":
            if purge:
                _purge(name, info, conn, test, changes, unsupported)
            changes["stopped"] = test or __salt__["virt.pool_stop"](name, **conn)
        if purge and info["type"] in ("dir", "fs", "netfs", "logical", "vstorage", "zfs"):
            changes["deleted"] = test or __salt__["virt.pool_delete"](name, **conn)
        elif purge:
            unsupported.append("deleting pool")
        if info["persistent"]:
            changes["undefined"] = test or __salt__["virt.pool_undefine"](name, **conn)
        if unsupported:
            ret["comment"] = f"Unsupported actions for pool of type \"{info['type']}\": {', '.join(unsupported)}"
        else:
            ret["comment"] = f"Storage pool {name} {'would be ' if test else ''}deleted"
    except (CommandExecutionError, SaltInvocationError) as exc:
        ret.update(result=False, comment=f"Failed deleting pool: {exc}")
        return ret
    if test:
        ret["result"] = None
    return ret


def volume_defined(pool, name, size, allocation=0, format=None, type=None, permissions=None,  # noqa: A002
                   backing_store=None, nocow=False, connection=None, username=None, password=None):
    """
    Ensure volume ``name`` (``size`` MiB) exists in storage pool ``pool`` (the arguments of
    ``virt.volume_define``). An existing volume with another format or backing store fails the
    state; one of another size is left as it is (the comment says so). Changes:
    ``{"<pool>/<name>": {old: "", new: "defined"}}``.

    .. code-block:: yaml

        data.qcow2:
          virt.volume_defined:
            - pool: images
            - size: 8192
            - format: qcow2
    """
    ret = {"name": name, "changes": {}, "result": True, "comment": ""}
    conn = _conn_args({"connection": connection, "username": username, "password": password})
    test = _test()
    try:
        # Bad names and values are refused before libvirt is asked, so test=True predicts it too.
        volumes.volume_xml(name, size, allocation, format, type, permissions, backing_store, nocow)
    except VirtError as exc:
        ret.update(result=False, comment=str(exc))
        return ret
    try:
        if pool not in __salt__["virt.list_pools"](**conn):
            if not test:
                raise SaltInvocationError(f"storage pool {pool} is not defined on this hypervisor")
            found = None  # test=True: an earlier state of the same run may define the pool
        else:
            found = __salt__["virt.volume_infos"](pool, name, **conn).get(pool, {}).get(name)
        if found:
            same_backing = (found.get("backing_store") or {}) == (
                {"path": backing_store.get("path"), "format": backing_store.get("format")} if backing_store else {})
            if not same_backing or (format is not None and found.get("format") != format):
                ret.update(result=False, comment="A volume with the same name but different backing store or "
                                                 "format is existing")
            elif int(found["capacity"]) != int(size) * 1024 * 1024:
                ret["comment"] = "The capacity of the volume is different, but no resize performed"
            else:
                ret["comment"] = "volume is existing"
            return ret
        if not test:
            __salt__["virt.volume_define"](pool, name, size, allocation=allocation, format=format, type=type,
                                           permissions=permissions, backing_store=backing_store, nocow=nocow,
                                           **conn)
    except (CommandExecutionError, SaltInvocationError) as exc:
        ret.update(result=False, comment=str(exc))
        return ret
    ret["changes"] = {f"{pool}/{name}": {"old": "", "new": "defined"}}
    ret["comment"] = f"Volume {name} {'would be ' if test else ''}defined in pool {pool}"
    if test:
        ret["result"] = None
    return ret
