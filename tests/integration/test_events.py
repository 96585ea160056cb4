"""The libvirt_events engine on the lab: libvirt's domain events reach the master's bus.

The lab enables the engine on every hypervisor minion (lab/labctl.py). A listener on the
master's bus (``salt-run state.event``, as an operator would watch it) sees what one guest
does: it starts, live-migrates, powers itself off (ACPI button: the guest's own poweroff), is
started again and destroyed; and the engine reconnects after libvirtd restarts.
"""

import json
import os
import queue
import re
import subprocess
import threading
import time

import pytest

from .conftest import BIN

PREFIX = "salt/engines/libvirt_events/qemu/system"
BASE = "/var/lib/libvirt/images/centos.qcow2"


class EventTail:
    """``salt-run state.event`` on the master's bus, parsed line by line in a thread."""

    def __init__(self, match="salt/engines/libvirt_events/*", marker="salt/engines/libvirt_events/test-marker/{}",
                 env=None):
        """``env``: the lab tools' environment (``LAB_MASTER=syndic``: the syndic's master's bus)."""
        self.proc = subprocess.Popen(
            [os.path.join(BIN, "salt-run"), "state.event", match, "pretty=False"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
        )
        self.events = queue.Queue()
        self.seen = []
        threading.Thread(target=self._read, daemon=True).start()
        # Listening only once our own marker (a tag ``match`` takes) comes back through the bus.
        marker = marker.format(time.monotonic_ns())
        deadline = time.monotonic() + 60
        while True:
            subprocess.run([os.path.join(BIN, "salt-run"), "event.send", marker], capture_output=True, check=True,
                           env=env)
            try:
                self.wait(re.escape(marker), timeout=3)
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise

    def _read(self):
        for line in self.proc.stdout:
            tag, _, payload = line.rstrip("\n").partition("\t")
            try:
                self.events.put((tag, json.loads(payload)))
            except json.JSONDecodeError:
                continue

    def wait(self, tag_pattern, minion=None, timeout=60, **data):
        """The first event not yet returned whose tag matches ``tag_pattern`` (from ``minion``,
        with ``data`` items in its payload), in whatever order the hypervisors sent them."""

        def matches(tag, event):
            payload = event.get("data") or {}
            return (re.fullmatch(tag_pattern, tag) and (minion is None or event.get("id") == minion)
                    and all(payload.get(k) == v for k, v in data.items()))

        return self.first(matches, timeout, f"no event {tag_pattern} from {minion} with {data}")

    def first(self, matches, timeout=60, missing="no such event"):
        """The first event not yet returned for which ``matches(tag, event)``."""
        for index, (tag, event) in enumerate(self.seen):
            if matches(tag, event):
                del self.seen[index]
                return event
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                tag, event = self.events.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                break
            if matches(tag, event):
                return event
            self.seen.append((tag, event))
        seen = "\n".join(f"{t} {e.get('id')} {e.get('data')}" for t, e in self.seen[-15:])
        raise AssertionError(f"{missing} within {timeout}s; last:\n{seen}")

    def close(self):
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def bus(lab):
    tail = EventTail()
    yield tail
    tail.close()


def _tag(vm, event):
    return re.escape(f"{PREFIX}/domain/{vm}/{event}")


def test_lifecycle_migration_and_poweroff_reach_the_bus(lab, vm, bus):
    lab.run_json("virt.init", vm, "1", "128", BASE, "enable_qcow=True", "host=hypervisor1", "seed=False")
    started = bus.wait(_tag(vm, "started"), "hypervisor1", event="started", detail="booted")
    assert started["data"]["domain"]["name"] == vm and started["data"]["uri"] == "qemu:///system"
    lab.wait_serial("hypervisor1", vm, r"SALTVIRT-HEARTBEAT 1\b")

    # A live migration: the source says the VM left, the target that it arrived.
    lab.run_json("virt.migrate", vm, "hypervisor2")
    bus.wait(_tag(vm, "stopped"), "hypervisor1", detail="migrated")
    job = bus.wait(_tag(vm, "job_completed"), "hypervisor1")
    assert job["data"]["stats"]["operation"] == "migration_out", job
    bus.wait(_tag(vm, "resumed"), "hypervisor2", detail="migrated")

    # The guest powers itself off (ACPI power button -> its own poweroff).
    lab.wait_serial("hypervisor2", vm, r"SALTVIRT-HEARTBEAT \d+")
    lab.run("virsh", "hypervisor2", "shutdown", vm)
    bus.wait(_tag(vm, "shutdown"), "hypervisor2", detail="guest", timeout=90)
    bus.wait(_tag(vm, "stopped"), "hypervisor2", detail="shutdown")
    assert "SALTVIRT-POWEROFF acpi" in lab.serial_log("hypervisor2", vm)

    # Started again, then destroyed by the operator.
    lab.run_json("virt.start", vm)
    bus.wait(_tag(vm, "started"), "hypervisor2", detail="booted")
    lab.run("virsh", "hypervisor2", "destroy", vm)
    bus.wait(_tag(vm, "stopped"), "hypervisor2", detail="destroyed")

    lab.run_json("virt.purge", vm)
    bus.wait(_tag(vm, "undefined"), "hypervisor2", detail="removed")


def test_engine_reconnects_when_libvirtd_restarts(three_hypervisors, vm, bus):
    lab = three_hypervisors  # libvirtd restarts on a host of its own, not one the others use
    pid = lab.hv("hypervisor3", "cat", "/run/libvirt/libvirtd.pid").stdout.strip()
    lab.hv("hypervisor3", "kill", pid)
    lost = bus.wait(re.escape(f"{PREFIX}/connection/lost"), "hypervisor3")
    assert lost["data"]["uri"] == "qemu:///system"
    while lab.hv("hypervisor3", "test", "-e", f"/proc/{pid}", check=False).returncode == 0:
        time.sleep(0.1)
    lab.start_libvirtd("hypervisor3")
    opened = bus.wait(re.escape(f"{PREFIX}/connection/open"), "hypervisor3", timeout=60)
    assert opened["data"]["reconnected"] is True
    # Events flow again on the new connection.
    lab.run("salt", "hypervisor3", "virt.init", vm, "1", "128", BASE, "enable_qcow=True", "seed=False",
            "start=False")
    bus.wait(_tag(vm, "defined"), "hypervisor3", detail="added")
