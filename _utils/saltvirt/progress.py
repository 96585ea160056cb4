"""Progress of long work on a hypervisor (image fetches and copies) and time limits that follow
the size of that work.

A :class:`Meter` turns "so many bytes of so many are done" into reports for a sink (the Salt
glue fires them on the event bus, as migrations do): step, bytes, percent and rate, at most one
per ``interval`` seconds, and always a last one at 100 %. A failing sink is logged and ignored:
progress is for the operator, never a reason for the work to fail.

:func:`copy_timeout` and :func:`time_left` replace fixed limits: a copy may take
``base`` seconds plus its size at a minimum rate the operator configures (``virt:image_copy``).
Everything here is pure or takes its clock and sink as arguments, so it is tested without Salt.
"""

import contextlib
import logging
import re
import threading
import time
import urllib.parse

log = logging.getLogger(__name__)

MIB = 1024 * 1024
#: ``virt:image_copy`` defaults: seconds any copy may take, plus its size at this rate.
DEFAULT_BASE_S = 600
DEFAULT_MIN_RATE_MIB = 10
#: Fetch and copy steps, as named in the events and the runner's lines.
FETCH, COPY = "fetch", "copy"


def init_tag(name):
    """The default event tag of ``virt.init``'s progress (``salt-run virt.init`` gives its own)."""
    return f"saltvirt/init/{name}/progress"


def event_sink(settings, tag, **context):
    """A sink that fires each report, with ``context`` and this host's id, to the master's bus
    under ``tag`` (as a migration's progress is); None for a masterless minion, which has no
    master's bus to report to."""
    if (settings.opts or {}).get("file_client") == "local":
        return None

    def sink(data):
        settings.salt.fire_master(dict(data, host=settings.minion_id, **context), tag)

    return sink


def shown(url):
    """``url`` as it may appear in events and logs: without user, password or query (a signed
    URL's token is a secret too)."""
    parsed = urllib.parse.urlsplit(str(url))
    if not parsed.scheme or parsed.scheme == "salt":
        return str(url)
    host = parsed.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit((parsed.scheme, host, parsed.path, "", ""))


def copy_timeout(nbytes, base=DEFAULT_BASE_S, min_rate_mib=DEFAULT_MIN_RATE_MIB):
    """Seconds a copy of ``nbytes`` may take: ``base`` plus the size at ``min_rate_mib`` MiB/s.

    A rate of 0 or less (or an unknown size) leaves only ``base``; nonsense becomes the defaults
    rather than a time limit of zero.
    """
    try:
        base = max(0.0, float(base))
    except (TypeError, ValueError):
        base = float(DEFAULT_BASE_S)
    try:
        rate = float(min_rate_mib)
    except (TypeError, ValueError):
        rate = float(DEFAULT_MIN_RATE_MIB)
    try:
        size = max(0, int(nbytes or 0))
    except (TypeError, ValueError):
        size = 0
    if rate <= 0:
        return int(base)
    return int(base + -(-size // MIB) / rate)


def limits(get):
    """``(base, min_rate_mib)`` from a config getter (``get("image_copy:base_timeout", d)``)."""
    return (get("image_copy:base_timeout", DEFAULT_BASE_S) or DEFAULT_BASE_S,
            get("image_copy:min_rate_mib", DEFAULT_MIN_RATE_MIB) or DEFAULT_MIN_RATE_MIB)


def time_left(data, base, min_rate_mib=DEFAULT_MIN_RATE_MIB):
    """Seconds a watcher should still wait for a job after progress report ``data``, or None.

    While bytes still have to move, that is ``base`` seconds (the work after the copy: seeding,
    starting) plus what is left at the minimum rate; a stalled copy stops extending the wait.
    """
    if not isinstance(data, dict) or not data.get("total_bytes"):
        return None
    try:
        left = max(0, int(data["total_bytes"]) - int(data.get("done_bytes") or 0))
    except (TypeError, ValueError):
        return None
    return copy_timeout(left, base, min_rate_mib)


class Meter:
    """Throttled progress of one step (``fetch`` or ``copy`` of ``what``) into ``sink(dict)``.

    ``total`` bytes may be unknown (None): the reports then carry bytes and rate, and percent
    only at the end. ``clock`` is ``time.monotonic`` unless a test gives its own.
    """

    def __init__(self, sink, step, what=None, total=None, interval=1.0, clock=time.monotonic, **context):
        self.sink, self.step, self.what = sink, step, what
        self.total = int(total) if total else None
        self.interval, self.clock = interval, clock
        self.context = context
        self.started = clock()
        self.last_emit = None
        self.last_report = None
        self.done = 0
        self.finished = False
        self._lock = threading.Lock()

    def data(self, done=None):
        """The report for ``done`` bytes (default: the last seen)."""
        done = self.done if done is None else done
        elapsed = max(0.0, self.clock() - self.started)
        percent = None
        if self.total:
            percent = round(max(0.0, min(100.0, 100.0 * done / self.total)), 1)
        return dict(
            self.context,
            step=self.step,
            what=self.what,
            done_bytes=int(done),
            total_bytes=self.total,
            done_mib=round(done / MIB, 1),
            total_mib=None if self.total is None else round(self.total / MIB, 1),
            percent=percent,
            # The average since the step began: steadier than the last second's.
            rate_mib_s=round(done / MIB / elapsed, 1) if elapsed > 0 else None,
            elapsed_s=round(elapsed, 1),
        )

    def update(self, done, total=None, force=False):
        """``done`` bytes so far; reports when ``interval`` passed since the last report (or
        ``force``). Returns whether it reported."""
        with self._lock:
            if self.finished:
                return False
            if total:
                self.total = int(total)
            self.done = max(self.done, int(done or 0))
            if self.total:
                self.done = min(self.done, self.total)
            now = self.clock()
            if not force and self.last_emit is not None and now - self.last_emit < self.interval:
                return False
            self.last_emit = now
            report = self.last_report = self.data()
        self._emit(report)
        return True

    def start(self):
        """The first report (0 %), so the operator sees the step begin."""
        return self.update(0, force=True)

    def percent(self, value):
        """Progress given as a percentage (qemu-img's), turned into bytes of ``total``."""
        if self.total and value is not None:
            self.update(self.total * max(0.0, min(100.0, float(value))) / 100.0)

    def finish(self, done=None):
        """The step completed: one last report at 100 % (the final size, when now known)."""
        with self._lock:
            if self.finished:
                return
            if done is not None:
                self.done = int(done)
                if not self.total or self.total < self.done:
                    self.total = self.done
            if self.total:
                self.done = self.total
            else:  # an empty file is done too
                self.total = self.done
            self.finished = True
            last = self.last_report or {}
            if last.get("percent") == 100.0 and last.get("done_bytes") == self.done:
                return  # the 100 % was reported already
            report = self.data()
            report["percent"] = 100.0
        self._emit(report)

    def _emit(self, report):
        if self.sink is None:
            return
        try:
            self.sink(report)
        except Exception as exc:  # pylint: disable=broad-exception-caught
            # Progress is for the operator: a full event queue or a master away must not fail the work.
            log.debug("progress report of %s %s not sent: %s", self.step, self.what, exc)


#: ``qemu-img convert -p`` prints ``    (12.34/100%)`` and a carriage return per update.
_QEMU_PERCENT = re.compile(r"\(\s*(\d+(?:\.\d+)?)/100%\)")


def qemu_percent(text):
    """The last percentage in a chunk of ``qemu-img -p`` output, or None."""
    found = _QEMU_PERCENT.findall(text or "")
    return float(found[-1]) if found else None


@contextlib.contextmanager
def watching(size, meter, period=0.5):
    """While the body runs, poll ``size()`` (bytes written so far, or None) every ``period``
    seconds into ``meter``: progress of work done by code that reports none (Salt's fetch)."""
    stop = threading.Event()

    def poll():
        while not stop.wait(period):
            with contextlib.suppress(Exception):
                value = size()
                if value is not None:
                    meter.update(value)

    thread = threading.Thread(target=poll, name=f"progress-{meter.step}", daemon=True)
    thread.start()
    try:
        yield meter
    finally:
        stop.set()
        thread.join(timeout=5)


def line(name, data):
    """One human line for the runner's output from a :class:`Meter` report."""
    verb = {FETCH: "Fetching", COPY: "Copying"}.get(data.get("step"), str(data.get("step") or "Working"))
    what = f" {data['what']}" if data.get("what") else ""
    parts = []
    if data.get("percent") is not None:
        parts.append(f"{data['percent']:.0f}%")
    if data.get("total_mib") is not None:
        parts.append(f"of {data['total_mib']:.0f} MiB")
    elif data.get("done_mib") is not None:
        parts.append(f"{data['done_mib']:.0f} MiB")
    if data.get("rate_mib_s"):
        parts.append(f"{data['rate_mib_s']:.0f} MiB/s")
    return f"{verb}{what} for {name}: {' '.join(parts) or 'starting'} ({data.get('elapsed_s') or 0:.0f}s)"
