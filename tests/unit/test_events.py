"""saltvirt.events: names, tags, filters and the watcher's reconnect logic (pure logic).

The connection is a recording fake here; tests/integration/test_events.py proves the engine
against the lab's real libvirtd and salt-master.
"""

import threading

import pytest

from saltvirt import events
from saltvirt.errors import InvalidArgument


def test_lifecycle_names_follow_libvirts_enums():
    assert events.lifecycle_names(5, 1) == ("stopped", "destroyed")
    assert events.lifecycle_names(5, 3) == ("stopped", "migrated")
    assert events.lifecycle_names(2, 1) == ("started", "migrated")
    assert events.lifecycle_names(6, 1) == ("shutdown", "guest")
    assert events.lifecycle_names(8, 0) == ("crashed", "panicked")
    # a newer libvirt's values are passed on, not dropped
    assert events.lifecycle_names(42, 7) == ("event42", "detail7")
    assert events.lifecycle_names(5, 99) == ("stopped", "detail99")


@pytest.mark.parametrize("uri, tag", [
    ("qemu:///system", "qemu/system"),
    ("qemu+tls://127.0.0.3/system", "qemu+tls/127.0.0.3/system"),
    ("qemu+ssh://root@hv2:2222/system", "qemu+ssh/root@hv2:2222/system"),
    ("test:///default", "test/default"),
])
def test_uri_tag(uri, tag):
    assert events.uri_tag(uri) == tag


def test_domain_tag_keeps_the_layout_even_for_odd_names():
    prefix = "salt/engines/libvirt_events"
    assert events.domain_tag(prefix, "qemu:///system", "web1", "stopped") == \
        "salt/engines/libvirt_events/qemu/system/domain/web1/stopped"
    assert events.domain_tag(prefix + "/", "qemu:///system", "a/b", "started").split("/")[-2] == "a%2Fb"
    assert events.connection_tag(prefix, "qemu:///system", "lost") == \
        "salt/engines/libvirt_events/qemu/system/connection/lost"


def test_filters():
    assert events.parse_filters(None) == events.FAMILIES
    assert events.parse_filters(["all"]) == events.FAMILIES
    assert events.parse_filters(["reboot", "domain/lifecycle"]) == ("lifecycle", "reboot")
    assert events.parse_filters("lifecycle, watchdog") == ("lifecycle", "watchdog")
    with pytest.raises(InvalidArgument, match="unknown filter.*tray_change.*known: lifecycle"):
        events.parse_filters(["lifecycle", "tray_change"])
    with pytest.raises(InvalidArgument, match="must be a list"):
        events.parse_filters([])


def test_job_stats_keep_the_useful_few():
    params = {"operation": 5, "time_elapsed": 900, "memory_total": 1, "memory_bps": 2, "success": True}
    stats = events.job_stats(params)
    assert stats == {"operation": 5, "success": True, "time_elapsed": 900, "memory_total": 1}
    assert events.operation_name(5) == "migration_out" and events.operation_name(4) == "migration_in"


class FakeDomain:
    def __init__(self, name, dom_id=3):
        self._name, self._id = name, dom_id

    def name(self):
        return self._name

    def ID(self):  # noqa: N802 (libvirt's name)
        return self._id

    def UUIDString(self):  # noqa: N802
        return f"uuid-{self._name}"


class FakeConn:
    def __init__(self):
        self.callbacks, self.close_cb, self.closed, self.keepalive = {}, None, False, None

    def domainEventRegisterAny(self, dom, event_id, callback, opaque):  # noqa: N802
        self.callbacks[event_id] = callback
        return len(self.callbacks)

    def domainEventDeregisterAny(self, cb_id):  # noqa: N802
        pass

    def registerCloseCallback(self, callback, opaque):  # noqa: N802
        self.close_cb = callback

    def unregisterCloseCallback(self):  # noqa: N802
        raise RuntimeError("connection already gone")  # a dead connection refuses: ignored

    def setKeepAlive(self, interval, count):  # noqa: N802
        self.keepalive = (interval, count)

    def close(self):
        self.closed = True


def _watcher(connects, fired, **kw):
    def connect(uri):
        item = connects.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    return events.Watcher("qemu:///system", lambda tag, data: fired.append((tag, data)), connect=connect,
                          retry=0.01, retry_max=0.02, **kw)


def test_watcher_fires_events_and_reconnects_after_libvirtd_restarts():
    import libvirt

    first, second, fired = FakeConn(), FakeConn(), []
    watcher = _watcher([OSError("libvirtd not up yet"), first, OSError("restarting"), second], fired)
    stop = threading.Event()
    assert watcher.open(stop) is True
    assert fired.pop(0) == ("salt/engines/libvirt_events/qemu/system/connection/open",
                            {"uri": "qemu:///system", "reconnected": False, "events": list(events.FAMILIES)})
    assert first.keepalive == (5, 3)

    first.callbacks[libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE](first, FakeDomain("web1", -1), 5, 1, None)
    first.callbacks[libvirt.VIR_DOMAIN_EVENT_ID_REBOOT](first, FakeDomain("web2"), None)
    assert fired == []  # queued by libvirt's thread, fired by the watcher's
    assert watcher.step(stop, wait=0) and watcher.step(stop, wait=0)
    assert fired == [
        ("salt/engines/libvirt_events/qemu/system/domain/web1/stopped",
         {"uri": "qemu:///system", "domain": {"name": "web1", "id": -1, "uuid": "uuid-web1"},
          "event": "stopped", "detail": "destroyed"}),
        ("salt/engines/libvirt_events/qemu/system/domain/web2/reboot",
         {"uri": "qemu:///system", "domain": {"name": "web2", "id": 3, "uuid": "uuid-web2"}, "event": "reboot"}),
    ]
    fired.clear()

    first.close_cb(first, 0, None)  # libvirtd went away
    assert watcher.step(stop, wait=0) is True
    assert first.closed and watcher.conn is second
    assert [t.rsplit("/", 2)[-2:] for t, _d in fired] == [["connection", "lost"], ["connection", "open"]]
    assert fired[1][1]["reconnected"] is True and watcher.connects == 2
    # the new connection's events flow
    second.callbacks[libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE](second, FakeDomain("web1"), 2, 0, None)
    assert watcher.step(stop, wait=0)
    assert fired[-1][0].endswith("/domain/web1/started") and fired[-1][1]["detail"] == "booted"


def test_watcher_subscribes_only_to_the_filtered_families_and_stops_while_retrying():
    import libvirt

    conn, fired = FakeConn(), []
    watcher = _watcher([conn], fired, filters=["lifecycle"])
    assert watcher.open() is True
    assert set(conn.callbacks) == {libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE}

    stop = threading.Event()
    stop.set()
    never = _watcher([OSError("down")] * 5, [])
    assert never.open(stop) is False  # a stopping engine does not wait for libvirtd
    assert never.step(stop, wait=0) is False


def test_a_failing_bus_does_not_end_the_watcher():
    conn = FakeConn()
    calls = []

    def fire(tag, data):
        calls.append(tag)
        if "/domain/" in tag:
            raise RuntimeError("master unreachable")

    watcher = events.Watcher("qemu:///system", fire, connect=lambda uri: conn)
    watcher.open()
    watcher.queue.put(("salt/engines/libvirt_events/qemu/system/domain/x/started", {}))
    assert watcher.step(wait=0) is True
    assert calls[-1].endswith("/domain/x/started")


def test_definition_events_carry_the_vms_definition_read_in_the_firing_thread():
    import libvirt

    conn, fired, asked = FakeConn(), [], []

    def describe(on, name):
        asked.append((on, name, threading.current_thread().name))
        if name == "broken":
            raise RuntimeError("libvirt hiccup")
        return {"xml": "<domain/>", "state": "running", "autostart": False} if name == "web1" else None

    watcher = _watcher([conn], fired, describe=describe, clock=lambda: 42.5)
    watcher.open()
    fired.clear()
    lifecycle = conn.callbacks[libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE]
    lifecycle(conn, FakeDomain("web1"), 2, 0, None)  # started
    lifecycle(conn, FakeDomain("gone"), 1, 0, None)  # undefined: no definition any more
    lifecycle(conn, FakeDomain("web1"), 3, 0, None)  # suspended: not one the master keeps
    lifecycle(conn, FakeDomain("broken"), 0, 0, None)  # defined, but reading it fails
    assert asked == []  # libvirt's callbacks only queue
    while watcher.step(wait=0) and not watcher.queue.empty():
        pass
    assert [d.get("definition") for _t, d in fired] == [
        {"xml": "<domain/>", "state": "running", "autostart": False, "seen": 42.5, "event": "started",
         "detail": "booted"},
        {"seen": 42.5, "event": "undefined", "detail": "removed"},
        None,
        None,  # the event still goes out, without a definition: the runner then asks
    ]
    assert [t.rsplit("/", 1)[-1] for t, _d in fired] == ["started", "undefined", "suspended", "defined"]
    assert {thread for _c, _n, thread in asked} == {threading.current_thread().name}
    assert all(on is conn for on, _n, _t in asked)


def test_definitions_go_out_signed_or_not_at_all(tmp_path):
    """With the hypervisor's key the definition carries its signature (the master keeps nothing
    without one); when signing fails the event still goes out, without the definition."""
    import libvirt

    from saltvirt.pki import attest
    from tests.unit.attesting import Keys

    keys = Keys(tmp_path, "hypervisor1")
    conn, fired = FakeConn(), []
    broken = {"sign": False}

    def sign(name, record):
        if broken["sign"]:
            raise attest.VirtError("cannot sign for the master with /etc/salt/pki/minion/minion.pem: gone")
        return keys.definition("hypervisor1", name, record)

    watcher = _watcher([conn], fired, describe=lambda _c, _n: {"xml": "<domain/>", "state": "running"},
                       clock=lambda: 7.0, sign=sign)
    watcher.open()
    fired.clear()
    lifecycle = conn.callbacks[libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE]
    lifecycle(conn, FakeDomain("web1"), 2, 0, None)
    watcher.step(wait=0)
    definition = fired[-1][1]["definition"]
    body = attest.Verifier(keys.pki_dir).check_record(attest.DEFINITION, "hypervisor1", "web1", definition)
    assert body == {"xml": "<domain/>", "state": "running", "seen": 7.0, "event": "started", "detail": "booted"}
    broken["sign"] = True
    lifecycle(conn, FakeDomain("web1"), 2, 0, None)
    watcher.step(wait=0)
    assert len(fired) == 2 and "definition" not in fired[-1][1]
