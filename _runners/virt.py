"""
Salt Virt runner: the master side of the private cloud (``salt-run virt.*``).

It finds the hypervisor minions, fans calls out with Salt's LocalClient, places new VMs with
``saltvirt.placement`` and accepts their minion keys (made on the hypervisors).

Master configuration (all optional)::

    virt:
      hypervisors: 'hypervisor*'     # REQUIRED: the hypervisors' minion ids: a glob, a list,
      #hypervisors: [hv1, hv2]       # or {tgt: '^hv[0-9]+$', tgt_type: pcre}; never grains
      timeout: 10                    # seconds a hypervisor has to answer a query
      init_timeout: 900              # seconds virt.init may take (image copy + seeding),
      image_copy:                    # plus, while its image is copied, what is left of it at
        min_rate_mib: 10             # this rate (MiB/s)
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

import functools
import importlib
import logging
import sys
import threading

from salt.exceptions import SaltInvocationError, SaltRunnerError

# Run by saltutil.runner on a minion (a syndic's host, docs/scale.rst), this runner starts in a job
# forked from a main process that may hold the library preloaded (_grains/virt.py): read it anew
# if saltutil.sync_all has replaced its files since, as the execution module does.
if hasattr(sys.modules.get("saltvirt"), "unload_if_stale"):
    sys.modules["saltvirt"].unload_if_stale()

try:
    import salt.utils.jid

    from saltvirt import coexist, placement
    from saltvirt.errors import InvalidArgument, VirtError
    from saltvirt.fleet import hosts as fleet_hosts

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
        # A long-lived runner client (the reactor's) keeps __context__ from call to call, and Salt
        # reports each call's success from its retcode: one failure must not mark the next ones.
        __context__.pop("retcode", None)
        try:
            return func(*args, **kwargs)
        except (SaltInvocationError, SaltRunnerError, VirtError) as exc:
            __context__["retcode"] = 1
            return {"result": False, "error": str(exc), "retcode": 1}

    return wrapper


def _lib(name):
    """``saltvirt.<name>``, imported on first use: creating VMs, migrations, operations, consoles
    and the PKI pull in libvirt-python and cryptography's X.509 (~40 ms), which the listings and
    per-VM commands never need."""
    return importlib.import_module(f"saltvirt.{name}")


def _progress(message, **data):
    data.update(message=message, outputter="virt_progress")
    try:
        __jid_event__.fire_event(data, "progress")
    except NameError:  # called outside a runner job (tests, orchestration internals)
        log.info("virt: %s", message)


def _fleet():
    """The hypervisors, as the library talks to them (:mod:`saltvirt.fleet.hosts`)."""
    return fleet_hosts.from_opts(__opts__, progress=_progress)


def _provisioner(fleet=None):
    return _lib("fleet.provision").Provisioner(fleet or _fleet(), lambda: salt.utils.jid.gen_jid(__opts__))


def _exact(host):
    """``[host]`` for a list target: ``host=`` names exactly one hypervisor, never a glob."""
    return _fleet().exact(host)


def _with_errors(data, errors):
    """The answers plus ``{error}`` for hypervisors that failed; if any did, ``retcode: 1``
    (salt-run exits with it) next to them."""
    for minion, reason in errors.items():
        data[minion] = {"error": reason}
    if errors:
        __context__["retcode"] = 1
        data["retcode"] = 1
    return data


def _failed_if(result):
    """A return with ``retcode``/``result: False`` makes salt-run exit non-zero."""
    if result.get("retcode") or result.get("result") is False:
        __context__["retcode"] = 1
    return result


def _vm_call(name, fun, host=None, **kwarg):
    return _fleet().vm_call(name, fun, host=host, **kwarg)


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
    fleet = _fleet()
    answers, errors = fleet.capacity(host)
    return _with_errors(fleet.with_cordons(dict(answers)), errors)


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
    answers, errors = _fleet().vm_states(host, timeout)
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
    fleet = _fleet()
    answers, errors = fleet.full_info(host)
    data = _with_errors(fleet.with_cordons(dict(answers)), errors)
    return data if quiet else {"outputter": "virt_query", "data": data}


@_clean_errors
def vm_info(name, quiet=False):
    """
    One VM's information (cpu, memory, state, graphics, disks, NICs) and its host.

    CLI Example:

    .. code-block:: bash

        salt-run virt.vm_info centos1
    """
    info = _vm_call(name, "virt.vm_info")
    data = {info["host"]: {"vm_info": info}}
    return data if quiet else {"outputter": "virt_query", "data": data}


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
    fleet = _fleet()
    answers, errors = fleet.capacity()
    records = fleet.records(answers, errors)
    result = placement.place(records, fleet_hosts.request(name, cpu, mem, disk), fleet.policy())
    if explain:
        return result.explain()
    if result.host is None:
        raise SaltRunnerError(placement.fits_nowhere_message(result))
    return result.host


# --------------------------------------------------------------------------- provisioning


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
    return _provisioner().init(name, cpu, mem, host=host, timeout=timeout, image=image, seed=seed, **kwargs)


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
    return _failed_if(_provisioner().reconcile(test=test))


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
    fleet = _fleet()
    if fleet.hypervisors.matches(name):
        return {"name": name, "unseeded": False, "reason": "a hypervisor, not a VM"}
    if host is None:
        try:
            host, _state = fleet.find_vm(name)
        except VirtError as exc:
            return {"name": name, "unseeded": False, "reason": str(exc)}
    result = fleet.vm_call(name, "virt.unseed", host=host)
    result["unseeded"] = bool(result.get("removed") or result.get("detached"))
    return result


@_clean_errors
def purge(name, delete_key=True, host=None):
    """
    Destroy a VM, undefine it, delete the disks virt.init made for it, and (by default)
    delete its minion key on the master. Every hypervisor is asked where the VM is: a VM
    defined on two of them (a post-copy migration that failed and was not resumed) is refused
    until ``host=`` names the copy to purge.

    CLI Example:

    .. code-block:: bash

        salt-run virt.purge centos1
        salt-run virt.purge centos1 delete_key=False
        salt-run virt.purge centos1 host=hypervisor2
    """
    fleet = _fleet()
    # Not from the location cache: a VM left on two hypervisors (a post-copy migration that failed
    # and was not resumed) must not lose one copy and its key while the other stays.
    host = host or fleet.find_vm(name)[0]
    result = fleet.vm_call(name, "virt.purge", host=host)
    fleet.locations.forget(name)
    result["key_deleted"], error = _provisioner(fleet).forget(name, result["host"], delete_key=delete_key)
    if error:
        __context__["retcode"] = result["retcode"] = 1
        result["key_error"] = error
    return result


@_clean_errors
def sync_key(name, host, jid=None, timeout=None):
    """
    Make this master's minion key for VM ``name`` match hypervisor ``host``: accept the public key
    the VM's seed on ``host`` holds (read from the hypervisor, never taken from the caller) while
    ``host`` has the VM; delete the key this runner once accepted for it when no hypervisor of
    this master has it any more. A master of masters calls it on a syndic's master, where the VMs
    of the hypervisors under that syndic authenticate (``virt:syndics``, ``docs/scale.rst``).

    jid
        The job id of a ``virt.init`` of ``name`` on ``host`` that may not have answered yet:
        wait for ``host``'s answer to it and accept the public key it carries, signed by
        ``host`` for that job (an answer in ``host``'s name without that signature -- unsigned,
        or signed for another job -- is ignored). The master of masters starts it so together
        with the creation. Without an answer, or when the job failed, nothing changes (``key:
        unchanged`` and the ``reason``).

    timeout
        Seconds to wait for that answer (default and most: ``virt:init_timeout`` plus
        ``virt:timeout`` of this master, 910).

    CLI Example:

    .. code-block:: bash

        salt-run virt.sync_key web1 hypervisor1
        salt syndic1 saltutil.runner virt.sync_key kwarg='{name: web1, host: hypervisor1}'
        salt-run virt.sync_key web1 hypervisor1 jid=20261202063840145699 timeout=60
    """
    return _provisioner().sync_key(name, host, jid=jid, timeout=timeout)


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
    fleet_migrate = _lib("fleet.migrate")
    return _failed_if(fleet_migrate.rebase(_fleet(), base, host=host, new_base=new_base, live_pull=live_pull,
                                           safe=safe))


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
    options.setdefault("ca_dir", f"{__opts__['pki_dir']}/libvirt")
    options.pop("minions", None)
    try:
        result = _lib("pki").operator_pki(options)
    except VirtError as exc:  # InvalidArgument included
        raise SaltRunnerError(f"operator certificate: {exc}") from exc
    result["uri_example"] = f"qemu+tls://<hypervisor>/system?pkipath={result['pkipath']}"
    return result


# --------------------------------------------------------------------------- consoles


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
    consoles = _lib("fleet.consoles")
    access = consoles.console_access(_fleet(), name, host=host, local_port=local_port, web=web, ttl=ttl,
                                     show_password=show_password)
    if access.secrets and not _to_caller(name, access.secrets):
        access.withhold("run `salt-run virt.console` on the master: secrets are not sent through the event bus")
    return access.result


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
    try:
        consoles = _lib("fleet.consoles")
        return consoles.proxy_action(consoles.proxy_from(_fleet()), action)
    except InvalidArgument as exc:
        raise SaltInvocationError(str(exc)) from exc
    except VirtError as exc:
        raise SaltRunnerError(str(exc)) from exc


# --------------------------------------------------------------------------- migration


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
    postcopy_bandwidth (MiB/s after the switch), postcopy_stall (s without progress after the
    switch before the post-copy is paused and resumed; default 60), auto_converge, compressed,
    parallel_connections, tls, migration_uri, peer2peer, timeout (s)
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
    fleet = _fleet()
    opts = {k: v for k, v in kwargs.items() if not k.startswith("__")}
    fleet_migrate = _lib("fleet.migrate")
    _lib("migration.migrator").check_options(opts, copy_storage)
    if target is not None:
        fleet.exact(target)
    tunnel = bool(fleet.conf("tunnel", False)) if tunnel is None else tunnel
    result = fleet_migrate.migrate(fleet, name, target, test, copy_storage=copy_storage, tunnel=tunnel,
                                   offline=offline, keep_source_disks=keep_source_disks, opts=opts)
    return result if test else _failed_if(result)


def _migrate_options(fleet, name, target=None, test=False, offline=None):
    """``virt.migrate`` with the master's defaults, as a drain runs it for each VM; a refusal is
    a return with ``result: False``, as ``salt-run virt.migrate`` gives it."""
    try:
        return _lib("fleet.migrate").migrate(fleet, name, target, test, copy_storage=None, offline=offline,
                                             tunnel=bool(fleet.conf("tunnel", False)), keep_source_disks=False,
                                             opts={})
    except VirtError as exc:
        return {"result": False, "error": str(exc), "retcode": 1}


# --------------------------------------------------------------------------- operations


@_clean_errors
def cordon(host, reason="cordoned by the operator"):
    """
    Cordon a hypervisor: placement puts no new VM there and no migration targets it; its VMs
    keep running. ``virt.host_info`` and ``virt.query`` show it; ``virt.uncordon`` lifts it.
    ``virt.drain`` cordons and then moves the VMs away.

    CLI Example:

    .. code-block:: bash

        salt-run virt.cordon hypervisor1 reason="disk replacement"
    """
    return _lib("fleet.operations").cordon(_fleet(), host, reason)


@_clean_errors
def uncordon(host):
    """
    Lift a hypervisor's cordon (from ``virt.cordon`` or ``virt.drain``): placement and
    migrations may use it again. VMs moved away by a drain stay where they went.

    CLI Example:

    .. code-block:: bash

        salt-run virt.uncordon hypervisor1
    """
    return _lib("fleet.operations").uncordon(_fleet(), host)


class _SerializedEvents:
    """``__jid_event__`` shared by a drain's migration threads: one progress event at a time."""

    def __init__(self, real):
        self.real, self.lock = real, threading.Lock()

    def fire_event(self, *args, **kwargs):
        with self.lock:
            return self.real.fire_event(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.real, name)


@_clean_errors
def drain(host, test=False, parallel=None, shutoff="leave", settle=None):
    """
    Cordon a hypervisor and live-migrate every running VM away, each to the host placement
    picks (capacity, cordons, the migration pre-flight: storage, bridges, CPU). A drain never
    stops a VM: one that cannot move (no room anywhere, incompatible) keeps running where it is
    and the return says why under ``stayed`` (salt-run then exits non-zero).

    Resumable: after Ctrl-C or a master restart, run it again; it waits for a migration still
    under way and moves what is left (``moved_earlier`` lists what earlier runs moved).

    test
        Only show the plan (target per VM, or why it would stay), with each migration's
        pre-flight run; nothing is cordoned or moved.
    parallel
        Migrations at once (default master config ``virt:drain:parallel``, else 2).
    shutoff
        ``leave`` (default): shut-off VMs stay, listed under ``left``; ``move``: they are
        moved offline (definition; their disks must be on shared storage).
    settle
        Seconds to wait for migrations of an interrupted drain to end (default 300).

    CLI Example:

    .. code-block:: bash

        salt-run virt.drain hypervisor1 test=True
        salt-run virt.drain hypervisor1
        salt-run virt.drain hypervisor1 parallel=4 shutoff=move
    """
    real = globals().get("__jid_event__")
    if real is not None:
        globals()["__jid_event__"] = _SerializedEvents(real)
    try:
        out = _lib("fleet.operations").drain(
            _fleet(), host,
            # One fleet (one Salt client) per migration: the drain runs them in threads.
            migrate_one=lambda vm, offline: _migrate_options(_fleet(), vm, offline=offline),
            check=lambda vm, target: _migrate_options(_fleet(), vm, target, test=True),
            test=test, parallel=parallel, shutoff=shutoff, settle=settle)
    finally:
        if real is not None:
            globals()["__jid_event__"] = real
    return out if test else _failed_if(out)  # a refused pre-flight is part of a plan, not a failure


@_clean_errors
def remember(host=None, name=None, definition=None):
    """
    Refresh the master's copy of the VMs' definitions and locations (what ``virt.evacuate``
    restarts a dead hypervisor's VMs from): of every hypervisor, of ``host`` only, or of VM
    ``name`` on ``host``. Run it from a schedule, or let the reactor
    ``salt://virt/reactor/remember.sls`` run it on the libvirt_events engine's events
    (``docs/operations.rst``). Console passwords are never part of the copy.

    definition
        Set by that reactor: what the engine attached to the event of ``host`` (the VM's
        definition and the hypervisor's time, or only the time once it is gone). It is stored
        without asking the hypervisor again; an event older than the copy kept is ignored. Only
        with ``host``'s signature (any minion can put an event on the bus in another's name):
        refused, and nothing kept, without it -- as is an answer of ``virt.definitions``.

    CLI Example:

    .. code-block:: bash

        salt-run virt.remember
        salt-run virt.remember host=hypervisor1 name=web1
    """
    out, errors = _lib("fleet.operations").remember(_fleet(), host, name, definition)
    return _with_errors(out, errors)


@_clean_errors
def restart_crashed(host, name, definition):
    """
    Start VM ``name`` on ``host`` again after libvirt stopped it because its guest crashed: what
    the reactor ``salt://virt/reactor/restart_crashed.sls`` runs on the libvirt_events engine's
    ``stopped`` events (``docs/operations.rst``).

    definition
        What the engine attached to the event. It must carry ``host``'s signature and say
        ``event: stopped``, ``detail: crashed``: any minion can put an event on the bus in a
        hypervisor's name, and such an event starts nothing.

    CLI Example:

    .. code-block:: bash

        # as the reactor runs it, with the record the engine attached to the event
        salt-run virt.restart_crashed hypervisor1 web1 definition='{...}'
    """
    return _lib("fleet.operations").restart_crashed(_fleet(), host, name, definition)


@_clean_errors
def evacuate(host, fenced=False, test=False, start=True):
    """
    Restart the VMs of a dead hypervisor on the others, from the definitions the master kept
    (``virt.remember``). Only VMs whose writable disks are on storage the new host sees (shared
    storage) can move; read-only disks it lacks (seed ISOs) are left out. VMs last seen running
    are started, the others only defined. Each goes where placement puts it (cordons, capacity).

    Split-brain is impossible, not just unlikely: libvirt's lock manager (formula
    ``virt.lockd``) refuses a disk that a QEMU on another host still has open, and this refuses
    a host that still answers, and runs only when the operator confirms with ``fenced=True``
    that the host is powered off or cut off. The dead host is cordoned; when it comes back its
    copies of the evacuated VMs are stale: undefine them there, never start them.

    test
        Only show what would happen (where each VM would go, or why it cannot); needs no
        ``fenced``.

    CLI Example:

    .. code-block:: bash

        salt-run virt.evacuate hypervisor1 test=True
        salt-run virt.evacuate hypervisor1 fenced=True
    """
    return _failed_if(_lib("fleet.operations").evacuate(_fleet(), host, fenced=fenced, test=test, start=start))
