#!/bin/bash
# One cell of `cargo xtask matrix`: runs each privileged suite's test binary in turn, the way
# `cargo test` runs it (cwd = the profiler package, HEADROOM_REQUIRE_PRIVILEGED=1 so that a test
# that cannot load BPF fails instead of skipping), one suite at a time.
# Runs inside a guest (through run-in-guest.sh) or, for the host cell, on the host itself in a
# private mount namespace (unshare --mount).
#   matrix-cell.sh OUT_DIR PACKAGE_DIR HEADROOM=COPY NAME=TIMEOUT=SKIPS=BINARY...
# HEADROOM is the path cargo baked into the test binaries (CARGO_BIN_EXE_headroom) and COPY the
# copy of it taken when the matrix started: COPY is bind-mounted over HEADROOM (in this mount
# namespace only), so that a rebuild in the checkout while the cell runs changes nothing here.
# Each suite's BINARY (also a copy) is killed after TIMEOUT seconds; SKIPS (comma-separated,
# may be empty) names tests not to run (libtest --skip NAME --exact).
# Writes to OUT_DIR: kernel.txt, init.txt, mounts.txt (the cgroup mounts), uptime.txt (seconds
# since boot when the cell started), then per suite NAME.log (libtest's output), NAME.rc (its
# exit code; 124 = timed out) and NAME.secs; `done` at the end. Prints one line per suite.
set -u
out=$1 pkg=$2 pin=$3
shift 3
mkdir -p "$out" || exit 2
baked=${pin%%=*} copy=${pin#*=}
if [ "$baked" != "$copy" ]; then
  mount --bind "$copy" "$baked" || { echo "matrix-cell: cannot bind $copy over $baked" >&2; exit 3; }
fi
uname -r > "$out/kernel.txt"
cat /proc/1/comm > "$out/init.txt"
grep -E '^[^ ]+ [^ ]+ (cgroup|cgroup2) ' /proc/mounts > "$out/mounts.txt"
cut -d' ' -f1 /proc/uptime > "$out/uptime.txt"
cd "$pkg" || exit 2
echo "matrix-cell: $(uname -r), pid 1 $(cat /proc/1/comm), $(grep -c . "$out/mounts.txt") cgroup mounts; up $(cat "$out/uptime.txt") s"
for arg in "$@"; do
  name=${arg%%=*} rest=${arg#*=}
  tmo=${rest%%=*} rest=${rest#*=}
  skips=${rest%%=*} bin=${rest#*=}
  args=()
  for t in ${skips//,/ }; do args+=(--skip "$t"); done
  [ ${#args[@]} -gt 0 ] && args+=(--exact)
  start=$(date +%s)
  # timeout: its own process group, killed whole (agents the tests started included).
  HEADROOM_REQUIRE_PRIVILEGED=1 timeout -k 10 "$tmo" "$bin" "${args[@]}" > "$out/$name.log" 2>&1 < /dev/null
  rc=$?
  secs=$(( $(date +%s) - start ))
  echo $secs > "$out/$name.secs"
  echo $rc > "$out/$name.rc"
  summary=$(grep -m1 '^test result:' "$out/$name.log" || echo "no summary (exit $rc)")
  echo "matrix-cell: $name: $summary (${secs} s)"
done
sync
: > "$out/done"
