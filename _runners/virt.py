"""
Salt Virt runner: the master side of the private cloud (``salt-run virt.*``).

It finds the hypervisor minions, fans calls out with Salt's LocalClient, places new VMs with
``saltvirt.placement`` and pre-accepts their minion keys.

Master configuration (all optional)::

    virt:
      hypervisors: 'hypervisor*'     # target of the hypervisor minions (glob), or
      #hypervisors: {tgt: 'G@virtual_host:true', tgt_type: compound}
      timeout: 10                    # seconds a hypervisor has to answer a query
      init_timeout: 900              # seconds virt.init may take (image copy + seeding)
      placement:                     # see saltvirt.placement.Policy
        rank: free_memory            # free_memory | spread | pack
        cpu_ratio: 4.0
        reserve_memory_mib: 256
      tunnel: False                  # migrate through libvirt's TLS tunnel (port 16514)

Without ``virt:hypervisors`` every minion that has a working ``virt`` module counts (the
``virtual:physical`` grain is not used: it excludes nested hypervisors).
"""

import logging
import os

import salt.client
import salt.utils.minions
from salt.exceptions import SaltInvocationError, SaltRunnerError

try:
    from saltvirt import domain as dommod
    from saltvirt import placement, reservations, seeding
    from saltvirt.errors import InvalidArgument

    HAS_SALTVIRT = True
except ImportError as _exc:
    HAS_SALTVIRT = False
    IMPORT_ERROR = str(_exc)

log = logging.getLogger(__name__)

__virtualname__ = "virt"
__func_alias__ = {"list_": "list"}


def __virtual__():
    if not HAS_SALTVIRT:
        return False, f"virt runner: salt-virt library missing ({IMPORT_ERROR}); set utils_dirs or pip install salt-virt"
    return __virtualname__


# --------------------------------------------------------------------------- plumbing


def _conf(key, default=None):
    value = __opts__.get("virt", {}) or {}
    for part in key.split(":"):
        if not isinstance(value, dict) or part not in value:
            return default
        value = value[part]
    return value


def _target():
    tgt = _conf("hypervisors", "*")
    if isinstance(tgt, dict):
        return tgt.get("tgt", "*"), tgt.get("tgt_type", "glob")
    if isinstance(tgt, list):
        return tgt, "list"
    return tgt, "glob"


def _progress(message, **data):
    data.update(message=message, outputter="virt_progress")
    try:
        __jid_event__.fire_event(data, "progress")
    except NameError:  # called outside a runner job (tests, orchestration internals)
        log.info("virt: %s", message)


def _fanout(fun, arg=(), kwarg=None, tgt=None, tgt_type=None, timeout=None):
    """Run ``fun`` on hypervisors; return ``(answers, errors)``.

    ``answers``: ``{minion: return}`` of calls that succeeded; ``errors``: ``{minion: reason}``
    for calls that failed or minions that did not answer within the timeout. Minions without
    the ``virt`` module (not hypervisors) are left out of both.
    """
    if tgt is None:
        tgt, tgt_type = _target()
    tgt_type = tgt_type or "glob"
    timeout = timeout or _conf("timeout", 10)
    expected = set(
        salt.utils.minions.CkMinions(__opts__).check_minions(tgt, tgt_type).get("minions", [])
    )
    with salt.client.LocalClient(mopts=__opts__) as client:
        raw = client.cmd(
            tgt, fun, arg=list(arg), kwarg=kwarg or None, timeout=timeout,
            tgt_type=tgt_type, full_return=True,
        )
    answers, errors = {}, {}
    for minion, ret in (raw or {}).items():
        value = ret.get("ret") if isinstance(ret, dict) else ret
        retcode = ret.get("retcode", 0) if isinstance(ret, dict) else 0
        if isinstance(value, str) and "is not available" in value:
            continue  # no virt module: not a hypervisor
        if retcode:
            errors[minion] = value if isinstance(value, str) else f"{fun} failed: {value}"
        else:
            answers[minion] = value
    explicit = tgt_type == "list" or (tgt_type == "glob" and not any(c in str(tgt) for c in "*?["))
    if explicit or tgt != "*":
        for minion in sorted(expected - set(raw or {})):
            errors[minion] = f"{minion} did not answer within {timeout}s (minion down?)"
    return answers, errors


def _hypervisor_error(errors):
    return "; ".join(f"{m}: {r}" for m, r in sorted(errors.items()))


def _full_info(host=None):
    if host:
        answers, errors = _fanout("virt.full_info", tgt=host, tgt_type="glob")
    else:
        answers, errors = _fanout("virt.full_info")
    return answers, errors


def _with_errors(data, errors):
    for minion, reason in errors.items():
        data[minion] = {"error": reason}
    return data


def _find_vm(name):
    """``(host, state)`` of domain ``name``; clear errors for missing or duplicate VMs."""
    answers, errors = _fanout("virt.vm_state")
    hosts = {h: states[name] for h, states in answers.items() if isinstance(states, dict) and name in states}
    if len(hosts) > 1:
        found = ", ".join(f"{h} ({s})" for h, s in sorted(hosts.items()))
        raise SaltRunnerError(f"VM {name} is defined on several hypervisors: {found}; name the host with host=")
    if not hosts:
        msg = f"no VM named {name} on any hypervisor ({', '.join(sorted(answers)) or 'none answered'})"
        if errors:
            msg += f"; not answering: {_hypervisor_error(errors)}"
        raise SaltRunnerError(msg)
    return next(iter(hosts.items()))


def _vm_call(name, fun, host=None, **kwarg):
    if host is None:
        host, _state = _find_vm(name)
    answers, errors = _fanout(fun, arg=[name], kwarg=kwarg, tgt=host, tgt_type="glob")
    if host not in answers:
        raise SaltRunnerError(errors.get(host) or f"{host} did not answer")
    ret = answers[host]
    if isinstance(ret, dict):
        ret = dict(ret, host=host)
    return ret


# --------------------------------------------------------------------------- inventory


def host_info(host=None):
    """
    Hypervisor facts: CPUs, memory, free memory and CPUs, libvirt version, free disk space.

    CLI Example:

    .. code-block:: bash

        salt-run virt.host_info
        salt-run virt.host_info host=hypervisor1
    """
    answers, errors = _full_info(host)
    data = {}
    for minion, info in answers.items():
        data[minion] = {k: v for k, v in info.items() if k != "vm_info"}
    return _with_errors(data, errors)


def list_(host=None, quiet=False):
    """
    The VMs of every hypervisor grouped by state.

    CLI Example:

    .. code-block:: bash

        salt-run virt.list
    """
    if host:
        answers, errors = _fanout("virt.vm_state", tgt=host, tgt_type="glob")
    else:
        answers, errors = _fanout("virt.vm_state")
    data = {}
    for minion, states in answers.items():
        grouped = {}
        for vm, state in sorted(states.items()):
            grouped.setdefault(state, []).append(vm)
        data[minion] = grouped
    return _with_errors(data, errors)


def query(host=None, quiet=False):
    """
    Everything about every hypervisor and its VMs, printed in Salt Virt's query format
    (``--out=json`` / ``--out=yaml`` give the structured data).

    CLI Example:

    .. code-block:: bash

        salt-run virt.query
        salt-run virt.query host=hypervisor1 --out=json
    """
    answers, errors = _full_info(host)
    data = _with_errors(dict(answers), errors)
    if quiet:
        return data
    return {"outputter": "virt_query", "data": data}


def vm_info(name, quiet=False):
    """
    One VM's information (cpu, memory, state, graphics, disks, NICs) and its host.

    CLI Example:

    .. code-block:: bash

        salt-run virt.vm_info centos1
    """
    host, _state = _find_vm(name)
    info = _vm_call(name, "virt.vm_info", host=host)
    data = {host: {"vm_info": info}}
    if quiet:
        return data
    return {"outputter": "virt_query", "data": data}


def _policy():
    try:
        return placement.Policy.from_dict(_conf("placement", {}) or {})
    except InvalidArgument as exc:
        raise SaltInvocationError(f"master config virt:placement: {exc}") from exc


def _host_records(answers):
    records = []
    for minion, info in answers.items():
        records.append({
            "id": minion,
            "cpus": info["node_info"]["cpus"],
            "memory_total": info["node_info"]["phymemory"],
            "disk_free": info.get("disk_free"),
            "vms": info.get("usage", []),
            "bridges": info.get("bridges", []),
            "up": True,
        })
    return records


def _request(name, cpu, mem, disk=0, exclude=()):
    try:
        return placement.Request(name=name, cpu=int(cpu), memory_mib=int(mem), disk_mib=int(disk or 0),
                                 exclude=tuple(exclude))
    except (TypeError, ValueError) as exc:
        raise SaltInvocationError(f"cpu, mem and disk must be integers: {exc}") from exc
    except InvalidArgument as exc:
        raise SaltInvocationError(str(exc)) from exc


def next_host(cpu=1, mem=512, disk=0, explain=False, name="new-vm"):
    """
    The hypervisor a new VM of ``cpu`` vCPUs and ``mem`` MiB would go to.

    With ``explain=True`` also every host's rank and why others were excluded.

    CLI Example:

    .. code-block:: bash

        salt-run virt.next_host
        salt-run virt.next_host cpu=4 mem=8192 explain=True
    """
    answers, errors = _full_info()
    records = _host_records(answers) + [{"id": m, "up": False} for m in errors]
    result = placement.place(records, _request(name, cpu, mem, disk), _policy())
    if explain:
        return result.explain()
    if result.host is None:
        raise SaltRunnerError(placement.fits_nowhere_message(result))
    return result.host


# --------------------------------------------------------------------------- provisioning


def _accepted_key_path(name):
    return os.path.join(__opts__["pki_dir"], "minions", name)


def _preaccept(name, pub):
    for sub in ("minions", "minions_pre", "minions_rejected", "minions_denied"):
        if os.path.exists(os.path.join(__opts__["pki_dir"], sub, name)):
            raise SaltInvocationError(
                f"the master already has a key for minion {name} ({sub}); remove it with "
                f"`salt-key -d {name}` or choose another name"
            )
    path = _accepted_key_path(name)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as fh:
        fh.write(pub)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path


def _delete_key(name):
    try:
        os.unlink(_accepted_key_path(name))
        return True
    except FileNotFoundError:
        return False


def init(name, cpu, mem, image=None, host=None, seed=True, **kwargs):
    """
    Create a VM on a hypervisor chosen by placement (or ``host=``), seeded with a minion
    whose key the master accepts in advance: once the VM boots, ``salt <name> test.version``
    answers without ``salt-key -a``.

    Every option of the ``virt.init`` execution module is forwarded (``enable_qcow``,
    ``enable_vnc``, ``start``, ``nic``, ``disk``, ``disks``, ``interfaces``, ``graphics``,
    ``seed_cmd``, ``install``, ``hypervisor``, ``saltenv``...).

    CLI Example:

    .. code-block:: bash

        salt-run virt.init centos1 2 512 salt://centos.img
        salt-run virt.init centos2 1 512 salt://centos.qcow2 enable_qcow=True enable_vnc=True
        salt-run virt.init web1 2 2048 salt://centos.qcow2 host=hypervisor2 start=False
    """
    try:
        dommod.validate_name(name)
    except InvalidArgument as exc:
        raise SaltInvocationError(str(exc)) from exc
    kwargs = {k: v for k, v in kwargs.items() if not k.startswith("__")}
    _progress(f"Searching for hypervisors for {name}")
    answers, errors = _full_info()
    if not answers:
        raise SaltRunnerError(f"no hypervisor answered: {_hypervisor_error(errors) or 'none matched'}")
    for minion, info in answers.items():
        if name in (info.get("vm_info") or {}):
            raise SaltInvocationError(f"a VM named {name} already exists on {minion}")
    if host is not None and host not in answers:
        known = ", ".join(sorted(answers))
        raise SaltInvocationError(errors.get(host) or f"unknown hypervisor {host} (answering: {known})")
    records = _host_records(answers) + [{"id": m, "up": False} for m in errors]
    request = _request(name, cpu, mem)
    if host is not None:
        records = [r for r in records if r["id"] == host]
    store = reservations.Reservations(os.path.join(__opts__["cachedir"], "saltvirt", "reservations"))
    try:
        with store.placed(records, request, _policy()) as chosen:
            return _init_on(chosen.host, name, cpu, mem, image, seed, kwargs)
    except placement.NoHostFits as exc:
        raise SaltRunnerError(str(exc)) from exc


def _init_on(host, name, cpu, mem, image, seed, kwargs):
    _progress(f"Creating VM {name} on hypervisor {host}", host=host)
    key_path = None
    if seed and image is not None and not (kwargs.get("pub_key") and kwargs.get("priv_key")):
        priv, pub = seeding.gen_minion_keys()
        kwargs.update(pub_key=pub, priv_key=priv)
        key_path = _preaccept(name, pub)
        _progress(f"Minion key of {name} accepted on the master", host=host)
    try:
        answers, errors = _fanout(
            "virt.init", arg=[name, cpu, mem], kwarg=dict(kwargs, image=image, seed=seed),
            tgt=host, tgt_type="glob", timeout=_conf("init_timeout", 900),
        )
        if host not in answers:
            raise SaltRunnerError(f"virt.init of {name} on {host} failed: {errors.get(host, 'no answer')}")
    except BaseException:
        if key_path:
            _delete_key(name)
            log.info("virt.init of %s failed: its minion key was removed again", name)
        raise
    result = answers[host]
    if isinstance(result.get("seeded"), dict):
        result["seeded"].pop("minion_pub", None)
        result["seeded"]["key_accepted"] = bool(key_path)
    _progress(f"VM {name} is {result.get('state')} on {host}", host=host)
    return result


# --------------------------------------------------------------------------- per-VM commands


def start(name, host=None):
    """
    Start a VM wherever it is defined.

    CLI Example:

    .. code-block:: bash

        salt-run virt.start centos1
    """
    return _vm_call(name, "virt.start", host=host)


def stop(name, host=None, timeout=0):
    """
    Shut a VM down cleanly (ACPI); ``timeout`` seconds to wait.

    CLI Example:

    .. code-block:: bash

        salt-run virt.stop centos1 timeout=60
    """
    return _vm_call(name, "virt.stop", host=host, timeout=timeout)


def force_off(name, host=None):
    """
    Stop a VM immediately (virsh destroy).

    CLI Example:

    .. code-block:: bash

        salt-run virt.force_off centos1
    """
    return _vm_call(name, "virt.force_off", host=host)


def reset(name, host=None):
    """
    Hard-reset a running VM.

    CLI Example:

    .. code-block:: bash

        salt-run virt.reset centos1
    """
    return _vm_call(name, "virt.reset", host=host)


def pause(name, host=None):
    """
    Pause a running VM.

    CLI Example:

    .. code-block:: bash

        salt-run virt.pause centos1
    """
    return _vm_call(name, "virt.pause", host=host)


def resume(name, host=None):
    """
    Resume a paused VM.

    CLI Example:

    .. code-block:: bash

        salt-run virt.resume centos1
    """
    return _vm_call(name, "virt.resume", host=host)


def purge(name, delete_key=True, host=None):
    """
    Destroy a VM, undefine it, delete the disks virt.init made for it, and (by default)
    delete its minion key on the master.

    CLI Example:

    .. code-block:: bash

        salt-run virt.purge centos1
        salt-run virt.purge centos1 delete_key=False
    """
    result = _vm_call(name, "virt.purge", host=host)
    result["key_deleted"] = _delete_key(name) if delete_key else False
    return result
