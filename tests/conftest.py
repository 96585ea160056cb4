"""Shared test setup.

* makes the bundle's domain package (``_utils/saltvirt``) importable without installing it;
* turns any skipped test into a failed session: a test that needs libvirt or the lab must run,
  never silently skip (set ``SALT_VIRT_ALLOW_SKIPS=1`` for a local partial run).
"""

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "_utils"))


# Tests that change the lab's shape (a third hypervisor, a crashed one) run after all the others,
# which see the lab as `make lab-up` makes it.
LAB_CHANGING = ("test_evacuate.py", "test_events.py", "test_operations.py")


def pytest_collection_modifyitems(session, config, items):
    items.sort(key=lambda item: os.path.basename(str(item.fspath)) in LAB_CHANGING)


def pytest_sessionfinish(session, exitstatus):
    # Salt's deferred start-up log handler would flush into pytest's closed stderr at exit.
    import salt._logging.impl

    salt._logging.impl.shutdown_temp_handler()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if skipped and not os.environ.get("SALT_VIRT_ALLOW_SKIPS") and exitstatus == 0:
        reporter.write_line(f"salt-virt: {skipped} test(s) skipped: failing the run", red=True)
        session.exitstatus = 1
