#!/bin/bash
# Build the lab's small guest image: a 64 MiB raw disk with an MBR partition table, one
# bootable FAT16 partition (label SALTVIRT) holding syslinux, the host kernel and a busybox
# initramfs, plus the same content as qcow2.
#
#   lab/image/build.sh OUTDIR   ->  OUTDIR/centos.img (raw)  OUTDIR/centos.qcow2
#
# No mounting, no loop or nbd devices: sfdisk writes the partition table into the image file,
# mkfs.vfat makes the filesystem in a separate file, mtools fills it, `syslinux --install`
# makes it bootable (syslinux works through mtools), and dd places the MBR code and the
# filesystem into the image.  The guest's console protocol is described in README.rst.
#
# Environment:
#   SALTVIRT_IMAGE_KVER   kernel version to use (default: newest /boot/vmlinuz-* that has
#                         a /lib/modules directory)
#   SALTVIRT_IMAGE_FORCE  set to 1 to rebuild even when the outputs are up to date
#
# Needs (Debian): busybox-static syslinux syslinux-common mtools dosfstools fdisk cpio kmod
# qemu-utils, and a kernel in /boot with its modules.
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi

OUTDIR=$1
SCRIPT=$(readlink -f "$0")
IMG_NAME=centos.img
QCOW_NAME=centos.qcow2
# The same kernel and initramfs as files, for direct kernel boot (boot: {kernel, initrd}).
VMLINUZ_NAME=centos.vmlinuz
INITRD_NAME=centos.initrd
DISK_MIB=64
PART_START=2048                 # sectors (1 MiB alignment)
FS_LABEL=SALTVIRT

die() { echo "build.sh: $*" >&2; exit 1; }

# --- inputs ------------------------------------------------------------------------------
if [ -n "${SALTVIRT_IMAGE_KVER:-}" ]; then
    KVER=$SALTVIRT_IMAGE_KVER
else
    KVER=
    for k in $(ls /boot/vmlinuz-* 2>/dev/null | sed 's,^/boot/vmlinuz-,,' | sort -V); do
        [ -d "/lib/modules/$k" ] && KVER=$k
    done
    [ -n "$KVER" ] || die "no kernel with modules found in /boot"
fi
KERNEL=/boot/vmlinuz-$KVER
MODDIR=/lib/modules/$KVER
BUSYBOX=/bin/busybox
MBR_BIN=/usr/lib/syslinux/mbr/mbr.bin
SYSLINUX=$(command -v syslinux) || die "syslinux not installed (apt-get install syslinux)"
for f in "$KERNEL" "$MODDIR/modules.dep" "$BUSYBOX" "$MBR_BIN"; do
    [ -r "$f" ] || die "missing input $f"
done
APPLETS=$("$BUSYBOX" --list) || die "$BUSYBOX does not run"
echo "$APPLETS" | grep -x acpid >/dev/null || die "$BUSYBOX is not busybox-static (no acpid applet)"
for tool in sfdisk mkfs.vfat mcopy mmd cpio gzip modprobe qemu-img; do
    command -v "$tool" >/dev/null || die "missing tool $tool"
done

# Modules for the guest, in load order (dependencies resolved here, at build time).
# (ATA first: its probing runs while the rest loads.)
MODULES="ata_piix ahci sr_mod isofs virtio_pci virtio_blk virtio_scsi virtio_net
         vfat nls_cp437 nls_ascii nls_utf8 nls_iso8859_1 button evdev"
MODFILES=$(
    for m in $MODULES; do
        modprobe -S "$KVER" -d / --show-depends "$m" || die "module $m not found for $KVER"
    done | awk '$1 == "insmod" && !seen[$2]++ { print $2 }'
)
# virtio_ring must come before virtio (virtio uses its symbols); modprobe already orders
# them that way, check it anyway.
ring=$(echo "$MODFILES" | grep -n '/virtio_ring\.ko' | cut -d: -f1)
virtio=$(echo "$MODFILES" | grep -n '/virtio\.ko' | cut -d: -f1)
[ "$ring" -lt "$virtio" ] || die "unexpected module order (virtio before virtio_ring)"

INPUTS="$SCRIPT $KERNEL $BUSYBOX $MBR_BIN $SYSLINUX $MODFILES"

# --- up to date? -------------------------------------------------------------------------
# Up to date = both outputs exist, are newer than every input, and were built from the same
# inputs (a manifest of names/sizes/mtimes + the script's hash kept in OUTDIR/centos.inputs:
# package upgrades install files with old mtimes, so -nt alone would miss a new kernel).
mkdir -p "$OUTDIR"
OUTDIR=$(readlink -f "$OUTDIR")
IMG=$OUTDIR/$IMG_NAME
QCOW=$OUTDIR/$QCOW_NAME
VMLINUZ=$OUTDIR/$VMLINUZ_NAME
INITRD=$OUTDIR/$INITRD_NAME
STAMP=$OUTDIR/centos.inputs
# one build at a time per OUTDIR (a second caller waits, then finds the outputs up to date)
exec 9>"$OUTDIR/.centos.lock"
flock 9
MANIFEST=$(echo "kver $KVER"; sha256sum "$SCRIPT"; stat -L -c '%n %s %Y' $INPUTS)
if [ "${SALTVIRT_IMAGE_FORCE:-0}" != 1 ] && [ -f "$IMG" ] && [ -f "$QCOW" ] && [ -f "$VMLINUZ" ] && [ -f "$INITRD" ] &&
   [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$MANIFEST" ]; then
    stale=0
    for f in $INPUTS; do
        if [ "$f" -nt "$IMG" ] || [ "$f" -nt "$QCOW" ]; then stale=1; break; fi
    done
    if [ $stale = 0 ]; then
        echo "build.sh: $IMG and $QCOW are up to date"
        exit 0
    fi
fi

# --- work area (same filesystem as OUTDIR, so the final renames are atomic) --------------
WORK=$(mktemp -d "$OUTDIR/.build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
ROOT=$WORK/initramfs
mkdir -p "$ROOT"/{bin,sbin,etc/acpi,proc,sys,dev,tmp,run,boot-disk,seed,lib/modules}

# busybox + applet links
cp "$BUSYBOX" "$ROOT/bin/busybox"
for applet in $APPLETS; do
    [ "$applet" = busybox ] || ln -s busybox "$ROOT/bin/$applet"
done

# modules, flattened, with their load order
: > "$ROOT/lib/modules/load.order"
for f in $MODFILES; do
    base=$(basename "$f")
    case $base in
        *.ko.xz) xz -dc "$f" > "$ROOT/lib/modules/${base%.xz}"; base=${base%.xz} ;;
        *.ko.zst) zstd -qdc "$f" > "$ROOT/lib/modules/${base%.zst}"; base=${base%.zst} ;;
        *.ko.gz) gzip -dc "$f" > "$ROOT/lib/modules/${base%.gz}"; base=${base%.gz} ;;
        *) cp "$f" "$ROOT/lib/modules/$base" ;;
    esac
    echo "$base" >> "$ROOT/lib/modules/load.order"
done

# ACPI power button -> power off (busybox acpid, events from the `button` input device)
cat > "$ROOT/etc/acpid.conf" <<'EOF'
PWRF power.sh
PWRB power.sh
EOF
cat > "$ROOT/etc/acpi/power.sh" <<'EOF'
#!/bin/sh
echo "SALTVIRT-POWEROFF acpi" > /dev/console
sync
umount /boot-disk 2>/dev/null || mount -o remount,ro /boot-disk 2>/dev/null
sync
poweroff -f
EOF
chmod 755 "$ROOT/etc/acpi/power.sh"

# DHCP on eth0 (busybox udhcpc): a guest on a libvirt network with DHCP reports its lease.
cat > "$ROOT/etc/udhcpc.sh" <<'EOF'
#!/bin/sh
case $1 in
    bound|renew)
        ip addr flush dev "$interface"
        ip addr add "$ip/${mask:-24}" dev "$interface"
        echo "SALTVIRT-DHCP $interface $ip" > /dev/console ;;
esac
EOF
chmod 755 "$ROOT/etc/udhcpc.sh"

cat > "$ROOT/init" <<'INIT_EOF'
#!/bin/busybox sh
# salt-virt lab guest: busybox init.  Console protocol: see lab/image/README.rst.
export PATH=/bin:/sbin
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
# The firmware leaves terminal escapes (ESC c ...) on the serial line without a newline:
# end that line so every SALTVIRT- line starts at a line start.
echo
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs tmpfs /tmp
# keep kernel chatter off the console lines the tests read
echo 1 > /proc/sys/kernel/printk

while read -r m; do
    insmod "/lib/modules/$m" 2>/dev/null || echo "SALTVIRT-WARN insmod $m failed"
done < /lib/modules/load.order

CR=$(printf '\r')

# Fingerprint of a PEM file exactly as salt.utils.crypt.pem_finger(path, sum_type="sha256"):
# non-blank lines minus the first and the last, CRLF -> LF, sha256, hex pairs joined by ':'.
pem_finger() {
    grep -v '^[[:space:]]*$' "$1" | sed '1d;$d' | sed "s/$CR\$//" | sha256sum |
        cut -d' ' -f1 | sed 's/../&:/g; s/:$//'
}

# Strip a YAML scalar: spaces, CR, trailing comment, surrounding quotes.
yaml_scalar() {
    sed "s/$CR//g; s/[[:space:]]#.*//; s/^[[:space:]]*//; s/[[:space:]]*\$//" |
        sed "s/^\"\\(.*\\)\"\$/\\1/; s/^'\\(.*\\)'\$/\\1/"
}

MINION_ID=
report_id() {
    [ -n "$1" ] || return
    echo "SALTVIRT-MINION-ID: $1"
    MINION_ID=$1
}

# Filesystem type and label of a block device, read from its superblock: "iso9660 LABEL",
# "vfat LABEL", or nothing (cheaper than findfs, which probes every device each time).
probe_fs() {
    dd if="$1" of=/tmp/probe bs=2048 skip=16 count=1 2>/dev/null || return 1
    if [ "$(dd if=/tmp/probe bs=1 skip=1 count=5 2>/dev/null)" = CD001 ]; then
        echo "iso9660 $(dd if=/tmp/probe bs=1 skip=40 count=32 2>/dev/null | tr -d ' \000')"
        return 0
    fi
    dd if="$1" of=/tmp/probe bs=512 count=1 2>/dev/null || return 1
    if [ "$(dd if=/tmp/probe bs=1 skip=54 count=3 2>/dev/null)" = FAT ]; then
        off=43
    elif [ "$(dd if=/tmp/probe bs=1 skip=82 count=5 2>/dev/null)" = FAT32 ]; then
        off=71
    else
        return 1
    fi
    echo "vfat $(dd if=/tmp/probe bs=1 skip=$off count=11 2>/dev/null | tr -d ' \000')"
}

# Block devices that exist now: virtio disks and their partitions, CD-ROMs.
block_devs() {
    for b in /sys/block/vd* /sys/block/vd*/vd* /sys/block/sr*; do
        [ -e "$b/dev" ] && [ -b "/dev/${b##*/}" ] && echo "/dev/${b##*/}"
    done
}

# --- boot disk ---------------------------------------------------------------------------
# The FAT partition labelled SALTVIRT (normally /dev/vda1); wait for it up to ~10 s.
BOOTDEV=
i=0
while [ $i -lt 100 ]; do
    for d in $(block_devs); do
        [ "$(probe_fs "$d")" = "vfat SALTVIRT" ] && { BOOTDEV=$d; break; }
    done
    [ -n "$BOOTDEV" ] && break
    i=$((i + 1))
    sleep 0.1
done
[ -z "$BOOTDEV" ] && [ -b /dev/vda1 ] && BOOTDEV=/dev/vda1
BOOT_OK=0
if [ -n "$BOOTDEV" ] && mount -t vfat -o rw "$BOOTDEV" /boot-disk; then
    BOOT_OK=1
else
    echo "SALTVIRT-WARN boot disk not mounted"
fi

# --- seed on the boot disk ---------------------------------------------------------------
if [ $BOOT_OK = 1 ] && { [ -f /boot-disk/etc/salt/minion ] ||
                         [ -f /boot-disk/etc/salt/pki/minion/minion.pub ]; }; then
    echo "SALTVIRT-SEED: disk"
    if [ -f /boot-disk/etc/salt/minion ]; then
        report_id "$(sed -n 's/^id:[[:space:]]*//p' /boot-disk/etc/salt/minion |
                     head -n 1 | yaml_scalar)"
    fi
    if [ -f /boot-disk/etc/salt/pki/minion/minion.pub ]; then
        echo "SALTVIRT-MINION-KEY: $(pem_finger /boot-disk/etc/salt/pki/minion/minion.pub)"
    fi
fi

# --- cloud-init NoCloud seed (iso9660 or vfat labelled cidata) ---------------------------
# Disks appear asynchronously while the ATA/virtio drivers probe (the ATA modules are loaded
# first for that reason).  insmod waits for the probes it starts, so the devices are normally
# there at the first look; retry briefly (0.3 s) in case one is late.
SEEDDEV=
SEEDFS=
i=0
while [ $i -lt 3 ]; do
    for d in $(block_devs); do
        [ "$d" = "$BOOTDEV" ] && continue
        set -- $(probe_fs "$d")
        case $2 in cidata|CIDATA) SEEDDEV=$d; SEEDFS=$1; break ;; esac
    done
    [ -n "$SEEDDEV" ] && break
    i=$((i + 1))
    sleep 0.1
done
if [ -n "$SEEDDEV" ] && mount -t "$SEEDFS" -o ro "$SEEDDEV" /seed; then
    echo "SALTVIRT-SEED: cidata"
    UD=
    for f in user-data USER-DATA user_data USER_DAT userdata USERDATA; do
        [ -f "/seed/$f" ] && { UD=/seed/$f; break; }
    done
    if [ -n "$UD" ]; then
        # id: the `id:` under salt_minion (-> conf), else any `id:` line
        sid=$(awk '
            { sub(/\r$/, "") }
            /^[^ \t#]/ { insm = ($0 ~ /^salt_minion:/) }
            insm && /^[ \t]+id:/ { sub(/^[ \t]+id:[ \t]*/, ""); print; exit }
        ' "$UD" | yaml_scalar)
        [ -n "$sid" ] ||
            sid=$(sed -n 's/^[[:space:]]*id:[[:space:]]*//p' "$UD" | head -n 1 | yaml_scalar)
        report_id "$sid"
        # public_key: | block (under salt_minion), dedented into a file
        awk '
            { sub(/\r$/, "") }
            /^[^ \t#]/ { insm = ($0 ~ /^salt_minion:/); if (inkey) exit }
            inkey {
                if ($0 ~ /^[ \t]*$/) { print ""; next }
                match($0, /^[ \t]*/)
                if (ind < 0) ind = RLENGTH
                if (RLENGTH < ind || RLENGTH <= keyind) exit
                print substr($0, ind + 1)
                next
            }
            insm && /^[ \t]+public_key:[ \t]*[|>][-+]?[ \t]*$/ {
                match($0, /^[ \t]*/); keyind = RLENGTH; inkey = 1; ind = -1
            }
        ' "$UD" > /tmp/seed-minion.pub
        if grep -q -- '-----BEGIN' /tmp/seed-minion.pub; then
            echo "SALTVIRT-MINION-KEY: $(pem_finger /tmp/seed-minion.pub)"
        fi
    fi
    if [ -z "$MINION_ID" ] && [ -f /seed/meta-data ]; then
        MINION_ID=$(sed -n 's/^local-hostname:[[:space:]]*//p' /seed/meta-data |
                    head -n 1 | yaml_scalar)
    fi
    umount /seed
fi

[ -n "$MINION_ID" ] && hostname "$MINION_ID"
HN=$(hostname)
case $HN in ""|"(none)") HN=none ;; esac
echo "SALTVIRT-BOOT hostname=$HN"
# Which firmware started the kernel: UEFI (OVMF) leaves /sys/firmware/efi, SeaBIOS does not.
if [ -d /sys/firmware/efi ]; then echo "SALTVIRT-FIRMWARE efi"; else echo "SALTVIRT-FIRMWARE bios"; fi

# --- ACPI power button -------------------------------------------------------------------
ip link set lo up 2>/dev/null
acpid -c /etc/acpi -a /etc/acpid.conf -l /tmp/acpid.log -p /run/acpid.pid

# --- DHCP ----------------------------------------------------------------------------------
# In the background, for 20 s: where nothing answers (the lab's br0) the guest just has no
# address; on a libvirt network with DHCP the lease is printed (SALTVIRT-DHCP eth0 <ip>).
if [ -e /sys/class/net/eth0 ]; then
    ip link set eth0 up 2>/dev/null
    udhcpc -i eth0 -s /etc/udhcpc.sh -t 20 -T 1 -n -q >/dev/null 2>&1 &
fi

# --- memory in use (benchmarks) -----------------------------------------------------------
# A guest named <anything>-mem<N> keeps N MiB of (non-zero) data in RAM, like a busy VM: live
# migration then has real memory to copy, not just zero pages.
case $HN in
    *-mem[0-9]*)
        mib=${HN##*-mem}
        case $mib in *[!0-9]*) mib=0 ;; esac
        if [ "$mib" -gt 0 ] && mkdir -p /memfill &&
           mount -t tmpfs -o size=$((mib + 1))m tmpfs /memfill &&
           yes SALTVIRT-MEMORY-FILL | head -c $((mib * 1048576)) > /memfill/data; then
            echo "SALTVIRT-MEMORY $mib MiB in use"
        fi ;;
    *-dirty[0-9]*)
        # <anything>-dirty<N>: N MiB rewritten over and over, like a busy database: a live
        # migration never runs out of dirty pages (post-copy tests).
        mib=${HN##*-dirty}
        case $mib in *[!0-9]*) mib=0 ;; esac
        if [ "$mib" -gt 0 ] && mkdir -p /memfill &&
           mount -t tmpfs -o size=$((mib + 1))m tmpfs /memfill; then
            (i=0; while :; do
                 yes "SALTVIRT-DIRTY-$i" | head -c $((mib * 1048576)) > /memfill/data; i=$((i + 1))
             done) &
            echo "SALTVIRT-MEMORY $mib MiB dirtied continuously"
        fi ;;
esac

# --- heartbeat ---------------------------------------------------------------------------
n=0
pending=
wrote=0
while :; do
    n=$((n + 1))
    echo "SALTVIRT-HEARTBEAT $n"
    pending="$pending$n
"
    if [ $BOOT_OK = 1 ] && { [ $n -eq 1 ] || [ $((n % 10)) -eq 0 ]; }; then
        if printf '%s' "$pending" >> /boot-disk/heartbeat.log && sync; then
            pending=
            [ $wrote = 1 ] || echo "SALTVIRT-DISK-WRITE ok"
            wrote=1
        fi
    fi
    sleep 1
done
INIT_EOF
chmod 755 "$ROOT/init"

(cd "$ROOT" && find . -print0 | LC_ALL=C sort -z |
    cpio --null -o -H newc --owner 0:0 --quiet) | gzip -6 -n > "$WORK/initrd.gz"

# --- FAT filesystem (in its own file) -----------------------------------------------------
cat > "$WORK/syslinux.cfg" <<'EOF'
SERIAL 0 115200
DEFAULT linux
PROMPT 0
TIMEOUT 0
LABEL linux
  KERNEL /vmlinuz
  INITRD /initrd.gz
  APPEND console=ttyS0,115200 quiet
EOF
TOTAL_SECTORS=$((DISK_MIB * 2048))
PART_SECTORS=$((TOTAL_SECTORS - PART_START))
FAT=$WORK/fat.img
# -h: hidden sectors = partition offset (the boot sector finds ldlinux.sys relative to it)
mkfs.vfat -C -F 16 -n "$FS_LABEL" -i 5A175A17 -h "$PART_START" "$FAT" \
    $((PART_SECTORS / 2)) >/dev/null
export MTOOLS_SKIP_CHECK=1
mcopy -i "$FAT" "$KERNEL" ::/vmlinuz
mcopy -i "$FAT" "$WORK/initrd.gz" ::/initrd.gz
mcopy -i "$FAT" "$WORK/syslinux.cfg" ::/syslinux.cfg
mmd -i "$FAT" ::/etc
syslinux --install "$FAT"

# --- disk image: partition table, MBR code, filesystem -----------------------------------
RAW=$WORK/$IMG_NAME
truncate -s "${DISK_MIB}M" "$RAW"
sfdisk --quiet "$RAW" <<EOF
label: dos
label-id: 0x5a175a17
start=$PART_START, size=$PART_SECTORS, type=e, bootable
EOF
dd if="$MBR_BIN" of="$RAW" bs=440 count=1 conv=notrunc status=none
dd if="$FAT" of="$RAW" bs=512 seek="$PART_START" conv=notrunc,sparse status=none

qemu-img convert -f raw -O qcow2 "$RAW" "$WORK/$QCOW_NAME"

echo "$MANIFEST" > "$WORK/centos.inputs"
rm -f "$STAMP"          # outputs and manifest change together: no stamp while they differ
cp "$KERNEL" "$WORK/$VMLINUZ_NAME"
cp "$WORK/initrd.gz" "$WORK/$INITRD_NAME"
mv -f "$WORK/$VMLINUZ_NAME" "$VMLINUZ"
mv -f "$WORK/$INITRD_NAME" "$INITRD"
mv -f "$RAW" "$IMG"
mv -f "$WORK/$QCOW_NAME" "$QCOW"
mv -f "$WORK/centos.inputs" "$STAMP"
echo "build.sh: built $IMG and $QCOW (kernel $KVER)"
