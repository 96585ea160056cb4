"""A failed migration's cleanup on the target re-checks the domain right before deleting it:
the copy that runs (or holds a post-copy guest) is never removed. libvirt's test driver."""

import libvirt
import pytest

from saltvirt import migration


@pytest.fixture
def conn():
    libvirt.registerErrorHandler(lambda *args: None, None)
    conn = libvirt.open("test:///default")  # in-process, with a running domain named "test"
    yield conn
    conn.close()


def test_a_running_copy_is_kept(conn):
    dom = conn.lookupByName("test")
    assert migration.leftover_removable(dom) == (False, "running: it runs here")
    assert migration.remove_leftover(conn, "test", dom.UUIDString()) == "kept: running: it runs here"
    assert conn.lookupByName("test").isActive()


def test_a_paused_copy_kept_unless_it_is_an_incoming_migration(conn):
    dom = conn.lookupByName("test")
    dom.suspend()  # paused by a user, not by a migration
    removable, why = migration.leftover_removable(dom)
    assert removable is False and "paused" in why
    assert migration.remove_leftover(conn, "test", dom.UUIDString()).startswith("kept:")
    assert conn.lookupByName("test")


def test_a_shut_off_or_incoming_copy_is_removable(conn):
    dom = conn.lookupByName("test")
    dom.destroy()
    assert migration.leftover_removable(dom) == (True, "shut off")


def test_another_domain_with_the_uuid_is_not_touched(conn):
    uuid = conn.lookupByName("test").UUIDString()
    with pytest.raises(migration.VirtError, match="has other's UUID"):
        migration.remove_leftover(conn, "other", uuid)
