#!/usr/bin/env bash
# The device bundle (scripts/packaging/make_bundle.sh) must run ringplan on a machine with none of the
# Debian packages it was built against. This machine has them, so the test hides them: in a
# private mount namespace (unshare -m) it bind-mounts an empty directory over the OpenMPI and
# PMIx trees, hwloc's plugins and /etc/openmpi, and /dev/null over every system copy of a library the bundle
# carries (libmpi, libopen-pal, libopen-rte, libmpi_cxx, libfmt, libyaml-cpp, libtomlplusplus, libhwloc,
# libevent*, libpmix, ...) and over the real orterun/orted/ompi_info. Inside, with nothing but
# `source BUNDLE/env.sh`:
#   0. without env.sh the bundled ringplan fails to start (the hiding works);
#   1. ringplan plan configs/experiments/default.yaml;
#   2. ringplan run PLAN as an MPI singleton (no mpirun) on a 1-rank CPU plan;
#   3. mpirun -np 1 ringplan run PLAN with the bundle's mpirun (and -np 2 on a cp=2 plan, which
#      exercises the shared-memory transport); ompi_info reports the bundle's component dir;
#      no OpenMPI/PMIx message box on stderr;
#   4. the same once more with the system libstdc++ and libgcc_s hidden too: env.sh must then
#      fall back to the bundled copies (lib/cxxrt), and must not use them while the system's
#      are sufficient (checked in the first pass).
# Usage: bundle_test.sh BUILD_DIR WORKDIR   (BUILD_DIR holds a built ringplan)
# Needs root and mount namespaces; prints "SKIPPED: why" and exits 0 where they are missing.
# Takes about 20 s (most of it stripping the bundle's copies).
set -u
[ $# -eq 2 ] || { echo "usage: bundle_test.sh BUILD_DIR WORKDIR (got $# arguments)" >&2; exit 2; }
build=$1; work=$2
repo=$(cd "$(dirname "$0")/../.." && pwd)

skip() { echo "SKIPPED: $*"; exit 0; }
[ "$(id -u)" -eq 0 ] || skip "not root; hiding the system libraries needs bind mounts"
command -v unshare >/dev/null || skip "unshare not found (util-linux)"
command -v mount >/dev/null || skip "mount not found"
# Private propagation (util-linux's default, made explicit): the bind mounts stay in the namespace.
unshare -m --propagation private true 2>/dev/null || skip "cannot create a mount namespace here (unshare -m failed; no CAP_SYS_ADMIN?)"
command -v orterun >/dev/null || skip "no system OpenMPI (orterun) to bundle"

rm -rf "$work"; mkdir -p "$work"
work=$(cd "$work" && pwd)
bundle=$work/bundle
if ! "$repo/scripts/packaging/make_bundle.sh" "$build" "$bundle" ringplan > "$work/make_bundle.log" 2>&1; then
  echo "FAIL: make_bundle.sh exited non-zero"; cat "$work/make_bundle.log"; exit 1
fi
cat "$work/make_bundle.log"

# A 1-rank variant of cpu_small (cp=1, 256 tokens: the run takes well under a second).
sed -e "s#^model: .*#model: $repo/configs/models/tiny_gqa.yaml#" \
    -e "s#^cluster: .*#cluster: $repo/configs/clusters/local_cpu.yaml#" \
    -e 's/^  seq_len: .*/  seq_len: 256/' -e 's/^gpus: .*/gpus: 1/' -e 's/^name: .*/name: bundle_1rank/' \
    "$repo/configs/experiments/cpu_small.yaml" > "$work/exp_1rank.yaml"

# The part that runs inside the namespace. Arguments: BUNDLE REPO WORK PASS (system | nocxx).
cat > "$work/inner.sh" <<'EOF'
set -u
B=$1; repo=$2; work=$3; pass=$4
fail=0
bad() { echo "FAIL [$pass]: $*"; fail=1; }
empty=$work/empty; mkdir -p "$empty"
hide_dir() { [ -d "$1" ] && mount --bind "$empty" "$1"; }
hide_file() {  # bind /dev/null over the real file behind PATH (symlinks resolved)
  local real; real=$(readlink -f "$1") || return 0
  [ -f "$real" ] && mount --bind /dev/null "$real"
}
hide_dir /usr/lib/x86_64-linux-gnu/openmpi
hide_dir /usr/share/openmpi
hide_dir /usr/lib/x86_64-linux-gnu/pmix2
hide_dir /etc/openmpi
# hwloc's plugins (PCI, OpenCL, GL, XML): the target has none; hwloc runs without them.
hide_dir /usr/lib/x86_64-linux-gnu/hwloc
for lib in "$B"/lib/*.so*; do
  s=$(basename "$lib")
  for d in /usr/lib/x86_64-linux-gnu /lib/x86_64-linux-gnu /usr/lib /lib; do
    [ -e "$d/$s" ] && hide_file "$d/$s"
  done
done
if [ "$pass" = nocxx ]; then
  for s in libstdc++.so.6 libgcc_s.so.1; do hide_file "/usr/lib/x86_64-linux-gnu/$s"; done
fi
for t in orterun orted ompi_info mpirun mpiexec; do
  p=$(command -v "$t") && hide_file "$p"
done

# 0. The hiding works: the bundled binary cannot start without env.sh.
if "$B/bin/ringplan" --version > "$work/$pass.nohide.log" 2>&1; then
  bad "ringplan started without env.sh; the system libraries are not hidden"
elif ! grep -Eq "error while loading shared libraries: ([^ ]*/)?lib(mpi|fmt|yaml|open|stdc|tomlplusplus)" "$work/$pass.nohide.log"; then
  bad "ringplan without env.sh failed, but not on a hidden library:"; cat "$work/$pass.nohide.log"
fi

cd / || exit 1   # env.sh must work when sourced from anywhere
# shellcheck disable=SC1091
source "$B/env.sh"
case ":$LD_LIBRARY_PATH:" in
  *":$B/lib/cxxrt:"*) cxxrt=bundle ;;
  *) cxxrt=system ;;
esac
if [ "$pass" = system ] && [ "$cxxrt" != system ]; then
  bad "env.sh put the bundled libstdc++ on LD_LIBRARY_PATH although the system one is sufficient"
fi
if [ "$pass" = nocxx ] && [ "$cxxrt" != bundle ]; then
  bad "env.sh did not fall back to the bundled libstdc++ with the system one hidden"
fi
[ "$(command -v mpirun)" = "$B/bin/mpirun" ] || bad "mpirun on PATH is $(command -v mpirun), not the bundle's"

# 1. plan the shipped default experiment.
if ! ringplan plan "$repo/configs/experiments/default.yaml" > "$work/$pass.plan_default.log" 2>&1; then
  bad "ringplan plan default.yaml exited non-zero"; cat "$work/$pass.plan_default.log"
elif ! grep -q "chosen plan" "$work/$pass.plan_default.log"; then
  bad "ringplan plan default.yaml printed no chosen plan"; cat "$work/$pass.plan_default.log"
fi
if ! ringplan plan "$work/exp_1rank.yaml" -o "$work/$pass.plan1.yaml" > "$work/$pass.plan1.log" 2>&1; then
  bad "ringplan plan exp_1rank.yaml exited non-zero"; cat "$work/$pass.plan1.log"
fi

# 2. singleton: MPI_Init without mpirun.
if ! timeout 60 ringplan run "$work/$pass.plan1.yaml" --scope attention --iters 2 --warmup 1 --format json \
     > "$work/$pass.singleton.json" 2> "$work/$pass.singleton.err"; then
  bad "singleton ringplan run exited non-zero"; cat "$work/$pass.singleton.err"
elif ! grep -q '"forward time (slowest rank)"' "$work/$pass.singleton.json"; then
  bad "singleton run printed no forward time"; cat "$work/$pass.singleton.json"
fi

# 3. under the bundle's mpirun.
if ! timeout 60 mpirun -np 1 ringplan run "$work/$pass.plan1.yaml" --scope attention --iters 2 --warmup 1 --format json \
     > "$work/$pass.mpirun.json" 2> "$work/$pass.mpirun.err"; then
  bad "mpirun -np 1 ringplan run exited non-zero"; cat "$work/$pass.mpirun.err"
elif ! grep -q '"forward time (slowest rank)"' "$work/$pass.mpirun.json"; then
  bad "mpirun run printed no forward time"; cat "$work/$pass.mpirun.json"
fi
# 3b. two ranks (shared-memory transport between processes), once: it does not depend on the C++ runtime.
if [ "$pass" = system ]; then
  if ! timeout 60 mpirun -np 2 --oversubscribe ringplan run "$repo/tests/runtime/data/plan_cp2.yaml" --scope attention --iters 1 \
       --warmup 0 --format json > "$work/$pass.mpirun2.json" 2> "$work/$pass.mpirun2.err"; then
    bad "mpirun -np 2 ringplan run plan_cp2.yaml exited non-zero"; cat "$work/$pass.mpirun2.err"
  elif ! grep -q '"forward time (slowest rank)"' "$work/$pass.mpirun2.json"; then
    bad "2-rank run printed no forward time"; cat "$work/$pass.mpirun2.json"
  fi
fi
# OpenMPI found its components through OPAL_PREFIX, not through a leftover system path.
want="$B/lib/x86_64-linux-gnu/openmpi/lib/openmpi3"
got=$(ompi_info --path pkglibdir --parsable 2>&1 | sed -n 's/^path:pkglibdir://p')
[ "$got" = "$want" ] || bad "ompi_info reports pkglibdir '$got', expected '$want'"

# OpenMPI and PMIx report a missing component, help file or parameter in a dashed box on stderr
# and often carry on; the bundle must not trigger any.
for f in "$work/$pass".*.err; do
  if grep -q -- '^-----------------' "$f"; then bad "$(basename "$f") holds an OpenMPI/PMIx message box:"; cat "$f"; fi
done
[ $fail -eq 0 ] && echo "bundle_test [$pass]: hidden system libraries, libstdc++ from $cxxrt: plan, singleton run, mpirun run OK"
exit $fail
EOF

fail=0
for pass in system nocxx; do
  unshare -m --propagation private bash "$work/inner.sh" "$bundle" "$repo" "$work" "$pass" || fail=1
done
[ $fail -eq 0 ] && echo "bundle_test: PASS"
exit $fail
