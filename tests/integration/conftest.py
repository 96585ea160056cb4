"""Integration tests: the lab (salt-master + hypervisor minions in namespaces, real libvirtd).

``make test`` brings the lab up before pytest runs; if it is not up, these tests fail (they
never skip). Helpers run the lab's wrappers (lab/bin/salt, salt-run, virsh...) so the tests
exercise exactly what an operator types.
"""

import json
import os
import re
import subprocess
import sys
import time
import uuid

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(REPO, "lab", "bin")
LAB_NETNS = os.environ.get("LAB_NETNS", "svlab")
LAB_DIR = os.environ.get("LAB_DIR", "/var/lib/svlab")
# The Debian guest with a real salt-minion (lab/image/build-minion-image.sh), cached.
IMAGE_DIR = os.environ.get("SALTVIRT_MINION_IMAGE_DIR", "/var/cache/salt-virt-lab/minion-image")
IMAGE_NAME = "debian-minion.qcow2"
START_TIMEOUT = 300
PYTHON = os.path.join(REPO, ".venv", "bin", "python")
TENANT = "tenant-forger"
TENANT_SCRIPT = os.path.join(REPO, "tests", "integration", "tenant_minion.py")
TENANT_KEY = "{conf}/pki/minion.pem"  # the tenant's private key, under its config directory


class Lab:
    """Thin access to the running lab through its wrappers (``env``: another lab's LAB_* variables)."""

    def __init__(self, env=None):
        self.env = env

    def run(self, tool, *args, timeout=300, check=True):
        proc = subprocess.run(
            [os.path.join(BIN, tool), *map(str, args)], capture_output=True, text=True, timeout=timeout,
            env=self.env,
        )
        if check and proc.returncode != 0:
            command = " ".join(map(str, args))
            raise AssertionError(f"{tool} {command} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def salt_json(self, *args, timeout=300):
        out = self.run("salt", *args, "--out=json", "--static", timeout=timeout).stdout
        return json.loads(out)

    def run_json(self, *args, timeout=600, check=True):
        proc = self.run("salt-run", *args, "--out=json", timeout=timeout, check=check)
        return proc, _last_json(proc.stdout)

    def calls(self, target, calls, timeout=400):
        """``[(function, argument), ...]`` on ``target`` as one job (Salt's compound call: each
        runs whatever the others' outcome), errors ignored: for clean-ups."""
        if calls:
            self.run("salt", target, ",".join(f for f, _a in calls), ",".join(str(a) for _f, a in calls),
                     check=False, timeout=timeout)

    def hv(self, hypervisor, *cmd, check=True, timeout=120):
        return self.run("hv-exec", hypervisor, *cmd, check=check, timeout=timeout)

    def labctl(self, *args, timeout=300, check=True):
        """``lab/labctl.py`` on this lab (its start and restart commands wait until the daemon answers)."""
        proc = subprocess.run([os.path.join(REPO, ".venv", "bin", "python"), os.path.join(REPO, "lab", "labctl.py"),
                               *args], capture_output=True, text=True, timeout=timeout, env=self.env)
        if check:
            assert proc.returncode == 0, f"labctl {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
        return proc

    def start_libvirtd(self, hypervisor):
        """Start a hypervisor's libvirtd again, as the lab starts it; once it answers."""
        return self.labctl("libvirtd", hypervisor, timeout=120)

    def serial_log(self, hypervisor, vm):
        return self.hv(hypervisor, "cat", f"/var/log/libvirt/qemu/{vm}-serial.log", check=False).stdout

    def wait_serial(self, hypervisor, vm, pattern, timeout=120):
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.serial_log(hypervisor, vm)
            match = re.search(pattern, text)
            if match:
                return match
            time.sleep(1)
        raise AssertionError(f"{pattern!r} not on {vm}'s console within {timeout}s; last output:\n{text[-2000:]}")

    def domains(self, hypervisor):
        out = self.run("virsh", hypervisor, "list", "--all", "--name").stdout
        return [line.strip() for line in out.splitlines() if line.strip()]

    def purge_everywhere(self, name):
        """VM ``name`` gone from every hypervisor of the lab whatever state a failure left it in
        (defined on two hosts, say), its placement reservation and minion key too."""
        lab_dir = (self.env or os.environ).get("LAB_DIR", "/var/lib/svlab")
        self.run("salt-run", "virt.purge", name, check=False)  # also drops its placement reservation
        for hyper in ("hypervisor1", "hypervisor2", "hypervisor3"):
            if not os.path.exists(f"{lab_dir}/hv{hyper[-1]}/holder.pid"):
                continue
            if name in self.domains(hyper):
                self.run("salt", hyper, "virt.purge", name, check=False)
        pki = os.path.join(lab_dir, "master/etc/salt/pki/master")
        if any(os.path.exists(os.path.join(pki, d, name))
               for d in ("minions", "minions_pre", "minions_rejected", "minions_denied")):
            self.run("salt-key", "-y", "-d", name, check=False)  # (virt.purge deletes it: rarely left)


def _last_json(text):
    """salt-run prints progress lines before the JSON return: parse the last JSON document."""
    start = text.find("{")
    while start != -1:
        try:
            return json.loads(text[start:])
        except json.JSONDecodeError:
            start = text.find("\n{", start + 1)
            start = start + 1 if start != -1 else -1
    raise AssertionError(f"no JSON in salt-run output:\n{text}")


@pytest.fixture(scope="session", autouse=True)
def _lab_started():
    """``make test`` starts the lab in the background while the functional tests run
    (``LAB_UP_STATUS``: its log; ``<log>.rc`` its exit status once done): wait for it."""
    log = os.environ.get("LAB_UP_STATUS")
    if not log:
        return
    deadline = time.monotonic() + 1200
    while not os.path.exists(f"{log}.rc"):
        if time.monotonic() > deadline:
            pytest.fail(f"the lab did not come up within 20 minutes; see {log}")
        time.sleep(0.5)
    with open(f"{log}.rc") as fh:
        rc = fh.read().strip()
    if rc != "0":
        with open(log) as fh:
            pytest.fail(f"the lab did not come up (labctl up exited {rc}):\n{fh.read()[-3000:]}")


@pytest.fixture(scope="session")
def lab(_lab_started):
    if not os.path.exists(f"/run/netns/{LAB_NETNS}"):
        pytest.fail("the lab is not running: `make lab-up` (make test does it)")
    lab = Lab()
    # The bundle under test is the working tree: make the minions load the current code.
    lab.run("salt", "hypervisor*", "saltutil.sync_all", timeout=300)
    lab.run("salt-run", "saltutil.sync_all", timeout=300)  # the master's copy of the library too
    return lab


@pytest.fixture
def vm(lab):
    """A unique VM name; the VM is purged from every hypervisor (and its key deleted) afterwards."""
    name = f"it-{uuid.uuid4().hex[:6]}"
    yield name
    lab.purge_everywhere(name)


@pytest.fixture(scope="session")
def minion_image(lab):
    """Build (or find cached) the minion image and publish it on the lab's file server."""
    return publish_minion_image(LAB_DIR)


def publish_minion_image(lab_dir):
    """Build (or find cached) the minion image; publish it as salt://debian-minion.qcow2 of the lab
    whose state directory is ``lab_dir``."""
    t0 = time.monotonic()
    proc = subprocess.run(["bash", os.path.join(REPO, "lab", "image", "build-minion-image.sh"), IMAGE_DIR],
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, f"minion image build failed:\n{proc.stdout}\n{proc.stderr}"
    print(f"\nminion image ready in {time.monotonic() - t0:.1f}s: {proc.stdout.strip().splitlines()[-1]}")
    src = os.path.join(IMAGE_DIR, IMAGE_NAME)
    dest = os.path.join(lab_dir, "images", IMAGE_NAME)
    if not (os.path.exists(dest) and os.path.samefile(src, dest)):
        tmp = f"{dest}.tmp"
        if os.path.exists(tmp):
            os.unlink(tmp)
        try:
            os.link(src, tmp)
        except OSError:
            subprocess.run(["cp", "--sparse=always", src, tmp], check=True)
        os.replace(tmp, dest)
    return f"salt://{IMAGE_NAME}"


def mac_for(vm):
    """A MAC from the VM name's hex suffix: the guest image derives its 10.231.0.N from it."""
    digest = int(vm.split("-")[-1], 16)
    return f"52:54:00:e2:{(digest >> 8) & 0xFF:02x}:{digest & 0xFF:02x}"


@pytest.fixture(scope="session")
def three_hypervisors(lab):
    """The lab with a third hypervisor: grown (``LAB_HYPERVISORS=3 labctl.py up``) if it has two."""
    lab_dir = os.environ.get("LAB_DIR", "/var/lib/svlab")
    if not os.path.exists(f"{lab_dir}/hv3/holder.pid"):
        env = dict(os.environ, LAB_HYPERVISORS="3")
        # (labctl up syncs the new hypervisor and the master itself)
        subprocess.run([sys.executable, os.path.join(REPO, "lab", "labctl.py"), "up"], env=env, check=True,
                       timeout=900)
    return lab


def in_lab(*args, **kwargs):
    """``tenant_minion.py`` with ``args``, inside the lab's network namespace."""
    return subprocess.run(["nsenter", f"--net=/run/netns/{LAB_NETNS}", PYTHON, TENANT_SCRIPT, *args],
                          capture_output=True, text=True, timeout=120, **kwargs)


@pytest.fixture
def tenant(lab, tmp_path):
    """A minion that is not a hypervisor, its key accepted as a seeded VM's is (by the lab's
    master: the syndic's on a syndic lab): ``send(events)`` (tests/integration/tenant_minion.py)."""
    conf = tmp_path / "tenant"
    conf.mkdir()
    (conf / "minion").write_text(json.dumps({"id": TENANT, "master": "127.0.0.1", "root_dir": str(conf),
                                             "pki_dir": str(conf / "pki"), "user": "root"}))
    made = in_lab(str(conf), "keys")
    assert made.returncode == 0, made.stderr
    accepted = os.path.join(LAB_DIR, "master/etc/salt/pki/master/minions", TENANT)
    with open(accepted, "w") as fh:
        fh.write(made.stdout.strip() + "\n")

    def send(events):
        sent = in_lab(str(conf), "events", json.dumps(events))
        assert sent.returncode == 0, sent.stdout + sent.stderr  # the master took it (it answers nothing)

    send.conf, send.pub = str(conf), made.stdout.strip()
    yield send
    os.unlink(accepted)
