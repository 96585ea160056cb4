"""The one place where Salt's configuration becomes library settings.

The execution module builds a :class:`HostSettings` per call (:func:`from_salt`) from
``config.get`` (minion config, grains, pillar: ``virt:*``), the minion's opts and grains, and
the few Salt functions the library needs (fetching from the file server, custom seeders,
events). Library code takes the settings object instead of reading Salt itself, so it can be
tested with a plain dict (:func:`from_dict`).
"""

import os

from saltvirt import connection, hypervisor
from saltvirt.errors import InvalidArgument
from saltvirt.storage import paths

DEFAULT_IMAGES = "/srv/salt-images"
SEED_ISO = "cidata.iso"
SEED_PUB = "minion.pub"
FIRST_BOOT = ".first-boot"  # marks a seeded VM's first boot as done
NVRAM = "nvram.fd"  # a UEFI VM's own variable store (saltvirt.domain.platform)


class SaltCalls:
    """The Salt functions the library may use, given by the module (``__salt__``)."""

    def __init__(self, functions=None, sizer=None):
        self._functions = functions or {}
        self._sizer = sizer

    def fetch(self, url, saltenv):
        """A local copy of a salt:// or http(s)/ftp file (``cp.cache_file``), or None."""
        return self._functions["cp.cache_file"](url, saltenv)

    def remote_size(self, url, saltenv):
        """The size in bytes of a salt:// or http(s) file before it is fetched, or None when it
        cannot be known cheaply (only progress percentages depend on it)."""
        if self._sizer is None:
            return None
        try:
            return self._sizer(url, saltenv)
        except Exception:  # pylint: disable=broad-exception-caught
            return None

    def function(self, name):
        """An execution function by name (a configured seeder), or None."""
        return self._functions[name] if name in self._functions else None

    def fire_master(self, data, tag):
        self._functions["event.fire_master"](data, tag)


class HostSettings:
    """``virt:*`` settings of one hypervisor minion, read on demand."""

    def __init__(self, config_get, opts, grains=None, salt=None):
        self._get = config_get
        self.opts = opts
        self.grains = grains or {}
        self.salt = salt if isinstance(salt, SaltCalls) else SaltCalls(salt)

    def get(self, key, default=None):
        return self._get(f"virt:{key}", default)

    # -------------------------------------------------------------- identity and paths

    @property
    def minion_id(self):
        return self.opts["id"]

    @property
    def master(self):
        return self.opts.get("master", "salt")

    @property
    def address(self):
        """How other hypervisors and consoles reach this one."""
        return self.get("address") or self.grains.get("fqdn") or self.grains.get("host") or self.minion_id

    @property
    def images_dir(self):
        return paths.images_dir(self.get("images"))

    def cache_path(self, *parts):
        return os.path.join(self.opts["cachedir"], "saltvirt", *parts)

    @property
    def kvm_probe(self):
        return self.cache_path("kvm-probe.json")

    @property
    def migration_dir(self):
        return self.cache_path("migrations")

    def vm_dir(self, name):
        return os.path.join(self.images_dir, name)

    def vm_file(self, name, what):
        """``seed_iso``, ``seed_pub``, ``first_boot`` or ``nvram`` of VM ``name`` (in its own directory)."""
        return os.path.join(self.vm_dir(name), {"seed_iso": SEED_ISO, "seed_pub": SEED_PUB,
                                                "first_boot": FIRST_BOOT, "nvram": NVRAM}[what])

    @staticmethod
    def serial_log(name):
        return f"/var/log/libvirt/qemu/{name}-serial.log"

    def roots(self, pool_targets):
        """The directories a call may name here (:class:`saltvirt.storage.paths.Roots`)."""
        return paths.Roots(
            self.images_dir, pool_targets,
            image_roots=self.get("image_roots", list(paths.DEFAULT_IMAGE_ROOTS)),
            attach_roots=self.get("attach_roots", []),
            # The firmware caller XML may name (saltvirt.domain.xmlpolicy) is what boot: {loader} may.
            firmware_roots=self.get("domain_xml:firmware_roots", list(paths.DEFAULT_FIRMWARE_ROOTS)),
        )

    @property
    def pool_policy(self):
        """Which storage pools callers may define (:class:`saltvirt.storage.paths.PoolPolicy`)."""
        return paths.PoolPolicy(
            self.images_dir, self.get("pools:allowed_targets", []), self.get("pools:allowed_devices", []),
            self.get("pools:allowed_source_names", []),
            self.get("pools:allowed_types", list(paths.DEFAULT_POOL_TYPES)),
        )

    # -------------------------------------------------------------- libvirt

    def connect_args(self, kwargs=None):
        """``uri``/``username``/``password``: the call's own, else the configured ones."""
        kwargs = kwargs or {}
        return {
            "uri": kwargs.get("connection") or self.get("connection:uri") or None,
            "username": kwargs.get("username") or self.get("connection:auth:username"),
            "password": kwargs.get("password") or self.get("connection:auth:password"),
        }

    def opened(self, kwargs=None):
        return connection.opened(**self.connect_args(kwargs))

    def kvm_works(self):
        return hypervisor.kvm_status(self.kvm_probe)

    # -------------------------------------------------------------- policies

    @property
    def image_policy(self):
        policy = self.get("image_policy", {}) or {}
        return {
            "allow_backing": bool(policy.get("allow_backing", False)),
            "max_virtual_size": policy.get("max_virtual_size"),
            "require_hash": policy.get("require_hash", True),
        }

    @property
    def copy_limits(self):
        """``(base seconds, minimum MiB/s)`` of image copies (``virt:image_copy:base_timeout``,
        ``virt:image_copy:min_rate_mib``): a copy may take the base plus its size at that rate."""
        from saltvirt import progress  # noqa: PLC0415 - keeps this module's imports minimal

        return progress.limits(self.get)

    @property
    def space_policy(self):
        """``virt:disk_overcommit`` (thin disks counted as they fill, not at their virtual size)
        and ``virt:disk_headroom_mib`` (kept free in every filesystem disks go to)."""
        return {"overcommit": bool(self.get("disk_overcommit", False)),
                "headroom_mib": int(self.get("disk_headroom_mib", 1024))}

    @property
    def unsafe_fs(self):
        return self.get("migration:unsafe_fs", []) or []

    @property
    def tunnel(self):
        return bool(self.get("tunnel", False))

    # -------------------------------------------------------------- seeding

    def seed_method(self, seed_cmd, builtin):
        """The seeding method a call asks for: built in, or an execution function the operator
        configured (``virt:seed_cmd`` or one of ``virt:seed_cmds``); a call chooses, it does
        not invent."""
        configured = self.get("seed_cmd", "cidata") or "cidata"
        method = seed_cmd or configured
        if method in builtin:
            return method
        if method not in {configured, *(self.get("seed_cmds", []) or [])}:
            raise InvalidArgument(
                f"seed_cmd {method!r} is not configured on this hypervisor: use cidata, seed.apply, or a "
                "function the operator listed in virt:seed_cmds"
            )
        if isinstance(method, str) and "." in method and self.salt.function(method) is not None:
            return method
        raise InvalidArgument(
            f"unknown seed_cmd {method!r}: use cidata, seed.apply, or the name of an execution "
            "function with seed.apply's signature"
        )

    def install_cmd(self, choice):
        """``seed_install_cmd`` of a call: the name of one of ``virt:seed_install_cmds`` (commands
        run as root on the hypervisor come from its configuration only)."""
        if choice is None:
            return self.get("seed_install_cmd")
        commands = self.get("seed_install_cmds", {}) or {}
        if choice not in commands:
            known = ", ".join(sorted(commands)) or "none configured"
            raise InvalidArgument(
                f"seed_install_cmd {choice!r} is not one of virt:seed_install_cmds ({known}): commands "
                "come from the hypervisor's configuration, a call only names one"
            )
        return commands[choice]

    @property
    def guestfs_state_dir(self):
        from saltvirt import seeding  # noqa: PLC0415 - seeding imports this module's users

        return self.get("guestfs:state_dir", seeding.STATE_DIR) or seeding.STATE_DIR

    def guestfs_env(self):
        from saltvirt import seeding  # noqa: PLC0415

        force = self.get("guestfs:force_tcg", "auto")
        if isinstance(force, str) and force.lower() == "auto":
            force = not self.kvm_works()[0]
        return seeding.libguestfs_env(bool(force))


def from_salt(config_get, opts, grains=None, functions=None, sizer=None):
    """:class:`HostSettings` of the calling minion (the module passes its dunders; ``sizer(url,
    saltenv)``: the size of a file before it is fetched, for progress)."""
    return HostSettings(config_get, opts, grains, SaltCalls(functions, sizer))


def from_dict(config, opts=None, grains=None, functions=None):
    """:class:`HostSettings` over a plain nested dict (``{"virt": {...}}``), for tests and tools."""

    def config_get(key, default=None):
        node = config
        for part in key.split(":"):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    opts = {"id": "minion", "cachedir": "/var/cache/salt/minion", **(opts or {})}
    return HostSettings(config_get, opts, grains, SaltCalls(functions))

