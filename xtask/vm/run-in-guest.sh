#!/bin/bash
# run-in-guest.sh CMD [ARG...]: boot the Debian 12 guest built by build-guest.sh (kernel 6.1,
# pure cgroup v2), run CMD as root in it (cwd = this cwd when it is inside a share), print its
# output, power off, exit with CMD's exit code (124: timeout, 125: guest never ran CMD).
# The disk is opened with snapshot=on: every run starts from the same clean image.
# The project's copy of the verified recipe in ../shared/vm (cargo xtask matrix drives it).
#   HVM_SHARES   host dirs shared read-only at the same path (space-separated; default: the git
#                checkout you stand in, or the current directory)
#   HVM_OVERLAY=1  make the shares writable in the guest (tmpfs overlay; writes are discarded)
#   HVM_RESULTS  host dir shared read-write at /results          (default: none)
#   HVM_INIT     systemd (default: CMD runs in /system.slice/hvm-run.service) or bare (no
#                systemd; cgroup2 mounted by hand, CMD runs in the root cgroup)
#   HVM_KERNEL   6.1 (default: bookworm's kernel) or 6.12 (bookworm-backports)
#   HVM_ACCEL    auto (default: kvm if usable, else tcg), kvm or tcg
#   HVM_MEM (MiB, 2048)  HVM_CPUS (2)  HVM_TIMEOUT (s, 900)  HVM_CACHE (/var/cache/headroom-matrix)
#   HVM_CONSOLE  file the guest's serial console is written to, live (default: a temporary
#                file, printed on failure)
#   HVM_PIDFILE  file QEMU writes its pid to (lets a caller that must give up kill exactly it)
set -uo pipefail
C=${HVM_CACHE:-/var/cache/headroom-matrix}
[ $# -gt 0 ] || { sed -n '2,19p' "$0" >&2; exit 2; }
[ -e $C/rootfs.img ] || { echo "run-in-guest: no image in $C; run build-guest.sh first" >&2; exit 2; }
K=$(ls -d $C/kernels/${HVM_KERNEL:-6.1}.* 2>/dev/null | sort -V | tail -1)
[ -n "$K" ] || { echo "run-in-guest: no kernel ${HVM_KERNEL:-6.1}.* in $C/kernels: $(ls $C/kernels)" >&2; exit 2; }
ctl=$(mktemp -d /tmp/hvm.XXXXXX); qpid=""
# Written live (a caller can watch it for a kernel lockup), kept when HVM_CONSOLE names it.
console=${HVM_CONSOLE:-$ctl/console.log}
cleanup() { [ -n "$qpid" ] && kill "$qpid" 2>/dev/null; rm -rf "$ctl"; }
trap cleanup EXIT; trap 'exit 130' INT TERM

{ printf 'cd %q 2>/dev/null || cd /\n' "$PWD"; printf 'exec'; printf ' %q' "$@"; echo; } > $ctl/cmd.sh
: > $ctl/out; : > $ctl/mounts
args=(-virtfs "local,path=$ctl,mount_tag=hvm,security_model=none")
i=0
for d in ${HVM_SHARES-$(git rev-parse --show-toplevel 2>/dev/null || pwd)}; do
  d=$(realpath "$d"); args+=(-virtfs "local,path=$d,mount_tag=s$i,security_model=none,readonly=on")
  echo "s$i $d $([ "${HVM_OVERLAY:-0}" = 1 ] && echo ov || echo ro)" >> $ctl/mounts; i=$((i+1))
done
if [ -n "${HVM_RESULTS:-}" ]; then
  mkdir -p "$HVM_RESULTS"
  args+=(-virtfs "local,path=$(realpath "$HVM_RESULTS"),mount_tag=results,security_model=none")
  echo "results /results rw" >> $ctl/mounts
fi
# KVM on this host is PVM (kvm_pvm module): it can run only PVM-enabled guest kernels; a stock
# kernel is emulated instruction by instruction and dies (cmpxchg16b). So auto picks TCG there.
accel=${HVM_ACCEL:-auto}
if [ "$accel" = auto ]; then
  if [ -w /dev/kvm ] && [ ! -d /sys/module/kvm_pvm ]; then accel=kvm; else accel=tcg; fi
fi
case $accel in
  kvm) accel=(-accel kvm -cpu host) ;;
  tcg) accel=(-accel tcg,thread=multi -cpu max) ;;
  *) echo "run-in-guest: HVM_ACCEL must be auto, kvm or tcg" >&2; exit 2 ;;
esac
append="root=/dev/vda rw console=ttyS0 quiet loglevel=5 hvm.run=1 panic=-1"
[ "${HVM_INIT:-systemd}" = bare ] && append="$append init=/usr/local/sbin/hvm-init"

qemu-system-x86_64 "${accel[@]}" -smp "${HVM_CPUS:-2}" -m "${HVM_MEM:-2048}" \
  -kernel $K/vmlinux -initrd $K/initrd.img -append "$append" \
  -drive file=$C/rootfs.img,format=raw,if=virtio,snapshot=on "${args[@]}" \
  -nic none -display none -monitor none -serial file:$console -no-reboot \
  ${HVM_PIDFILE:+-pidfile "$HVM_PIDFILE"} &
qpid=$!
tail -f -n +1 --pid=$qpid $ctl/out &            # stream CMD's output while it runs
tmo=${HVM_TIMEOUT:-900}; end=$((SECONDS + tmo))   # wall-clock seconds, however slow the loop
while kill -0 $qpid 2>/dev/null && [ $SECONDS -lt $end ]; do sleep 0.1; done
timed_out=0; kill -0 $qpid 2>/dev/null && { timed_out=1; kill $qpid; }
wait $qpid 2>/dev/null; qpid=""; wait
if [ $timed_out = 1 ]; then echo "run-in-guest: timed out after ${tmo}s" >&2; rc=124
elif [ -s $ctl/rc ]; then rc=$(cat $ctl/rc)
else echo "run-in-guest: the guest did not run the command; console log:" >&2; tail -40 $console >&2; rc=125; fi
exit $rc
