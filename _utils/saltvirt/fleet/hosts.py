"""The hypervisor minions as the runner talks to them: fan-outs, targeted calls, watched jobs.

Salt's LocalClient, minion matching and master event bus are handed in (:func:`from_opts`
builds them from the master's opts), so the logic here is testable with fakes.
"""

import contextlib
import contextvars
import logging
import os
import threading
import time

from saltvirt import placement, trust
from saltvirt.domain import tuning
from saltvirt.errors import InvalidArgument, NotFound, VirtError
from saltvirt.fleet import syndics
from saltvirt.fleet.capacities import DEFAULT_TTL, Capacities
from saltvirt.fleet.locations import Locations
from saltvirt.operations import cordons

log = logging.getLogger(__name__)


def conf(opts, key, default=None):
    """``virt:<key>`` (``a:b`` for nested keys) from the master's opts."""
    value = opts.get("virt", {}) or {}
    for part in key.split(":"):
        if not isinstance(value, dict) or part not in value:
            return default
        value = value[part]
    return value


class Fleet:
    """The hypervisors named by ``virt:hypervisors``, reached through one Salt client."""

    def __init__(self, opts, client_factory, check_minions, master_event=None, progress=None, locations=None,
                 file_hash=None, capacities=None, job_cache=None):
        self.opts = opts
        self._job_cache = job_cache  # jid -> {minion: {"return": ...}} of this master's job cache
        self.locations = locations
        self.capacities = capacities
        self._file_hash = file_hash
        self._client_factory = client_factory
        self._client = None
        self._check_minions = check_minions
        self._master_event = master_event
        self.progress = progress or (lambda message, **data: log.info("virt: %s", message))

    def master_hash(self, image, saltenv="base"):
        """``sha256=<digest>`` of ``salt://`` ``image`` on this master's file server, or None (not
        salt://, not found, another hash type, or a master of masters: the hypervisors under a
        syndic fetch from the syndic's master)."""
        if self._file_hash is None or not str(image).startswith("salt://") or self.opts.get("order_masters"):
            return None
        try:
            return self._file_hash(str(image), saltenv)
        except Exception as exc:  # pylint: disable=broad-exception-caught
            log.debug("no master hash of %s: %s", image, exc)  # only a shortcut is lost
            return None

    @contextlib.contextmanager
    def progress_after(self, delay, message, **data):
        """``message`` as progress only if the body is still running after ``delay`` seconds: a
        step that is usually quick (a survey of two hypervisors) prints nothing, a slow one (fifty)
        says what it waits for. Each progress line costs the ``salt-run`` process ~20 ms."""
        # In the caller's context: Salt's loader keeps the runner's __jid_event__ in a context variable.
        timer = threading.Timer(delay, contextvars.copy_context().run, args=(self.progress, message), kwargs=data)
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            timer.cancel()
            timer.join()  # a message being sent ends before the next one

    # -------------------------------------------------------------- configuration

    def conf(self, key, default=None):
        return conf(self.opts, key, default)

    @property
    def hypervisors(self):
        return trust.Hypervisors.from_config(self.conf("hypervisors"))

    def exact(self, host):
        """``[host]`` for a list target: ``host=`` names exactly one hypervisor, never a glob."""
        return [trust.check_host(host, self.hypervisors)]

    @property
    def cordons(self):
        return cordons.Cordons(os.path.join(self.opts["cachedir"], "saltvirt", "cordons"))

    def records(self, answers, errors=()):
        """:func:`host_records` with each host's cordon (placement skips cordoned hosts)."""
        cordoned = self.cordons.all() if "cachedir" in self.opts else {}
        return host_records(answers, errors, cordoned)

    def with_cordons(self, data):
        """Each answering hypervisor's entry gets ``cordoned``: None, or why and since when."""
        cordoned = self.cordons.all()
        for minion, entry in data.items():
            if isinstance(entry, dict) and "error" not in entry:
                entry["cordoned"] = cordons.describe(cordoned[minion]) if minion in cordoned else None
        return data

    @property
    def syndics(self):
        """``virt:syndics`` (:mod:`saltvirt.fleet.syndics`): which syndic's master holds a host's VM keys."""
        return syndics.Syndics.from_config(self.conf("syndics"))

    def policy(self):
        try:
            return placement.Policy.from_dict(self.conf("placement", {}) or {})
        except InvalidArgument as exc:
            raise InvalidArgument(f"master config virt:placement: {exc}") from exc

    # -------------------------------------------------------------- calls

    @contextlib.contextmanager
    def session(self):
        """One client for the calls made inside (a new one costs about 60 ms)."""
        if self._client is not None:
            yield self
            return
        with self._client_factory() as client:
            self._client = client
            try:
                yield self
            finally:
                self._client = None

    @property
    def client(self):
        return self._client

    def fanout(self, fun, arg=(), kwarg=None, tgt=None, tgt_type=None, timeout=None, jid=None):
        """Run ``fun`` on hypervisors; ``(answers, errors)``.

        ``answers``: ``{minion: return}`` of calls that succeeded; ``errors``: ``{minion: reason}``
        for calls that failed or minions that did not answer within the timeout. Minions without
        the ``virt`` module (not hypervisors) are left out of both.
        """
        if tgt is None:
            tgt, tgt_type = self.hypervisors.target()
        tgt_type = tgt_type or "glob"
        timeout = timeout or self.conf("timeout", 10)
        if tgt_type == "list" and self.opts.get("order_masters"):
            # A master of masters holds no keys of the minions under its syndics: a list is what it expects.
            expected = set(tgt)
        else:
            expected = set(self._check_minions(tgt, tgt_type))
        # Salt asks the silent minions whether they still run the job and waits gather_job_timeout
        # for that answer: a caller's shorter timeout bounds it too (a stopped minion costs about
        # twice the timeout, not the timeout plus the master's 30 s).
        gather = max(5, min(timeout, self.opts.get("gather_job_timeout", 10)))
        if tgt_type == "list" and self.opts.get("order_masters") and self._master_event is not None:
            return self._listed(list(tgt), fun, arg, kwarg, timeout, gather, jid)
        with self.session():
            raw = self._client.cmd(tgt, fun, arg=list(arg), kwarg=kwarg or None, timeout=timeout,
                                   tgt_type=tgt_type, full_return=True, jid=jid or "", gather_job_timeout=gather)
        answers, errors = sort_returns(fun, raw or {}, timeout)
        explicit = tgt_type == "list" or (tgt_type == "glob" and not any(c in str(tgt) for c in "*?["))
        if explicit or tgt != "*":
            for minion in sorted(expected - set(raw or {})):
                errors[minion] = f"{minion} did not answer within {timeout}s (minion down?)"
        return answers, errors

    def _listed(self, hosts, fun, arg, kwarg, timeout, gather, jid=None):
        """``fanout`` of a job on exactly ``hosts`` from a master of masters, done when they answered.

        Salt's client there waits ``syndic_wait`` after each publish for the syndics' lists of the
        minions they reached, even once every listed minion has answered; the runner knows whom it
        asked and stops at their returns (a per-VM command is one such job). A host silent for
        ``timeout`` seconds that no longer runs the job is reported as not answering, as there.
        """
        event = self._master_event()
        raw = {}
        try:
            with self.session():
                pub = self._client.run_job(hosts, fun, arg=list(arg), kwarg=kwarg, tgt_type="list", jid=jid or "")
                jid = (pub or {}).get("jid")
                if not jid:
                    return {}, {h: f"could not start {fun} on {h}" for h in hosts}
                prefix = f"salt/job/{jid}/ret/"
                deadline = time.monotonic() + timeout
                while len(raw) < len(hosts):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        if not self._running([h for h in hosts if h not in raw], jid, gather):
                            break
                        deadline = time.monotonic() + timeout
                        continue
                    ev = event.get_event(wait=min(1, left), full=True)
                    data = (ev or {}).get("data") or {}
                    if str((ev or {}).get("tag", "")).startswith(prefix) and data.get("id") in hosts:
                        raw[data["id"]] = {"ret": data.get("return"), "retcode": data.get("retcode", 0)}
        finally:
            event.destroy()
        answers, errors = sort_returns(fun, raw, timeout)
        for host in hosts:
            if host not in raw:
                errors[host] = f"{host} did not answer within {timeout}s (minion down?)"
        return answers, errors

    def _running(self, hosts, jid, gather):
        """Whether one of ``hosts`` still runs job ``jid`` (Salt's find_job)."""
        found = self._client.cmd(hosts, "saltutil.find_job", [jid], tgt_type="list", timeout=gather) or {}
        return any(found.get(h) for h in hosts)

    def on(self, host, fun, arg=(), kwarg=None, timeout=None, jid=None):
        """``(answers, errors)`` of ``fun`` on exactly ``host`` (as job ``jid``, if given)."""
        return self.fanout(fun, arg=arg, kwarg=kwarg, tgt=self.exact(host), tgt_type="list", timeout=timeout, jid=jid)

    def call(self, host, fun, arg=(), kwarg=None, timeout=None, jid=None):
        """The return of ``fun`` on ``host`` (as job ``jid``, if given); VirtError when it failed or
        did not answer."""
        answers, errors = self.on(host, fun, arg, kwarg, timeout, jid)
        if host not in answers:
            raise VirtError(f"{fun} on {host} failed: {errors.get(host) or 'no answer'}")
        return answers[host]

    def status(self, name, hosts):
        return self.fanout("virt.migrate_status", arg=[name], tgt=list(hosts), tgt_type="list", timeout=30)

    # -------------------------------------------------------------- VMs

    def seen(self, vms_by_host, errors):
        """Record where a fan-out saw VMs (:mod:`saltvirt.fleet.locations`)."""
        if self.locations is not None:
            self.locations.saw(vms_by_host, complete=not errors)

    def _survey(self, fun, host, vms_of, timeout=None):
        """``fun`` on every hypervisor (or ``host``); the VMs each answer names (``vms_of``)
        recorded as locations."""
        answers, errors = self.on(host, fun, timeout=timeout) if host else self.fanout(fun, timeout=timeout)
        self.seen({h: vms_of(a) for h, a in answers.items() if isinstance(a, dict)}, errors)
        return answers, errors

    def vm_states(self, host=None, timeout=None):
        """``virt.vm_state`` of every hypervisor (or ``host``), recorded as locations."""
        return self._survey("virt.vm_state", host, list, timeout)

    def full_info(self, host=None):
        return self._survey("virt.full_info", host, lambda info: list(info.get("vm_info") or {}))

    def capacity(self, host=None):
        """``virt.capacity`` of every hypervisor (or ``host``): what placement needs, the domains'
        names included (recorded as locations, and as the master's copy of the capacities)."""
        answers, errors = self._survey("virt.capacity", host, vm_names)
        self.saw_capacity(answers, errors, host)
        return answers, errors

    def saw_capacity(self, answers, errors, host=None):
        """Keep a survey (of every hypervisor, or of ``host``) as :mod:`saltvirt.fleet.capacities`."""
        if self.capacities is None:
            return
        if host is None:
            self.capacities.saw(answers, errors)
        elif host in answers:
            self.capacities.saw_host(host, answers[host])

    def placement_capacity(self, host=None):
        """The hypervisors' capacity for placing a new VM: the master's copy while it is fresh
        (``virt:capacity_ttl``), else a survey of every hypervisor; also a survey when the copy
        lacks ``host``, the hypervisor the caller named (it may have come back since)."""
        kept = self.capacities.current() if self.capacities is not None else None
        if kept is None or (host is not None and host not in kept[0]):
            return self.capacity()
        return kept

    def find_vm(self, name):
        """``(host, state)`` of domain ``name``; clear errors for missing or duplicate VMs."""
        answers, errors = self.vm_states()
        hosts = {h: states[name] for h, states in answers.items() if isinstance(states, dict) and name in states}
        if len(hosts) > 1:
            found = ", ".join(f"{h} ({s})" for h, s in sorted(hosts.items()))
            raise InvalidArgument(f"VM {name} is defined on several hypervisors: {found}; name the host with host=")
        if not hosts:
            msg = f"no VM named {name} on any hypervisor ({', '.join(sorted(answers)) or 'none answered'})"
            if errors:
                msg += f"; not answering: {describe_errors(errors)}"
            raise NotFound(msg)
        return next(iter(hosts.items()))

    def vm_call(self, name, fun, host=None, **kwarg):
        """``fun`` on the VM's hypervisor, the return tagged with it.

        The hypervisor is ``host``, else the one the VM was last seen on (one round trip), else
        found by asking all of them. A cached hypervisor that answers "no domain named ..." is
        stale: the VM is then searched for and the call made where it is.
        """
        if host is None and self.locations is not None:
            cached = self.locations.get(name)
            if cached:
                answers, errors = self.on(cached, fun, [name], kwarg)
                if cached in answers:
                    self._changed(fun, cached, name)
                    ret = answers[cached]
                    return dict(ret, host=cached) if isinstance(ret, dict) else ret
                if f"no domain named {name!r}" not in str(errors.get(cached)):
                    raise VirtError(f"{fun} on {cached} failed: {errors.get(cached) or 'no answer'}")
                self.locations.forget(name)
        if host is None:
            host, _state = self.find_vm(name)
        ret = self.call(host, fun, [name], kwarg)
        self._changed(fun, host, name)
        return dict(ret, host=host) if isinstance(ret, dict) else ret

    def _changed(self, fun, host, name):
        """Keep the capacities' copy true after ``fun`` succeeded on VM ``name``: a started VM
        takes its memory and vCPUs (a stopped one keeps counting until the engine's event or the
        next survey says otherwise: placement errs on the safe side); a purged one is gone."""
        if self.capacities is None:
            return
        if fun in ("virt.start", "virt.resume"):
            self.capacities.state(host, name, "running")
        elif fun == "virt.purge":
            self.capacities.undefined(host, name)

    # -------------------------------------------------------------- jobs

    @contextlib.contextmanager
    def events(self):
        """The master's event bus, listened to from here on (one listener for several jobs)."""
        event = self._master_event()
        try:
            yield event
        finally:
            event.destroy()

    def publish(self, minion, fun, arg=(), kwarg=None):
        """Start ``fun`` on exactly ``minion`` without waiting for it; its jid, None if Salt did not."""
        with self.session():
            pub = self._client.run_job([minion], fun, arg=list(arg), kwarg=kwarg, tgt_type="list")
        return (pub or {}).get("jid") or None

    def await_return(self, event, minion, jid, timeout, seen=None):
        """The data of ``minion``'s return of job ``jid``: from ``seen`` (returns another wait set
        aside, by tag), else from ``event`` within ``timeout`` seconds; None without one."""
        tag = f"salt/job/{jid}/ret/{minion}"
        if seen and seen.get(tag) is not None:
            return seen[tag]
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            ev = event.get_event(wait=min(1, left), full=True)
            if ev and ev.get("tag") == tag:  # exact: hypervisor1 is not hypervisor10
                return ev.get("data") or {}
        return None

    def returns_of(self, jid, host, timeout, accept):
        """The first return of job ``jid`` by ``host`` that ``accept(data)`` takes: already in this
        master's job cache (it came before this listened), else on its bus within ``timeout``
        seconds; None without one. ``data``: the return event's, or the job cache's ``return``,
        ``retcode`` and ``success``."""
        tag = f"salt/job/{jid}/ret/{host}"
        with self.events() as event:
            deadline = time.monotonic() + timeout
            ev, refused = None, None
            while True:
                # Salt fires the return event before it writes the job cache: one that came just
                # before this listened may be in neither yet, so the cache is read after each quiet second.
                if ev is None and self._job_cache is not None:
                    cached = self._job_cache(jid).get(host)
                    if isinstance(cached, dict) and "return" in cached and cached != refused:
                        if accept(cached):
                            return cached
                        refused = cached
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                ev = event.get_event(wait=min(1, left), full=True)
                if ev and ev.get("tag") == tag and accept(ev.get("data") or {}):
                    return ev["data"]

    def watch(self, host, fun, arg, kwarg, progress_tag, on_progress, timeout, jid="", on_published=None,
              genuine=None, event=None, seen=None):
        """Run ``fun`` on ``host`` and relay its progress events until it returns.

        Returns the minion's return event data. If the minion stops answering about the job,
        or ``timeout`` passes, raises VirtError (the job itself may still run on the minion).
        ``on_progress`` may return a number of seconds: the job may take at least that much longer
        (work whose size is known only once it began, such as an image copy). ``genuine(data)``:
        False for a return event that cannot be ``host``'s (another minion can put one on the
        bus in its name), which is then ignored: the wait goes on for the real one.
        ``event``: a listener of :meth:`events` to use (kept open); ``seen``: ``{tag: None}`` of
        other events to set aside while waiting (their data replaces the None).
        """
        if event is None:
            with self.events() as own:
                return self.watch(host, fun, arg, kwarg, progress_tag, on_progress, timeout, jid, on_published,
                                  genuine, own, seen)
        with self.session():
            pub = self._client.run_job(self.exact(host), fun, arg=list(arg), kwarg=kwarg, tgt_type="list", jid=jid)
            jid = (pub or {}).get("jid")
            # A master of masters does not know the minions under its syndics: a missing answer
            # is then seen by the deadline and find_job.
            if not jid or (host not in (pub.get("minions") or []) and not self.opts.get("order_masters")):
                raise VirtError(f"could not start {fun} on {host}")
            if on_published:
                on_published(jid)
            return self._wait(event, host, fun, jid, progress_tag, on_progress, timeout, genuine, seen)

    def _wait(self, event, host, fun, jid, progress_tag, on_progress, timeout, genuine=None, seen=None):
        ret_tag = f"salt/job/{jid}/ret/{host}"
        started = time.monotonic()
        deadline = started + timeout
        extended = False
        quiet_since = time.monotonic()
        ignored = False
        while time.monotonic() < deadline:
            ev = event.get_event(wait=max(0.05, min(1, deadline - time.monotonic())), full=True)
            # Quiet for long (soon after an answer was ignored): is the job still running there?
            if ev is None and time.monotonic() - quiet_since > (5 if ignored else 30):
                if not (self._client.cmd(host, "saltutil.find_job", [jid], timeout=10) or {}).get(host):
                    ev = event.get_event(wait=5, tag=ret_tag, full=True)
                    if ev is None and ignored:
                        raise VirtError(f"{fun} on {host} ended with no answer signed by {host}: another minion "
                                        f"answered in its name, or {host} runs an older salt-virt (saltutil.sync_all)")
                    if ev is None:
                        raise VirtError(f"{fun} on {host} vanished (minion restarted?)")
                quiet_since = time.monotonic()
            if ev is None:
                continue
            tag, data = ev.get("tag"), ev.get("data") or {}
            if progress_tag and tag == progress_tag:
                quiet_since = time.monotonic()
                more = on_progress(data.get("data") if isinstance(data.get("data"), dict) else data)
                if isinstance(more, (int, float)) and not isinstance(more, bool) \
                        and time.monotonic() + more > deadline:
                    deadline, extended = time.monotonic() + more, True
            elif seen is not None and tag in seen:
                seen[tag] = data
            elif tag == ret_tag:
                if genuine is None or genuine(data):
                    return data
                log.warning("%s: a return in %s's name for job %s that %s did not sign for it: ignored",
                            fun, host, jid, host)
                ignored, quiet_since = True, time.monotonic()
        longer = f" (its progress extended that to {deadline - started:.0f}s)" if extended else ""
        raise VirtError(f"{fun} on {host} did not finish within {timeout}s{longer}")

    def ping(self, timeout):
        """``(answering, silent)`` hypervisors: a ping that waits ``timeout`` seconds, then at most 5
        more for Salt's job check of those that did not answer."""
        tgt, tgt_type = self.hypervisors.target()
        expected = set(self._check_minions(tgt, tgt_type))
        with self.session():
            ret = self._client.cmd(tgt, "test.ping", timeout=timeout, tgt_type=tgt_type,
                                   gather_job_timeout=min(timeout, 5))
        alive = {m for m, v in (ret or {}).items() if v is True}
        return alive, {m: f"{m} did not answer a ping within {timeout:g}s" for m in expected - alive}

    def job_running(self, host, jid):
        """True/False whether ``host`` still runs job ``jid``; None if it did not answer."""
        answers, _errors = self.on(host, "saltutil.find_job", [jid], timeout=15)
        return bool(answers[host]) if host in answers else None


def sort_returns(fun, raw, timeout):
    """Split LocalClient ``full_return`` data into ``(answers, errors)``."""
    answers, errors = {}, {}
    for minion, ret in raw.items():
        value = ret.get("ret") if isinstance(ret, dict) else ret
        retcode = ret.get("retcode", 0) if isinstance(ret, dict) else 0
        if isinstance(value, str) and "is not available" in value:
            continue  # no virt module: not a hypervisor
        if isinstance(value, str) and value.startswith("Minion did not return"):
            errors[minion] = f"{minion} did not answer within {timeout}s (minion down?)"
        elif retcode:
            errors[minion] = value if isinstance(value, str) else f"{fun} failed: {value}"
        else:
            answers[minion] = value
    return answers, errors


def vm_names(capacity):
    """The domains a ``virt.capacity`` answer lists."""
    return [u["name"] for u in capacity.get("usage") or ()]


def describe_errors(errors):
    return "; ".join(f"{m}: {r}" for m, r in sorted(errors.items()))


def host_records(answers, errors=(), cordoned=None):
    """Placement's view of the hypervisors from their ``virt.capacity`` (or ``virt.full_info``),
    down ones included; ``cordoned``: :meth:`saltvirt.operations.cordons.Cordons.all`."""
    cordoned = cordoned or {}
    records = [{
        "id": minion,
        "cpus": info["node_info"]["cpus"],
        "memory_total": info["node_info"]["phymemory"],
        "disk_free": info.get("disk_free"),
        "vms": info.get("usage", []),
        "bridges": info.get("bridges", []),
        "up": True,
        "cordoned": cordons.describe(cordoned[minion]) if minion in cordoned else None,
    } for minion, info in answers.items()]
    return records + [{"id": m, "up": False} for m in errors]


def request(name, cpu, mem, disk=0, exclude=()):
    """A placement request, with a clear error for non-integers; ``cpu``/``mem`` may be the
    classic dicts (their vCPU count and boot memory are placed)."""
    if isinstance(cpu, dict):
        cpu = tuning.cpu_section(cpu)[0]
    if isinstance(mem, (dict, str)):
        mem = tuning.mem_section(mem)[0]
    try:
        return placement.Request(name=name, cpu=int(cpu), memory_mib=int(mem), disk_mib=int(disk or 0),
                                 exclude=tuple(exclude))
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"cpu, mem and disk must be integers: {exc}") from exc


def capacity_ttl(opts):
    """``virt:capacity_ttl``: seconds a survey of the hypervisors serves ``virt.init``'s placement."""
    value = conf(opts, "capacity_ttl", DEFAULT_TTL)
    try:
        ttl = float(value)
    except (TypeError, ValueError):
        ttl = -1
    if isinstance(value, bool) or ttl < 0:
        raise InvalidArgument(f"master config virt:capacity_ttl: {value!r} is not a number of seconds "
                              f"(0 disables the copy; default {DEFAULT_TTL})")
    return ttl


def from_opts(opts, progress=None):
    """A :class:`Fleet` over Salt's LocalClient, minion matching and master event bus."""
    import salt.client  # noqa: PLC0415 - the library stays importable without Salt
    import salt.utils.event  # noqa: PLC0415
    import salt.utils.minions  # noqa: PLC0415

    def check_minions(tgt, tgt_type):
        return salt.utils.minions.CkMinions(opts).check_minions(tgt, tgt_type).get("minions", [])

    return Fleet(
        opts,
        client_factory=lambda: salt.client.LocalClient(mopts=opts),
        check_minions=check_minions,
        master_event=lambda: salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=True),
        progress=progress,
        locations=Locations(os.path.join(opts["cachedir"], "saltvirt", "vm-locations.json")),
        capacities=Capacities(os.path.join(opts["cachedir"], "saltvirt", "capacities.json"),
                              lambda: capacity_ttl(opts)),
        file_hash=lambda url, saltenv: _file_server_hash(opts, url, saltenv),
        job_cache=_job_cache_reader(opts),
    )


def _job_cache_reader(opts):
    """``jid -> {minion: {"return": ...}}`` of the master's job cache ({} without one). Salt's
    returner loader is built on the first read only: a wait reads the cache once a second."""
    loaded = []

    def read(jid):
        if not opts.get("job_cache", True):
            return {}
        getter = f"{opts.get('master_job_cache', 'local_cache')}.get_jid"
        try:
            if not loaded:
                import salt.loader  # noqa: PLC0415

                loaded.append(salt.loader.returners(opts, {}, whitelist=[getter.split(".")[0]]))
            return loaded[0][getter](jid) or {}
        except Exception as exc:  # pylint: disable=broad-exception-caught
            log.debug("job cache of %s not read: %s", jid, exc)  # the bus still brings what comes later
            return {}

    return read


def _file_server_hash(opts, url, saltenv):
    """What the master's file server says of ``url``'s content (its hash cache makes it cheap)."""
    import salt.fileserver  # noqa: PLC0415
    import salt.utils.url  # noqa: PLC0415

    path, env = salt.utils.url.parse(url)
    found = salt.fileserver.Fileserver(opts).file_hash({"path": path, "saltenv": env or saltenv})
    if isinstance(found, dict) and found.get("hash_type") == "sha256" and found.get("hsum"):
        return f"sha256={found['hsum']}"
    return None
