"""Seeding new guests with a pre-accepted Salt minion.

Two ways, both writing the same minion config and key pair:

* **cidata** (fast, default) -- the fast path below;
* **mount** -- :func:`seed_image` mounts the guest's disk image with libguestfs' ``guestmount``
  (:func:`guest_mount` / :func:`guest_umount`), writes ``/etc/salt/minion`` and the keys into
  the image, and runs an install command only if no salt-minion is found in it. This is what
  ``virt.init seed_cmd=seed.apply`` uses; ``guest_mount``/``guest_umount`` also back the
  ``guestfs`` execution module that Salt core's ``seed.apply`` needs.

The fast path is cloud-init's NoCloud datasource: :func:`make_cidata` writes a small ISO 9660
image labelled ``cidata`` (pure Python, no mounting, no guest tools) that is attached to the
guest as a CD-ROM. Its ``user-data`` uses cloud-init's ``salt_minion`` module, which writes
``/etc/salt/minion`` from ``conf`` and the key pair into the minion's pki directory.

The keys come from :func:`gen_minion_keys` in exactly the format ``salt.crypt.gen_keys``
produces, so the public key stored on the master under ``pki/minions/<id>`` matches what the
minion presents byte for byte (modulo the trailing newline Salt strips on both sides).

The package, by concern:

* :mod:`.config` -- the minion configuration and key pair (:func:`minion_config`,
  :func:`gen_minion_keys`);
* :mod:`.cidata` -- the NoCloud seed ISO (:func:`make_cidata`);
* :mod:`.diskprobe` -- partition tables and superblocks: which filesystem to seed
  (:func:`filesystems`, :func:`choose_filesystem`);
* :mod:`.guestmount` -- the guestmount process manager (:func:`guest_mount`,
  :func:`guest_umount`, :func:`mounted`, :func:`active_mounts`, :func:`release`);
* :mod:`.guest` -- writing into the mounted guest (:func:`write_minion_files`,
  :func:`seed_image`).
"""

from saltvirt.seeding.cidata import CIDATA_LABEL, make_cidata
from saltvirt.seeding.config import gen_minion_keys, minion_config, minion_config_text
from saltvirt.seeding.diskprobe import LINUX_FS, SECTOR, WRITABLE_FS, SeedError, choose_filesystem, filesystems
from saltvirt.seeding.guest import MINION_PATHS, find_salt_minion, seed_image, write_minion_files
from saltvirt.seeding.guestmount import (
    GUESTFS_PROCESSES,
    STATE_DIR,
    active_mounts,
    guest_mount,
    guest_umount,
    libguestfs_env,
    mounted,
    release,
)

__all__ = [
    "make_cidata", "minion_config", "minion_config_text", "gen_minion_keys", "CIDATA_LABEL",
    "SeedError", "filesystems", "choose_filesystem", "libguestfs_env", "guest_mount",
    "guest_umount", "mounted", "active_mounts", "release", "find_salt_minion", "seed_image",
    "write_minion_files", "STATE_DIR", "GUESTFS_PROCESSES", "MINION_PATHS", "LINUX_FS", "WRITABLE_FS",
    "SECTOR",
]
