"""
Salt Virt runner: the master side of the private cloud (``salt-run virt.*``).

It finds the hypervisor minions, fans calls out with Salt's LocalClient, places new VMs with
``saltvirt.placement`` and accepts their minion keys (made on the hypervisors).

Master configuration (all optional)::

    virt:
      hypervisors: 'hypervisor*'     # REQUIRED: the hypervisors' minion ids: a glob, a list,
      #hypervisors: [hv1, hv2]       # or {tgt: '^hv[0-9]+$', tgt_type: pcre}; never grains
      timeout: 10                    # seconds a hypervisor has to answer a query
      init_timeout: 900              # seconds virt.init may take (image copy + seeding)
      placement:                     # see saltvirt.placement.Policy
        rank: free_memory            # free_memory | spread | pack
        cpu_ratio: 4.0
        reserve_memory_mib: 256
      tunnel: False                  # migrate through libvirt's TLS tunnel (port 16514)
      syndics:                       # on a master of masters: the minion on each syndic's host
        syndic1: 'hypervisor*'       # and the hypervisors under it (docs/scale.rst)
      migrate_timeout: 3600          # seconds virt.migrate waits for the migration job
      prepare_timeout: 600           # seconds the target has to pre-create copied disks
      rebase_timeout: 1800           # seconds virt.rebase waits for the copies and rebases
      console:                       # web console proxy (websockify + noVNC), see virt.console
        listen: 127.0.0.1            # where the proxy listens (default: loopback only); any
        #cert: /etc/ssl/console.pem  # other address needs cert + key: https/wss only
        #key: /etc/ssl/console.key
        port: 6080
        token_ttl: 300               # seconds a console URL stays valid (it works once)
        url: https://console.example.com/   # public base URL, if a reverse proxy fronts it
        web: /usr/share/novnc        # noVNC's files

``virt:hypervisors`` is required: every VM seeded here is a minion of this master too, so
hypervisors are named by minion id and no VM may take a name in that set (see
``docs/security.rst``). Grain targets are refused: a minion sets its own grains.
"""

import contextlib
import functools
import logging
import os
import secrets
import time

import salt.client
import salt.utils.event
import salt.utils.jid
import salt.utils.minions
from salt.exceptions import SaltInvocationError, SaltRunnerError

try:
    from saltvirt import coexist, fileio, migrator, pki, placement, reservations, sealed, syndics, trust, units
    from saltvirt import console as vconsole
    from saltvirt import domain as dommod
    from saltvirt import intents as vintents
    from saltvirt.errors import InvalidArgument, VirtError

    HAS_SALTVIRT = True
except ImportError as _exc:
    HAS_SALTVIRT = False
    IMPORT_ERROR = str(_exc)

log = logging.getLogger(__name__)

__virtualname__ = "virt"
__func_alias__ = {"list_": "list"}


def __virtual__():
    if not HAS_SALTVIRT:
        return False, (f"virt runner: salt-virt library missing ({IMPORT_ERROR}); "
                       "set utils_dirs or pip install salt-virt")
    coexist.warn_once(__opts__, ("runners",), "runner")
    return __virtualname__


# --------------------------------------------------------------------------- plumbing


def _clean_errors(func):
    """Expected failures return ``{result: False, error: ..., retcode: 1}``, no traceback.

    ``salt-run`` exits with the retcode; orchestration sees ``result: False``.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except (SaltInvocationError, SaltRunnerError) as exc:
            __context__["retcode"] = 1
            return {"result": False, "error": str(exc), "retcode": 1}

    return wrapper


def _conf(key, default=None):
    value = __opts__.get("virt", {}) or {}
    for part in key.split(":"):
        if not isinstance(value, dict) or part not in value:
            return default
        value = value[part]
    return value


def _hypervisors():
    try:
        return trust.Hypervisors.from_config(_conf("hypervisors"))
    except InvalidArgument as exc:
        raise SaltInvocationError(str(exc)) from exc


def _target():
    return _hypervisors().target()


def _exact(host):
    """``[host]`` for a list target: ``host=`` names exactly one hypervisor, never a glob."""
    try:
        return [trust.check_host(host, _hypervisors())]
    except InvalidArgument as exc:
        raise SaltInvocationError(str(exc)) from exc


def _progress(message, **data):
    data.update(message=message, outputter="virt_progress")
    try:
        __jid_event__.fire_event(data, "progress")
    except NameError:  # called outside a runner job (tests, orchestration internals)
        log.info("virt: %s", message)


def _fanout(fun, arg=(), kwarg=None, tgt=None, tgt_type=None, timeout=None, client=None, jid=None):
    """Run ``fun`` on hypervisors; return ``(answers, errors)``.

    ``answers``: ``{minion: return}`` of calls that succeeded; ``errors``: ``{minion: reason}``
    for calls that failed or minions that did not answer within the timeout. Minions without
    the ``virt`` module (not hypervisors) are left out of both. ``client``: a LocalClient to
    reuse (a new one costs about 60 ms). ``jid``: the job id to publish under.
    """
    if tgt is None:
        tgt, tgt_type = _target()
    tgt_type = tgt_type or "glob"
    timeout = timeout or _conf("timeout", 10)
    if tgt_type == "list" and __opts__.get("order_masters"):
        # A master of masters holds no keys of the minions under its syndics: a list is what it expects.
        expected = set(tgt)
    else:
        expected = set(
            salt.utils.minions.CkMinions(__opts__).check_minions(tgt, tgt_type).get("minions", [])
        )
    with contextlib.ExitStack() as stack:
        if client is None:
            client = stack.enter_context(salt.client.LocalClient(mopts=__opts__))
        raw = client.cmd(
            tgt, fun, arg=list(arg), kwarg=kwarg or None, timeout=timeout,
            tgt_type=tgt_type, full_return=True, jid=jid or "",
        )
    answers, errors = {}, {}
    for minion, ret in (raw or {}).items():
        value = ret.get("ret") if isinstance(ret, dict) else ret
        retcode = ret.get("retcode", 0) if isinstance(ret, dict) else 0
        if isinstance(value, str) and "is not available" in value:
            continue  # no virt module: not a hypervisor
        if isinstance(value, str) and value.startswith("Minion did not return"):
            errors[minion] = f"{minion} did not answer within {timeout}s (minion down?)"
            continue
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
        answers, errors = _fanout("virt.full_info", tgt=_exact(host), tgt_type="list")
    else:
        answers, errors = _fanout("virt.full_info")
    return answers, errors


def _with_errors(data, errors):
    """The answers plus ``{error}`` for hypervisors that failed; if any did, ``retcode: 1``
    (salt-run exits with it) next to them."""
    for minion, reason in errors.items():
        data[minion] = {"error": reason}
    if errors:
        __context__["retcode"] = 1
        data["retcode"] = 1
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
    answers, errors = _fanout(fun, arg=[name], kwarg=kwarg, tgt=_exact(host), tgt_type="list")
    if host not in answers:
        raise SaltRunnerError(f"{host}: {errors[host]}" if host in errors else f"{host} did not answer")
    ret = answers[host]
    if isinstance(ret, dict):
        ret = dict(ret, host=host)
    return ret


# --------------------------------------------------------------------------- inventory


@_clean_errors
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


@_clean_errors
def implementation():
    """
    Which implementation of Salt's ``virt`` runner this master loads, and whether
    ``saltext-virt`` (which ships a runner named ``virt`` too) is installed next to salt-virt.

    Returns ``salt_virt`` and ``saltext_virt`` (version and path, ``None`` when not installed),
    ``active`` (``runners``: ``salt-virt`` or ``saltext-virt`` and the file Salt loads),
    ``conflict`` (both installed) and ``message`` (what is active and how to choose, see
    ``docs/install.rst``). Where saltext-virt's runner is the active one, this function does not
    exist: ``salt-run virt.implementation`` then answers that it is not available.

    CLI Example:

    .. code-block:: bash

        salt-run virt.implementation
    """
    return coexist.report(__opts__, ("runners",))


@_clean_errors
def list_(host=None, quiet=False, timeout=None):
    """
    The VMs of every hypervisor grouped by state. A hypervisor that does not answer within
    ``timeout`` seconds (default ``virt:timeout``) is listed with its error and makes the
    command exit non-zero.

    CLI Example:

    .. code-block:: bash

        salt-run virt.list
        salt-run virt.list timeout=5
    """
    if host:
        answers, errors = _fanout("virt.vm_state", tgt=_exact(host), tgt_type="list", timeout=timeout)
    else:
        answers, errors = _fanout("virt.vm_state", timeout=timeout)
    data = {}
    for minion, states in answers.items():
        grouped = {}
        for vm, state in sorted(states.items()):
            grouped.setdefault(state, []).append(vm)
        data[minion] = grouped
    return _with_errors(data, errors)


@_clean_errors
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


@_clean_errors
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


@_clean_errors
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


_KEY_DIRS = ("minions", "minions_pre", "minions_rejected", "minions_denied")


def _key_path(sub, name):
    return os.path.join(__opts__["pki_dir"], sub, name)


def _known_minions():
    """Every minion id the master holds a key for, accepted or not."""
    known = set()
    for sub in _KEY_DIRS:
        with contextlib.suppress(OSError):
            known.update(os.listdir(os.path.join(__opts__["pki_dir"], sub)))
    return known


def _read_key(path):
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return None


def _accept(name, pub):
    """Accept ``name``'s public key (made on the hypervisor, returned by its virt.init).

    A pending key with the same content (the new minion asked before this ran) is moved to
    accepted; any other key under that id -- something else claims the name -- is refused.
    """
    pub = pub.strip()
    accepted = _key_path("minions", name)
    for sub in _KEY_DIRS:
        found = _read_key(_key_path(sub, name))
        if found is None or (found == pub and sub in ("minions", "minions_pre")):
            continue
        raise SaltRunnerError(
            f"not accepting the key of VM {name}: the master holds another key for that id in {sub}; "
            f"the VM was removed again. Check `salt-key -f {name}` before reusing the name"
        )
    try:
        fileio.write_atomic(accepted, (pub + "\n").encode(), 0o644)
    except OSError as exc:
        raise SaltRunnerError(
            f"cannot accept the key of {name}: {os.path.dirname(accepted)} is not writable ({exc.strerror})"
        ) from exc
    with contextlib.suppress(FileNotFoundError):
        os.unlink(_key_path("minions_pre", name))
    return accepted


def _delete_key(name):
    try:
        os.unlink(_key_path("minions", name))
        return True
    except FileNotFoundError:
        return False


def _check_new_name(name, kwargs):
    try:
        dommod.validate_name(name)
        trust.check_vm_name(name, _hypervisors(), _known_minions())
    except InvalidArgument as exc:
        raise SaltInvocationError(str(exc)) from exc
    if "priv_key" in kwargs or "pub_key" in kwargs:
        raise SaltInvocationError(
            f"virt.init {name}: pub_key/priv_key are not accepted by the runner: the hypervisor makes "
            "the VM's key pair and the master sees only its public key (a private key in a job "
            "argument reaches the job cache and the event bus)"
        )


@_clean_errors
def init(name, cpu, mem, image=None, host=None, seed=True, timeout=None, **kwargs):
    """
    Create a VM on a hypervisor chosen by placement (or ``host=``), seeded with a minion
    whose key the master accepts: once the VM boots, ``salt <name> test.version`` answers
    without ``salt-key -a``. The hypervisor makes the key pair; only the public key comes back.

    ``name`` may not match ``virt:hypervisors`` nor any minion id the master has a key for.
    Every option of the ``virt.init`` execution module is forwarded (``enable_qcow``,
    ``enable_vnc``, ``start``, ``nic``, ``disk``, ``disks``, ``interfaces``, ``graphics``,
    ``seed_cmd``, ``install``, ``hypervisor``, ``saltenv``...) except ``pub_key``/``priv_key``.

    Whole or nothing: if this call ends before the VM is complete -- Ctrl-C, ``timeout``
    seconds (default ``virt:init_timeout``, 900) passing, the master restarting -- the intent
    and the placement reservation stay on the master and ``salt-run virt.reconcile`` completes
    the VM (accepts its key) or removes what is left. A failure the hypervisor reports leaves
    nothing.

    CLI Example:

    .. code-block:: bash

        salt-run virt.init centos1 2 512 salt://centos.img
        salt-run virt.init centos2 1 512 salt://centos.qcow2 enable_qcow=True enable_vnc=True
        salt-run virt.init web1 2 2048 salt://centos.qcow2 host=hypervisor2 start=False
    """
    kwargs = {k: v for k, v in kwargs.items() if not k.startswith("__")}
    _check_new_name(name, kwargs)
    if host is not None:
        _exact(host)
    if _intents().get(name):
        raise SaltInvocationError(
            f"an earlier virt.init of {name} did not finish: run `salt-run virt.reconcile` to complete or "
            "remove it first"
        )
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
    request = _request(name, cpu, mem, _disk_mib(kwargs.get("disks")))
    if host is not None:
        records = [r for r in records if r["id"] == host]
    store = _reservations()
    try:
        chosen = store.place_and_reserve(records, request, _policy())
    except placement.NoHostFits as exc:
        raise SaltRunnerError(str(exc)) from exc
    return _init_on(store, chosen.host, name, cpu, mem, image, seed, kwargs, timeout)


def _disk_mib(disks):
    """MiB of the disks a call sizes itself (``disks: [{size: ...}]``, MiB or '8G'): what placement
    can know before the hypervisor; the hypervisor checks the whole (image included) itself."""
    total = 0
    for disk in disks or ():
        if isinstance(disk, dict) and disk.get("size") is not None:
            try:
                total += units.parse_size(disk["size"], default_unit="MiB")
            except InvalidArgument as exc:
                raise SaltInvocationError(f"disk {disk.get('name')!r}: {exc}") from exc
    return -(-total // (1024 * 1024))


def _reservations():
    return reservations.Reservations(os.path.join(__opts__["cachedir"], "saltvirt", "reservations"))


def _intents():
    return vintents.Intents(os.path.join(__opts__["cachedir"], "saltvirt", "intents"))


def _key_registry(name):
    """Keys this runner accepted for VMs (so that reconcile knows which keys are VMs')."""
    return os.path.join(__opts__["cachedir"], "saltvirt", "vm-keys", name)


def _complete(store, host, name, pub):
    """The VM exists on ``host``: accept its key, turn the reservation into it, end the intent."""
    if pub:
        try:
            if not _key_on_syndic(name, host):
                _accept(name, pub)
                _register_key(name, host)
        except SaltRunnerError:
            _rollback(store, host, name, defined=True)
            raise
    store.finish(name)
    _intents().end(name)


def _register_key(name, host):
    os.makedirs(os.path.dirname(_key_registry(name)), mode=0o700, exist_ok=True)
    fileio.write_atomic(_key_registry(name), host.encode(), 0o600)


def _syndics():
    try:
        return syndics.Syndics.from_config(_conf("syndics"))
    except InvalidArgument as exc:
        raise SaltInvocationError(f"master config {exc}") from exc


def _key_on_syndic(name, host):
    """Under a syndic (``virt:syndics``), VM ``name``'s key belongs on ``host``'s master: the
    minion on the syndic's host runs that master's ``virt.sync_key``. False when ``host``'s
    master is this one."""
    try:
        minion = _syndics().key_minion(host)
    except InvalidArgument as exc:
        raise SaltInvocationError(str(exc)) from exc
    if minion is None:
        return False
    answers, errors = _fanout("saltutil.runner", arg=["virt.sync_key"], kwarg={"kwarg": {"name": name, "host": host}},
                              tgt=[minion], tgt_type="list")
    ret = answers.get(minion)
    if not isinstance(ret, dict) or ret.get("result") is False:
        reason = ret.get("error") if isinstance(ret, dict) else (errors.get(minion) or ret)
        raise SaltRunnerError(f"the key of {name} on the master of {host} (through {minion}): {reason}")
    return ret


def _rollback(store, host, name, defined):
    """Nothing of ``name`` stays: the domain (if any) purged, files, reservation, intent gone."""
    fun = "virt.purge" if defined else "virt.remove_leftovers"
    _answers, errors = _fanout(fun, arg=[name], tgt=_exact(host), tgt_type="list")
    if errors:
        raise SaltRunnerError(f"cannot remove what is left of {name} on {host}: {_hypervisor_error(errors)}")
    store.release(name)
    _intents().end(name)


def _init_on(store, host, name, cpu, mem, image, seed, kwargs, timeout=None):
    jid = salt.utils.jid.gen_jid(__opts__)
    _intents().begin(name, host, jid=jid, seed=bool(seed and image is not None))
    timeout = float(timeout or _conf("init_timeout", 900))
    try:
        with salt.client.LocalClient(mopts=__opts__) as client:
            done = _SaltHosts(client).watch(
                host, "virt.init", [name, cpu, mem], dict(kwargs, image=image, seed=seed), None, None, timeout,
                jid=jid, on_published=lambda _jid: _progress(f"Creating VM {name} on hypervisor {host}", host=host),
            )
    except VirtError as exc:
        # No answer in time, or the job vanished: it may still create the VM. The intent and the
        # reservation stay for virt.reconcile (or the next attempt) to finish or undo.
        raise SaltRunnerError(
            f"virt.init of {name} on {host}: {exc}; it may still complete: `salt-run virt.reconcile` "
            "accepts its key when it does, or removes what is left"
        ) from exc
    except BaseException:
        # Ctrl-C or the master going away: the same, said in the master's log.
        log.warning("virt.init of %s on %s interrupted; salt-run virt.reconcile completes or removes it",
                    name, host)
        raise
    if not done.get("success", True) or done.get("retcode"):
        store.release(name)  # the hypervisor failed and rolled back: nothing to keep
        _intents().end(name)
        raise SaltRunnerError(f"virt.init of {name} on {host} failed: {done.get('return')}")
    result = done.get("return")
    seeded = result.get("seeded") if isinstance(result.get("seeded"), dict) else None
    _complete(store, host, name, seeded.pop("minion_pub", None) if seeded else None)
    if seeded is not None:
        seeded["key_accepted"] = True
        _progress(f"Minion key of {name} accepted on the master", host=host)
    _progress(f"VM {name} is {result.get('state')} on {host}", host=host)
    return result


def _job_running(host, jid):
    """True/False whether ``host`` still runs job ``jid``; None if it did not answer."""
    answers, _errors = _fanout("saltutil.find_job", arg=[jid], tgt=_exact(host), tgt_type="list", timeout=15)
    if host not in answers:
        return None
    return bool(answers[host])


def _reconcile_intent(store, intent, test):
    name, host = intent["name"], intent.get("host")
    running = _job_running(host, intent["jid"]) if intent.get("jid") else False
    status = None
    if running is not None:
        answers, _errors = _fanout("virt.init_status", arg=[name], tgt=_exact(host), tgt_type="list")
        status = answers.get(host)
    action, reason = vintents.decide(intent, running, status)
    entry = {"name": name, "host": host, "action": action, "reason": reason}
    if test or action == vintents.WAIT:
        return entry
    try:
        if action == vintents.COMPLETE:
            _complete(store, host, name, status.get("minion_pub"))
            entry["done"] = "completed: key accepted" if status.get("minion_pub") else "completed"
        else:
            _rollback(store, host, name, defined=bool(status.get("defined")))
            entry["done"] = "removed"
    except SaltRunnerError as exc:
        entry["error"] = str(exc)
    return entry


@_clean_errors
def reconcile(test=False):
    """
    Finish or undo what interrupted ``virt.init`` calls left, and report what does not add up.

    * **Unfinished inits** (an intent on the master): while the hypervisor still runs the job,
      nothing is done; a VM that was created is completed (its key, from the seed on the
      hypervisor, accepted; its reservation turned into the VM); one that was not is removed
      (domain, disks, seed, reservation).
    * **Keys without VMs**: keys this runner accepted for VMs that no hypervisor has any more are
      deleted (only when every hypervisor answered).
    * **VMs without keys**: seeded VMs whose key the master does not hold, listed (not accepted:
      a VM created by a direct ``virt.init`` on a hypervisor waits for ``salt-key -a``).
    * **Stale reservations**: reservations of names with neither an intent nor a VM, released.

    ``test=True`` only reports. Hypervisors that do not answer are listed; nothing about their
    VMs is decided.

    CLI Example:

    .. code-block:: bash

        salt-run virt.reconcile test=True
        salt-run virt.reconcile
    """
    store = _reservations()
    report = {"test": bool(test), "inits": [], "keys_without_vms": [], "vms_without_keys": [],
              "stale_reservations": []}
    report["inits"] = [_reconcile_intent(store, intent, test) for intent in _intents().all()]
    answers, errors = _fanout("virt.vm_state")
    vms = {vm for states in answers.values() if isinstance(states, dict) for vm in states}
    accepted = set(os.listdir(os.path.join(__opts__["pki_dir"], "minions")))
    pending = {i["name"] for i in _intents().all()}
    registry = os.path.dirname(_key_registry("x"))
    for name in sorted(os.listdir(registry)) if os.path.isdir(registry) and not errors else []:
        if name not in vms and name not in pending:
            report["keys_without_vms"].append(name)
            if not test:
                _delete_key(name)
                os.unlink(_key_registry(name))
    seeded, _seed_errors = _fanout("virt.seeded_vms")
    keys_here = _syndics()
    for host, names in seeded.items():
        if keys_here.key_minion(host):
            continue  # their keys live on the syndic's master: virt.reconcile there reports them
        for name in names or []:
            if name not in accepted and name not in pending:
                report["vms_without_keys"].append({"name": name, "host": host})
    for entry in store.entries():
        name = entry.get("name")
        if name not in vms and name not in pending and not errors:
            report["stale_reservations"].append(name)
            if not test:
                store.release(name)
    if errors:
        report["not_answering"] = errors
    if errors or any(i.get("error") for i in report["inits"]):
        __context__["retcode"] = report["retcode"] = 1
    return report


@_clean_errors
def sync_key(name, host):
    """
    Make this master's minion key for VM ``name`` match hypervisor ``host``: accept the public key
    the VM's seed on ``host`` holds (read from the hypervisor, never taken from the caller) while
    ``host`` has the VM; delete the key this runner once accepted for it when no hypervisor of
    this master has it any more. A master of masters calls it on a syndic's master, where the VMs of the hypervisors
    under that syndic authenticate (``virt:syndics``, ``docs/scale.rst``).

    CLI Example:

    .. code-block:: bash

        salt-run virt.sync_key web1 hypervisor1
        salt syndic1 saltutil.runner virt.sync_key kwarg='{name: web1, host: hypervisor1}'
    """
    host = _exact(host)[0]
    try:
        dommod.validate_name(name)
        trust.check_vm_name(name, _hypervisors(), _known_minions() - {name})
    except InvalidArgument as exc:
        raise SaltInvocationError(str(exc)) from exc
    answers, errors = _fanout("virt.init_status", arg=[name], tgt=[host], tgt_type="list")
    if host not in answers:
        raise SaltRunnerError(f"{host}: {errors.get(host) or 'no answer'}")
    status = answers[host]
    if status.get("defined") and status.get("minion_pub"):
        _accept(name, status["minion_pub"])
        _register_key(name, host)
        return {"name": name, "host": host, "key": "accepted"}
    if not status.get("defined") and os.path.exists(_key_registry(name)):
        # Migrated elsewhere is not gone: delete only when no hypervisor of this master has it.
        answers, errors = _fanout("virt.vm_state")
        if errors:
            raise SaltRunnerError(f"not deleting the key of {name} while hypervisors do not answer: "
                                  f"{_hypervisor_error(errors)}")
        if any(isinstance(states, dict) and name in states for states in answers.values()):
            return {"name": name, "host": host, "key": "unchanged"}
        deleted = _delete_key(name)
        os.unlink(_key_registry(name))
        return {"name": name, "host": host, "key": "deleted" if deleted else "absent"}
    return {"name": name, "host": host, "key": "unchanged"}


# --------------------------------------------------------------------------- per-VM commands


@_clean_errors
def start(name, host=None):
    """
    Start a VM wherever it is defined.

    CLI Example:

    .. code-block:: bash

        salt-run virt.start centos1
    """
    return _vm_call(name, "virt.start", host=host)


@_clean_errors
def stop(name, host=None, timeout=0):
    """
    Shut a VM down cleanly (ACPI); ``timeout`` seconds to wait.

    CLI Example:

    .. code-block:: bash

        salt-run virt.stop centos1 timeout=60
    """
    return _vm_call(name, "virt.stop", host=host, timeout=timeout)


@_clean_errors
def force_off(name, host=None):
    """
    Stop a VM immediately (virsh destroy).

    CLI Example:

    .. code-block:: bash

        salt-run virt.force_off centos1
    """
    return _vm_call(name, "virt.force_off", host=host)


@_clean_errors
def reset(name, host=None):
    """
    Hard-reset a running VM.

    CLI Example:

    .. code-block:: bash

        salt-run virt.reset centos1
    """
    return _vm_call(name, "virt.reset", host=host)


@_clean_errors
def pause(name, host=None):
    """
    Pause a running VM.

    CLI Example:

    .. code-block:: bash

        salt-run virt.pause centos1
    """
    return _vm_call(name, "virt.pause", host=host)


@_clean_errors
def resume(name, host=None):
    """
    Resume a paused VM.

    CLI Example:

    .. code-block:: bash

        salt-run virt.resume centos1
    """
    return _vm_call(name, "virt.resume", host=host)


@_clean_errors
def unseed(name, host=None):
    """
    Detach and delete a VM's cidata seed ISO (its minion key and first-boot config) once its
    minion has authenticated. Meant for the master's reactor on ``salt/minion/*/start`` (see
    ``docs/seeding.rst``): an id that is no VM, or a VM without a seed, is not an error.

    CLI Example:

    .. code-block:: bash

        salt-run virt.unseed web1
    """
    if _hypervisors().matches(name):
        return {"name": name, "unseeded": False, "reason": "a hypervisor, not a VM"}
    if host is None:
        try:
            host, _state = _find_vm(name)
        except SaltRunnerError as exc:
            return {"name": name, "unseeded": False, "reason": str(exc)}
    result = _vm_call(name, "virt.unseed", host=host)
    result["unseeded"] = bool(result.get("removed") or result.get("detached"))
    return result


@_clean_errors
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
    try:
        under_syndic = _key_on_syndic(name, result["host"]) if delete_key else False
    except SaltRunnerError as exc:  # the VM is gone; say what is left
        __context__["retcode"] = result["retcode"] = 1
        under_syndic = {"key": "not deleted"}
        result["key_error"] = str(exc)
    if under_syndic:
        result["key_deleted"] = under_syndic["key"] == "deleted"
    else:
        result["key_deleted"] = _delete_key(name) if delete_key else False
    with contextlib.suppress(FileNotFoundError):
        os.unlink(_key_registry(name))
    # A VM created moments ago may still hold its placement reservation: it is gone now.
    _reservations().release(name)
    return result


# --------------------------------------------------------------------------- base images


@_clean_errors
def rebase(base, new_base=None, host=None, live_pull=False, safe=True):
    """
    Before changing or removing a base image: on every hypervisor that has ``base`` (or
    only ``host``), copy it (``new_base``, default ``<base>.<YYYYmmddTHHMMSS>``) and rebase
    all the overlays that use it onto the copy (the execution module's
    ``virt.rebase_base``). Overlays of running VMs are refused, naming them, unless
    ``live_pull=True`` flattens them live.

    Returns per host the copy and the rebased overlays; ``result: False`` (and a non-zero
    exit) if any hypervisor failed or none has the image.

    CLI Example:

    .. code-block:: bash

        salt-run virt.rebase /var/lib/libvirt/images/centos.qcow2
        salt-run virt.rebase /srv/salt-images/base/centos-1f2e.qcow2 host=hypervisor1 live_pull=True
    """
    kwarg = {"new_base": new_base, "missing_ok": True, "live_pull": live_pull, "safe": safe}
    timeout = _conf("rebase_timeout", 1800)
    if host:
        answers, errors = _fanout("virt.rebase_base", arg=[base], kwarg=kwarg, tgt=_exact(host), tgt_type="list",
                                  timeout=timeout)
    else:
        answers, errors = _fanout("virt.rebase_base", arg=[base], kwarg=kwarg, timeout=timeout)
    hosts = {h: r for h, r in answers.items() if isinstance(r, dict) and r.get("present")}
    result = {
        "base": base,
        "hosts": hosts,
        "absent": sorted(h for h in answers if h not in hosts),
        "rebased": sum(len(r.get("rebased") or []) for r in hosts.values()),
    }
    if errors:
        result.update(result=False, retcode=1, error=f"rebase of {base} failed: {_hypervisor_error(errors)}",
                      errors=errors)
        __context__["retcode"] = 1
    elif not hosts:
        raise SaltRunnerError(f"no hypervisor has {base} ({', '.join(sorted(answers)) or 'none answered'})")
    else:
        result["result"] = True
    return result


# --------------------------------------------------------------------------- PKI


@_clean_errors
def operator_pki():
    """
    The operator's libvirt client certificate, issued by the master's CA (made on first use).

    Every hypervisor's libvirtd accepts it (its DN carries the libvirt client unit of
    ``tls_allowed_dn_list``), like the hypervisors' own client certificates and nothing else
    from the CA. The key stays in ``<pki_dir>/libvirt/operator`` on the master (0600); the
    return gives the directory for libvirt's ``?pkipath=`` and the certificate's subject.

    CLI Example:

    .. code-block:: bash

        salt-run virt.operator_pki
        virsh -c 'qemu+tls://hv1.example.com/system?pkipath=/etc/salt/pki/master/libvirt/operator' list
    """
    options = dict(__opts__.get("libvirt_pki") or {})
    options.setdefault("ca_dir", os.path.join(__opts__["pki_dir"], "libvirt"))
    options.pop("minions", None)
    try:
        result = pki.operator_pki(options)
    except VirtError as exc:  # InvalidArgument included
        raise SaltRunnerError(f"operator certificate: {exc}") from exc
    result["uri_example"] = f"qemu+tls://<hypervisor>/system?pkipath={result['pkipath']}"
    return result


# --------------------------------------------------------------------------- consoles


def _console_proxy():
    try:
        return vconsole.Proxy(
            os.path.join(__opts__["cachedir"], "saltvirt", "console"),
            listen=_conf("console:listen", vconsole.DEFAULT_LISTEN),
            port=_conf("console:port", vconsole.DEFAULT_PORT),
            web=_conf("console:web", vconsole.DEFAULT_WEB),
            cert=_conf("console:cert"),
            key=_conf("console:key"),
        )
    except InvalidArgument as exc:
        raise SaltInvocationError(f"master config virt:console: {exc}") from exc


def _web_console(proxy, name, hypervisor, gfx, ttl):
    """Start the proxy if needed and issue a one-time URL for ``gfx`` of VM ``name``."""
    if gfx["local_only"]:
        return {"error": (f"the console of {name} listens on {gfx['listen']}, the loopback of {hypervisor}, "
                          f"which the master cannot reach: use the SSH tunnel, or set virt:vnc:listen on "
                          f"{hypervisor} to an address the master reaches")}
    try:
        proxy.ensure()
        token, expires = proxy.tokens.issue(name, gfx["host"], gfx["port"], ttl=ttl, hypervisor=hypervisor)
    except VirtError as exc:
        raise SaltRunnerError(f"web console of {name}: {exc}") from exc
    base = _conf("console:url") or vconsole.default_base_url(proxy.listen, proxy.port, tls=proxy.tls)
    return {
        "url": _SHOWN,
        "_secret_url": vconsole.web_url(base, token),
        "expires": vconsole.iso_time(expires),
        "ttl": int(ttl),
        "note": "works once, for this VM only; run virt.console again for a new URL",
    }


_SHOWN = "shown on the terminal of the salt-run that asked, only"


def _to_caller(name, secrets):
    """Print ``secrets`` on the terminal of the ``salt-run`` that asked; ``False`` elsewhere.

    A runner's return is fired on the master's event bus and kept in the job cache, where
    every event reader (publisher_acl users, salt-api's /events) could use a one-time URL first.
    ``salt-run`` runs the runner in its own process, so its stdout is the caller's alone.
    """
    if __opts__.get("__cli") != "salt-run":
        return False
    for label, value in secrets:
        print(f"{name}: {label} (shown here only, not returned): {value}", flush=True)
    return True


def _vnc_password(name, hypervisor):
    """The VNC password of ``name``, asked sealed to a one-time key of this process: the job's
    return on the bus and in the job cache is ciphertext."""
    private, public = sealed.recipient()
    answers, errors = _fanout("virt.get_graphics", arg=[name], kwarg={"show_password": True, "seal_to": public},
                              tgt=_exact(hypervisor), tgt_type="list")
    if hypervisor not in answers:
        raise SaltRunnerError(f"{hypervisor}: {errors.get(hypervisor, 'no answer')}")
    box = next((g.get("password_sealed") for g in answers[hypervisor] if g.get("type") == "vnc"), None)
    if not box:
        raise SaltRunnerError(f"VM {name} on {hypervisor} has no VNC password")
    try:
        return sealed.unseal(private, box)
    except InvalidArgument as exc:
        raise SaltRunnerError(f"VNC password of {name}: {exc}") from exc


@_clean_errors
def console(name, host=None, local_port=5901, web=True, ttl=None, show_password=False):
    """
    How to open the VNC console of a VM: an SSH tunnel command for a VNC viewer and a web
    console URL (noVNC through the master's websockify proxy, started on demand).

    The URL carries a one-time token that works for this VM only and expires after
    ``virt:console:token_ttl`` seconds (300; ``ttl=`` overrides). ``web=False`` only gives the
    tunnel. The URL carries the console's VNC password in its fragment, which noVNC reads and no
    browser sends to a server; ``show_password=True`` also prints the password itself.

    The URL and the password are printed on the terminal of the ``salt-run`` that asked, never
    returned: returns travel on the event bus and stay in the job cache. Called any other way
    (salt-api, eauth, orchestration in the master), the return says where to get them.

    CLI Example:

    .. code-block:: bash

        salt-run virt.console centos1
        salt-run virt.console centos1 local_port=5911 web=False
        salt-run virt.console centos1 show_password=True
    """
    try:
        local_port = int(local_port)
    except (TypeError, ValueError):
        raise SaltInvocationError(f"local_port must be a port number, not {local_port!r}") from None
    if not 1 <= local_port <= 65535:
        raise SaltInvocationError(f"local_port {local_port} is not a TCP port")
    info = _vm_call(name, "virt.console_info", host=host)
    hypervisor = info["host"]
    vnc = [g for g in info.get("graphics") or [] if g.get("type") == "vnc"]
    if not vnc:
        raise SaltRunnerError(f"VM {name} on {hypervisor} has no VNC console (create it with enable_vnc=True)")
    gfx = vnc[0]
    if info.get("state") != "running" or int(gfx.get("port") or -1) < 1:
        raise SaltRunnerError(f"VM {name} on {hypervisor} is {info.get('state')}: its console has no port "
                              f"until it runs (salt-run virt.start {name})")
    ssh, viewer = vconsole.tunnel_command(gfx["listen"], gfx["port"], info["address"], local_port)
    result = {
        "name": name,
        "hypervisor": hypervisor,
        "type": "vnc",
        "host": gfx["host"],
        "port": gfx["port"],
        "listen": gfx["listen"],
        "local_only": gfx["local_only"],
        "password_set": gfx["password_set"],
        "vncviewer": {"tunnel": ssh, "viewer": viewer},
    }
    if not gfx["local_only"]:
        result["vncviewer"]["direct"] = f"vncviewer {gfx['host']}::{gfx['port']}"
    secrets = []
    password = _vnc_password(name, hypervisor) if gfx["password_set"] and (show_password or web) else None
    if show_password and password:
        secrets.append(("VNC password", password))
        result["password"] = _SHOWN
    if web:
        ttl = ttl if ttl is not None else _conf("console:token_ttl", vconsole.DEFAULT_TTL)
        result["web"] = _web_console(_console_proxy(), name, hypervisor, gfx, ttl)
        url = result["web"].pop("_secret_url", None)
        if url and password:
            url += "&password=" + password  # the fragment: noVNC reads it, no server sees it
        if url:
            secrets.append(("web console URL", url))
    if secrets and not _to_caller(name, secrets):
        note = "run `salt-run virt.console` on the master: secrets are not sent through the event bus"
        for key in ("password",):
            if key in result:
                result[key] = note
        if "url" in result.get("web", {}):
            result["web"]["url"] = note
    return result


def console_proxy(action="status"):
    """
    The web console proxy (websockify serving noVNC) on the master: ``status``, ``start``,
    ``restart`` or ``stop``. ``virt.console`` starts it on demand; stopping it ends every open
    web console session.

    CLI Example:

    .. code-block:: bash

        salt-run virt.console_proxy
        salt-run virt.console_proxy stop
    """
    proxy = _console_proxy()
    try:
        if action == "status":
            return proxy.status()
        if action == "start":
            return proxy.ensure()
        if action == "restart":
            proxy.stop()
            return proxy.ensure()
        if action == "stop":
            return {"stopped": proxy.stop()}
    except VirtError as exc:
        raise SaltRunnerError(f"console proxy: {exc}") from exc
    raise SaltInvocationError(f"unknown action {action!r} (status, start, restart or stop)")


# --------------------------------------------------------------------------- migration


class _SaltHosts:
    """The minions, as :class:`saltvirt.migrator.Migrator` talks to them, through one LocalClient."""

    def __init__(self, client):
        self.client = client

    def call(self, host, fun, arg=(), kwarg=None, timeout=None):
        answers, errors = _fanout(fun, arg=arg, kwarg=kwarg, tgt=_exact(host), tgt_type="list", timeout=timeout,
                                  client=self.client)
        if host not in answers:
            raise VirtError(f"{fun} on {host} failed: {errors.get(host) or 'no answer'}")
        return answers[host]

    def status(self, name, hosts):
        return _fanout("virt.migrate_status", arg=[name], tgt=list(hosts), tgt_type="list", timeout=30,
                       client=self.client)

    @staticmethod
    def progress(message, **data):
        _progress(message, **data)

    def watch(self, host, fun, arg, kwarg, progress_tag, on_progress, timeout, jid="", on_published=None):
        """Run ``fun`` on ``host`` and relay its progress events until it returns.

        Returns the minion's return event data. If the minion stops answering about the job,
        or ``timeout`` passes, raises VirtError (the migration itself then still runs or ends
        under libvirt's control on the source).
        """
        client = self.client
        event = salt.utils.event.get_master_event(__opts__, __opts__["sock_dir"], listen=True)
        try:
            pub = client.run_job(_exact(host), fun, arg=list(arg), kwarg=kwarg, tgt_type="list", jid=jid)
            jid = (pub or {}).get("jid")
            # A master of masters does not know the minions under its syndics: a missing answer
            # is then seen by the deadline and find_job below.
            if not jid or (host not in (pub.get("minions") or []) and not __opts__.get("order_masters")):
                raise VirtError(f"could not start {fun} on {host}")
            if on_published:
                on_published(jid)
            ret_tag = f"salt/job/{jid}/ret/{host}"
            deadline = time.monotonic() + timeout
            quiet_since = time.monotonic()
            while time.monotonic() < deadline:
                ev = event.get_event(wait=max(0.05, min(1, deadline - time.monotonic())), full=True)
                if ev is None:
                    if time.monotonic() - quiet_since > 30:
                        # Quiet for long: is the job still running on the minion?
                        alive = client.cmd(host, "saltutil.find_job", [jid], timeout=10)
                        if not (alive or {}).get(host):
                            ev = event.get_event(wait=5, tag=ret_tag, full=True)
                            if ev is None:
                                raise VirtError(f"{fun} on {host} vanished (minion restarted?)")
                        quiet_since = time.monotonic()
                    if ev is None:
                        continue
                tag, data = ev.get("tag"), ev.get("data") or {}
                if progress_tag and tag == progress_tag:
                    quiet_since = time.monotonic()
                    payload = data.get("data") if isinstance(data.get("data"), dict) else data
                    on_progress(payload)
                elif tag == ret_tag:
                    return data
            raise VirtError(f"{fun} on {host} did not finish within {timeout}s")
        finally:
            event.destroy()


@_clean_errors
def migrate(name, target=None, test=False, copy_storage=None, tunnel=None, offline=None,
            keep_source_disks=False, **kwargs):
    """
    Live-migrate a VM to another hypervisor (``target``, a hypervisor minion id; default: the
    one placement picks among the others), with pre-flight checks, progress, verification and
    cleanup. The VM is never lost: if anything fails it keeps running where it was, defined
    once, and the target keeps nothing this migration created there.

    Shared storage is detected (the target sees a probe file next to each disk); disks the
    target does not share are pre-created there and copied by QEMU during the migration
    (qcow2 overlays incrementally, when their base image is on the target at the same path;
    ``copy_storage=all`` copies whole chains). Read-only disks (seed ISOs) are fetched first.

    test
        Only run the pre-flight checks and return the report and the plan.
    tunnel
        Tunnel through libvirt's TLS connection; default: master config ``virt:tunnel``. With
        copied disks this becomes peer-to-peer + TLS (libvirt 9.0 cannot tunnel disks).
    offline
        Move only the definition; default: True for a stopped VM, False for a running one.
    keep_source_disks
        Keep the source's stale copies of copied disks (default: removed after success,
        only inside ``virt:images/<name>/``).
    live, persistent, undefinesource, max_bandwidth (MiB/s), max_downtime (ms), postcopy,
    auto_converge, compressed, parallel_connections, tls, migration_uri, peer2peer, timeout (s)
        Passed to the execution module (``virt.migrate_in`` on the target, which starts the
        migration on the source's libvirt).

    The return has ``result``; a failed migration returns ``result: False``, ``error``, where
    the VM is and what was cleaned up (and salt-run exits non-zero).

    CLI Example:

    .. code-block:: bash

        salt-run virt.migrate centos1 hypervisor2
        salt-run virt.migrate centos1 test=True
        salt-run virt.migrate centos1 hypervisor2 max_bandwidth=200 max_downtime=300
    """
    started = time.monotonic()
    opts = {k: v for k, v in kwargs.items() if not k.startswith("__")}
    try:
        migrator.check_options(opts, copy_storage)
    except InvalidArgument as exc:
        raise SaltRunnerError(str(exc)) from exc
    if target is not None:
        _exact(target)
    if tunnel is None:
        tunnel = bool(_conf("tunnel", False))
    with _migration_lock(name):
        try:
            return _migrate(name, target, test, copy_storage, tunnel, offline, keep_source_disks, opts, started)
        except VirtError as exc:
            raise SaltRunnerError(str(exc)) from exc


@contextlib.contextmanager
def _migration_lock(name):
    """One migration of a VM at a time (an flock: a killed runner releases it)."""
    directory = os.path.join(__opts__["cachedir"], "saltvirt", "migrations")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    path = os.path.join(directory, name.replace("/", "%2F") + ".lock")
    held = contextlib.ExitStack()
    try:
        held.enter_context(fileio.locked(path, timeout=0))
    except BlockingIOError:
        raise SaltRunnerError(f"{name} is being migrated by another salt-run virt.migrate") from None
    with held:
        yield


def _drop_probes(hosts, name, answers, keep=None):
    """Remove the survey's probe files on every host but ``keep`` (its Migrator does that)."""
    for host, info in answers.items():
        if host != keep and (info.get("migrate_source") or {}).get("probe"):
            try:
                hosts.call(host, "virt.migrate_cleanup", [name], {"probe": info["migrate_source"]["probe"]})
            except VirtError as exc:
                log.warning("virt.migrate: probe files of %s left on %s: %s", name, host, exc)


def _migrate(name, target, test, copy_storage, tunnel, offline, keep_source_disks, opts, started):
    with salt.client.LocalClient(mopts=__opts__) as client:
        return _migrate_with(_SaltHosts(client), name, target, test, copy_storage, tunnel, offline,
                             keep_source_disks, opts, started)


def _migrate_with(hosts, name, target, test, copy_storage, tunnel, offline, keep_source_disks, opts, started):
    _progress(f"Looking for {name}")
    answers, errors = _fanout("virt.migrate_survey", arg=[name], client=hosts.client)
    try:
        source = migrator.locate(name, answers, errors)
    except VirtError:
        _drop_probes(hosts, name, answers)
        raise
    _drop_probes(hosts, name, answers, keep=source)
    vm = answers[source]["migrate_source"]
    if offline is None:
        offline = vm.get("state") == "shutoff"
    store, request, reserved = _reservations(), None, False
    try:
        if target is not None:
            target = str(target)
            if target == source:
                raise SaltRunnerError(f"{name} is already on {target}: nothing to migrate")
            if target not in answers:
                known = ", ".join(sorted(answers))
                raise SaltRunnerError(errors.get(target) or f"unknown hypervisor {target} (answering: {known})")
        records = _host_records(answers) + [{"id": m, "up": False} for m in errors]
        if target is not None:
            records = [r for r in records if r["id"] == target]
        # Reserved under a name of its own: the VM's name may still hold virt.init's lingering
        # reservation. The reservation only lasts while the migration runs.
        request = _request(f"{name}@migrate-{secrets.token_hex(4)}", vm["vcpus"], vm["memory_mib"],
                           exclude=(source,))
        try:
            if test:
                target = placement.place(records, request, _policy()).require()
            else:
                target = store.place_and_reserve(records, request, _policy()).host
                reserved = True
        except (placement.NoHostFits, InvalidArgument) as exc:
            raise SaltRunnerError(f"cannot migrate {name}: {exc}") from exc
        job = migrator.Migrator(
            hosts, name, source, target, answers, copy_storage=copy_storage, offline=offline,
            tunnel=tunnel, opts=opts, keep_source_disks=keep_source_disks,
            prepare_timeout=_conf("prepare_timeout", 600), migrate_timeout=_conf("migrate_timeout", 3600),
        )
    except BaseException:
        _drop_probes(hosts, name, {source: answers[source]})
        if reserved:
            store.release(request.name)
        raise
    if test:
        return job.test()
    try:
        result = job.run()
    finally:
        store.release(request.name)
    result["duration_s"] = round(time.monotonic() - started, 2)
    if not result["result"]:
        __context__["retcode"] = 1
    return result
