"""Progress of long work on the lab: ``salt-run virt.init`` of a real image prints the fetch and
the copy of the image with percent and rate, and the same reports are on the master's bus."""

import re

from .test_events import EventTail


def test_init_reports_fetch_and_copy_progress_to_100(lab, vm):
    tail = EventTail("*")  # its readiness marker is under salt/engines/: listen to all
    try:
        proc, result = lab.run_json("virt.init", vm, "1", "128", "salt://centos.img", "start=False", "seed=False")
        assert result["name"] == vm, proc.stdout
        # The runner's own lines, as a migration's (--out=json prints their events whole).
        lines = re.findall(rf"(Fetching|Copying) (\S+) for {vm}: (\d+)% of \d+ MiB", proc.stdout)
        steps = {step for step, _what, _pct in lines}
        assert steps == {"Fetching", "Copying"}, proc.stdout
        assert any(step == "Copying" and pct == "100" for step, _w, pct in lines), proc.stdout
        # The hypervisor's events on the bus: the copy reached 100 %, with its size and rate.
        event = tail.wait(r"saltvirt/init/\d+/progress", minion=result["host"], step="copy", percent=100.0)
        data = event["data"]
        assert data["name"] == vm and data["host"] == result["host"]
        assert data["done_bytes"] == data["total_bytes"] > 0 and data["rate_mib_s"] is not None
        assert "priv" not in str(data) and "PRIVATE KEY" not in str(data)
    finally:
        tail.close()
