"""The migration options a caller may pass, named once.

``salt-run virt.migrate`` passes them to the target's ``virt.migrate_in``, which passes them to
:func:`saltvirt.migration.run.migrate` (started on the source's libvirt); the execution module's
``virt.migrate`` (a push from the source) takes the same. :class:`MigrationOptions` checks them
once, at the edge, with an error that names what is unknown.
"""

import dataclasses
from dataclasses import dataclass

from saltvirt.errors import InvalidArgument

#: Seconds without progress after the post-copy switch-over before the job is paused (the
#: default of the ``postcopy_stall`` option, wherever it is taken).
POSTCOPY_STALL = 60


@dataclass
class MigrationOptions:
    """How a migration runs (see ``salt-run virt.migrate``'s docstring for each)."""

    live: bool = True
    persistent: bool = True
    undefinesource: bool = True
    max_bandwidth: int | None = None  # MiB/s
    max_downtime: int | None = None  # ms
    postcopy: bool = False
    postcopy_bandwidth: int | None = None  # MiB/s after the switch-over
    postcopy_stall: int = POSTCOPY_STALL  # s without progress after the switch-over: pause the post-copy
    auto_converge: bool = False
    compressed: bool = False
    parallel_connections: int | None = None
    tunnel: bool | None = None  # None: the configured default
    tls: bool = False
    migration_uri: str | None = None
    peer2peer: bool = True
    timeout: float | None = None  # s: abort the job after it

    @classmethod
    def names(cls):
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_kwargs(cls, function, **kwargs):
        """Options from Salt keyword arguments (``__pub_*`` ignored); unknown names refused."""
        given = {k: v for k, v in kwargs.items() if not k.startswith("__")}
        unknown = sorted(set(given) - set(cls.names()))
        if unknown:
            raise InvalidArgument(f"{function}: unknown migration option(s) {', '.join(unknown)}; known: "
                                  f"{', '.join(cls.names())}")
        return cls(**given)

    def given(self):
        """The options that differ from the defaults (what a caller passes on)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) != f.default}


#: Options the target's ``virt.migrate_in`` passes through to the migration job.
PULL_OPTIONS = MigrationOptions.names()
#: Options the migration job applies itself (not libvirt flags or typed parameters of its plan).
JOB_OPTIONS = ("max_downtime", "timeout", "postcopy_stall")
#: Options the runner passes to ``virt.migrate_in`` as they are (``tunnel`` has a runner default).
MODULE_OPTIONS = tuple(n for n in PULL_OPTIONS if n != "tunnel")
