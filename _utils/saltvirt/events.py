"""libvirt domain events as Salt events: names, tags, payloads and a watcher that reconnects.

The ``libvirt_events`` engine (``_engines/libvirt_events.py``) is glue over :class:`Watcher`:
it passes the libvirt URI, a function that fires a Salt event, and its options.

Tags follow the classic engine's layout, with the VM's name and the event's name last::

    salt/engines/libvirt_events/<uri>/domain/<vm>/<event>
    salt/engines/libvirt_events/qemu/system/domain/web1/stopped

``<uri>`` is the connection URI without ``://`` (``qemu:///system`` -> ``qemu/system``,
``qemu+tls://hv2/system`` -> ``qemu+tls/hv2/system``). ``<event>`` is one of
:data:`LIFECYCLE` (``started``, ``stopped``, ``crashed``...; the payload's ``detail`` says why:
``destroyed``, ``shutdown``, ``migrated``...) or ``reboot``, ``block_job``, ``job_completed``,
``watchdog``. The watcher's own connection to libvirtd reports under
``<prefix>/<uri>/connection/open`` and ``.../connection/lost``.

The pure functions here are unit-tested; :class:`Watcher` talks to a real libvirtd (its
``connect`` argument lets tests drive the reconnect logic with a fake).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import urllib.parse

from saltvirt.errors import InvalidArgument

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "salt/engines/libvirt_events"

#: libvirt's virDomainEventType, in enum order, and each type's detail names in enum order
#: (libvirt 9.0 include/libvirt/libvirt-domain.h).
LIFECYCLE = ("defined", "undefined", "started", "suspended", "resumed", "stopped", "shutdown",
             "pmsuspended", "crashed")
DETAILS = {
    "defined": ("added", "updated", "renamed", "from_snapshot"),
    "undefined": ("removed", "renamed"),
    "started": ("booted", "migrated", "restored", "from_snapshot", "wakeup"),
    "suspended": ("paused", "migrated", "ioerror", "watchdog", "restored", "from_snapshot",
                  "api_error", "postcopy", "postcopy_failed"),
    "resumed": ("unpaused", "migrated", "from_snapshot", "postcopy", "postcopy_failed"),
    "stopped": ("shutdown", "destroyed", "crashed", "migrated", "saved", "failed", "from_snapshot"),
    "shutdown": ("finished", "guest", "host"),
    "pmsuspended": ("memory", "disk"),
    "crashed": ("panicked", "crashloaded"),
}
BLOCK_JOB_TYPES = ("unknown", "pull", "copy", "commit", "active_commit", "backup")
BLOCK_JOB_STATUS = ("completed", "failed", "canceled", "ready")
WATCHDOG_ACTIONS = ("none", "pause", "reset", "poweroff", "shutdown", "debug", "inject_nmi")

#: Lifecycle events that change what the master keeps of a VM (``virt.remember``): the engine
#: attaches the VM's definition to them, so the master needs no round trip to the hypervisor.
REMEMBERED = ("defined", "undefined", "started", "stopped")

#: The event families the engine can subscribe to (engine option ``filters``).
FAMILIES = ("lifecycle", "reboot", "block_job", "job_completed", "watchdog")

#: Job statistics worth putting on the bus (the rest are byte counters nobody reacts to).
_JOB_KEYS = ("operation", "success", "time_elapsed", "downtime", "data_total", "memory_total",
             "disk_total", "errmsg")


def _name(table, index, what):
    return table[index] if 0 <= index < len(table) else f"{what}{index}"


def lifecycle_names(event, detail):
    """``(event, detail)`` names of a lifecycle callback's integers (unknown ones: ``event7``)."""
    name = _name(LIFECYCLE, event, "event")
    return name, _name(DETAILS.get(name, ()), detail, "detail")


def uri_tag(uri):
    """The URI as tag components: ``qemu:///system`` -> ``qemu/system``."""
    parsed = urllib.parse.urlparse(uri)
    parts = [parsed.scheme or "unknown"]
    if parsed.netloc:
        parts.append(parsed.netloc)
    path = parsed.path.strip("/")
    if path:
        parts.append(path)
    return "/".join(parts)


def _component(text):
    # A tag component must not split: a '/' in a name would shift every later part.
    return str(text).replace("/", "%2F") or "-"


def domain_tag(prefix, uri, vm, event):
    return "/".join((prefix.rstrip("/"), uri_tag(uri), "domain", _component(vm), event))


def connection_tag(prefix, uri, event):
    return "/".join((prefix.rstrip("/"), uri_tag(uri), "connection", event))


def parse_filters(filters):
    """The event families to subscribe to: ``None``/``all`` = every one; unknown names refused."""
    if filters is None or filters == "all" or filters == ["all"]:
        return FAMILIES
    if isinstance(filters, str):
        filters = [f.strip() for f in filters.split(",") if f.strip()]
    if not isinstance(filters, (list, tuple)) or not filters:
        raise InvalidArgument(f"libvirt_events filters must be a list of {', '.join(FAMILIES)}, got {filters!r}")
    # 'domain/lifecycle' is how the classic engine spelled them.
    names = [str(f).removeprefix("domain/") for f in filters]
    unknown = sorted(set(names) - set(FAMILIES) - {"all"})
    if unknown:
        raise InvalidArgument(
            f"libvirt_events: unknown filter(s) {', '.join(unknown)}; known: {', '.join(FAMILIES)}, all"
        )
    if "all" in names:
        return FAMILIES
    return tuple(f for f in FAMILIES if f in names)


def domain_payload(uri, name, dom_id, uuid, event, **extra):
    """The event data: the classic engine's ``domain`` and ``event`` keys, plus details."""
    data = {"uri": uri, "domain": {"name": name, "id": dom_id, "uuid": uuid}, "event": event}
    data.update(extra)
    return data


def job_stats(params):
    """The few job statistics put on the bus, from a JOB_COMPLETED callback's typed params."""
    return {k: params[k] for k in _JOB_KEYS if k in (params or {})}


def operation_name(code):
    """virDomainJobOperation as a name (migration jobs are the interesting ones)."""
    names = ("unknown", "start", "save", "restore", "migration_in", "migration_out", "snapshot",
             "snapshot_revert", "dump", "backup", "snapshot_delete")
    return _name(names, code, "operation") if isinstance(code, int) else code


class Watcher:
    """Forward one libvirt connection's domain events to ``fire(tag, data)``, reconnecting.

    libvirt calls the callbacks from its event-loop thread; they only queue the event, and
    :meth:`run` (the caller's thread) fires it, so a slow Salt bus never stalls libvirt.
    When the connection closes (libvirtd restarted, keepalive timeout) the watcher reconnects
    with a back-off of ``retry`` seconds doubling up to ``retry_max``, firing
    ``connection/lost`` and then ``connection/open`` (``reconnected: True``).

    With ``describe(conn, name)`` (``{xml, state, autostart}`` of a persistent domain, or None),
    the :data:`REMEMBERED` events carry ``definition``: that record plus ``seen`` (this host's
    clock when the event was fired), ``event`` and ``detail``, or only those three when the domain
    has no definition any more;
    with ``sign(name, record)`` too, the record carries this hypervisor's signature
    (:mod:`saltvirt.pki.attest`), without which the master keeps none of it.
    """

    def __init__(self, uri, fire, prefix=DEFAULT_PREFIX, filters=None, connect=None, retry=1.0,
                 retry_max=30.0, keepalive=(5, 3), describe=None, clock=time.time, sign=None):
        self.uri = uri
        self.fire = fire
        self.prefix = prefix
        self.families = parse_filters(filters)
        self._connect = connect or _default_connect
        self.retry, self.retry_max = float(retry), float(retry_max)
        self.keepalive = keepalive
        self.describe, self.clock, self.sign = describe, clock, sign
        self.queue = queue.Queue()
        self.conn = None
        self._callbacks = []
        self.connects = 0

    # -- libvirt callbacks: event-loop thread, queue only ------------------------------------

    def _domain(self, dom):
        return dom.name(), dom.ID(), dom.UUIDString()

    def _on_lifecycle(self, _conn, dom, event, detail, _opaque):
        name, dom_id, uuid = self._domain(dom)
        ev, det = lifecycle_names(event, detail)
        self.queue.put((domain_tag(self.prefix, self.uri, name, ev),
                        domain_payload(self.uri, name, dom_id, uuid, ev, detail=det)))

    def _on_reboot(self, _conn, dom, _opaque):
        name, dom_id, uuid = self._domain(dom)
        self.queue.put((domain_tag(self.prefix, self.uri, name, "reboot"),
                        domain_payload(self.uri, name, dom_id, uuid, "reboot")))

    def _on_block_job(self, _conn, dom, disk, job_type, status, _opaque):
        name, dom_id, uuid = self._domain(dom)
        self.queue.put((domain_tag(self.prefix, self.uri, name, "block_job"),
                        domain_payload(self.uri, name, dom_id, uuid, "block_job", disk=disk,
                                       type=_name(BLOCK_JOB_TYPES, job_type, "type"),
                                       status=_name(BLOCK_JOB_STATUS, status, "status"))))

    def _on_job_completed(self, _conn, dom, params, _opaque):
        name, dom_id, uuid = self._domain(dom)
        stats = job_stats(params)
        if "operation" in stats:
            stats["operation"] = operation_name(stats["operation"])
        self.queue.put((domain_tag(self.prefix, self.uri, name, "job_completed"),
                        domain_payload(self.uri, name, dom_id, uuid, "job_completed", stats=stats)))

    def _on_watchdog(self, _conn, dom, action, _opaque):
        name, dom_id, uuid = self._domain(dom)
        self.queue.put((domain_tag(self.prefix, self.uri, name, "watchdog"),
                        domain_payload(self.uri, name, dom_id, uuid, "watchdog",
                                       action=_name(WATCHDOG_ACTIONS, action, "action"))))

    def _on_close(self, _conn, reason, _opaque):
        self.queue.put(("__closed__", {"reason": reason}))

    # -- connection --------------------------------------------------------------------------

    def _subscribe(self, conn):
        import libvirt  # only the real connection needs it

        handlers = {
            "lifecycle": (libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle),
            "reboot": (libvirt.VIR_DOMAIN_EVENT_ID_REBOOT, self._on_reboot),
            "block_job": (libvirt.VIR_DOMAIN_EVENT_ID_BLOCK_JOB_2, self._on_block_job),
            "job_completed": (libvirt.VIR_DOMAIN_EVENT_ID_JOB_COMPLETED, self._on_job_completed),
            "watchdog": (libvirt.VIR_DOMAIN_EVENT_ID_WATCHDOG, self._on_watchdog),
        }
        ids = []
        for family in self.families:
            event_id, callback = handlers[family]
            ids.append(conn.domainEventRegisterAny(None, event_id, callback, None))
        conn.registerCloseCallback(self._on_close, None)
        if self.keepalive:
            conn.setKeepAlive(*self.keepalive)
        return ids

    def open(self, stop=None):
        """Connect (retrying with back-off until ``stop`` is set); fire ``connection/open``."""
        delay = self.retry
        while stop is None or not stop.is_set():
            try:
                conn = self._connect(self.uri)
                self._callbacks = self._subscribe(conn)
            except Exception as exc:  # libvirtError or VirtError: keep trying
                log.warning("libvirt_events: cannot watch %s (%s); retrying in %.0fs", self.uri, exc, delay)
                if stop is not None and stop.wait(delay):
                    return False
                if stop is None:
                    time.sleep(delay)
                delay = min(delay * 2, self.retry_max)
                continue
            self.conn = conn
            self.connects += 1
            self.fire(connection_tag(self.prefix, self.uri, "open"),
                      {"uri": self.uri, "reconnected": self.connects > 1, "events": list(self.families)})
            log.info("libvirt_events: watching %s (%s)", self.uri, ", ".join(self.families))
            return True
        return False

    def _drop(self):
        conn, self.conn = self.conn, None
        if conn is None:
            return
        for cb_id in self._callbacks:
            try:
                conn.domainEventDeregisterAny(cb_id)
            except Exception:  # noqa: S110 (the connection is usually dead already)
                pass
        try:
            conn.unregisterCloseCallback()
        except Exception:  # noqa: S110
            pass
        try:
            conn.close()
        except Exception:  # noqa: S110
            pass

    def step(self, stop=None, wait=1.0):
        """Fire the queued events; reconnect if the connection closed. False once stopped."""
        try:
            tag, data = self.queue.get(timeout=wait)
        except queue.Empty:
            return stop is None or not stop.is_set()
        if tag == "__closed__":
            log.warning("libvirt_events: connection to %s closed (reason %s); reconnecting",
                        self.uri, data["reason"])
            self._drop()
            self.fire(connection_tag(self.prefix, self.uri, "lost"), {"uri": self.uri, "reason": data["reason"]})
            return self.open(stop)
        try:
            self._attach_definition(data)
            self.fire(tag, data)
        except Exception:  # a bus hiccup must not end the engine
            log.exception("libvirt_events: could not fire %s", tag)
        return stop is None or not stop.is_set()

    def _attach_definition(self, data):
        # Read here, in the firing thread: libvirt must not be called from its own event callbacks.
        if self.describe is None or self.conn is None or data.get("event") not in REMEMBERED:
            return
        seen = self.clock()
        try:
            record = self.describe(self.conn, data["domain"]["name"])
        except Exception as exc:  # the event still goes out; the master may ask with virt.remember
            log.debug("libvirt_events: no definition of %s: %s", data["domain"]["name"], exc)
            return
        # The event and its detail go with it, under the same signature: a reactor may act on them
        # (restart_crashed), and any minion can send an unsigned event in this host's name.
        definition = dict(record or {}, seen=seen, event=data.get("event"), detail=data.get("detail"))
        if self.sign is not None:
            try:
                definition = self.sign(data["domain"]["name"], definition)
            except Exception as exc:  # unsigned, the master would refuse it: the event goes without
                log.warning("libvirt_events: definition of %s not signed: %s", data["domain"]["name"], exc)
                return
        data["definition"] = definition

    def run(self, stop=None):
        """Watch until ``stop`` (a threading.Event) is set; forever without one."""
        start_event_loop()
        if not self.open(stop):
            return
        try:
            while self.step(stop):
                pass
        finally:
            self._drop()


def _default_connect(uri):
    from saltvirt import connection

    return connection.connect(uri)


_LOOP = {"thread": None}
_LOOP_LOCK = threading.Lock()


def start_event_loop():
    """libvirt's default event loop, once per process, in a daemon thread (needed for events
    and keepalive; it must be registered before the first connection is opened)."""
    with _LOOP_LOCK:
        if _LOOP["thread"] is not None:
            return
        import libvirt

        libvirt.virEventRegisterDefaultImpl()

        def _loop():
            while True:
                libvirt.virEventRunDefaultImpl()

        thread = threading.Thread(target=_loop, name="libvirt-event-loop", daemon=True)
        thread.start()
        _LOOP["thread"] = thread
