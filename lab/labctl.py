#!/usr/bin/env python3
"""The salt-virt lab: a small private cloud on this one machine, made of real parts.

* one network namespace (``svlab``) holding everything below, with a ``br0`` bridge for guests;
* a salt-master whose file_roots are this repository and the lab's image directory;
* N hypervisors (``hypervisor1``...), each a private mount namespace inside that network
  namespace with its own /etc/libvirt, /run/libvirt, /var/lib/libvirt, /etc/pki, libvirtd
  (TLS on 127.0.0.N+1), virtlogd and a salt-minion.

With ``LAB_SYNDIC=1`` the salt-master above becomes a syndic's master: a *top* master
(``order_masters``, state in ``$LAB_DIR/top``, ports 4515/4516 on 127.0.0.1) is added, a
salt-syndic (id ``syndic1``) connects the two, and a salt-minion ``syndic1`` runs next to the
syndic's master (the runner accepts VM keys there, see docs/scale.rst). The hypervisors, their keys
and the VMs' keys stay with the syndic's master; ``lab/bin/salt`` and ``salt-run`` talk to the top
master. The choice is kept in the state directory (``LAB_SYNDIC=0`` on a stopped lab drops it).

``labctl.py syndic-attach [TARGET]`` puts the same top master, salt-syndic and minion ``syndic1``
above a running one-master lab for a while, without restarting its master and without the
syndic mark: ``LAB_MASTER=top lab/bin/salt`` (and ``salt-run``, ``salt-cp``) then talk to the top
master, whose ``virt:hypervisors`` is ``TARGET`` (a glob, default ``hypervisor*``).
``labctl.py syndic-detach`` stops the three, deletes ``syndic1``'s key on the lab's master and
removes what the attachment wrote: the lab is the one-master lab it was (``down`` does it too).

Usage: ``labctl.py up|down|status|env|start-master|syndic-attach [TARGET]|syndic-detach``,
``labctl.py crash hypervisorN`` (kill all its processes at once, as a power loss; ``up`` brings it
back), ``labctl.py libvirtd hypervisorN`` (start its libvirtd again, as ``up`` does, after a test
stopped it) and ``labctl.py minion hypervisorN [VENV]`` to restart one hypervisor's salt-minion
from another Python environment (default: the lab's own), e.g. one with only Salt in it.
``LAB_HYPERVISORS`` (default 2) sets the count, ``LAB_DIR`` (default
/var/lib/svlab) the state directory, ``LAB_NETNS`` (default svlab) the network namespace,
``LAB_FAKE_HYPERVISORS`` the number of extra test:/// hypervisor minions (exactly: more are
stopped and their keys deleted).
"""

import fnmatch
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "_utils"))

LAB_DIR = Path(os.environ.get("LAB_DIR", "/var/lib/svlab"))
NETNS = os.environ.get("LAB_NETNS", "svlab")
VENV = Path(os.environ.get("VENV", REPO / ".venv"))
# libvirtd under a reaper of its own: this machine's PID 1 reaps an exited QEMU only every ~2 s,
# and libvirt reports a domain off only once it is reaped (scripts/subreaper.py says more).
LIBVIRTD = ["python3", str(REPO / "scripts" / "subreaper.py"), "libvirtd", "-d", "-l", "-p",
            "/run/libvirt/libvirtd.pid"]
COUNT = int(os.environ.get("LAB_HYPERVISORS", "2"))
# Extra minions that look like hypervisors but drive libvirt's test:/// driver (for scale
# benchmarks of the runner: many hosts without many daemons).
FAKES = int(os.environ.get("LAB_FAKE_HYPERVISORS", "0"))
# The lab's daemons run as systemd would start them: a caller's PYTHONDONTWRITEBYTECODE (set
# in some CI shells) would make every job and salt-run compile the synced modules anew.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
MASTER = LAB_DIR / "master"
MASTER_CONF = MASTER / "etc" / "salt"
IMAGES = LAB_DIR / "images"
# Python packages for the formula's virt.python (pip inside the lab reaches no index): a test
# fills it from the package index before it applies the formula (tests/integration).
WHEELHOUSE = LAB_DIR / "wheelhouse"
# The same CA the bundle's libvirt ext_pillar uses by default (<master pki_dir>/libvirt).
CA_DIR = LAB_DIR / "master" / "etc" / "salt" / "pki" / "master" / "libvirt"
BRIDGE = "br0"
# The syndic topology (LAB_SYNDIC=1): the master above is the syndic's; the top master lives here.
SYNDIC_MARK = LAB_DIR / "syndic"
TOP = LAB_DIR / "top"
TOP_CONF = TOP / "etc" / "salt"
TOP_PUBLISH_PORT, TOP_RET_PORT = 4515, 4516
SYNDIC_ID = "syndic1"
# salt-syndic reads a master config (the syndic's master's, plus the syndic_* options) and a
# minion config (its id and key) from one dir of its own.
SYNDIC_DIR = MASTER / "syndic"
SYNDIC_CONF = SYNDIC_DIR / "etc" / "salt"
# What salt-syndic itself makes under its master's root_dir (its minion-side sock_dir and
# extension_modules, log, pid file): nothing of the master's own.
SYNDIC_PIDFILE = MASTER / "var" / "run" / "salt-syndic.pid"
SYNDIC_LOG = MASTER / "var" / "log" / "salt" / "syndic"
SYNDIC_LEFTOVERS = (MASTER / "var" / "run" / "salt" / "minion", MASTER / "var" / "cache" / "salt" / "minion",
                    SYNDIC_LOG, SYNDIC_PIDFILE)
# The salt-minion on the syndic's host (a minion of the syndic's master).
SYNDIC_MINION = LAB_DIR / "syndic-minion"
# Seconds the top master waits for syndics to report which minions a job reached.
TOP_SYNDIC_WAIT = 1
BRIDGE_ADDR = "10.231.0.1/24"  # exists only inside the lab's own network namespace

# Host commands the lab needs, and the Debian package that provides each.
REQUIRED = {
    "libvirtd": "libvirt-daemon-system",
    "virtlogd": "libvirt-daemon-system",
    "virsh": "libvirt-clients",
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
    "unshare": "util-linux",
    "nsenter": "util-linux",
    "ip": "iproute2",
    "mcopy": "mtools",
    "syslinux": "syslinux",
    "busybox": "busybox-static",
    "dnsmasq": "dnsmasq-base",  # DHCP and DNS of libvirt's NAT networks
}


class LabError(Exception):
    pass


def log(msg):
    print(f"lab: {msg}", flush=True)


def sh(argv, check=True, capture=True, timeout=120, **kw):
    proc = subprocess.run(
        [str(a) for a in argv], capture_output=capture, text=True, timeout=timeout, **kw
    )
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(map(str, argv))} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


# ---------------------------------------------------------------------------- layout helpers


def hv_name(n):
    return f"hypervisor{n}"


def hv_addr(n):
    return f"127.0.0.{n + 1}"


def hv_dir(n):
    return LAB_DIR / f"hv{n}"


def hv_uuid(n):
    # libvirt compares host UUIDs to refuse "migration to the same host": each must differ.
    return str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{hv_name(n)}.salt-virt-lab"))


def in_netns(argv):
    return ["nsenter", f"--net=/run/netns/{NETNS}", *argv]


def read_pid(path):
    try:
        pid = int(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        # A killed daemon whose parent never reaps it stays a zombie: not running.
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None
    return None if state == "Z" else pid


def holder_pid(n):
    return read_pid(hv_dir(n) / "holder.pid")


def netns_exists():
    return Path(f"/run/netns/{NETNS}").exists()


def existing_hypervisors():
    return sorted(
        int(p.name[2:]) for p in LAB_DIR.glob("hv*") if p.name[2:].isdigit() and (p / "holder.pid").exists()
    )


# ---------------------------------------------------------------------------- checks


def check_prereqs():
    missing = sorted({pkg for cmd, pkg in REQUIRED.items() if shutil.which(cmd) is None})
    if missing:
        raise LabError(
            "missing Debian packages: " + " ".join(missing)
            + f"\n  install them with: apt-get install -y {' '.join(missing)}"
            + "\n  or run: make install"
        )
    if not (VENV / "bin" / "salt-master").exists():
        raise LabError(f"no Salt virtualenv at {VENV}: run `make install` first")
    if os.geteuid() != 0:
        raise LabError("the lab needs root (namespaces, libvirtd)")
    if not list(Path("/boot").glob("vmlinuz-*")):
        raise LabError("no kernel in /boot for the guest image: apt-get install -y linux-image-amd64")


# ---------------------------------------------------------------------------- network


def setup_netns():
    if not netns_exists():
        sh(["ip", "netns", "add", NETNS])
    sh(["ip", "-n", NETNS, "link", "set", "lo", "up"])
    links = sh(["ip", "-n", NETNS, "-o", "link", "show"]).stdout
    if f": {BRIDGE}:" not in links:
        sh(["ip", "-n", NETNS, "link", "add", BRIDGE, "type", "bridge"])
        sh(["ip", "-n", NETNS, "addr", "add", BRIDGE_ADDR, "dev", BRIDGE])
    sh(["ip", "-n", NETNS, "link", "set", BRIDGE, "up"])


# ---------------------------------------------------------------------------- images


def build_images():
    IMAGES.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    sh(["bash", REPO / "lab" / "image" / "build.sh", IMAGES], timeout=600)
    log(f"guest images ready in {IMAGES} ({time.monotonic() - t0:.1f}s)")


def publish_images(n):
    """Put the seed's /var/lib/libvirt/images/centos.{img,qcow2,vmlinuz,initrd} on hypervisor n."""
    dest = hv_dir(n) / "var-lib-libvirt" / "images"
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("centos.img", "centos.qcow2", "centos.vmlinuz", "centos.initrd"):
        src, dst = IMAGES / name, dest / name
        if dst.exists() and dst.stat().st_mtime >= src.stat().st_mtime:
            continue
        tmp = dest / f".{name}.tmp"
        shutil.copyfile(src, tmp)
        os.chmod(tmp, 0o444)  # base images are never written to
        os.replace(tmp, dst)


# ---------------------------------------------------------------------------- pillar


def write_pillar(ids):
    """Per-hypervisor pillar for the bundle's formula: what libvirtd.conf must say on each."""
    pillar = LAB_DIR / "pillar"
    pillar.mkdir(parents=True, exist_ok=True)
    top = ["base:"]
    for n in ids:
        conf = {
            "virt": {
                "hypervisor": {
                    # No init system in the lab: labctl starts libvirtd itself.
                    "manage_service": False,
                    # The lab's minions run in the virtualenv, whose libvirt-python stands in
                    # for Debian's python3-libvirt; the rest is what `make install` puts on
                    # this machine (so `state.apply virt` needs no network here).
                    "lookup": {"pkgs": ["libvirt-daemon-system", "libvirt-clients", "qemu-system-x86",
                                        "qemu-utils", "libguestfs-tools", "gnutls-bin"]},
                    # virt.python: pip in the lab's namespace has no network; it installs
                    # from the lab's own directory of packages (sdists are built there).
                    # no_cache_dir: libvirt-python is built every time, with the build packages.
                    "python": {"pip_options": {"find_links": str(WHEELHOUSE), "no_index": True,
                                               "no_cache_dir": True}},
                    # virtlockd's leases, locks on the disk files themselves: a disk on the
                    # storage the hypervisors share, open on one hypervisor, cannot be opened
                    # on another; local disks are each host's own (virt.lockd).
                    "lockd": {"enabled": True},
                    "libvirtd_conf": {
                        "listen_addr": hv_addr(n),
                        "auth_tls": "none",
                        "host_uuid": hv_uuid(n),
                        "log_outputs": "3:file:/var/log/libvirt/libvirtd.log",
                    },
                }
            }
        }
        (pillar / f"{hv_name(n)}.sls").write_text(json.dumps(conf, indent=2) + "\n")
        top += [f"  '{hv_name(n)}':", f"    - {hv_name(n)}"]
    (pillar / "top.sls").write_text("\n".join(top) + "\n")


# ---------------------------------------------------------------------------- master


def master_pid():
    return read_pid(MASTER / "var" / "run" / "salt-master.pid")


def write_master_config():
    MASTER_CONF.mkdir(parents=True, exist_ok=True)
    (LAB_DIR / "pillar").mkdir(exist_ok=True)
    conf = {
        "root_dir": str(MASTER),
        "user": "root",
        "interface": "0.0.0.0",  # noqa: S104 (inside the lab's netns: its loopback and br0 only)
        "file_roots": {"base": [str(REPO), str(IMAGES)]},
        "file_ignore_regex": [r"/\.git($|/)", r"/\.venv($|/)", r"/lab/build($|/)"],
        "pillar_roots": {"base": [str(LAB_DIR / "pillar")]},
        # The master loads the bundle's runners, outputter and pillar straight from the tree.
        "runner_dirs": [str(REPO / "_runners")],
        "outputter_dirs": [str(REPO / "_output")],
        "pillar_dirs": [str(REPO / "_pillar")],
        "utils_dirs": [str(REPO / "_utils")],
        "module_dirs": [],
        "log_level_logfile": "info",
        "keep_jobs_seconds": 3600,
        # Two cores run the whole lab, TCG guests included: give minions time to answer.
        "virt": {"hypervisors": "hypervisor*", "timeout": 30},
        "gather_job_timeout": 30,
        # A VM's seed ISO goes once its minion has authenticated (the bundle's reactor).
        "reactor": [{"salt/minion/*/start": ["salt://virt/reactor/unseed.sls"]}]
        # The master's copy of the VMs' definitions follows the hypervisors' libvirt events
        # (virt.evacuate restarts a dead hypervisor's VMs from it).
        + [{f"salt/engines/libvirt_events/*/domain/*/{event}": ["salt://virt/reactor/remember.sls"]}
           for event in ("defined", "undefined", "started")]
        # A VM whose guest crashed starts again (on its hypervisor's signed word only).
        + [{"salt/engines/libvirt_events/*/domain/*/stopped": ["salt://virt/reactor/remember.sls",
                                                               "salt://virt/reactor/restart_crashed.sls"]}],
        # The bundle's PKI: the CA lives here; hypervisors get certificates through pillar.
        "ext_pillar": [{"libvirt": {}}],
        "libvirt_pki": {
            "minions": "hypervisor*",
            # Lab hypervisors are told apart by loopback address, which grains cannot see.
            "extra_ips": {hv_name(n): [hv_addr(n)] for n in range(1, 10)},
        },
    }
    if syndic_mode():
        conf.update(syndic_options())
    (MASTER_CONF / "master").write_text(json.dumps(conf, indent=2) + "\n")


def syndic_options():
    """This master's salt-syndic daemon (syndic_* options are read by salt-syndic only: the
    master itself needs none of them, nor ``order_masters``, which only the top master sets)."""
    return {
        "syndic_master": "127.0.0.1",
        "syndic_master_port": TOP_RET_PORT,
        "syndic_pidfile": str(SYNDIC_PIDFILE),
        "syndic_log_file": str(SYNDIC_LOG),
        # The syndic sends its master's job returns up in batches, every this many seconds
        # (Salt's default 0.5): each command through it waits half of that on average.
        "syndic_event_forward_timeout": 0.1,
    }


# ---------------------------------------------------------------------------- syndic topology


def syndic_mode():
    """True when this lab runs the syndic topology (LAB_SYNDIC=1 once, kept in LAB_DIR)."""
    return SYNDIC_MARK.exists()


def choose_topology():
    wanted = os.environ.get("LAB_SYNDIC", "")
    if wanted not in ("", "0", "1"):
        raise LabError(f"LAB_SYNDIC={wanted!r}: use 1 (top master + syndic) or 0 (one master)")
    if wanted == "" or (wanted == "1") == syndic_mode():
        return
    if master_pid():
        raise LabError(f"the running lab {'has' if syndic_mode() else 'has no'} syndic: take it down "
                       f"(make lab-down) before LAB_SYNDIC={wanted}")
    LAB_DIR.mkdir(parents=True, exist_ok=True)
    if wanted == "1":
        SYNDIC_MARK.write_text("top master + syndic: see docs/scale.rst\n")
    else:
        SYNDIC_MARK.unlink()
        clear_attachment()  # the top master's and syndic's state, syndic1's key: a one-master lab


def top_pid():
    return read_pid(TOP / "var" / "run" / "salt-master.pid")


def syndic_pid():
    return read_pid(SYNDIC_PIDFILE)


def syndic_minion_pid():
    return read_pid(SYNDIC_MINION / "var" / "run" / "salt-minion.pid")


def write_top_config(hypervisors="hypervisor*"):
    TOP_CONF.mkdir(parents=True, exist_ok=True)
    conf = {
        "root_dir": str(TOP),
        "user": "root",
        # Its own ports next to the syndic's master (which keeps 4505/4506 for the hypervisors
        # and the VMs on br0): only the salt-syndic connects here.
        "interface": "127.0.0.1",
        "publish_port": TOP_PUBLISH_PORT,
        "ret_port": TOP_RET_PORT,
        "order_masters": True,
        "syndic_wait": TOP_SYNDIC_WAIT,
        "transport": "tcp",
        "runner_dirs": [str(REPO / "_runners")],
        "outputter_dirs": [str(REPO / "_output")],
        "utils_dirs": [str(REPO / "_utils")],
        "module_dirs": [],
        "log_level_logfile": "info",
        "keep_jobs_seconds": 3600,
        "gather_job_timeout": 30,
        # Salt 3008's local job cache on a master of masters refuses a second return of a job it
        # never published (any minion under the syndic can send such returns), and salt-syndic
        # then stops forwarding for good: the top master keeps no job cache (docs/scale.rst).
        "job_cache": False,
        "virt": {
            "hypervisors": hypervisors,
            "timeout": 30,
            # The hypervisors hang off syndic1, whose host runs the minion syndic1: VM keys are
            # accepted on that syndic's master, through that minion.
            "syndics": {SYNDIC_ID: hypervisors},
        },
    }
    (TOP_CONF / "master").write_text(json.dumps(conf, indent=2) + "\n")


def start_top(hypervisors="hypervisor*"):
    if top_pid():
        return
    write_top_config(hypervisors)
    sh(in_netns([VENV / "bin" / "salt-master", "-c", TOP_CONF, "-d"]))
    for _ in range(100):
        if top_pid():
            return
        time.sleep(0.1)
    raise LabError(f"the top salt-master did not start; see {TOP}/var/log/salt/master")


def start_syndic():
    """salt-syndic on the syndic's master, its key pre-accepted on the top master."""
    if syndic_pid():
        return
    SYNDIC_CONF.mkdir(parents=True, exist_ok=True)
    # Its own copy of the master's config with the syndic_* options (its LocalClient reads this
    # file too): a master running without them needs no restart to get a syndic.
    try:
        conf = json.loads((MASTER_CONF / "master").read_text())
    except (OSError, ValueError) as exc:
        raise LabError(f"cannot read the lab master's config {MASTER_CONF / 'master'}: {exc}") from None
    conf.update(syndic_options())
    master_conf = SYNDIC_CONF / "master"
    master_conf.unlink(missing_ok=True)  # (labs made before: a symlink to the master's config)
    master_conf.write_text(json.dumps(conf, indent=2) + "\n")
    (SYNDIC_CONF / "minion").write_text(json.dumps({
        # salt-syndic prefixes its paths with this root_dir: the master's, so that the
        # syndic_* paths and sock_dir of the master config stay as they are.
        "id": SYNDIC_ID, "root_dir": str(MASTER), "pki_dir": str(SYNDIC_CONF / "pki" / "minion"), "user": "root",
        # The top master's publisher (syndic_master_port only names its request port).
        "publish_port": TOP_PUBLISH_PORT,
        "transport": "tcp",
    }, indent=2) + "\n")
    preaccept_minion_key(SYNDIC_CONF, SYNDIC_ID, master=TOP)
    sh(in_netns([VENV / "bin" / "salt-syndic", "-c", SYNDIC_CONF, "-d"]))
    for _ in range(100):
        if syndic_pid():
            return
        time.sleep(0.1)
    raise LabError(f"salt-syndic did not start; see {MASTER}/var/log/salt/syndic")


def start_syndic_minion():
    """The minion on the syndic's host: saltutil.runner there runs the syndic master's runner."""
    conf_dir = SYNDIC_MINION / "etc" / "salt"
    conf_dir.mkdir(parents=True, exist_ok=True)
    link = conf_dir / "master"  # saltutil.runner reads the master config next to the minion's
    if not link.is_symlink():
        link.symlink_to(MASTER_CONF / "master")
    (conf_dir / "minion").write_text(json.dumps({
        "id": SYNDIC_ID, "master": "127.0.0.1", "root_dir": str(SYNDIC_MINION), "user": "root",
        "log_level_logfile": "info",
    }, indent=2) + "\n")
    preaccept_minion_key(conf_dir, SYNDIC_ID)
    if not syndic_minion_pid():
        sh(in_netns([VENV / "bin" / "salt-minion", "-c", conf_dir, "-d"]))


def start_master():
    if master_pid():
        return
    # After a crash the old pid may still be a zombie: salt-master's own "already running"
    # check counts zombies as running and would exit.
    (MASTER / "var" / "run" / "salt-master.pid").unlink(missing_ok=True)
    write_master_config()
    # Modules synced by an earlier run shadow the repository's runner_dirs/utils_dirs, and the
    # reactor would keep the old runner until the next restart: start from the repository's.
    shutil.rmtree(MASTER / "var" / "cache" / "salt" / "master" / "extmods", ignore_errors=True)
    sh(in_netns([VENV / "bin" / "salt-master", "-c", MASTER_CONF, "-d"]))
    for _ in range(100):
        if master_pid():
            return
        time.sleep(0.1)
    raise LabError(f"salt-master did not start; see {MASTER}/var/log/salt/master")


# ---------------------------------------------------------------------------- hypervisors


def _copy_tree_dirs(src, dst):
    """Copy a directory skeleton (directories only, with modes and owners)."""
    for root, _dirs, _files in os.walk(src):
        rel = os.path.relpath(root, src)
        target = Path(dst) / rel
        target.mkdir(parents=True, exist_ok=True)
        st = os.stat(root)
        os.chmod(target, st.st_mode & 0o7777)
        os.chown(target, st.st_uid, st.st_gid)


def prepare_hypervisor(n):
    h = hv_dir(n)
    for sub in ("pki", "run-libvirt", "salt-images", "minion/etc/salt"):
        (h / sub).mkdir(parents=True, exist_ok=True)
    for sub, src in (("var-lib-libvirt", "/var/lib/libvirt"), ("log-libvirt", "/var/log/libvirt"),
                     ("cache-libvirt", "/var/cache/libvirt")):
        if not (h / sub).exists():
            _copy_tree_dirs(src, h / sub)
    etc = h / "etc-libvirt"
    if not etc.exists():
        shutil.copytree("/etc/libvirt", etc, symlinks=True)
        # A copied host config would bring the host's networks and domains along.
        for junk in ("qemu/networks", "qemu/autostart"):
            shutil.rmtree(etc / junk, ignore_errors=True)
        for xml in (etc / "qemu").glob("*.xml"):
            xml.unlink()
    (etc / "qemu.conf").write_text(
        f'vnc_listen = "{hv_addr(n)}"\n'
        f'migration_address = "{hv_addr(n)}"\n'
        f'migration_host = "{hv_addr(n)}"\n'
        # Several libvirtds share this machine's cgroup tree; without this they collide.
        "cgroup_controllers = [ ]\n"
    )
    # Runtime state from an earlier run would confuse the new daemons.
    for stale in (h / "run-libvirt").iterdir():
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    (h / "ready").unlink(missing_ok=True)

    minion_conf = {
        "id": hv_name(n),
        "master": "127.0.0.1",
        "root_dir": str(h / "minion"),
        "user": "root",
        "log_level_logfile": "info",
        "virt": {
            "images": "/srv/salt-images",
            "address": hv_addr(n),
            "vnc": {"listen": hv_addr(n)},
            # The operator's image directories: libvirt's default one and the storage the
            # lab's hypervisors share (migration tests put VM disks there with pool=).
            "image_roots": ["/var/lib/libvirt/images", str(LAB_DIR / "shared-storage")],
            # A seeding function that fails (it does not return True): the tests' fault.
            "seed_cmds": ["test.arg"],
            # Storage pools callers may define (tests/integration/test_pools.py): directories
            # under libvirt's images, loop devices, volume groups named after this lab.
            "pools": {"allowed_targets": ["/var/lib/libvirt/images"], "allowed_devices": ["/dev/loop*"],
                      "allowed_source_names": [f"{NETNS}_*"]},
        },
        "grains": {"salt_virt_lab": True},
        # libvirt's domain events on the master's bus (the bundle's engine; it starts with
        # the minion, so up() restarts fresh minions once their first sync brought it).
        "engines": [{"libvirt_events": {"retry_max": 5}}],
    }
    (h / "minion" / "etc" / "salt" / "minion").write_text(json.dumps(minion_conf, indent=2) + "\n")
    share_kvm_probe(h / "minion" / "var" / "cache" / "salt" / "minion" / "saltvirt" / "kvm-probe.json")
    preaccept_minion_key(h / "minion" / "etc" / "salt", hv_name(n))
    publish_images(n)


def share_kvm_probe(target):
    """The KVM probe's answer for this machine, given to a new hypervisor: every lab hypervisor
    runs on the same host and /dev/kvm, and where KVM does not work the probe waits out its
    10 s on each one's first virt.init. Probed once a day into the lab cache (the probe itself is
    tested by tests/functional)."""
    from saltvirt import hypervisor  # noqa: PLC0415 - the lab's other commands do without it

    cache = Path(os.environ.get("SALTVIRT_LAB_CACHE", "/var/cache/salt-virt-lab")) / "kvm-probe.json"
    hypervisor.kvm_status(str(cache))
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(cache, target)


def preaccept_minion_key(conf_dir, minion_id, master=MASTER):
    """Generate a lab minion's key and place it as accepted on the master (no salt-key -a)."""
    pki = conf_dir / "pki" / "minion"
    pki.mkdir(parents=True, exist_ok=True)
    if not (pki / "minion.pem").exists():
        sh([VENV / "bin" / "salt-key", "-c", MASTER_CONF, f"--gen-keys-dir={pki}", "--gen-keys=minion"])
    accepted = master / "etc" / "salt" / "pki" / "master" / "minions"
    accepted.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(pki / "minion.pub", accepted / minion_id)


def fake_name(n):
    return f"hypervisorf{n}"


def start_fake(n):
    """A minion whose virt module drives libvirt's in-memory test:/// driver."""
    root = LAB_DIR / f"fake{n}" / "minion"
    conf_dir = root / "etc" / "salt"
    conf_dir.mkdir(parents=True, exist_ok=True)
    conf = {
        "id": fake_name(n), "master": "127.0.0.1", "root_dir": str(root), "user": "root",
        "virt": {"connection": {"uri": "test:///default"}, "images": str(root / "images")},
    }
    (conf_dir / "minion").write_text(json.dumps(conf, indent=2) + "\n")
    preaccept_minion_key(conf_dir, fake_name(n))
    if not read_pid(root / "var" / "run" / "salt-minion.pid"):
        sh(in_netns([VENV / "bin" / "salt-minion", "-c", conf_dir, "-d"]))


def drop_stopped_hypervisors(wanted):
    """Delete the keys of hypervisors this lab no longer runs (a grown lab brought down, then up
    with fewer): a master holding them would wait for them on every ``salt 'hypervisor*'``."""
    keys = MASTER / "etc" / "salt" / "pki" / "master" / "minions"
    for key in keys.glob("hypervisor*"):
        n = key.name[len("hypervisor"):]
        if n.isdigit() and int(n) not in wanted and not holder_pid(int(n)):
            key.unlink(missing_ok=True)


def drop_fakes(keep):
    """Stop the test:/// minions numbered above ``keep`` and delete their keys: LAB_FAKE_HYPERVISORS
    is the exact count (a master that still held their keys would expect them to answer)."""
    for fake in sorted(LAB_DIR.glob("fake*")):
        n = fake.name[4:]
        if not n.isdigit() or int(n) <= keep:
            continue
        pid = read_pid(fake / "minion" / "var" / "run" / "salt-minion.pid")
        if pid:
            os.kill(pid, signal.SIGTERM)
        (MASTER / "etc" / "salt" / "pki" / "master" / "minions" / fake_name(int(n))).unlink(missing_ok=True)


def start_hypervisor(n):
    if holder_pid(n):
        return
    prepare_hypervisor(n)
    h = hv_dir(n)
    log_path = h / "hv-init.log"
    with open(log_path, "w") as out:
        proc = subprocess.Popen(
            in_netns(["unshare", "--mount", "--uts", "--propagation", "private", "--fork",
                      "bash", REPO / "lab" / "hv-init.sh", h, VENV, hv_name(n)]),
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    for _ in range(300):
        if (h / "ready").exists():
            break
        if proc.poll() is not None:
            raise LabError(f"{hv_name(n)} failed to start:\n{log_path.read_text()}")
        time.sleep(0.1)
    else:
        raise LabError(f"{hv_name(n)} did not become ready; see {log_path}")
    # unshare --fork: the namespace's first process is unshare's child (bash -> exec sleep).
    child = sh(["pgrep", "-P", str(proc.pid)]).stdout.split()[0]
    (h / "holder.pid").write_text(child + "\n")


def restart_minion(name, venv=None):
    """Restart hypervisor ``name``'s salt-minion from ``venv`` (default: the lab's virtualenv).

    The minion keeps its id, keys, configuration and cache (synced modules); only the Python
    that runs Salt changes. A test runs a hypervisor from a virtualenv with nothing but Salt in
    it, to see the formula make it usable (tests/integration/test_install_paths.py).
    """
    n = running_hypervisor(name)
    holder = holder_pid(n)
    venv = Path(venv) if venv else VENV
    if not (venv / "bin" / "salt-minion").exists():
        raise LabError(f"no salt-minion in {venv}")
    h = hv_dir(n)
    pid = read_pid(h / "minion" / "var" / "run" / "salt-minion.pid")
    if pid:
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            if not Path(f"/proc/{pid}").exists():
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)
    # As hv-init.sh starts it: libguestfs never tries KVM in the lab.
    env = dict(os.environ, LIBGUESTFS_BACKEND="direct", LIBGUESTFS_BACKEND_SETTINGS="force_tcg")
    minion_log = h / "minion" / "var" / "log" / "salt" / "minion"
    offset = minion_log.stat().st_size if minion_log.exists() else 0
    sh(["nsenter", "-t", holder, "-m", "-n", "-u", venv / "bin" / "salt-minion", "-c",
        h / "minion" / "etc" / "salt", "-d"], env=env)
    # A ping published before the minion is connected costs the master's gather_job_timeout
    # (30 s here): wait for the new process to say it is connected first.
    for _ in range(600):
        if minion_log.exists():
            with open(minion_log, "rb") as fh:
                fh.seek(offset)
                if b"Minion is ready to receive requests" in fh.read():
                    break
        time.sleep(0.1)
    wait_for_minions([hv_name(n)])
    log(f"{hv_name(n)}: salt-minion runs from {venv}")


# ---------------------------------------------------------------------------- salt calls


def salt(argv, timeout=60, conf=MASTER_CONF):
    return sh(in_netns([VENV / "bin" / "salt", "-c", conf, *argv]), check=False, timeout=timeout)


def wait_for_minions(ids, timeout=120, conf=MASTER_CONF):
    deadline = time.monotonic() + timeout
    pending = set(ids)
    while pending and time.monotonic() < deadline:
        try:
            # -t 5, then gather_job_timeout (30 s) for minions still starting, on a busy machine
            out = salt(["-L", ",".join(sorted(pending)), "test.ping", "--out=json", "--static", "-t", "5"],
                       conf=conf, timeout=180)
        except subprocess.TimeoutExpired:
            continue
        try:
            answered = {k for k, v in json.loads(out.stdout or "{}").items() if v is True}
        except json.JSONDecodeError:
            answered = set()
        pending -= answered
        if pending:
            time.sleep(1)
    if pending:
        raise LabError(f"minions did not answer: {sorted(pending)}; see {LAB_DIR}/hv*/minion/var/log/salt/minion")


def apply_formula(ids):
    """The bundle's formula, as an operator would apply it: TLS keys, libvirtd.conf, lock manager."""
    out = salt(["-L", ",".join(ids), "state.apply", "virt.keys,virt.libvirtd,virt.lockd", "--out=json",
                "--static", "-t", "120"], timeout=180)
    try:
        results = json.loads(out.stdout)
    except json.JSONDecodeError:
        raise LabError(f"state.apply failed: {out.stdout}{out.stderr}") from None
    for minion in ids:
        states = results.get(minion)
        if not isinstance(states, dict) or not all(st.get("result") for st in states.values()):
            raise LabError(f"the hypervisor formula failed on {minion}: {json.dumps(states, indent=2)}")


def start_libvirtd(n):
    holder = holder_pid(n)
    enter = ["nsenter", "-t", str(holder), "-m", "-n", "-u"]
    sh([*enter, *LIBVIRTD])
    for _ in range(200):
        if sh([*enter, "virsh", "-q", "-c", "qemu:///system", "uri"], check=False).returncode == 0:
            return
        time.sleep(0.1)
    raise LabError(f"libvirtd of {hv_name(n)} did not start; see {hv_dir(n)}/log-libvirt/libvirtd.log")


def sync(ids):
    # Dozens of minions syncing at once share two cores: give each of them time.
    wait = max(120, 6 * len(ids))
    out = salt(["-L", ",".join(ids), "saltutil.sync_all", "--out=json", "--static", "-t", str(wait)],
               timeout=wait + 60)
    if out.returncode != 0:
        raise LabError(f"saltutil.sync_all failed: {out.stdout}{out.stderr}")
    # The master too: a copy synced earlier (the docs walkthrough does it) would shadow the
    # repository's runner_dirs with old code.
    out = sh(in_netns([VENV / "bin" / "salt-run", "-c", MASTER_CONF, "saltutil.sync_all", "--out=json"]),
             check=False, timeout=180)
    if out.returncode != 0:
        raise LabError(f"salt-run saltutil.sync_all failed: {out.stdout}{out.stderr}")


# ---------------------------------------------------------------------------- commands


def libvirtd_pid(n):
    holder = holder_pid(n)
    return read_pid(f"/proc/{holder}/root/run/libvirt/libvirtd.pid") if holder else None


def healthy():
    if not netns_exists() or not master_pid():
        return False
    if syndic_mode() and not (top_pid() and syndic_pid()):
        return False
    return all(libvirtd_pid(n) for n in existing_hypervisors())


def up():
    check_prereqs()
    t0 = time.monotonic()
    if LAB_DIR.exists() and existing_hypervisors() and not healthy():
        log("found a half-started or stale lab: cleaning it first")
        down()
    LAB_DIR.mkdir(parents=True, exist_ok=True)
    # The storage the hypervisors share (virt.evacuate restarts VMs whose disks are there).
    (LAB_DIR / "shared-storage").mkdir(mode=0o755, exist_ok=True)
    # Mount points for each hypervisor's private copies (a fresh machine may lack some).
    for mount_point in ("/etc/pki", "/run/libvirt", "/var/lib/libvirt", "/var/log/libvirt",
                        "/var/cache/libvirt", "/srv/salt-images"):
        Path(mount_point).mkdir(parents=True, exist_ok=True)
    choose_topology()
    build_images()
    setup_netns()
    if syndic_mode():
        start_top()
    start_master()
    wanted = list(range(1, max(COUNT, len(existing_hypervisors())) + 1))
    fresh = [n for n in wanted if not holder_pid(n)]
    write_pillar(wanted)
    for n in fresh:
        start_hypervisor(n)
    ids = [hv_name(n) for n in wanted]
    wait_for_minions(ids)
    if fresh:
        sync(ids)
        apply_formula([hv_name(n) for n in fresh])
    for n in fresh:
        start_libvirtd(n)
        log(f"{hv_name(n)} up: libvirtd on qemu+tls://{hv_addr(n)}/system, host uuid {hv_uuid(n)}")
    for n in fresh:
        restart_minion(hv_name(n))  # starts the libvirt_events engine the first sync brought
    drop_stopped_hypervisors(wanted)
    drop_fakes(FAKES)
    if FAKES:
        for n in range(1, FAKES + 1):
            start_fake(n)
        fakes = [fake_name(n) for n in range(1, FAKES + 1)]
        wait_for_minions(fakes, timeout=max(120, 6 * FAKES))
        sync(fakes)
        ids += fakes
    if syndic_mode():
        start_syndic()
        start_syndic_minion()
        # Not synced: the bundle's grains would preload a copy of the library into this minion,
        # which saltutil.runner would then use instead of the master's (runner_dirs/utils_dirs).
        wait_for_minions([SYNDIC_ID])
        # Through the top master: every minion answers by way of the syndic.
        wait_for_minions([*ids, SYNDIC_ID], conf=TOP_CONF, timeout=max(120, 6 * len(ids)))
        sh(in_netns([VENV / "bin" / "salt-run", "-c", TOP_CONF, "saltutil.sync_all", "--out=json"]), timeout=180)
        log(f"top master on 127.0.0.1:{TOP_RET_PORT} (order_masters), salt-syndic {SYNDIC_ID}")
    log(f"ready in {time.monotonic() - t0:.1f}s: {'top master + syndic' if syndic_mode() else 'master'} + "
        f"{', '.join(ids)}")


def _netns_pids():
    if not netns_exists():
        return []
    out = sh(["ip", "netns", "pids", NETNS], check=False).stdout.split()
    return [int(p) for p in out if p.isdigit()]


def release_loop_devices():
    """Volume groups and loop devices the lab's storage pools left (tests/integration/test_pools.py
    removes its own; a test killed half-way may not): volume groups on loop devices backed by
    files under LAB_DIR are removed, the devices detached."""
    out = sh(["losetup", "-J", "-l"], check=False).stdout
    try:
        devices = json.loads(out or "{}").get("loopdevices", [])
    except json.JSONDecodeError:
        return
    for dev in devices:
        backing = dev.get("back-file") or ""
        if not backing.startswith(str(LAB_DIR) + "/"):
            continue
        for vg in sh(["pvs", "--noheadings", "-o", "vg_name", dev["name"]], check=False).stdout.split():
            sh(["vgremove", "-f", vg], check=False)
        sh(["pvremove", "-y", dev["name"]], check=False)
        sh(["losetup", "-d", dev["name"]], check=False)
        log(f"down: detached {dev['name']} ({backing})")


def down():
    pids = _netns_pids()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        for _ in range(50):
            pids = _netns_pids()
            if not pids:
                break
            time.sleep(0.1)
    if netns_exists():
        sh(["ip", "netns", "del", NETNS])
    for n in existing_hypervisors():
        (hv_dir(n) / "holder.pid").unlink(missing_ok=True)
        (hv_dir(n) / "ready").unlink(missing_ok=True)
    for pidfile in (MASTER / "var" / "run" / "salt-master.pid", SYNDIC_PIDFILE,
                    TOP / "var" / "run" / "salt-master.pid", SYNDIC_MINION / "var" / "run" / "salt-minion.pid"):
        pidfile.unlink(missing_ok=True)
    if attached():
        # A syndic-attach whose detach never ran (its daemons died with the namespace above).
        clear_attachment()
        log("down: removed a syndic attachment")
    release_loop_devices()
    log("down: no lab process or namespace left")


# ---------------------------------------------------------------------------- syndic attachment


def attached():
    """True when ``syndic-attach`` left a top master, syndic or minion syndic1 (or their state)
    on this one-master lab."""
    return not syndic_mode() and any(p.exists() for p in (TOP, SYNDIC_DIR, SYNDIC_MINION))


def _tail(path, lines=15):
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def syndic_attach(hypervisors="hypervisor*"):
    """A top master (``virt:hypervisors`` = ``hypervisors``), salt-syndic ``syndic1`` and the minion
    ``syndic1`` above this running one-master lab, as ``LAB_SYNDIC=1`` has them; its master keeps
    running as it is (salt-syndic has a config of its own) and the lab stays a one-master lab
    (no mark in LAB_DIR: ``LAB_MASTER=top`` selects the top master for lab/bin)."""
    if syndic_mode():
        raise LabError("this lab runs a syndic already (LAB_SYNDIC=1): nothing to attach")
    if not (netns_exists() and master_pid()):
        raise LabError("the lab is not running: labctl.py up first")
    hosts = [hv_name(n) for n in existing_hypervisors()
             if holder_pid(n) and fnmatch.fnmatchcase(hv_name(n), hypervisors)]
    if not hosts:
        raise LabError(f"no running hypervisor matches {hypervisors!r}")
    t0 = time.monotonic()
    syndic_detach(quiet=True)  # what an earlier attachment left: start from nothing
    try:
        start_top(hypervisors)
        start_syndic_minion()
        start_syndic()
        # A ping published before the minion is connected costs the master's gather_job_timeout.
        _wait_for_line(SYNDIC_MINION / "var" / "log" / "salt" / "minion", b"Minion is ready to receive requests")
        wait_for_minions([SYNDIC_ID])
        # Through the top master: the hypervisors and syndic1 answer by way of the syndic.
        wait_for_minions([*hosts, SYNDIC_ID], conf=TOP_CONF)
    except (LabError, subprocess.TimeoutExpired):
        for what, path in (("top master", TOP / "var" / "log" / "salt" / "master"), ("salt-syndic", SYNDIC_LOG),
                           (f"minion {SYNDIC_ID}", SYNDIC_MINION / "var" / "log" / "salt" / "minion")):
            print(f"lab: {what} log ({path}), last lines:\n{_tail(path)}", file=sys.stderr)
        raise
    log(f"syndic attached in {time.monotonic() - t0:.1f}s: top master on 127.0.0.1:{TOP_RET_PORT} "
        f"(LAB_MASTER=top), salt-syndic {SYNDIC_ID}, virt:hypervisors {hypervisors!r} ({', '.join(hosts)})")


def _wait_for_line(path, needle, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if needle in Path(path).read_bytes():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise LabError(f"{needle.decode()!r} not in {path} after {timeout}s")


def syndic_detach(quiet=False):
    """Undo ``syndic_attach``: stop the top master, salt-syndic and minion syndic1 (and whatever
    they started), delete syndic1's key on the lab's master, remove what the attachment wrote.
    Idempotent; the lab's master and hypervisors are not touched."""
    if syndic_mode():
        raise LabError("this lab runs the syndic topology (LAB_SYNDIC=1): it has no attachment to remove")
    stop_daemons([(SYNDIC_MINION / "var" / "run" / "salt-minion.pid", SYNDIC_MINION / "etc" / "salt"),
                  (SYNDIC_PIDFILE, SYNDIC_CONF),
                  (TOP / "var" / "run" / "salt-master.pid", TOP_CONF)])
    found = attached() or any(p.exists() for p in SYNDIC_LEFTOVERS)
    clear_attachment()
    if found and not quiet:
        log("syndic detached: top master, salt-syndic and minion syndic1 stopped, syndic1's key deleted")


def clear_attachment():
    """The state of a stopped attachment: syndic1's key on the lab's master, the top master's
    and the syndic's directories, what salt-syndic made under the master's root."""
    pki = MASTER_CONF / "pki" / "master"
    keys = [pki / d / SYNDIC_ID for d in ("minions", "minions_pre", "minions_rejected", "minions_denied")]
    if any(k.exists() for k in keys) and (VENV / "bin" / "salt-key").exists():
        # As an operator deletes a key: salt-key also drops the master's cache of that minion.
        argv = [VENV / "bin" / "salt-key", "-c", MASTER_CONF, "-y", "-d", SYNDIC_ID]
        sh(in_netns(argv) if netns_exists() else argv, check=False, timeout=60)
    for key in keys:
        key.unlink(missing_ok=True)
    for path in (TOP, SYNDIC_DIR, SYNDIC_MINION, *SYNDIC_LEFTOVERS):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _cmdline(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _naming(conf_dirs):
    """Live processes whose command line names one of ``conf_dirs`` (``-c DIR``): a daemon started
    with it and every process it forked (its title keeps the command line), and CLI calls on it."""
    markers = [f" {d} " for d in map(str, conf_dirs)]
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            cmd = f" {_cmdline(entry.name)} "
            if any(m in cmd for m in markers) and read_pid_state(entry.name):
                found.append(int(entry.name))
    return found


def _signal(pids, sig):
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def stop_daemons(daemons, timeout=20):
    """Stop Salt daemons started with ``-c DIR -d`` by their pid files, then whatever else still
    names their config dirs (their forks, CLI calls on them); ``daemons`` is ``[(pid file, DIR)]``.
    The pid files are removed. A pid file's pid that does not name its DIR is left alone."""
    conf_dirs = [conf_dir for _pidfile, conf_dir in daemons]
    ours = set(_naming(conf_dirs))
    leaders = [pid for pid in (read_pid(pidfile) for pidfile, _dir in daemons) if pid in ours]
    # The daemon itself first: it stops its own processes (and would restart one killed alone).
    _signal(leaders, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(read_pid_state(pid) for pid in leaders) and time.monotonic() < deadline:
        time.sleep(0.1)
    rest = _naming(conf_dirs)
    _signal(rest, signal.SIGTERM)
    for _ in range(20):
        if not rest:
            break
        time.sleep(0.1)
        rest = _naming(conf_dirs)
    for _ in range(50):
        if not rest:
            break
        _signal(rest, signal.SIGKILL)
        time.sleep(0.1)
        rest = _naming(conf_dirs)
    if rest:
        raise LabError(f"processes survived SIGKILL: {rest}")
    for pidfile, _dir in daemons:
        Path(pidfile).unlink(missing_ok=True)


def status():
    ok = True
    print(f"netns {NETNS}: {'present' if netns_exists() else 'absent'}")
    ok &= netns_exists()
    daemons = [("salt-master", master_pid())]
    if syndic_mode():
        daemons = [("top salt-master", top_pid()), ("syndic's salt-master", master_pid()),
                   (f"salt-syndic {SYNDIC_ID}", syndic_pid()), (f"salt-minion {SYNDIC_ID}", syndic_minion_pid())]
    for what, pid in daemons:
        print(f"{what}: {f'running pid {pid}' if pid else 'stopped'}")
        ok &= bool(pid)
    if attached():  # (syndic-attach: not part of the lab's health)
        for what, pid in (("attached top salt-master", top_pid()), (f"attached salt-syndic {SYNDIC_ID}", syndic_pid()),
                          (f"attached salt-minion {SYNDIC_ID}", syndic_minion_pid())):
            print(f"{what}: {f'running pid {pid}' if pid else 'stopped'}")
    for n in existing_hypervisors() or range(1, COUNT + 1):
        hp = holder_pid(n)
        line = f"{hv_name(n)}: "
        if not hp:
            line += "stopped"
            ok = False
        else:
            libvirtd = libvirtd_pid(n)
            line += f"namespace pid {hp}, libvirtd {f'pid {libvirtd}' if libvirtd else 'DOWN'}"
            line += f", tls {hv_addr(n)}:16514, host uuid {hv_uuid(n)}"
            ok &= bool(libvirtd)
        print(line)
    return 0 if ok else 1


def running_hypervisor(name):
    """The number of running hypervisor ``name`` (``hypervisorN``)."""
    n = int(name.removeprefix("hypervisor")) if name.removeprefix("hypervisor").isdigit() else 0
    if not (n and holder_pid(n)):
        raise LabError(f"{name} is not running (labctl.py up)")
    return n


def crash(name):
    """Kill every process of hypervisor ``name`` at once, as a power loss would (its guests,
    libvirtd, virtlockd, salt-minion); ``labctl.py up`` brings it back, with the domain
    definitions it had on disk."""
    n = running_hypervisor(name)
    holder = holder_pid(n)
    mnt = os.readlink(f"/proc/{holder}/ns/mnt")
    # libvirtd starts each QEMU in a mount namespace of its own: found by its pid file.
    guests = [read_pid(f) for f in (hv_dir(n) / "run-libvirt" / "qemu").glob("*.pid")]

    def members():
        pids = [pid for pid in guests if pid and read_pid_state(pid)]
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if os.readlink(entry / "ns" / "mnt") == mnt and read_pid_state(entry.name):
                        pids.append(int(entry.name))
                except OSError:
                    continue
        return pids

    for _ in range(50):
        pids = members()
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    else:
        raise LabError(f"{name}: processes survived SIGKILL: {members()}")
    for marker in ("holder.pid", "ready"):
        (hv_dir(n) / marker).unlink(missing_ok=True)
    log(f"{name} crashed: every process of it killed")


def read_pid_state(pid):
    """True while ``pid`` runs (a zombie waiting for its parent does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def env():
    """Shell variables for the lab/bin wrappers."""
    print(f"LAB_DIR={LAB_DIR}\nLAB_NETNS={NETNS}\nVENV={VENV}\nMASTER_CONF={MASTER_CONF}")
    if syndic_mode() or attached():
        print(f"TOP_CONF={TOP_CONF}")


def main(argv):
    cmd = argv[1] if len(argv) > 1 else "status"
    try:
        if cmd == "up":
            up()
        elif cmd == "down":
            down()
        elif cmd == "status":
            return status()
        elif cmd == "env":
            env()
        elif cmd == "start-master":  # after a crash test: only the master, hypervisors untouched
            start_master()
            wait_for_minions([hv_name(n) for n in existing_hypervisors()], timeout=180)
        elif cmd == "syndic-attach" and len(argv) in (2, 3):  # a top master + syndic over this lab
            syndic_attach(argv[2] if len(argv) == 3 else "hypervisor*")
        elif cmd == "syndic-detach" and len(argv) == 2:
            syndic_detach()
        elif cmd == "crash" and len(argv) == 3:  # evacuation tests: a hypervisor loses power
            crash(argv[2])
        elif cmd == "libvirtd" and len(argv) == 3:  # after a test stopped it: as up starts it
            start_libvirtd(running_hypervisor(argv[2]))
        elif cmd == "minion" and len(argv) in (3, 4):
            restart_minion(argv[2], argv[3] if len(argv) == 4 else None)
        else:
            print(__doc__)
            return 2
    except LabError as exc:
        print(f"lab: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
