#!/bin/bash
# Build a small Debian bookworm guest with a real salt-minion (Salt 3008.4 in a venv at
# /opt/salt) for salt-virt's end-to-end seeding tests:
#
#   lab/image/build-minion-image.sh OUTDIR   ->  OUTDIR/debian-minion.qcow2
#
# Disk layout (MBR): partition 1 = FAT16 "SVBOOT" with syslinux, the host kernel and the host
# initrd; partition 2 = ext4 "svroot" holding the root filesystem (made with `mke2fs -d`, so
# nothing is ever mounted: no loop or nbd devices).
#
# The guest runs a small shell init (/sbin/saltvirt-init) instead of systemd:
#   1. seeds itself from a cloud-init NoCloud device labelled `cidata` if one is attached
#      (salt_minion: conf / public_key / private_key of user-data -> /etc/salt), else uses
#      the /etc/salt a mount-based seeder (virt.init seed_cmd=seed.apply) wrote;
#   2. brings eth0 up with a static address 10.231.0.N/24, N derived from the last byte of the
#      MAC address (N = 2 + byte % 252), default route via 10.231.0.1 (the lab's br0);
#      a `saltvirt.ip=A.B.C.D/NN` kernel argument or /etc/saltvirt/ip overrides it;
#   3. starts salt-minion and prints SALTVIRT-* lines on the serial console.
#
# Caches (SALTVIRT_LAB_CACHE, default /var/cache/salt-virt-lab):
#   wheels-salt-<ver>/         wheels of salt and its dependencies (built on the host: timelib
#                              has no wheel on PyPI; pinned to the project venv's versions)
#   rootfs-<key>.tar           debootstrap + venv, keyed by package list, Salt version and
#                              wheel set: a change to the init script only redoes the cheap end
# OUTDIR/debian-minion.inputs  manifest of the last build: rerunning with the same inputs is a
#                              no-op (SALTVIRT_IMAGE_FORCE=1 rebuilds).
#
# Environment: SALTVIRT_DEBIAN_MIRROR (default: the host's apt mirror or deb.debian.org),
# SALTVIRT_IMAGE_KVER (kernel, default newest in /boot with modules), VENV (the project venv
# whose pip builds the wheels, default ./.venv).
#
# Needs (Debian): debootstrap e2fsprogs dosfstools mtools syslinux syslinux-common fdisk
# qemu-utils; network access to the Debian mirror and PyPI (first build only).
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi

OUTDIR=$1
SCRIPT=$(readlink -f "$0")
REPO=$(cd "$(dirname "$SCRIPT")/../.." && pwd)
NAME=debian-minion
SALT_VERSION=3008.4
SUITE=bookworm
PACKAGES=python3,python3-venv,iproute2,kmod,procps,ca-certificates
CACHE=${SALTVIRT_LAB_CACHE:-/var/cache/salt-virt-lab}
VENV=${VENV:-$REPO/.venv}
BOOT_MIB=96
PART_START=2048                  # sectors (1 MiB alignment)

die() { echo "build-minion-image.sh: $*" >&2; exit 1; }
say() { echo "build-minion-image.sh: $*"; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# --- inputs ------------------------------------------------------------------------------
if [ -n "${SALTVIRT_IMAGE_KVER:-}" ]; then
    KVER=$SALTVIRT_IMAGE_KVER
else
    KVER=
    for k in $(ls /boot/vmlinuz-* 2>/dev/null | sed 's,^/boot/vmlinuz-,,' | sort -V); do
        [ -d "/lib/modules/$k" ] && [ -r "/boot/initrd.img-$k" ] && KVER=$k
    done
    [ -n "$KVER" ] || die "no kernel with modules and initrd found in /boot"
fi
KERNEL=/boot/vmlinuz-$KVER
INITRD=/boot/initrd.img-$KVER
MBR_BIN=/usr/lib/syslinux/mbr/mbr.bin
for f in "$KERNEL" "$INITRD" "$MBR_BIN"; do [ -r "$f" ] || die "missing input $f"; done
for tool in debootstrap mke2fs mkfs.vfat mcopy syslinux sfdisk qemu-img tar; do
    command -v "$tool" >/dev/null || die "missing tool $tool"
done
[ -x "$VENV/bin/pip" ] || die "no project venv at $VENV (make install)"
if [ -z "${SALTVIRT_DEBIAN_MIRROR:-}" ]; then
    SALTVIRT_DEBIAN_MIRROR=$(
        { grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}'
          grep -hs '^deb ' /etc/apt/sources.list | awk '{print $2}'; } |
        grep -v security | head -n 1 || true
    )
    SALTVIRT_DEBIAN_MIRROR=${SALTVIRT_DEBIAN_MIRROR:-http://deb.debian.org/debian}
fi
# Kernel modules the host initrd lacks: the NoCloud ISO needs isofs; virtio_net and its
# dependencies are copied too so the rootfs works with any initrd.
EXTRA_MODULES=$(
    for m in isofs virtio_net; do
        modprobe -S "$KVER" -d / --show-depends "$m" || die "module $m not found for $KVER"
    done | awk '$1 == "insmod" { print $2 }' | sort -u
)

mkdir -p "$OUTDIR" "$CACHE"
OUTDIR=$(readlink -f "$OUTDIR")
QCOW=$OUTDIR/$NAME.qcow2
STAMP=$OUTDIR/$NAME.inputs
exec 9>"$OUTDIR/.$NAME.lock"
flock 9

ROOTFS_KEY=$(printf '%s\n' "$SUITE" "$PACKAGES" "$SALT_VERSION" "$SALTVIRT_DEBIAN_MIRROR" \
    "$(sed -n '/^# --- rootfs stage/,/^# --- end rootfs stage/p' "$SCRIPT")" |
    sha256sum | cut -c1-16)
ROOTFS_TAR=$CACHE/rootfs-$SUITE-salt$SALT_VERSION-$ROOTFS_KEY.tar
# (the script's content, not its path: the image of one checkout serves any other)
MANIFEST=$(echo "kver $KVER"; echo "rootfs $ROOTFS_KEY"; sha256sum < "$SCRIPT"
           stat -L -c '%n %s %Y' "$KERNEL" "$INITRD" "$MBR_BIN" $EXTRA_MODULES)
if [ "${SALTVIRT_IMAGE_FORCE:-0}" != 1 ] && [ -f "$QCOW" ] && [ -f "$STAMP" ] &&
   [ "$(cat "$STAMP")" = "$MANIFEST" ]; then
    say "$QCOW is up to date"
    exit 0
fi

T_START=$(now)
WORK=$(mktemp -d "$OUTDIR/.build-$NAME.XXXXXX")
ROOT=$WORK/rootfs
cleanup() {
    # debootstrap mounts proc/sys in the target while it runs; never leave them behind
    for m in $(awk -v r="$WORK" 'index($2, r) == 1 { print $2 }' /proc/mounts | sort -r); do
        umount -l "$m" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

# --- rootfs stage (cached as $ROOTFS_TAR; this block's text is part of the cache key) ----
build_rootfs() {
    local wheels=$CACHE/wheels-salt-$SALT_VERSION t0
    # 1. wheels, built on the host with the project venv's pip (same Python 3.11 / glibc as
    #    bookworm); pinned to what the project venv runs, so builds are repeatable.
    t0=$(now)
    if [ ! -f "$wheels/.complete" ]; then
        rm -rf "$wheels"; mkdir -p "$wheels"
        "$VENV/bin/pip" freeze --all 2>/dev/null | grep -E '^[A-Za-z0-9_.-]+==' > "$WORK/pins.txt"
        "$VENV/bin/pip" wheel -q --wheel-dir "$wheels" -c "$WORK/pins.txt" "salt==$SALT_VERSION" \
            2> >(grep -v 'is ignored' >&2)
        touch "$wheels/.complete"
    fi
    say "wheels ready ($(ls "$wheels" | grep -c '\.whl$') wheels, $(elapsed "$t0") s)"
    # 2. Debian minimal system
    t0=$(now)
    mkdir -p "$ROOT" "$CACHE/debs"
    debootstrap --variant=minbase --include="$PACKAGES" --cache-dir="$CACHE/debs" \
        "$SUITE" "$ROOT" "$SALTVIRT_DEBIAN_MIRROR" > "$WORK/debootstrap.log" 2>&1 ||
        { tail -n 30 "$WORK/debootstrap.log" >&2; die "debootstrap failed"; }
    say "debootstrap done ($(elapsed "$t0") s)"
    # 3. Salt in a venv, installed offline from the wheels (no network, proxy or CA needed
    #    inside the chroot; the host's pip settings are kept out with env -i)
    t0=$(now)
    mkdir -p "$ROOT/tmp/wheels"
    cp "$wheels"/*.whl "$ROOT/tmp/wheels/"
    chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
        /usr/bin/python3 -m venv /opt/salt
    chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
        /opt/salt/bin/pip install -q --no-index --no-cache-dir --disable-pip-version-check \
        --find-links /tmp/wheels "salt==$SALT_VERSION"
    rm -rf "$ROOT/tmp/wheels"
    for tool in salt-minion salt-call; do
        ln -sf "/opt/salt/bin/$tool" "$ROOT/usr/bin/$tool"
    done
    # trim what a test guest never needs
    rm -rf "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/* \
           "$ROOT"/usr/share/doc/* "$ROOT"/usr/share/man/* "$ROOT"/usr/share/locale/*
    find "$ROOT/opt/salt" -name '__pycache__' -prune -o -name '*.pyc' -print0 | xargs -0 -r rm -f
    say "salt $SALT_VERSION installed in /opt/salt ($(elapsed "$t0") s)"
    tar -C "$ROOT" --numeric-owner -cf "$ROOTFS_TAR.part" .
    mv -f "$ROOTFS_TAR.part" "$ROOTFS_TAR"
}
# --- end rootfs stage

if [ -f "$ROOTFS_TAR" ]; then
    mkdir -p "$ROOT"
    tar -C "$ROOT" --numeric-owner -xf "$ROOTFS_TAR"
    say "rootfs from cache $ROOTFS_TAR"
else
    build_rootfs
fi

# --- guest configuration (cheap: redone whenever this script changes) --------------------
t0=$(now)
# kernel modules the host initrd does not have
for f in $EXTRA_MODULES; do
    rel=${f#/lib/modules/$KVER/}
    rel=${rel#/usr/lib/modules/$KVER/}
    mkdir -p "$ROOT/lib/modules/$KVER/$(dirname "$rel")"
    cp "$f" "$ROOT/lib/modules/$KVER/$rel"
done
for f in modules.builtin modules.builtin.modinfo modules.order; do
    [ -f "/lib/modules/$KVER/$f" ] && cp "/lib/modules/$KVER/$f" "$ROOT/lib/modules/$KVER/"
done
depmod -b "$ROOT" "$KVER"

echo "debian-minion" > "$ROOT/etc/hostname"
printf '127.0.0.1 localhost\n' > "$ROOT/etc/hosts"
printf '/dev/vda2 / ext4 rw,relatime 0 1\n' > "$ROOT/etc/fstab"
: > "$ROOT/etc/resolv.conf"
mkdir -p "$ROOT/etc/salt/minion.d" "$ROOT/etc/salt/pki/minion" "$ROOT/var/log/salt" \
         "$ROOT/etc/saltvirt" "$ROOT/mnt/seed"
chmod 700 "$ROOT/etc/salt/pki/minion"
# Image defaults; the seed writes /etc/salt/minion (id, master, ...), which these complement.
cat > "$ROOT/etc/salt/minion.d/saltvirt-image.conf" <<'EOF'
# salt-virt test image defaults (TCG guests are slow: keep the minion lean)
multiprocessing: False
log_level_logfile: info
acceptance_wait_time: 2
random_reauth_delay: 0
recon_default: 1000
recon_max: 2000
EOF

# Seeding helper: a cloud-init NoCloud user-data's salt_minion section -> /etc/salt
cat > "$ROOT/usr/local/sbin/saltvirt-seed" <<'EOF'
#!/opt/salt/bin/python3
"""Apply a NoCloud seed's salt_minion section (cloud-init's cc_salt_minion subset)."""
import os
import sys

import yaml

seed = sys.argv[1]
with open(os.path.join(seed, "user-data")) as fh:
    data = yaml.safe_load(fh) or {}
salt = data.get("salt_minion") or {}
conf = salt.get("conf") or {}
pki = conf.get("pki_dir", "/etc/salt/pki/minion")
os.makedirs("/etc/salt", exist_ok=True)
os.makedirs(pki, mode=0o700, exist_ok=True)
if conf:
    with open("/etc/salt/minion", "w") as fh:
        yaml.safe_dump(conf, fh, default_flow_style=False)
for key, name, mode in (("public_key", "minion.pub", 0o644), ("private_key", "minion.pem", 0o600)):
    if salt.get(key):
        path = os.path.join(pki, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w") as fh:
            fh.write(salt[key].strip() + "\n")
        os.chmod(path, mode)
# a cached master key from an earlier life of the image would make the minion refuse the master
try:
    os.unlink(os.path.join(pki, "minion_master.pub"))
except FileNotFoundError:
    pass
print(conf.get("id", ""))
EOF
chmod 755 "$ROOT/usr/local/sbin/saltvirt-seed"

cat > "$ROOT/sbin/saltvirt-init" <<'EOF'
#!/bin/bash
# salt-virt test guest init (PID 1): seed, network, salt-minion. See build-minion-image.sh.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mountpoint -q /proc || mount -t proc proc /proc
mountpoint -q /sys || mount -t sysfs sysfs /sys
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev
mountpoint -q /run || mount -t tmpfs -o mode=755 tmpfs /run
mountpoint -q /tmp || mount -t tmpfs tmpfs /tmp
mkdir -p /dev/shm /dev/pts
mountpoint -q /dev/shm || mount -t tmpfs -o mode=1777 tmpfs /dev/shm   # multiprocessing locks
mountpoint -q /dev/pts || mount -t devpts devpts /dev/pts
exec </dev/console >/dev/console 2>&1
echo
echo 1 > /proc/sys/kernel/printk
mount -o remount,rw / 2>/dev/null
echo "SALTVIRT-INIT uptime=$(cut -d' ' -f1 /proc/uptime)"
modprobe virtio_net 2>/dev/null
modprobe isofs 2>/dev/null

# --- seed: a NoCloud device (label cidata) wins over what a mount seeder wrote ------------
SEEDDEV=$(blkid -l -o device -t LABEL=cidata 2>/dev/null || true)
[ -n "$SEEDDEV" ] || SEEDDEV=$(blkid -l -o device -t LABEL=CIDATA 2>/dev/null || true)
if [ -n "$SEEDDEV" ] && mount -o ro "$SEEDDEV" /mnt/seed; then
    echo "SALTVIRT-SEED: cidata"
    saltvirt-seed /mnt/seed >/dev/null || echo "SALTVIRT-WARN seeding from $SEEDDEV failed"
    umount /mnt/seed
elif [ -f /etc/salt/minion ]; then
    echo "SALTVIRT-SEED: disk"
else
    echo "SALTVIRT-SEED: none"
fi
ID=$(sed -n "s/^id:[[:space:]]*//p" /etc/salt/minion 2>/dev/null | head -n 1 | tr -d "\"' \r")
if [ -n "$ID" ]; then
    echo "SALTVIRT-MINION-ID: $ID"
    hostname "$ID"
fi
PUB=/etc/salt/pki/minion/minion.pub
if [ -f "$PUB" ]; then
    # the fingerprint Salt shows (salt.utils.crypt.pem_finger, sha256)
    FP=$(grep -v '^[[:space:]]*$' "$PUB" | sed '1d;$d' | sha256sum | cut -d' ' -f1 |
         sed 's/../&:/g; s/:$//')
    echo "SALTVIRT-MINION-KEY: $FP"
fi

# --- network ----------------------------------------------------------------------------
ip link set lo up
IP=
for arg in $(cat /proc/cmdline); do
    case $arg in saltvirt.ip=*) IP=${arg#saltvirt.ip=} ;; esac
done
[ -n "$IP" ] || IP=$(cat /etc/saltvirt/ip 2>/dev/null || true)
for i in $(seq 50); do [ -e /sys/class/net/eth0 ] && break; sleep 0.1; done
if [ -e /sys/class/net/eth0 ]; then
    if [ -z "$IP" ]; then
        MAC=$(cat /sys/class/net/eth0/address)
        IP=10.231.0.$((2 + 0x${MAC##*:} % 252))/24
    fi
    ip link set eth0 up
    ip addr add "$IP" dev eth0
    ip route add default via 10.231.0.1 2>/dev/null
    echo "SALTVIRT-NET eth0 $IP"
else
    echo "SALTVIRT-WARN no eth0"
fi

# --- salt-minion ------------------------------------------------------------------------
if [ -f /etc/salt/minion ] && [ -x /opt/salt/bin/salt-minion ]; then
    echo "SALTVIRT-MINION-START uptime=$(cut -d' ' -f1 /proc/uptime)"
    # warnings and errors also go to the console (the tests show it when a guest is silent)
    /opt/salt/bin/salt-minion --log-level=warning 2>&1 | tee /var/log/salt/minion.out |
        sed -u 's/^/SALTVIRT-MINION-LOG /' &
else
    echo "SALTVIRT-WARN not seeded: salt-minion not started"
fi
trap 'echo SALTVIRT-POWEROFF; sync; echo o > /proc/sysrq-trigger' TERM INT
n=0
while :; do
    wait -n 2>/dev/null || sleep 5
    n=$((n + 1))
done
EOF
chmod 755 "$ROOT/sbin/saltvirt-init"
say "guest configured ($(elapsed "$t0") s)"

# --- filesystems and disk ----------------------------------------------------------------
t0=$(now)
ROOT_MIB=$(( $(du -sm "$ROOT" | cut -f1) * 13 / 10 + 256 ))
mke2fs -q -t ext4 -L svroot -d "$ROOT" -E root_owner=0:0 "$WORK/root.img" "${ROOT_MIB}M" >/dev/null
rm -rf "$ROOT"

cat > "$WORK/syslinux.cfg" <<EOF
SERIAL 0 115200
DEFAULT linux
PROMPT 0
TIMEOUT 0
LABEL linux
  KERNEL /vmlinuz
  INITRD /initrd.img
  APPEND root=/dev/vda2 rw console=ttyS0,115200 net.ifnames=0 init=/sbin/saltvirt-init quiet
EOF
BOOT_SECTORS=$((BOOT_MIB * 2048))
ROOT_START=$((PART_START + BOOT_SECTORS))
ROOT_SECTORS=$((ROOT_MIB * 2048))
mkfs.vfat -C -F 16 -n SVBOOT -h "$PART_START" "$WORK/boot.img" $((BOOT_SECTORS / 2)) >/dev/null
export MTOOLS_SKIP_CHECK=1
mcopy -i "$WORK/boot.img" "$KERNEL" ::/vmlinuz
mcopy -i "$WORK/boot.img" "$INITRD" ::/initrd.img
mcopy -i "$WORK/boot.img" "$WORK/syslinux.cfg" ::/syslinux.cfg
syslinux --install "$WORK/boot.img"

RAW=$WORK/$NAME.img
truncate -s $(( (ROOT_START + ROOT_SECTORS) * 512 + 1024 * 1024 )) "$RAW"
sfdisk --quiet "$RAW" <<EOF
label: dos
label-id: 0x5a17e2e0
start=$PART_START, size=$BOOT_SECTORS, type=e, bootable
start=$ROOT_START, size=$ROOT_SECTORS, type=83
EOF
dd if="$MBR_BIN" of="$RAW" bs=440 count=1 conv=notrunc status=none
dd if="$WORK/boot.img" of="$RAW" bs=1M seek=$((PART_START / 2048)) conv=notrunc,sparse status=none
dd if="$WORK/root.img" of="$RAW" bs=1M seek=$((ROOT_START / 2048)) conv=notrunc,sparse status=none
rm -f "$WORK/boot.img" "$WORK/root.img"
qemu-img convert -c -f raw -O qcow2 "$RAW" "$WORK/$NAME.qcow2"
say "disk image made ($(elapsed "$t0") s)"

echo "$MANIFEST" > "$WORK/$NAME.inputs"
rm -f "$STAMP"
mv -f "$WORK/$NAME.qcow2" "$QCOW"
mv -f "$WORK/$NAME.inputs" "$STAMP"
say "built $QCOW ($(du -h "$QCOW" | cut -f1), kernel $KVER) in $(elapsed "$T_START") s"
