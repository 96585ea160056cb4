"""Creating a VM from the master, whole or not at all, and repairing what an interruption left.

:class:`Provisioner` places the VM (placement + a reservation), records an intent, runs
``virt.init`` on the chosen hypervisor as a watched job and accepts the VM's minion key. If the
runner ends before that -- Ctrl-C, a timeout, the master restarting -- the intent and the
reservation stay; :meth:`Provisioner.reconcile` later completes the VM or removes what is left
(:func:`saltvirt.placement.intents.decide` says which).
"""

import logging
import os
import re

from saltvirt import placement, progress, trust, units
from saltvirt.domain import model as dommod
from saltvirt.errors import InvalidArgument, VirtError
from saltvirt.fleet.hosts import describe_errors, request, vm_names
from saltvirt.fleet.keys import MinionKeys
from saltvirt.pki import attest
from saltvirt.placement import intents as vintents
from saltvirt.placement import reservations
from saltvirt.provision.spec import VmSpec

log = logging.getLogger(__name__)


class InitFailed(VirtError):
    """The hypervisor reported a failure (and rolled back), or the job could not be followed."""


class KeyJob:
    """The ``virt.sync_key`` job run through ``minion`` (on a syndic's host) as job ``jid``."""

    def __init__(self, minion, jid):
        self.minion, self.jid = minion, jid
        self.tag = f"salt/job/{jid}/ret/{minion}"


def disk_mib(disks):
    """MiB of the disks a call sizes itself (``disks: [{size: ...}]``, MiB or '8G'): what placement
    can know before the hypervisor; the hypervisor checks the whole (image included) itself."""
    total = 0
    for disk in disks or ():
        if isinstance(disk, dict) and disk.get("size") is not None:
            try:
                total += units.parse_size(disk["size"], default_unit="MiB")
            except InvalidArgument as exc:
                raise InvalidArgument(f"disk {disk.get('name')!r}: {exc}") from exc
    return -(-total // (1024 * 1024))


class Provisioner:
    """VM creation and reconciliation over a :class:`saltvirt.fleet.hosts.Fleet`."""

    def __init__(self, fleet, gen_jid):
        self.fleet = fleet
        self.gen_jid = gen_jid
        cache = os.path.join(fleet.opts["cachedir"], "saltvirt")
        self.store = reservations.Reservations(os.path.join(cache, "reservations"))
        self.intents = vintents.Intents(os.path.join(cache, "intents"))
        self.keys = MinionKeys(fleet.opts["pki_dir"], os.path.join(cache, "vm-keys"))
        self.verifier = attest.Verifier(fleet.opts["pki_dir"])

    # -------------------------------------------------------------- init

    def check_new_name(self, name, kwargs, cpu=1, mem=1):
        dommod.validate_name(name)
        # The hypervisor's arguments are checked here too: nothing is reserved or published for a
        # call the hypervisor would refuse.
        VmSpec.from_kwargs("virt.init", name=name, cpu=cpu, mem=mem, **kwargs)
        trust.check_vm_name(name, self.fleet.hypervisors, self.keys.known())
        if "priv_key" in kwargs or "pub_key" in kwargs:
            raise InvalidArgument(
                f"virt.init {name}: pub_key/priv_key are not accepted by the runner: the hypervisor makes "
                "the VM's key pair and the master sees only its public key (a private key in a job "
                "argument reaches the job cache and the event bus)"
            )
        if self.intents.get(name):
            raise InvalidArgument(
                f"an earlier virt.init of {name} did not finish: run `salt-run virt.reconcile` to complete or "
                "remove it first"
            )

    def place(self, name, cpu, mem, host, kwargs):
        """Reserve room for the VM on ``host`` or where placement puts it; the host."""
        answers, errors = self.fleet.placement_capacity(host)
        if not answers:
            raise VirtError(f"no hypervisor answered: {describe_errors(errors) or 'none matched'}")
        for minion, info in answers.items():
            if name in vm_names(info):
                raise InvalidArgument(f"a VM named {name} already exists on {minion}")
        if host is not None and host not in answers:
            known = ", ".join(sorted(answers))
            raise InvalidArgument(errors.get(host) or f"unknown hypervisor {host} (answering: {known})")
        records = [r for r in self.fleet.records(answers, errors) if host is None or r["id"] == host]
        try:
            return self.store.place_and_reserve(
                records, request(name, cpu, mem, disk_mib(kwargs.get("disks"))), self.fleet.policy()).host
        except placement.NoHostFits as exc:
            raise VirtError(str(exc)) from exc

    def init(self, name, cpu, mem, host=None, timeout=None, **kwargs):
        """Create VM ``name`` (``kwargs``: the execution module's ``virt.init`` arguments)."""
        self.check_new_name(name, kwargs, cpu, mem)
        if host is not None:
            self.fleet.exact(host)
        with self.fleet.session():  # one Salt client for the survey and the job (~60 ms each)
            with self.fleet.progress_after(1.0, f"Searching for hypervisors for {name}"):
                host = self.place(name, cpu, mem, host, kwargs)
            if kwargs.get("enable_qcow") and not kwargs.get("image_hash"):
                # Lets the hypervisor use its base of this exact version without asking the master.
                hint = self.fleet.master_hash(kwargs.get("image"), kwargs.get("saltenv") or "base")
                kwargs = dict(kwargs, master_hash=hint) if hint else kwargs
            return self.init_on(host, name, cpu, mem, kwargs, timeout)

    def init_on(self, host, name, cpu, mem, kwargs, timeout=None):
        jid = self.gen_jid()
        seed = bool(kwargs.get("seed", True) and kwargs.get("image"))
        self.intents.begin(name, host, jid=jid, seed=seed)
        explicit = timeout is not None  # the caller's own limit is kept as it is
        timeout = float(timeout or self.fleet.conf("init_timeout", 900))
        tag = f"saltvirt/init/{jid}/progress"
        rate = self.fleet.conf("image_copy:min_rate_mib", progress.DEFAULT_MIN_RATE_MIB)

        def on_progress(data):
            try:
                self.fleet.progress(progress.line(name, data), host=host, progress=data)
            except Exception as exc:  # pylint: disable=broad-exception-caught
                log.debug("progress of %s not shown: %s", name, exc)  # never a reason to fail the init
            # A big image may take longer than init_timeout: wait while its bytes move fast enough.
            return None if explicit else progress.time_left(data, timeout, rate)

        # One listener from before the key job (under a syndic) to its answer after the creation's.
        with self.fleet.events() as event:
            key_job = self.start_key_job(host, name, jid, timeout) if seed else None
            seen = {key_job.tag: None} if key_job else None
            creating = f"Creating VM {name} on hypervisor {host}"
            try:
                done = self.fleet.watch(
                    host, "virt.init", [name, cpu, mem], dict(kwargs, progress_tag=tag), tag, on_progress, timeout,
                    jid=jid,
                    on_published=lambda _jid: self.fleet.progress(creating, host=host),
                    genuine=lambda data: self.genuine_init_answer(host, name, data, jid),
                    event=event, seen=seen,
                )
            except VirtError as exc:
                # No answer in time, or the job vanished: it may still create the VM. The intent and the
                # reservation stay for virt.reconcile (or the next attempt) to finish or undo.
                self._forget_capacities()  # the hypervisor may be gone: the next placement asks them all
                raise InitFailed(
                    f"virt.init of {name} on {host}: {exc}; it may still complete: `salt-run virt.reconcile` "
                    "accepts its key when it does, or removes what is left"
                ) from exc
            except BaseException:
                # Ctrl-C or the master going away: the same, said in the master's log.
                self._forget_capacities()
                log.warning("virt.init of %s on %s interrupted; salt-run virt.reconcile completes or removes it",
                            name, host)
                raise
            if not done.get("success", True) or done.get("retcode"):
                self.store.release(name)  # the hypervisor failed and rolled back: nothing to keep
                self.intents.end(name)
                self._forget_capacities()  # placed from a copy the hypervisor may not match
                if key_job:
                    self.undo_key_job(key_job, event, seen, name, host)
                raise InitFailed(f"virt.init of {name} on {host} failed: {done.get('return')}")
            result = done.get("return")
            seeded = result.get("seeded") if isinstance(result.get("seeded"), dict) else None
            if self.fleet.capacities is not None:  # before its reservation ends: always counted once
                req = request(name, cpu, mem, disk_mib(kwargs.get("disks")))
                state = result.get("state") if isinstance(result.get("state"), str) else "running"
                self.fleet.capacities.defined(
                    host, {"name": name, "cpu": req.cpu, "memory": req.memory_mib, "state": state}, req.disk_mib)
            pub = seeded.pop("minion_pub", None) if seeded else None
            answer = None
            if key_job and pub:  # its answer follows the hypervisor's within the syndic's forwarding
                answer = self.fleet.await_return(event, key_job.minion, key_job.jid, self.fleet.conf("timeout", 10),
                                                 seen)
            try:
                self.complete(host, name, pub, seeded.pop("minion_pub_signature", None) if seeded else None,
                              jid=jid, key_answer=answer)
            except BaseException:
                self._forget_capacities()  # rolled back (or not): the copy no longer says
                raise
            if seeded is not None:
                seeded["key_accepted"] = True
                self.fleet.progress(f"Minion key of {name} accepted on the master", host=host)
            return result  # its state and host are in the result: no progress line for them

    def genuine_init_answer(self, host, name, data, jid, here=False):
        """False for an answer to ``virt.init`` job ``jid`` that says it made a key pair without
        ``host``'s signature over the public key and that job: another minion's, in ``host``'s
        name, or one ``host`` gave about an earlier VM of the name, replayed (pki.attest).
        Under a syndic, whose master holds ``host``'s key, that master checks it instead
        (``here``: this is that master)."""
        ret = data.get("return") if isinstance(data, dict) else None
        seeded = ret.get("seeded") if isinstance(ret, dict) else None
        if not isinstance(seeded, dict) or not seeded.get("minion_pub") \
                or (not here and self.fleet.syndics.key_minion(host)):
            return True
        try:
            self.check_key(host, name, seeded["minion_pub"], seeded.get("minion_pub_signature"), jid)
        except VirtError:
            return False
        return True

    def _forget_capacities(self):
        if self.fleet.capacities is not None:
            self.fleet.capacities.discard()

    def complete(self, host, name, pub, signature=None, jid=None, key_answer=None):
        """The VM exists on ``host``: accept its key (``signature``: ``host``'s over it and job
        ``jid``, whose answer carried it), turn the reservation into it, end the intent.
        ``key_answer``: the return of the key job started with the creation under a syndic
        (:meth:`start_key_job`), if it came."""
        if pub:
            try:
                # There, that master checks host's signature.
                if not self.key_on_syndic(name, host, answer=key_answer):
                    self.accept_key(host, name, pub, signature, jid)
            except VirtError:
                self.rollback(host, name, defined=True)
                raise
        self.store.finish(name)
        self.intents.end(name)
        if self.fleet.locations is not None:
            self.fleet.locations.set(name, host)

    def check_key(self, host, name, pub, signature, jid):
        """Raise VirtError unless ``host`` signed ``pub`` as VM ``name``'s key in its answer to job
        ``jid`` (:mod:`saltvirt.pki.attest`)."""
        try:
            self.verifier.check(attest.KEY, host, name, attest.key_statement(pub, jid), signature)
        except attest.Unattested as exc:
            raise VirtError(f"not accepting the minion key of {name}: {exc}") from exc

    def accept_key(self, host, name, pub, signature, jid):
        """Accept ``pub`` as VM ``name``'s key when ``host`` signed it in its answer to job ``jid``."""
        try:
            self.check_key(host, name, pub, signature, jid)
        except VirtError as exc:
            log.warning("virt: %s", exc)
            raise
        self.keys.accept(name, pub, host)

    def key_on_syndic(self, name, host, answer=None):
        """Under a syndic (``virt:syndics``), VM ``name``'s key belongs on ``host``'s master: the
        minion on the syndic's host runs that master's ``virt.sync_key``. Its answer, or False when
        ``host``'s master is this one. ``answer``: the return of such a job started earlier
        (:meth:`start_key_job`); when it did not accept the key, a new one is run."""
        minion = self.fleet.syndics.key_minion(host)
        if minion is None:
            return False
        ret = answer.get("return") if isinstance(answer, dict) else None
        if isinstance(ret, dict) and (ret.get("name"), ret.get("host"), ret.get("key")) == (name, host, "accepted"):
            return ret
        # The syndic's minion is no hypervisor: named by the master's own config, not by a caller.
        answers, errors = self.fleet.fanout("saltutil.runner", arg=["virt.sync_key"],
                                            kwarg={"kwarg": {"name": name, "host": host}}, tgt=[minion],
                                            tgt_type="list")
        ret = answers.get(minion)
        if not isinstance(ret, dict) or ret.get("result") is False:
            reason = ret.get("error") if isinstance(ret, dict) else (errors.get(minion) or ret)
            raise VirtError(f"the key of {name} on the master of {host} (through {minion}): {reason}")
        return ret

    def start_key_job(self, host, name, jid, timeout=None):
        """Under a syndic, start the key step of VM ``name`` with its creation (job ``jid``, not
        yet published): ``virt.sync_key`` on ``host``'s master waits there for ``host``'s answer
        to ``jid`` and then accepts the key as it would when run afterwards, so the runner's
        set-up inside the syndic's minion and its wait overlap the creation instead of following
        it. A :class:`KeyJob`, or None (no syndic, or Salt did not start it: the key step then
        runs after the creation, as :meth:`key_on_syndic` always can)."""
        minion = self.fleet.syndics.key_minion(host)
        if minion is None:
            return None
        wait = float(timeout or self.fleet.conf("init_timeout", 900)) + float(self.fleet.conf("timeout", 10))
        kwarg = {"name": name, "host": host, "jid": jid, "timeout": wait}
        try:
            started = self.fleet.publish(minion, "saltutil.runner", ["virt.sync_key"], {"kwarg": kwarg})
        except Exception as exc:  # pylint: disable=broad-exception-caught
            log.info("virt.init %s: the key step on %s's master runs afterwards: %s", name, host, exc)
            return None
        return KeyJob(minion, started) if started else None

    def undo_key_job(self, key_job, event, seen, name, host):
        """After a failed creation: the key job started with it accepted nothing (the usual case:
        it saw the failure), or the key step runs again and deletes what it accepted (``host`` no
        longer has the VM)."""
        answer = self.fleet.await_return(event, key_job.minion, key_job.jid, self.fleet.conf("timeout", 10), seen)
        ret = answer.get("return") if isinstance(answer, dict) else None
        if isinstance(ret, dict) and ret.get("key") == "unchanged":
            return
        try:
            self.key_on_syndic(name, host)
        except VirtError as exc:
            log.warning("virt.init %s: a key of it may remain on the master of %s (salt-run virt.reconcile "
                        "there removes it): %s", name, host, exc)

    def await_init(self, host, name, jid, timeout=None):
        """Wait for ``host``'s answer to ``virt.init`` job ``jid`` (on this master's bus, or in its
        job cache when it came first). ``(None, public key)`` when it carries VM ``name``'s public
        key signed by ``host`` for that job; otherwise ``(why there is nothing to accept, None)``.
        An answer in ``host``'s name that ``host`` did not sign for that job is ignored (any
        minion can send one): the wait goes on."""
        if not isinstance(jid, (str, int)) or not re.fullmatch(r"\d{20}", str(jid)):
            raise InvalidArgument(f"jid {jid!r}: a Salt job id is 20 digits (e.g. 20261202063840145699)")
        # At most what a creation gets here (plus its answer's way): a caller granted virt.* does
        # not keep a runner waiting longer.
        longest = float(self.fleet.conf("init_timeout", 900)) + float(self.fleet.conf("timeout", 10))
        try:
            seconds = longest if timeout is None else float(timeout)
        except (TypeError, ValueError):
            seconds = -1.0
        if isinstance(timeout, bool) or not seconds >= 0:
            raise InvalidArgument(f"timeout {timeout!r}: a number of seconds (at most {longest:g} are waited: "
                                  "virt:init_timeout + virt:timeout)")
        timeout = min(seconds, longest)
        jid = str(jid)
        outcome = {}  # "pub": the key to accept, or "why": there is none

        def accept(data):
            ret = data.get("return")
            seeded = ret.get("seeded") if isinstance(ret, dict) else None
            if data.get("success") is False or data.get("retcode") or not isinstance(ret, dict):
                outcome["why"] = f"virt.init job {jid} on {host} failed"
            elif not isinstance(seeded, dict) or not seeded.get("minion_pub"):
                outcome["why"] = f"virt.init job {jid} on {host} made no minion key"
            elif not self.genuine_init_answer(host, name, data, jid, here=True):
                log.warning("virt.sync_key %s: an answer in %s's name to job %s that %s did not sign for it: "
                            "ignored", name, host, jid, host)
                return False
            else:
                outcome["pub"] = seeded["minion_pub"]
            return True

        if self.fleet.returns_of(jid, host, timeout, accept) is None:
            return f"no answer of {host} to virt.init job {jid} within {timeout:g}s", None
        return outcome.get("why"), outcome.get("pub")

    def sync_key(self, name, host, jid=None, timeout=None):
        """Make this master's key for VM ``name`` match hypervisor ``host`` (see the runner's
        ``virt.sync_key``): accept the public key of the VM's seed there while ``host`` has the VM;
        delete the key once accepted for it when no hypervisor of this master has it any more.
        With ``jid``, wait instead (``timeout`` seconds) for ``host``'s answer to that ``virt.init``
        job (:meth:`await_init`) and accept the key it carries, signed by ``host`` for that job."""
        host = self.fleet.exact(host)[0]
        dommod.validate_name(name)
        trust.check_vm_name(name, self.fleet.hypervisors, self.keys.known() - {name})
        if jid is not None:
            why, pub = self.await_init(host, name, jid, timeout)
            if why:
                return {"name": name, "host": host, "key": "unchanged", "reason": why}
            self.keys.accept(name, pub, host)  # checked: host's, for this job
            return {"name": name, "host": host, "key": "accepted"}
        status, asked = self.init_status(host, name)
        if status.get("defined") and status.get("minion_pub"):
            self.accept_key(host, name, status["minion_pub"], status.get("minion_pub_signature"), asked)
            return {"name": name, "host": host, "key": "accepted"}
        if not status.get("defined") and name in self.keys.registered():
            # Migrated elsewhere is not gone: delete only when no hypervisor of this master has it.
            answers, errors = self.fleet.fanout("virt.vm_state")
            if errors:
                raise VirtError(f"not deleting the key of {name} while hypervisors do not answer: "
                                f"{describe_errors(errors)}")
            if any(isinstance(states, dict) and name in states for states in answers.values()):
                return {"name": name, "host": host, "key": "unchanged"}
            deleted = self.keys.delete(name)
            self.keys.unregister(name)
            return {"name": name, "host": host, "key": "deleted" if deleted else "absent"}
        return {"name": name, "host": host, "key": "unchanged"}

    def init_status(self, host, name, required=True):
        """``(virt.init_status of VM name on host, the job's id)``: the key it reports is signed for
        that job, which this master publishes with its own id. With ``required`` a host that did
        not answer raises VirtError, else the status is None."""
        jid = self.gen_jid()
        if required:
            return self.fleet.call(host, "virt.init_status", [name], jid=jid), jid
        answers, _errors = self.fleet.on(host, "virt.init_status", [name], jid=jid)
        return answers.get(host), jid

    def rollback(self, host, name, defined):
        """Nothing of ``name`` stays: the domain (if any) purged, files, reservation, intent gone."""
        _answers, errors = self.fleet.on(host, "virt.purge" if defined else "virt.remove_leftovers", [name])
        if errors:
            raise VirtError(f"cannot remove what is left of {name} on {host}: {describe_errors(errors)}")
        self.store.release(name)
        self.intents.end(name)

    def forget(self, name, host, delete_key=True):
        """After a purge on ``host``: the VM's key (if asked; on the syndic's master under a syndic),
        registry entry and any reservation go. ``(deleted, error)``."""
        deleted, error = False, None
        try:
            under_syndic = self.key_on_syndic(name, host) if delete_key else False
        except VirtError as exc:  # the VM is gone; say what is left
            under_syndic, error = {"key": "not deleted"}, str(exc)
        if under_syndic:
            deleted = under_syndic["key"] == "deleted"
        elif delete_key:
            deleted = self.keys.delete(name)
        self.keys.unregister(name)
        # A VM created moments ago may still hold its placement reservation: it is gone now.
        self.store.release(name)
        return deleted, error

    # -------------------------------------------------------------- reconcile

    def reconcile_intent(self, intent, test):
        name, host = intent["name"], intent.get("host")
        running = self.fleet.job_running(host, intent["jid"]) if intent.get("jid") else False
        status, asked = None, None
        if running is not None:
            status, asked = self.init_status(host, name, required=False)
        action, reason = vintents.decide(intent, running, status)
        entry = {"name": name, "host": host, "action": action, "reason": reason}
        if test or action == vintents.WAIT:
            return entry
        try:
            if action == vintents.COMPLETE:
                self.complete(host, name, status.get("minion_pub"), status.get("minion_pub_signature"), asked)
                entry["done"] = "completed: key accepted" if status.get("minion_pub") else "completed"
            else:
                self.rollback(host, name, defined=bool(status.get("defined")))
                entry["done"] = "removed"
        except VirtError as exc:
            entry["error"] = str(exc)
        return entry

    def reconcile(self, test=False):
        """Finish or undo unfinished inits; delete VM keys without VMs; list VMs without keys;
        release stale reservations (see the runner's ``virt.reconcile``)."""
        report = {"test": bool(test), "keys_without_vms": [], "vms_without_keys": [], "stale_reservations": []}
        report["inits"] = [self.reconcile_intent(intent, test) for intent in self.intents.all()]
        answers, errors = self.fleet.fanout("virt.vm_state")
        vms = {vm for states in answers.values() if isinstance(states, dict) for vm in states}
        pending = {i["name"] for i in self.intents.all()}
        for name in self.keys.registered() if not errors else []:
            if name not in vms and name not in pending:
                report["keys_without_vms"].append(name)
                if not test:
                    self.keys.delete(name)
                    self.keys.unregister(name)
        accepted = self.keys.accepted()
        seeded, _seed_errors = self.fleet.fanout("virt.seeded_vms")
        # VMs under a syndic have their keys on the syndic's master: virt.reconcile there reports them.
        report["vms_without_keys"] = [{"name": name, "host": host} for host, names in seeded.items()
                                      if not self.fleet.syndics.key_minion(host)
                                      for name in names or [] if name not in accepted and name not in pending]
        for entry in self.store.entries():
            name = entry.get("name")
            if name not in vms and name not in pending and not errors:
                report["stale_reservations"].append(name)
                if not test:
                    self.store.release(name)
        if errors:
            report["not_answering"] = errors
        if errors or any(i.get("error") for i in report["inits"]):
            report["retcode"] = 1
        return report
