"""The lab's guest image (lab/image/build.sh): build it, boot it under QEMU TCG, read its console.

Runs real QEMU (no libvirt): about 20-30 s in all.
"""

import io
import os
import re
import shutil
import signal
import subprocess
import time

import pycdlib
import pytest
import salt.crypt
import salt.utils.crypt

pytestmark = pytest.mark.functional

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(REPO, "lab", "image", "build.sh")
PART_OFFSET = 1024 * 1024  # the FAT partition starts at sector 2048
BOOT_TIMEOUT = 120
MTOOLS_ENV = dict(os.environ, MTOOLS_SKIP_CHECK="1")


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("guest-image")
    start = time.monotonic()
    proc = subprocess.run([BUILD, str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    print(f"build took {time.monotonic() - start:.1f} s")
    yield out
    shutil.rmtree(out, ignore_errors=True)


def _lines(log_path):
    try:
        with open(log_path, "rb") as fp:
            data = fp.read()
    except FileNotFoundError:
        return []
    return data.decode("utf-8", "replace").replace("\r", "").split("\n")


def boot(log_path, drives, until, timeout=BOOT_TIMEOUT):
    """Boot QEMU (TCG) with the given -drive specs until a console line matches `until`.

    Returns (console lines, seconds to the match).  QEMU is always killed.
    """
    cmd = [
        "qemu-system-x86_64",
        "-machine", "accel=tcg",
        "-m", "256",
        "-smp", "1",
        "-nographic",
        "-display", "none",
        "-monitor", "none",
        "-serial", f"file:{log_path}",
        "-no-reboot",
        "-nic", "none",
    ]
    for drive in drives:
        cmd += ["-drive", drive]
    pattern = re.compile(until)
    start = time.monotonic()
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        while True:
            lines = _lines(log_path)
            if any(pattern.fullmatch(line) for line in lines):
                return lines, time.monotonic() - start
            if proc.poll() is not None:
                out = proc.stdout.read().decode(errors="replace")
                console = "\n".join(lines)
                pytest.fail(f"qemu exited ({proc.returncode}): {out}\nconsole:\n{console}")
            if time.monotonic() - start > timeout:
                console = "\n".join(lines)
                pytest.fail(f"no console line matching {until!r} in {timeout} s:\n{console}")
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()


def values(lines, prefix):
    return [line[len(prefix):] for line in lines if line.startswith(prefix)]


def mtools(*args):
    subprocess.run(args, check=True, env=MTOOLS_ENV, capture_output=True)


def test_build_is_idempotent(image_dir):
    img = image_dir / "centos.img"
    qcow = image_dir / "centos.qcow2"
    before = (img.stat().st_mtime_ns, qcow.stat().st_mtime_ns)
    proc = subprocess.run([BUILD, str(image_dir)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "up to date" in proc.stdout
    assert (img.stat().st_mtime_ns, qcow.stat().st_mtime_ns) == before
    assert img.stat().st_size == 64 * 1024 * 1024
    info = subprocess.run(
        ["qemu-img", "info", "--output=json", str(qcow)], capture_output=True, text=True, check=True
    ).stdout
    assert '"format": "qcow2"' in info
    assert not [p for p in os.listdir(image_dir) if p.startswith(".build")]


def test_boot_qcow2_heartbeat(image_dir, tmp_path):
    log = tmp_path / "console.log"
    drive = f"file={image_dir / 'centos.qcow2'},if=virtio,format=qcow2,snapshot=on"
    lines, took = boot(log, [drive], r"SALTVIRT-HEARTBEAT 3")
    print(f"qcow2: heartbeat 3 after {took:.1f} s")
    assert values(lines, "SALTVIRT-BOOT hostname=") == ["none"]
    assert values(lines, "SALTVIRT-HEARTBEAT ")[:3] == ["1", "2", "3"]
    assert "SALTVIRT-DISK-WRITE ok" in lines
    assert not values(lines, "SALTVIRT-SEED: ")
    assert not values(lines, "SALTVIRT-WARN")


def test_boot_seeded_raw(image_dir, tmp_path):
    # disk seed: /etc/salt/minion + the minion's public key on the boot partition
    _, disk_pub = salt.crypt.gen_keys(2048)
    (tmp_path / "minion").write_text("master: 10.0.2.2\nid: vm1\n")
    (tmp_path / "minion.pub").write_text(disk_pub)
    disk_finger = salt.utils.crypt.pem_finger(str(tmp_path / "minion.pub"), sum_type="sha256")

    img = tmp_path / "seeded.img"
    subprocess.run(["cp", "--sparse=always", str(image_dir / "centos.img"), str(img)], check=True)
    try:
        _boot_seeded(img, tmp_path, disk_finger)
    finally:
        img.unlink()


def _boot_seeded(img, tmp_path, disk_finger):
    target = f"{img}@@{PART_OFFSET}"
    mtools("mmd", "-i", target, "::/etc/salt", "::/etc/salt/pki", "::/etc/salt/pki/minion")
    mtools("mcopy", "-i", target, str(tmp_path / "minion"), "::/etc/salt/minion")
    mtools("mcopy", "-i", target, str(tmp_path / "minion.pub"), "::/etc/salt/pki/minion/minion.pub")

    # cloud-init NoCloud seed: ISO9660 labelled cidata, attached as a second virtio disk
    _, seed_pub = salt.crypt.gen_keys(2048)
    (tmp_path / "seed.pub").write_text(seed_pub)
    seed_finger = salt.utils.crypt.pem_finger(str(tmp_path / "seed.pub"), sum_type="sha256")
    key_block = "".join(f"    {line}\n" for line in seed_pub.strip().splitlines())
    user_data = (
        "#cloud-config\n"
        "salt_minion:\n"
        "  conf:\n"
        "    master: 10.0.2.2\n"
        "    id: vm-cidata\n"
        "  public_key: |\n"
        f"{key_block}"
        "  private_key: |\n"
        "    -----BEGIN RSA PRIVATE KEY-----\n"
        "    not-used\n"
        "    -----END RSA PRIVATE KEY-----\n"
    ).encode()
    meta_data = b"instance-id: iid-vm-cidata\nlocal-hostname: vm-cidata\n"
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident="cidata")
    for iso_name, name, data in (
        ("/USERDATA.;1", "user-data", user_data),
        ("/METADATA.;1", "meta-data", meta_data),
    ):
        iso.add_fp(io.BytesIO(data), len(data), iso_name, rr_name=name, joliet_path=f"/{name}")
    seed_iso = tmp_path / "seed.iso"
    iso.write(str(seed_iso))
    iso.close()

    log = tmp_path / "console.log"
    lines, took = boot(
        log,
        [
            f"file={img},if=virtio,format=raw",
            f"file={seed_iso},if=virtio,format=raw,readonly=on",
        ],
        r"SALTVIRT-HEARTBEAT 2",
    )
    print(f"seeded raw: heartbeat 2 after {took:.1f} s")
    assert values(lines, "SALTVIRT-SEED: ") == ["disk", "cidata"]
    assert values(lines, "SALTVIRT-MINION-ID: ") == ["vm1", "vm-cidata"]
    assert values(lines, "SALTVIRT-MINION-KEY: ") == [disk_finger, seed_finger]
    # the seed sets the kernel hostname (cidata comes last and wins)
    assert values(lines, "SALTVIRT-BOOT hostname=") == ["vm-cidata"]
    # each seed's lines follow its SALTVIRT-SEED line
    seed_lines = [line for line in lines if re.match(r"SALTVIRT-(SEED|MINION)", line)]
    assert seed_lines == [
        "SALTVIRT-SEED: disk",
        "SALTVIRT-MINION-ID: vm1",
        f"SALTVIRT-MINION-KEY: {disk_finger}",
        "SALTVIRT-SEED: cidata",
        "SALTVIRT-MINION-ID: vm-cidata",
        f"SALTVIRT-MINION-KEY: {seed_finger}",
    ]
    assert "SALTVIRT-DISK-WRITE ok" in lines

    # what the guest wrote to its disk is there after QEMU is gone
    hb = subprocess.run(
        ["mtype", "-i", target, "::/heartbeat.log"],
        env=MTOOLS_ENV, capture_output=True, text=True, check=True,
    ).stdout.split()
    assert hb[:1] == ["1"]


def _guest_pem_finger(tmp_path):
    """The guest's pem_finger() shell function from build.sh, run by the host's busybox
    (its own applets only, as in the guest)."""
    text = open(BUILD).read()
    func = re.search(r"^pem_finger\(\) \{\n.*?^\}\n", text, re.M | re.S).group(0)
    applets = tmp_path / "applets"
    applets.mkdir()
    for name in ("grep", "sed", "sha256sum", "cut", "printf"):
        os.symlink("/bin/busybox", applets / name)
    script = "CR=$(printf '\\r')\n" + func + 'pem_finger "$1"\n'

    def finger(path):
        return subprocess.run(
            ["/bin/busybox", "sh", "-c", script, "sh", str(path)],
            env={"PATH": str(applets)}, capture_output=True, text=True, check=True,
        ).stdout.strip()

    return finger


def test_guest_pem_finger_matches_salt(tmp_path):
    finger = _guest_pem_finger(tmp_path)
    _, pub = salt.crypt.gen_keys(2048)
    body = pub.strip().splitlines()
    variants = {
        "plain": pub,
        "no-final-newline": pub.rstrip("\n"),
        "crlf": "\r\n".join(body) + "\r\n",
        "blank-lines": "\n\n" + body[0] + "\n  \n" + "\n".join(body[1:]) + "\n\n\t\n",
    }
    for name, content in variants.items():
        path = tmp_path / f"{name}.pem"
        path.write_bytes(content.encode())
        expected = salt.utils.crypt.pem_finger(str(path), sum_type="sha256")
        assert re.fullmatch(r"([0-9a-f]{2}:){31}[0-9a-f]{2}", expected)
        assert finger(path) == expected, name
