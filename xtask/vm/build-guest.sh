#!/bin/bash
# Build (once) a Debian 12 guest for run-in-guest.sh: stock kernels (bookworm 6.1, backports 6.12)
# with their initrds, and a minimal bookworm rootfs with systemd (pure cgroup v2), bpftool, curl,
# as an ext4 image. The project's copy of the verified recipe in ../shared/vm (cargo xtask matrix
# calls it with the packages the privileged suites need; see xtask/src/matrix.rs).
# Idempotent: re-running only redoes what is missing. Needs root and the Debian mirror.
#   HVM_CACHE       where everything goes              (default /var/cache/headroom-matrix)
#   HVM_EXTRA_PKGS  more guest packages, comma-separated, also added to an existing rootfs
#                   (e.g. gcc,libc6-dev for the project's test workloads; bpftrace adds ~250 MB)
#   HVM_BPO_KERNEL=0  skip the second kernel (bookworm-backports' 6.12)
#   HVM_REBUILD=1   start over (deletes $HVM_CACHE)
set -euo pipefail
C=${HVM_CACHE:-/var/cache/headroom-matrix}
PKGS=systemd-sysv,udev,dbus,kmod,linux-image-amd64,bpftool,curl,procps,iproute2,less
MIRROR=${HVM_MIRROR:-http://deb.debian.org/debian}
[ "$(id -u)" = 0 ] || { echo "build-guest: must run as root" >&2; exit 1; }
[ "${HVM_REBUILD:-0}" = 1 ] && rm -rf "$C"
mkdir -p "$C"
log() { echo "build-guest: $*" >&2; }

# 1. Host tools. The image ships qemu-utils from bookworm-backports, which Breaks bookworm's
#    qemu-system-common, so qemu-system-x86 comes from backports (via a private apt config;
#    the host's sources are left alone).
export DEBIAN_FRONTEND=noninteractive
missing=""
command -v debootstrap >/dev/null || missing="$missing debootstrap"
command -v mkfs.ext4 >/dev/null || missing="$missing e2fsprogs"
command -v python3 >/dev/null || missing="$missing python3"
if [ -n "$missing" ]; then log "apt-get install$missing"; apt-get update -q >/dev/null; apt-get install -y -q --no-install-recommends $missing >/dev/null; fi
if ! command -v qemu-system-x86_64 >/dev/null; then
  log "installing qemu-system-x86"
  apt-get update -q >/dev/null
  if ! apt-get install -y -q --no-install-recommends qemu-system-x86 >/dev/null 2>&1; then
    A=$C/apt; mkdir -p $A/lists/partial $A/cache/archives/partial
    printf 'deb %s %s main\n' "$MIRROR" bookworm "$MIRROR" bookworm-updates "$MIRROR" bookworm-backports \
      http://deb.debian.org/debian-security bookworm-security > $A/sources.list
    O="-o Dir::Etc::SourceList=$A/sources.list -o Dir::Etc::SourceParts=/dev/null -o Dir::State::Lists=$A/lists -o Dir::Cache=$A/cache"
    apt-get $O update -q >/dev/null
    apt-get $O install -y -q --no-install-recommends -t bookworm-backports qemu-system-x86 >/dev/null
    rm -rf $A/cache
  fi
fi

# 2. Root filesystem (debootstrap; the kernel package's postinst builds the initrd inside it).
R=$C/rootfs
if [ ! -e "$R/.hvm-debootstrap-done" ]; then
  log "debootstrap bookworm ($PKGS) -> $R"
  rm -rf "$R.tmp"
  if ! debootstrap --variant=minbase --include="$PKGS" bookworm "$R.tmp" "$MIRROR" > "$C/debootstrap.log" 2>&1; then
    for m in $(grep -o " $R.tmp[^ ]*" /proc/mounts | sort -r); do umount -l "$m" || true; done
    tail -20 "$C/debootstrap.log" >&2; exit 1
  fi
  rm -rf "$R"; mv "$R.tmp" "$R"; touch "$R/.hvm-debootstrap-done"
  rm -f "$C/rootfs.img"
fi
# Run a command in the rootfs, in a private mount namespace: its /proc, /sys, /dev mounts vanish
# with it, whatever happens.
in_root() {
  cp -L /etc/resolv.conf $R/etc/resolv.conf 2>/dev/null || true
  unshare --mount --propagation private sh -c "mount -t proc proc $R/proc && mount -t sysfs sysfs $R/sys &&
    mount --bind /dev $R/dev && chroot $R sh -c 'export DEBIAN_FRONTEND=noninteractive; $1'"
}
# 2b. A second kernel: bookworm-backports' linux-image-amd64 (6.12).
if [ "${HVM_BPO_KERNEL:-1}" = 1 ] && [ ! -e "$R/.hvm-bpo-done" ]; then
  log "installing the bookworm-backports kernel in the rootfs"
  echo "deb $MIRROR bookworm-backports main" > $R/etc/apt/sources.list.d/bpo.list
  in_root "apt-get update -q && apt-get install -y -q --no-install-recommends -t bookworm-backports linux-image-amd64" \
    > "$C/bpo-kernel.log" 2>&1 || { tail -20 "$C/bpo-kernel.log" >&2; exit 1; }
  touch "$R/.hvm-bpo-done"
fi
# 2c. Extra packages, added to an existing rootfs too (HVM_EXTRA_PKGS).
extra=$(echo "${HVM_EXTRA_PKGS:-}" | tr ',' ' ')
if [ -n "$extra" ] && ! chroot $R dpkg -s $extra >/dev/null 2>&1; then
  log "installing $extra in the rootfs"
  in_root "apt-get update -q && apt-get install -y -q --no-install-recommends $extra" > "$C/extra.log" 2>&1 \
    || { tail -20 "$C/extra.log" >&2; exit 1; }
  touch "$R/.hvm-extra-done"
fi

# 3. Guest configuration, then the image; redone only when this script or the rootfs changed.
STAMP="$(sha256sum "$0" | cut -c1-16) $(ls -d --full-time $R/.hvm-*-done | md5sum | cut -c1-8)"
if [ ! -e $C/rootfs.img ] || [ "$(cat $C/rootfs.img.stamp 2>/dev/null)" != "$STAMP" ]; then
echo hvm > $R/etc/hostname
printf '127.0.0.1 localhost\n127.0.1.1 hvm\n' > $R/etc/hosts
printf '/dev/vda / ext4 rw,relatime 0 1\ntmpfs /tmp tmpfs rw,nosuid,nodev 0 0\n' > $R/etc/fstab
passwd -R "$R" -d root >/dev/null           # interactive debugging: root, no password
rm -rf $R/var/cache/apt/archives/*.deb $R/var/lib/apt/lists/* $R/usr/share/doc/* $R/usr/share/man/*
for u in apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer fstrim.timer e2scrub_reap.service; do
  rm -f $R/etc/systemd/system/*.wants/$u
done
# Servers that extra packages bring (the tests start their own on free ports): masked, so that
# they neither start at boot nor cost an emulated guest CPU.
for u in redis-server.service prometheus.service prometheus-node-exporter.service; do
  ln -sf /dev/null $R/etc/systemd/system/$u
done
mkdir -p $R/hvm $R/results $R/usr/local/sbin
cat > $R/usr/local/sbin/hvm-run <<'EOF'
#!/bin/sh
# Mount the host's shares listed in /hvm/mounts, run /hvm/cmd.sh as root, record its exit code.
mountpoint -q /hvm || mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288 hvm /hvm || exit 1
# mode ov: read-only 9p under a tmpfs overlay, so the guest may write there (changes are lost).
o=trans=virtio,version=9p2000.L,msize=524288
while read -r tag path mode; do
  mkdir -p "$path" && if [ "$mode" = ov ]; then
    d=/run/hvm-ov/$tag; mkdir -p $d && mount -t tmpfs -o size=75% tmpfs $d && mkdir $d/l $d/u $d/w &&
    mount -t 9p -o $o,ro "$tag" $d/l && mount -t overlay -o lowerdir=$d/l,upperdir=$d/u,workdir=$d/w overlay "$path"
  else mount -t 9p -o "$o,$mode" "$tag" "$path"; fi || echo "hvm-run: cannot mount $tag at $path" >> /hvm/out
done < /hvm/mounts
date +%s.%N > /hvm/started
sh /hvm/cmd.sh >> /hvm/out 2>&1 < /dev/null
echo $? > /hvm/rc
sync
EOF
cat > $R/usr/local/sbin/hvm-init <<'EOF'
#!/bin/sh
# init=/usr/local/sbin/hvm-init (HVM_INIT=bare): no systemd; cgroup2 mounted by hand, the
# command runs in the ROOT cgroup with +memory etc. enabled in its subtree_control.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
mountpoint -q /proc || mount -t proc proc /proc
mountpoint -q /sys || mount -t sysfs sysfs /sys
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev
mount -o remount,rw /
mkdir -p /dev/pts /dev/shm; mount -t devpts devpts /dev/pts; mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run; mount -t tmpfs tmpfs /tmp
mount -t cgroup2 -o nsdelegate,memory_recursiveprot cgroup2 /sys/fs/cgroup
for c in $(cat /sys/fs/cgroup/cgroup.controllers); do echo "+$c" > /sys/fs/cgroup/cgroup.subtree_control; done
mount -t tracefs tracefs /sys/kernel/tracing; mount -t debugfs debugfs /sys/kernel/debug
mount -t bpf bpf /sys/fs/bpf
hostname hvm; ip link set lo up
/usr/local/sbin/hvm-run
systemctl poweroff -ff 2>/dev/null; echo o > /proc/sysrq-trigger; sleep 30
EOF
chmod 755 $R/usr/local/sbin/hvm-run $R/usr/local/sbin/hvm-init
cat > $R/etc/systemd/system/hvm-run.service <<'EOF'
[Unit]
Description=Run the host's command (run-in-guest.sh), then power off
ConditionKernelCommandLine=hvm.run
After=multi-user.target
SuccessAction=poweroff-force
FailureAction=poweroff-force
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/hvm-run
Environment=HOME=/root
TimeoutStartSec=infinity
[Install]
WantedBy=multi-user.target
EOF
ln -sf /etc/systemd/system/hvm-run.service $R/etc/systemd/system/multi-user.target.wants/hvm-run.service

# 4. Kernels (kernels/VERSION/{vmlinux,initrd.img}) and the disk image (raw ext4; run-in-guest.sh
#    opens it with snapshot=on). vmlinux is the bzImage's xz payload: QEMU boots that ELF through
#    its PVH entry point, skipping real-mode setup and the decompressor (seconds under TCG).
rm -rf $C/kernels
for K in $R/boot/vmlinuz-*; do
  V=${K##*/vmlinuz-}; mkdir -p $C/kernels/$V; cp "$R/boot/initrd.img-$V" $C/kernels/$V/initrd.img
  python3 -c 'import lzma,sys; d=open(sys.argv[1],"rb").read(); i=d.find(b"\xfd7zXZ\x00")
open(sys.argv[2],"wb").write(lzma.LZMADecompressor().decompress(d[i:]) if i>=0 else d)' "$K" $C/kernels/$V/vmlinux
done
log "mkfs.ext4 -d $R -> $C/rootfs.img"
mb=$(( $(du -sm "$R" | cut -f1) + 1024 ))
rm -f $C/rootfs.img.tmp
mkfs.ext4 -q -F -L hvm-root -d "$R" $C/rootfs.img.tmp ${mb}M >/dev/null
mv $C/rootfs.img.tmp $C/rootfs.img; echo "$STAMP" > $C/rootfs.img.stamp
fi
log "ready: kernels $(ls $C/kernels | tr '\n' ' '), $(du -sh --apparent-size $C/rootfs.img | cut -f1) image in $C"
