"""The seeding step of a new VM, behind one interface whatever the method.

:func:`seeder` returns a callable for :func:`saltvirt.provision.create` (it runs after the disks
are made and before the domain is defined, and registers its own undo) plus the report dict it
fills. Methods:

* ``cidata`` -- a NoCloud ISO in the VM's own directory, attached read-only;
* ``seed.apply`` -- salt-virt's mount seeder (:func:`saltvirt.seeding.seed_image`, libguestfs)
  writes config and keys into the system disk;
* any other ``module.function`` the operator configured -- called like Salt's ``seed.apply``.

Whatever the method, a failure raises (the caller rolls the disks back) and no guestfs mount
of the disk is left behind.
"""

import concurrent.futures
import logging
import os
import threading
import time

from saltvirt import fileio, seeding
from saltvirt.domain import model as dommod
from saltvirt.errors import InvalidArgument, VirtError
from saltvirt.provision import make_dir, remove_file
from saltvirt.provision.sources import pem
from saltvirt.seeding import cloudinit

log = logging.getLogger(__name__)

BUILTIN = ("cidata", "seed.apply")


class Seeding:
    """What a seeding step needs: the VM's identity, its key pair and minion configuration."""

    def __init__(self, settings, spec, roots, key_pair=None):
        self.settings, self.spec = settings, spec
        self.method = settings.seed_method(spec.seed_cmd, BUILTIN)
        self.report = {"method": self.method}
        if spec.pub_key and spec.priv_key:
            self._keys = (pem(spec.priv_key, roots), pem(spec.pub_key, roots))
            self.report["preseeded"] = True
        else:
            # Waited for only when the seed is written, after the disks are made.
            self._keys = key_pair if key_pair is not None else seeding.gen_minion_keys()
            self.report["preseeded"] = False
        self.minion_conf = dict(spec.config or {})
        self.master = self.minion_conf.pop("master", None) or settings.master
        # Check what can be checked before any disk is copied.
        self.install_cmd = settings.install_cmd(spec.seed_install_cmd) if self.method == "seed.apply" else None
        self.cloud_init = None
        if spec.cloud_init is not None and self.method != "cidata":
            raise InvalidArgument(f"cloud_init is written into the cidata seed ISO: it does not go with "
                                  f"seed_cmd {self.method}")
        if self.method == "cidata":
            self.cloud_init = cloudinit.normalise(settings.get("cloud_init"), spec.cloud_init)
        _rest, caller_conf, _extras = cloudinit.minion_extras((self.cloud_init or {}).get("user_data"))
        seeding.minion_config(spec.name, self.master, {**caller_conf, **self.minion_conf})

    @property
    def priv(self):
        return self._pair()[0]

    @property
    def pub(self):
        return self._pair()[1]

    def _pair(self):
        if not isinstance(self._keys, tuple):
            self._keys = self._keys.result()
        return self._keys

    def __call__(self, plans, undo):
        self.report["minion_pub"] = self.pub
        # The public half next to the VM, so that the master can accept the key even when
        # the runner that started this init is gone (salt-run virt.reconcile).
        pub_file = self.settings.vm_file(self.spec.name, "seed_pub")
        make_dir(os.path.dirname(pub_file), undo)
        undo.push(f"seed {pub_file}", remove_file, pub_file)
        fileio.write_atomic(pub_file, self.pub.encode(), 0o644)
        step = {"cidata": self.cidata, "seed.apply": self.mount}.get(self.method, self.custom)
        return step(plans, undo)

    def cidata(self, plans, undo):
        started = time.monotonic()
        # The VM's own directory whatever the disks' layout: a pool directory is shared, and
        # the ISO holds this VM's private key.
        iso = self.settings.vm_file(self.spec.name, "seed_iso")
        make_dir(os.path.dirname(iso), undo)
        undo.push(f"seed {iso}", remove_file, iso)
        seeding.make_cidata(
            iso, minion_id=self.spec.name, master=self.master, pub_key_pem=self.pub, priv_key_pem=self.priv,
            extra_minion_config=self.minion_conf, cloud_init=self.cloud_init,
        )
        if self.cloud_init:
            self.report["cloud_init"] = sorted(k for k, v in self.cloud_init.items() if v)
        self.report["seconds"] = round(time.monotonic() - started, 3)
        targets = [p.target for p in plans]
        return [dommod.Disk(target=dommod.next_disk_target(targets), source=iso, format="raw", readonly=True)]

    def mount(self, plans, _undo):
        system, settings = plans[0], self.settings
        info = seeding.seed_image(
            system.path, minion_id=self.spec.name, master=self.master, pub_key_pem=self.pub,
            priv_key_pem=self.priv, extra_minion_config=self.minion_conf, install=bool(self.spec.install),
            install_cmd=self.install_cmd, install_timeout=int(settings.get("seed_install_timeout", 900)),
            device=self.spec.seed_device or None, fmt=system.format, env=settings.guestfs_env(),
            mount_timeout=int(settings.get("guestfs:timeout", 600)), state_dir=settings.guestfs_state_dir,
        )
        self.report.update(info)
        return []

    def custom(self, plans, _undo):
        system = plans[0].path
        started = time.monotonic()
        try:
            res = self.settings.salt.function(self.method)(
                system, id_=self.spec.name, config=dict(self.minion_conf, master=self.master),
                install=self.spec.install, pub_key=self.pub, priv_key=self.priv, approve_key=False,
            )
        except Exception as exc:  # pylint: disable=broad-except
            raise VirtError(f"seeding {system} with {self.method} failed: {exc}") from exc
        finally:
            # Salt core's seed.apply does not unmount when it raises half-way.
            released = seeding.release(system, state_dir=self.settings.guestfs_state_dir)
            if released:
                log.warning("virt.init: %s left %d guestfs mount(s) of %s: released", self.method,
                            len(released), system)
        if res is not True:
            kind = repr(res) if isinstance(res, (bool, type(None))) else type(res).__name__
            detail = f": {res}" if isinstance(res, str) and "PRIVATE KEY" not in res else ""
            raise VirtError(f"seeding {system} with {self.method} failed: it returned {kind}{detail}")
        self.report["seconds"] = round(time.monotonic() - started, 3)
        return []


def seeder(settings, spec, roots, wanted=True, key_pair=None):
    """``(step for provision.create or None, report dict or None)`` for ``spec``; ``key_pair``:
    :func:`key_pair_ahead`'s future, when one was started."""
    if not wanted:
        if spec.cloud_init is not None:
            raise InvalidArgument("cloud_init is written into the cidata seed ISO: it needs seed=True and an image")
        return None, None
    seed = Seeding(settings, spec, roots, key_pair)
    return seed, seed.report


def key_pair_ahead(spec):
    """A future of the new VM's minion key pair, made in a thread while the disks are planned
    and made: RSA key generation (~50 ms, at random) releases the GIL, so it overlaps with the
    images' ``qemu-img`` runs. None when ``spec`` brings its own pair or seeds nothing."""
    if not (spec.seed and spec.image) or (spec.pub_key and spec.priv_key):
        return None
    future = concurrent.futures.Future()

    def work():
        try:
            future.set_result(seeding.gen_minion_keys())
        except BaseException as exc:  # pylint: disable=broad-exception-caught  # handed to the caller
            future.set_exception(exc)

    threading.Thread(target=work, name="minion-keys", daemon=True).start()
    return future
