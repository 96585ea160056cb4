"""Progress of image fetches and copies: throttled reports, rates, time limits that follow the size."""

import os

import pytest

from saltvirt import progress
from saltvirt.progress import MIB, Meter
from saltvirt.provision import sources


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def meter(total=100 * MIB, **kwargs):
    clock, seen = Clock(), []
    return Meter(seen.append, "copy", what="centos.qcow2", total=total, clock=clock, **kwargs), clock, seen


def test_reports_are_throttled_to_one_a_second_and_end_at_100():
    m, clock, seen = meter()
    assert m.start() is True
    for step in range(1, 4):  # three updates within 0.75 s: none reported
        clock.now += 0.25
        assert m.update(step * MIB) is False
    clock.now += 0.25
    assert m.update(20 * MIB) is True
    clock.now += 1
    m.finish()
    assert [r["percent"] for r in seen] == [0.0, 20.0, 100.0]
    last = seen[-1]
    assert last["done_bytes"] == last["total_bytes"] == 100 * MIB
    assert last["rate_mib_s"] == 50.0 and last["elapsed_s"] == 2.0  # 100 MiB in 2 s
    assert last["step"] == "copy" and last["what"] == "centos.qcow2"
    m.finish()
    clock.now += 5
    assert m.update(5) is False and len(seen) == 3  # nothing after the end


def test_percent_input_progress_never_goes_back_and_100_is_not_repeated():
    m, clock, seen = meter(interval=0)
    m.percent(40.0)
    m.percent(30.0)  # out-of-order output cannot move it back
    clock.now += 1
    m.percent(100.0)
    m.finish()
    assert [r["percent"] for r in seen] == [40.0, 40.0, 100.0]
    assert seen[-1]["rate_mib_s"] == 100.0


def test_unknown_total_reports_bytes_and_the_final_size_is_100_percent():
    m, clock, seen = meter(total=None, interval=0)
    clock.now += 2
    m.update(30 * MIB)
    assert seen[-1]["percent"] is None and seen[-1]["done_mib"] == 30.0 and seen[-1]["rate_mib_s"] == 15.0
    m.finish(64 * MIB)
    assert seen[-1]["percent"] == 100.0 and seen[-1]["total_mib"] == 64.0


def test_a_failing_sink_never_breaks_the_work():
    def broken(_data):
        raise RuntimeError("master away")

    m = Meter(broken, "fetch", total=10, interval=0)
    assert m.update(5) is True
    m.finish()  # no exception
    Meter(None, "fetch", total=10).finish()  # no sink at all


@pytest.mark.parametrize(("nbytes", "base", "rate", "expected"), [
    (0, 600, 10, 600),
    (10 * 1024 * MIB, 600, 10, 600 + 1024),  # 10 GiB at 10 MiB/s: 1024 s more
    (MIB + 1, 600, 10, 600),  # partial MiB counts as one: 0.1 s, truncated
    (50 * MIB, 60, 5, 70),
    (50 * MIB, 60, 0, 60),  # no minimum rate: the base alone
    (None, 300, 10, 300),
    (50 * MIB, "junk", "junk", 605),  # nonsense: the defaults, never zero
])
def test_copy_timeout_follows_the_size(nbytes, base, rate, expected):
    assert progress.copy_timeout(nbytes, base, rate) == expected


def test_limits_read_the_configuration_with_defaults():
    conf = {"image_copy:min_rate_mib": 50}
    assert progress.limits(lambda key, default=None: conf.get(key, default)) == (600, 50)


def test_time_left_while_bytes_move():
    data = {"total_bytes": 2048 * MIB, "done_bytes": 1024 * MIB}
    assert progress.time_left(data, 900, 10) == 900 + 102
    assert progress.time_left({"total_bytes": 10, "done_bytes": 10}, 900, 10) == 900
    assert progress.time_left({"percent": 50}, 900, 10) is None
    assert progress.time_left("not a dict", 900, 10) is None


def test_qemu_img_percent_output():
    assert progress.qemu_percent("    (12.34/100%)") == 12.34
    assert progress.qemu_percent("    (1.00/100%)    (2.50/100%)") == 2.5
    assert progress.qemu_percent("something else") is None


def test_line_for_the_runner():
    data = {"step": "copy", "what": "centos.qcow2", "percent": 42.4, "total_mib": 512.0, "rate_mib_s": 85.2,
            "elapsed_s": 3.2}
    assert progress.line("web1", data) == "Copying centos.qcow2 for web1: 42% of 512 MiB 85 MiB/s (3s)"
    fetch = {"step": "fetch", "what": "salt://c.img", "done_mib": 30.0, "elapsed_s": 0}
    assert progress.line("web1", fetch) == "Fetching salt://c.img for web1: 30 MiB (0s)"


def test_urls_shown_without_credentials_or_query():
    assert progress.shown("https://user:secret@images.example/c.img?token=abc") == "https://images.example/c.img"
    assert progress.shown("salt://images/c.img") == "salt://images/c.img"
    assert progress.shown("/var/lib/images/c.img") == "/var/lib/images/c.img"


def test_event_sink_names_the_host():
    fired = []

    class Calls:
        def fire_master(self, data, tag):
            fired.append((tag, data))

    class Settings:
        salt, minion_id, opts = Calls(), "hv1", {"file_client": "remote"}

    progress.event_sink(Settings(), progress.init_tag("web1"), name="web1")({"percent": 1.0})
    assert fired == [("saltvirt/init/web1/progress", {"percent": 1.0, "host": "hv1", "name": "web1"})]

    class Masterless(Settings):
        opts = {"file_client": "local"}

    assert progress.event_sink(Masterless(), "t") is None  # no master's bus: no events, no warnings


def test_cache_destination_follows_salts_file_client():
    assert sources.cache_destination("/c", "salt://img/c.qcow2") == "/c/files/base/img/c.qcow2"
    assert sources.cache_destination("/c", "salt://img/c.qcow2?saltenv=dev") == "/c/files/dev/img/c.qcow2"
    assert sources.cache_destination("/c", "https://u:p@h:8080/x/c.img", "base") == "/c/extrn_files/base/h8080/x/c.img"
    assert sources.cache_destination("/c", "/local/c.img") is None


def test_written_since_counts_partial_files(tmp_path):
    dest = tmp_path / "c.img"
    probe = sources.written_since(str(dest), 0)
    assert probe() is None
    (tmp_path / ".___atomic_writeabc").write_bytes(b"x" * 10)
    assert probe() == 10
    (tmp_path / "c.img.part").write_bytes(b"x" * 20)
    assert probe() == 20
    old = tmp_path / "other"
    old.write_bytes(b"x" * 99)
    assert probe() == 20
    later = sources.written_since(str(dest), os.stat(old).st_mtime + 60)
    assert later() is None  # files older than the fetch are not its progress


def test_the_runners_wait_grows_with_the_progress_of_a_big_copy(monkeypatch):
    from saltvirt.fleet import hosts

    clock = Clock()
    monkeypatch.setattr(hosts.time, "monotonic", clock)
    tag = "saltvirt/init/1/progress"
    events = [{"tag": tag, "data": {"data": {"total_bytes": 4096 * MIB, "done_bytes": 0}}}, None, None,
              {"tag": "salt/job/1/ret/hv1", "data": {"return": {"name": "web1"}}}]

    class Bus:
        def get_event(self, wait, full, tag=None):
            clock.now += 50  # each wait: 50 s pass; the init_timeout of 60 s alone would end it
            return events.pop(0)

    class Client:  # asked while the bus is quiet: the job still runs
        def cmd(self, host, fun, arg, timeout):
            return {host: {"jid": arg[0]}}

    fleet = hosts.Fleet({}, None, None)
    fleet._client = Client()  # pylint: disable=protected-access
    seen = []

    def on_progress(data):
        seen.append(data)
        return progress.time_left(data, 60, 10)

    done = fleet._wait(Bus(), "hv1", "virt.init", "1", tag, on_progress, 60)  # pylint: disable=protected-access
    assert done == {"return": {"name": "web1"}} and len(seen) == 1

    events[:] = [None, None]
    with pytest.raises(hosts.VirtError, match=r"did not finish within 60s$"):
        fleet._wait(Bus(), "hv1", "virt.init", "1", tag, lambda data: None, 60)  # pylint: disable=protected-access

    # Extended by a copy that then stalls: the error says how long it waited.
    events[:] = [{"tag": tag, "data": {"data": {"total_bytes": 1024 * MIB, "done_bytes": 0}}}, None, None, None,
                 None, None]
    with pytest.raises(hosts.VirtError, match=r"did not finish within 60s \(its progress extended that to \d+s\)"):
        fleet._wait(Bus(), "hv1", "virt.init", "1", tag, on_progress, 60)  # pylint: disable=protected-access
