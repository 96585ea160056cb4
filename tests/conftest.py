"""Shared test setup.

* makes the bundle's domain package (``_utils/saltvirt``) importable without installing it;
* turns any skipped test into a failed session: a test that needs libvirt or the lab must run,
  never silently skip (set ``SALT_VIRT_ALLOW_SKIPS=1`` for a local partial run).
"""

import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "_utils"))


# Tests that change the lab's shape (a third hypervisor, a crashed one) run after all the others,
# which see the lab as `make lab-up` makes it.
LAB_CHANGING = ("test_evacuate.py", "test_events.py", "test_operations.py")


def pytest_collection_modifyitems(session, config, items):
    items.sort(key=lambda item: os.path.basename(str(item.fspath)) in LAB_CHANGING)


def _library_modules():
    return {n: m for n, m in sys.modules.items() if n == "saltvirt" or n.startswith("saltvirt.")}


_COLLECTED = {}


def pytest_collection_finish(session):
    _COLLECTED.update(_library_modules())  # the copy every test module imported


@pytest.fixture(autouse=True, scope="module")
def _one_copy_of_the_library():
    """After each test module, the library the test modules imported is the one in use again.
    Salt's loader run in-process (functional tests) loads the bundle's grains, whose preload
    imports the library anew: later tests would mix the classes of two copies (an exception of
    one copy is not caught as the other's)."""
    yield
    if _COLLECTED and _library_modules() != _COLLECTED:
        for name in _library_modules():
            del sys.modules[name]
        sys.modules.update(_COLLECTED)


def pytest_sessionfinish(session, exitstatus):
    # Salt's deferred start-up log handler would flush into pytest's closed stderr at exit.
    import salt._logging.impl

    salt._logging.impl.shutdown_temp_handler()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if skipped and not os.environ.get("SALT_VIRT_ALLOW_SKIPS") and exitstatus == 0:
        reporter.write_line(f"salt-virt: {skipped} test(s) skipped: failing the run", red=True)
        session.exitstatus = 1
