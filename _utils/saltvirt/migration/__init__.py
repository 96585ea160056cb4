"""Live migration of a domain to another hypervisor, without ever losing the VM.

The pieces run where their files are: the source host describes the domain and its disks
(:func:`source_facts`) and finally migrates it (:func:`migrate`); the target host checks it can
take the VM (:func:`preflight`), pre-creates the disks that are not on shared storage
(:func:`prepare_disks`) and removes them again if the migration fails (:func:`cleanup`). The Salt
runner orchestrates the steps between the two minions.

Shared or not is detected, never guessed: the source drops a probe file next to each disk and
the target looks for it. A disk whose directory shows the probe is the same file on both hosts
(shared storage); any other disk is copied by QEMU during the migration (libvirt's
copy-storage), into a file the target pre-created with the same format and virtual size. A
qcow2 overlay is copied incrementally on top of its base image, which must then already be on
the target at the same path. Read-only disks (seed ISOs, install media) cannot be copied by
QEMU: the target downloads them from the source's libvirt (a storage stream over its TLS
connection) before the migration starts.

libvirt itself guarantees that a failed live migration leaves the domain running on the source;
this module adds the rest: nothing it created on the target survives a failure (a journal per
migration lists it) and files used by a defined domain are never removed.

The package, by concern:

* :mod:`.common` -- constants, :class:`MigrationFailed`, small helpers;
* :mod:`.flags` -- :func:`plan`: options to libvirt flags and typed parameters (pure);
* :mod:`.storage` -- :func:`storage_plan`: per disk, shared, copied or fetched (pure);
* :mod:`.facts` -- the source: :func:`source_facts`, probe files, :func:`fs_type`,
  :func:`host_uuid`, :func:`dest_uri`;
* :mod:`.checks` -- the target: :func:`observe_disks` and :func:`preflight`;
* :mod:`.journal` -- :func:`prepare_disks`, :func:`fetch_file`, :func:`cleanup` and the other
  journaled removals (:func:`remove_leftover`, :func:`remove_stale`, :func:`prune_journals`);
* :mod:`.run` -- :func:`migrate`, :func:`migrate_in`, job progress (:func:`summarize_job`,
  :func:`job_result`) and :func:`domain_status`;
* :mod:`.migrator` -- the master's side: the order of the steps across the two hypervisors.
"""

from saltvirt.errors import VirtError
from saltvirt.migration.checks import observe_disks, preflight
from saltvirt.migration.common import (
    COPY_MODES,
    LOCAL_FS,
    MIB,
    NETWORK_FS,
    PAUSED_MIGRATION,
    PAUSED_POSTCOPY,
    PAUSED_POSTCOPY_FAILED,
    PROBE_PREFIX,
    RUNNING_MIGRATED,
    MigrationFailed,
)
from saltvirt.migration.facts import create_probes, dest_uri, fs_type, host_uuid, remove_probes, source_facts
from saltvirt.migration.flags import PARAM_BANDWIDTH, PARAM_DISKS, PARAM_PARALLEL, PARAM_URI, Plan, plan
from saltvirt.migration.journal import (
    cleanup,
    fetch_file,
    files_in_use,
    journal_path,
    leftover_removable,
    prepare_disks,
    prune_journals,
    remove_leftover,
    remove_stale,
)
from saltvirt.migration.run import (
    PULL_OPTIONS,
    domain_status,
    job_result,
    migrate,
    migrate_in,
    reach_source,
    summarize_job,
)
from saltvirt.migration.storage import storage_plan

__all__ = [
    "COPY_MODES", "LOCAL_FS", "MIB", "NETWORK_FS", "PARAM_BANDWIDTH", "PARAM_DISKS", "PARAM_PARALLEL",
    "PARAM_URI", "PAUSED_MIGRATION", "PAUSED_POSTCOPY", "PAUSED_POSTCOPY_FAILED", "PROBE_PREFIX",
    "PULL_OPTIONS", "RUNNING_MIGRATED", "MigrationFailed", "Plan", "VirtError", "cleanup", "create_probes",
    "dest_uri", "domain_status", "fetch_file", "files_in_use", "fs_type", "host_uuid", "job_result",
    "journal_path", "leftover_removable", "migrate", "migrate_in", "observe_disks", "plan", "preflight",
    "prepare_disks", "prune_journals", "reach_source", "remove_leftover", "remove_probes", "remove_stale",
    "source_facts", "storage_plan", "summarize_job",
]
