#!/usr/bin/env bash
# Package ringplan's binaries so they run on a machine with no Debian packages: no OpenMPI,
# no fmt, no yaml-cpp (the GPU machine: x86_64, glibc >= 2.39, an NVIDIA driver, PyTorch and
# the `nvidia.nccl` python package, nothing else).
#
# Usage: scripts/packaging/make_bundle.sh BUILD_DIR OUT_DIR [BINARY_NAME...]
#   BINARY_NAME  executables to find under BUILD_DIR (default: the GPU executables CMake lists in
#                BUILD_DIR/gpu_executables.txt, cmake/RingplanGpuTargets.cmake; ringplan alone when
#                there is no such file); ringplan is required, any other that is missing is
#                reported and skipped.
#   OUT_DIR      created; if it exists it must be an earlier bundle (it holds MANIFEST.txt),
#                and is then replaced.
# On the target: `source OUT_DIR/env.sh` (bash), then run `ringplan ...` or `mpirun -np N ...`.
#
# Layout (OPAL_PREFIX=OUT_DIR; the paths are the ones Debian's OpenMPI 4.1.4 derives from its
# prefix, see `OPAL_PREFIX=/x ompi_info --path all`):
#   bin/                                    the binaries, orterun (= mpirun, mpiexec), orted, ompi_info
#   lib/                                    every shared library they need, named by soname
#   lib/cxxrt/                              libstdc++ and libgcc_s: used only when the target's own
#                                           lack a symbol version the binaries need (env.sh decides)
#   lib/x86_64-linux-gnu/openmpi/lib/openmpi3/  OpenMPI's MCA components (pkglibdir)
#   share/openmpi/                          OpenMPI help texts and amca param sets (pkgdatadir)
#   etc/openmpi/                            the MCA params file and default hostfile. Debian
#                                           configured sysconfdir as the absolute /etc/openmpi, which
#                                           OPAL_PREFIX does not move, so env.sh sets OPAL_SYSCONFDIR.
#   pmix/lib/pmix/, pmix/share/pmix/,       PMIx's components, help texts and params file. Debian's
#   pmix/etc/                               OpenMPI uses an external PMIx (4.2) configured with absolute
#                                           paths that no prefix variable moves; env.sh sets
#                                           PMIX_PKGLIBDIR, PMIX_PKGDATADIR and PMIX_SYSCONFDIR instead.
#                                           (The pcompress component is not optional: without it
#                                           mpirun prints an error box.)
#   env.sh, MANIFEST.txt
#   gpu_executables.txt                     BUILD_DIR's list, when it has one: bench/device_check.sh
#                                           reads the GPU tests to run from it
# No symlinks: every file is a plain copy, so the bundle survives any file transfer.
#
# What is left out, and why:
#   glibc (libc, libm, libpthread, libdl, librt, libresolv, ld-linux, ...): it must match the
#     target's loader; the binaries are built against glibc 2.36 and the target has >= 2.39,
#     which is backward compatible (env.sh warns if the target's libc is older than needed).
#   the NVIDIA driver (libcuda*, libnvidia*): it must match the target's kernel module.
#   libcublas, libcublasLt (the GPU training step's GEMMs): too large to carry (about 600 MB); the
#     target's PyTorch brings them in its `nvidia.cublas` python package, which env.sh finds.
#   libnccl: the target provides it through the `nvidia.nccl` python package (PyTorch's own);
#     env.sh puts that package's lib/ on LD_LIBRARY_PATH.
#   OpenMPI components for network fabrics (ucx, ofi, psm, psm2, openib, uct, usnic, portals) and
#     the OpenSHMEM frameworks: the bundle runs ranks on one machine over shared memory (btl
#     self,vader, pml ob1); leaving them out keeps them from being selected and keeps their
#     libraries (libucp, libfabric, libibverbs, ...) out of the bundle.
# The copies are stripped (strip --strip-unneeded); the originals are never touched.
set -euo pipefail

die() { echo "make_bundle.sh: error: $*" >&2; exit 1; }
note() { echo "make_bundle.sh: $*"; }

[ $# -ge 2 ] || die "usage: make_bundle.sh BUILD_DIR OUT_DIR [BINARY_NAME...] (got $# arguments)"
build_dir=$1; out=$2; shift 2
[ -d "$build_dir" ] || die "BUILD_DIR '$build_dir' is not a directory; give the CMake build directory that holds the binaries"
build_dir=$(cd "$build_dir" && pwd)
gpu_list=$build_dir/gpu_executables.txt
if [ $# -gt 0 ]; then names=("$@")
elif [ -f "$gpu_list" ]; then mapfile -t names < <(grep -v '^$' "$gpu_list")
else names=(ringplan); note "no $gpu_list (not a CUDA build): bundling ringplan only"; fi
for tool in ldd readelf strip find du; do
  command -v "$tool" >/dev/null || die "'$tool' not found on PATH; it is needed to collect and strip the libraries"
done

# The system OpenMPI to copy from (Debian 12's openmpi-bin / libopenmpi3 4.1.4).
ompi_prefix=/usr
ompi_pkglib=$ompi_prefix/lib/x86_64-linux-gnu/openmpi/lib/openmpi3
ompi_data=$ompi_prefix/share/openmpi
ompi_etc=/etc/openmpi
pmix_prefix=$ompi_prefix/lib/x86_64-linux-gnu/pmix2
[ -d "$ompi_pkglib" ] || die "OpenMPI components not found at $ompi_pkglib; install Debian's libopenmpi3 (OpenMPI 4.1.x)"
[ -d "$ompi_data" ] || die "OpenMPI help texts not found at $ompi_data; install Debian's openmpi-common"
for t in orterun orted ompi_info; do
  command -v "$t" >/dev/null || die "'$t' not found on PATH; install Debian's openmpi-bin"
done

is_elf() { [ "$(head -c4 "$1" | od -An -c | tr -d ' ')" = '177ELF' ]; }

# Find the binaries before OUT_DIR is touched, so a missing ringplan leaves no half bundle.
declare -A bin_src=()   # name -> path
for name in "${names[@]}"; do
  mapfile -t found < <(find "$build_dir" -type f -name "$name" -perm -u+x ! -path '*/CMakeFiles/*' 2>/dev/null)
  if [ ${#found[@]} -eq 0 ]; then
    [ "$name" = ringplan ] && die "ringplan not found under '$build_dir'; build it first (cmake --build $build_dir --target ringplan)"
    continue
  fi
  # Several copies (e.g. an old build tree inside the new one): take the newest, say which.
  src=$(stat -c '%Y %n' "${found[@]}" | sort -rn | head -n1 | cut -d' ' -f2-)
  [ ${#found[@]} -gt 1 ] && note "$name: ${#found[@]} copies under $build_dir, taking the newest: $src"
  is_elf "$src" || die "$src is not an ELF executable"
  bin_src[$name]=$src
done

# Refuse to delete anything that is not an earlier bundle.
if [ -e "$out" ]; then
  if ! { [ -f "$out/MANIFEST.txt" ] && head -n1 "$out/MANIFEST.txt" | grep -q '^ringplan device bundle'; }; then
    die "OUT_DIR '$out' exists and is not an earlier bundle (no MANIFEST.txt); give a new directory"
  fi
  rm -rf "$out"
fi
mkdir -p "$out"
out=$(cd "$out" && pwd)
mca_dir=$out/lib/x86_64-linux-gnu/openmpi/lib/openmpi3
mkdir -p "$out/bin" "$out/lib/cxxrt" "$mca_dir" "$out/share" "$out/etc/openmpi" \
         "$out/pmix/lib/pmix" "$out/pmix/share" "$out/pmix/etc"
manifest=$out/MANIFEST.txt
[ -f "$gpu_list" ] && cp "$gpu_list" "$out/gpu_executables.txt"
{ echo "ringplan device bundle, made $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname) from $build_dir"
  echo "source env.sh (bash) before running anything here"; echo; } > "$manifest"

# Copy SRC (symlinks followed) to DEST and strip the copy if it is ELF.
install_file() {
  cp -L "$1" "$2"
  chmod u+w "$2"
  if is_elf "$2"; then strip --strip-unneeded "$2" 2>/dev/null || note "could not strip $2 (kept as is)"; fi
}

# Sonames never bundled (see the header). Matched against the soname ldd prints.
excluded_soname() {
  case "$1" in
    linux-vdso.so.*|ld-linux*.so.*|libc.so.*|libm.so.*|libmvec.so.*|libpthread.so.*|libdl.so.*|\
    librt.so.*|libresolv.so.*|libutil.so.*|libanl.so.*|libnsl.so.*|libthread_db.so.*|\
    libBrokenLocale.so.*|libc_malloc_debug.so.*) echo glibc ;;
    libcuda.so*|libnvidia*|libnvcuvid*) echo "NVIDIA driver" ;;
    libnccl.so*) echo "NCCL (from the nvidia.nccl python package on the target)" ;;
    libcublas.so*|libcublasLt.so*) echo "cuBLAS (from the nvidia.cublas python package on the target; 600 MB)" ;;
    *) return 1 ;;
  esac
}

# needs_libs FILE: prints "soname path" for every library FILE needs (ldd: transitive), or
# "soname -" for one the loader cannot find here.
needs_libs() {
  ldd "$1" 2>/dev/null | awk '
    $2 == "=>" && $3 == "not" { print $1, "-"; next }
    $2 == "=>" && $3 ~ /^\// { print $1, $3 }'
}

declare -A bundled_lib=()   # soname -> source path
needs_nccl=0
# add_libs FILE WHAT: bundle FILE's libraries; returns 1 (copying nothing) if one is missing.
add_libs() {
  local file=$1 what=$2 soname path missing=()
  local -a pairs=()
  while read -r soname path; do
    if excluded_soname "$soname" >/dev/null; then
      [[ $soname == libnccl.so* ]] && needs_nccl=1
      continue
    fi
    if [ "$path" = - ]; then missing+=("$soname"); else pairs+=("$soname" "$path"); fi
  done < <(needs_libs "$file")
  if [ ${#missing[@]} -gt 0 ]; then
    note "$what needs ${missing[*]}, which the loader cannot find here"
    return 1
  fi
  local i
  for ((i = 0; i < ${#pairs[@]}; i += 2)); do
    soname=${pairs[i]}; path=${pairs[i+1]}
    [ -n "${bundled_lib[$soname]:-}" ] && continue
    bundled_lib[$soname]=$path
    case "$soname" in
      libstdc++.so.*|libgcc_s.so.*) install_file "$path" "$out/lib/cxxrt/$soname" ;;
      *) install_file "$path" "$out/lib/$soname" ;;
    esac
  done
}

# --- 1. the binaries ----------------------------------------------------------------------
echo "binaries:" >> "$manifest"
have_ringplan=0
for name in "${names[@]}"; do
  src=${bin_src[$name]:-}
  if [ -z "$src" ]; then
    note "skipping $name: not found under $build_dir"
    echo "  $name: not found, skipped" >> "$manifest"
    continue
  fi
  add_libs "$src" "$name" || die "$name ($src) cannot be bundled: a library it needs is missing on this machine"
  install_file "$src" "$out/bin/$name"
  [ "$name" = ringplan ] && have_ringplan=1
  echo "  $name: $src" >> "$manifest"
done
[ $have_ringplan -eq 1 ] || note "ringplan was not among the names given; the bundle holds only: ${names[*]}"

# --- 2. OpenMPI: launcher, daemon, info tool ------------------------------------------------
# mpirun and mpiexec are Debian alternatives pointing at orterun; plain copies replace the links.
for t in orterun orted ompi_info; do
  src=$(readlink -f "$(command -v "$t")")
  add_libs "$src" "$t" || die "$t ($src) cannot be bundled: a library it needs is missing"
  install_file "$src" "$out/bin/$t"
done
cp "$out/bin/orterun" "$out/bin/mpirun"
cp "$out/bin/orterun" "$out/bin/mpiexec"

# --- 3. OpenMPI MCA components --------------------------------------------------------------
# Fabric transports and OpenSHMEM are left out (see the header); a component whose libraries
# are missing here is skipped too (it could not load on the target either).
echo "OpenMPI components skipped:" >> "$manifest"
n_mca=0
for comp in "$ompi_pkglib"/*.so; do
  base=$(basename "$comp" .so); base=${base#mca_}
  case "$base" in
    *ucx*|*ofi*|*psm*|*openib*|*uct*|*usnic*|*portals*|atomic_*|memheap_*|scoll_*|spml_*|sshmem_*)
      echo "  $base (fabric transport or OpenSHMEM)" >> "$manifest"; continue ;;
  esac
  if add_libs "$comp" "component $base"; then
    install_file "$comp" "$mca_dir/$(basename "$comp")"
    n_mca=$((n_mca + 1))
  else
    echo "  $base (a library it needs is missing on the build machine)" >> "$manifest"
  fi
done
for need in ess_singleton ess_hnp pmix_isolated pmix_ext3x plm_isolated pml_ob1 btl_self btl_vader odls_default; do
  [ -f "$mca_dir/mca_$need.so" ] || die "OpenMPI component $need did not make it into the bundle; MPI_Init or mpirun -np 1 needs it"
done
cp -RL "$ompi_data" "$out/share/openmpi"
for f in openmpi-mca-params.conf openmpi-default-hostfile; do
  [ -f "$ompi_etc/$f" ] && cp "$ompi_etc/$f" "$out/etc/openmpi/$f"
done

# --- 4. PMIx components, help texts, params file ----------------------------------------------
[ -d "$pmix_prefix/lib/pmix" ] || die "PMIx components not found at $pmix_prefix/lib/pmix; install Debian's libpmix2"
for comp in "$pmix_prefix"/lib/pmix/*.so; do
  add_libs "$comp" "PMIx component $(basename "$comp")" \
    || die "PMIx component $comp cannot be bundled: a library it needs is missing"
  install_file "$comp" "$out/pmix/lib/pmix/$(basename "$comp")"
done
# Debian's pmix-mca-params.conf only pins mca_base_component_path to the system directory; the
# bundle's own file leaves it at its default, the pkglibdir (PMIX_PKGLIBDIR).
cat > "$out/pmix/etc/pmix-mca-params.conf" <<'CONF'
# PMIx MCA parameters of the ringplan device bundle (PMIX_SYSCONFDIR points here).
# Empty on purpose: components are found in PMIX_PKGLIBDIR, set by env.sh.
CONF
if [ -d "$pmix_prefix/share/pmix" ]; then cp -RL "$pmix_prefix/share/pmix" "$out/pmix/share/pmix"; fi

# --- 5. what the target's C/C++ runtime must provide ------------------------------------------
# Every symbol version the bundled ELF files need from libstdc++, libgcc_s and libc, read from
# their .gnu.version_r sections. env.sh checks the target's libraries against these lists.
needed_versions() {  # needed_versions SONAME_PREFIX: version names needed from that library
  find "$out/bin" "$out/lib" "$out/pmix" -type f ! -path "$out/lib/cxxrt/*" -print0 |
    while IFS= read -r -d '' f; do if is_elf "$f"; then readelf -V -W "$f" 2>/dev/null || true; fi; done |
    awk -v lib="$1" '
      /^Version needs section/ { inneed = 1; next }
      /^Version (definition|symbols) section/ { inneed = 0 }
      inneed && /File:/ { file = ""; for (i = 1; i < NF; i++) if ($i == "File:") file = $(i + 1) }
      inneed && /Name:/ && index(file, lib) == 1 { for (i = 1; i < NF; i++) if ($i == "Name:") print $(i + 1) }' |
    sort -uV
}
cxx_versions=$(needed_versions libstdc++.so.6 | tr '\n' ' ')
gcc_versions=$(needed_versions libgcc_s.so.1 | tr '\n' ' ')
glibc_max=$(needed_versions libc.so.6 | { grep '^GLIBC_[0-9]' || true; } | tail -n1)
[ -f "$out/lib/cxxrt/libstdc++.so.6" ] || note "no binary needs libstdc++ (unexpected for ringplan)"

# --- 6. env.sh --------------------------------------------------------------------------------
cat > "$out/env.sh" <<EOF
# Source this (bash) from any directory to run the bundle's binaries:  source $(basename "$out")/env.sh
# Made by scripts/packaging/make_bundle.sh; see MANIFEST.txt for what is inside.
# Symbol versions the bundled files need (filled in when the bundle was made):
_rpb_cxx_versions="$cxx_versions"
_rpb_gcc_versions="$gcc_versions"
_rpb_glibc_max="$glibc_max"
_rpb_needs_nccl=$needs_nccl
EOF
cat >> "$out/env.sh" <<'EOF'

# The settings must land in the caller's shell, and finding the bundle needs BASH_SOURCE.
if [ -z "${BASH_VERSION:-}" ]; then
  echo "env.sh: source this file from bash (it uses BASH_SOURCE to find the bundle)" >&2
  return 1 2>/dev/null || exit 1
fi
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  echo "env.sh: run as a script it changes nothing; source it: source ${BASH_SOURCE[0]}" >&2
  exit 1
fi
_rpb_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
_rpb_prev_ldpath=${LD_LIBRARY_PATH:-}

# _rpb_system_lib SONAME: the copy the dynamic loader would take if the bundle did not offer
# one: the first in the caller's LD_LIBRARY_PATH, else the ld.so cache, else the default dirs.
_rpb_system_lib() {
  local d c IFS=:
  for d in $_rpb_prev_ldpath; do
    if [ -n "$d" ] && [ -e "$d/$1" ]; then echo "$d/$1"; return 0; fi
  done
  IFS=' '
  c=$( { ldconfig -p 2>/dev/null || /sbin/ldconfig -p 2>/dev/null || /usr/sbin/ldconfig -p 2>/dev/null; } |
       awk -v n="$1" '$1 == n && /x86-64/ { print $NF; exit }')
  if [ -n "$c" ] && [ -e "$c" ]; then echo "$c"; return 0; fi
  for d in /lib/x86_64-linux-gnu /usr/lib/x86_64-linux-gnu /lib64 /usr/lib64; do
    if [ -e "$d/$1" ]; then echo "$d/$1"; return 0; fi
  done
  return 1
}
# _rpb_defines LIB VERSIONS...: true if LIB defines every symbol version named (a library's
# version names are NUL-separated strings in its .dynstr; -w keeps GLIBCXX_3.4.3 from
# matching GLIBCXX_3.4.30).
_rpb_defines() {
  local lib=$1 v; shift
  [ -s "$lib" ] || return 1
  for v in "$@"; do grep -qaFw "$v" "$lib" || return 1; done
  return 0
}

# libstdc++ and libgcc_s precedence. The binaries need a libstdc++ at least as new as the one
# they were built with (Debian 12: GCC 12). libstdc++ is backward compatible through symbol
# versioning, so a newer system copy serves them as well as the bundled one, and it must win
# when it is sufficient: LD_LIBRARY_PATH applies to everything started from this shell
# (python, PyTorch, NCCL) and an older libstdc++ put first would break those with
# "GLIBCXX_3.4.3x not found". So the bundled copies (lib/cxxrt) go on LD_LIBRARY_PATH only
# when the copy the loader would otherwise take lacks a version the bundle needs (or is
# absent). RINGPLAN_BUNDLE_CXXRT=bundle|system forces the choice.
_rpb_cxxrt=${RINGPLAN_BUNDLE_CXXRT:-auto}
if [ "$_rpb_cxxrt" = auto ]; then
  _rpb_cxxrt=system
  # shellcheck disable=SC2086  # the version lists are space-separated on purpose
  if ! _rpb_defines "$(_rpb_system_lib libstdc++.so.6 || true)" $_rpb_cxx_versions \
     || ! _rpb_defines "$(_rpb_system_lib libgcc_s.so.1 || true)" $_rpb_gcc_versions; then
    _rpb_cxxrt=bundle
  fi
fi
case "$_rpb_cxxrt" in
  bundle|system) ;;
  *) echo "env.sh: RINGPLAN_BUNDLE_CXXRT='$_rpb_cxxrt' is not valid; use auto, bundle or system" >&2
     _rpb_cxxrt=bundle ;;
esac

# NCCL comes from the nvidia.nccl python package (the one PyTorch uses), not from the bundle.
_rpb_nccl=""
if command -v python3 >/dev/null 2>&1; then
  _rpb_nccl=$(python3 -c 'import os, nvidia.nccl as n; print(os.path.join(list(n.__path__)[0], "lib"))' 2>/dev/null || true)
  if [ -n "$_rpb_nccl" ] && [ ! -d "$_rpb_nccl" ]; then _rpb_nccl=""; fi
fi
if [ "$_rpb_needs_nccl" = 1 ] && [ -z "$_rpb_nccl" ] && ! _rpb_system_lib libnccl.so.2 >/dev/null; then
  echo "env.sh: warning: a bundled binary needs libnccl.so.2, but 'python3 -c \"import nvidia.nccl\"' fails" \
       "and the loader finds none; install the nvidia-nccl-cu13 wheel or put a libnccl.so.2 directory on" \
       "LD_LIBRARY_PATH" >&2
fi

_rpb_ld="$_rpb_dir/lib"
if [ "$_rpb_cxxrt" = bundle ]; then _rpb_ld="$_rpb_ld:$_rpb_dir/lib/cxxrt"; fi
if [ -n "$_rpb_nccl" ]; then _rpb_ld="$_rpb_ld:$_rpb_nccl"; fi
# cuBLAS likewise from the nvidia.cublas python package, when there is one.
_rpb_cublas=""
if command -v python3 >/dev/null 2>&1; then
  _rpb_cublas=$(python3 -c 'import os, nvidia.cublas as n; print(os.path.join(list(n.__path__)[0], "lib"))' 2>/dev/null || true)
  if [ -n "$_rpb_cublas" ] && [ ! -d "$_rpb_cublas" ]; then _rpb_cublas=""; fi
fi
if [ -n "$_rpb_cublas" ]; then _rpb_ld="$_rpb_ld:$_rpb_cublas"; fi
# Re-sourcing replaces the bundle's entries instead of stacking them.
_rpb_strip() {  # _rpb_strip LIST: LIST (colon-separated) without this bundle's own entries
  local e out="" IFS=:
  for e in $1; do
    case "$e" in "$_rpb_dir/lib"|"$_rpb_dir/lib/cxxrt"|"$_rpb_dir/bin"|"$_rpb_nccl"|"$_rpb_cublas"|"") continue ;; esac
    out="${out:+$out:}$e"
  done
  echo "$out"
}
_rpb_rest=$(_rpb_strip "$_rpb_prev_ldpath")
export LD_LIBRARY_PATH="$_rpb_ld${_rpb_rest:+:$_rpb_rest}"
_rpb_rest=$(_rpb_strip "${PATH:-}")
export PATH="$_rpb_dir/bin${_rpb_rest:+:$_rpb_rest}"

# glibc is not bundled: the target's must be at least as new as the build's.
if [ -n "$_rpb_glibc_max" ] && ! _rpb_defines "$(_rpb_system_lib libc.so.6 || true)" "$_rpb_glibc_max"; then
  echo "env.sh: warning: this machine's libc.so.6 lacks $_rpb_glibc_max, which the bundled binaries need;" \
       "build them on a machine with an older glibc" >&2
fi

# OpenMPI, relocated into the bundle (OPAL_PREFIX moves bindir, pkglibdir, pkgdatadir; the
# sysconfdir Debian configured is absolute, hence OPAL_SYSCONFDIR). Debian's PMIx was configured
# with absolute directories that PMIX_PREFIX does not move: each is set on its own.
export OPAL_PREFIX="$_rpb_dir"
export OPAL_SYSCONFDIR="$_rpb_dir/etc/openmpi"
export PMIX_PKGLIBDIR="$_rpb_dir/pmix/lib/pmix"
export PMIX_PKGDATADIR="$_rpb_dir/pmix/share/pmix"
export PMIX_SYSCONFDIR="$_rpb_dir/pmix/etc"
# MPI_Init without mpirun starts no orted (a singleton runs alone).
export OMPI_MCA_ess_singleton_isolated=1
# Containers run as root; OpenMPI refuses that without both of these.
export OMPI_ALLOW_RUN_AS_ROOT=1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# Tunables: kept if the caller already set them.
# One machine: shared memory between ranks (vader) and loopback (self); ob1 is the point-to-
# point layer that drives them (the fabric components are not in the bundle).
export OMPI_MCA_btl="${OMPI_MCA_btl:-self,vader}"
export OMPI_MCA_pml="${OMPI_MCA_pml:-ob1}"
# Components whose libraries the target lacks fail to load; that is expected, not news.
export OMPI_MCA_mca_base_component_show_load_errors="${OMPI_MCA_mca_base_component_show_load_errors:-0}"
# vader's single-copy mode (CMA, process_vm_readv) needs ptrace rights that containers often
# withhold, and then fails mid-run; plain copy-in/copy-out through shared memory always works.
export OMPI_MCA_btl_vader_single_copy_mechanism="${OMPI_MCA_btl_vader_single_copy_mechanism:-none}"

unset -f _rpb_system_lib _rpb_defines _rpb_strip
unset _rpb_cxx_versions _rpb_gcc_versions _rpb_glibc_max _rpb_needs_nccl _rpb_prev_ldpath _rpb_cxxrt \
      _rpb_nccl _rpb_cublas _rpb_ld _rpb_rest _rpb_dir
EOF

# --- 7. manifest and size -------------------------------------------------------------------
{ echo; echo "libraries (lib/, lib/cxxrt/):"
  for s in $(printf '%s\n' "${!bundled_lib[@]}" | sort); do echo "  $s <- ${bundled_lib[$s]}"; done
  echo; echo "OpenMPI components bundled: $n_mca (lib/x86_64-linux-gnu/openmpi/lib/openmpi3)"
  echo; echo "not bundled: glibc, the NVIDIA driver (libcuda, libnvidia-*), libnccl (needed: $needs_nccl;"
  echo "  taken from the nvidia.nccl python package by env.sh)"
  echo "needed from the target's C++ runtime: $cxx_versions$gcc_versions"
  echo "needed from the target's glibc: up to ${glibc_max:-none}"; } >> "$manifest"

bytes=$(du -sb "$out" | cut -f1)
mib=$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1048576 }')
note "bundle $out: $mib MiB, $(find "$out/bin" -type f | wc -l) binaries, ${#bundled_lib[@]} libraries, $n_mca OpenMPI components"
[ "$needs_nccl" = 1 ] && note "libnccl.so.2 is needed but not bundled: the target's nvidia.nccl python package provides it"
# A device session carries at most 64 MiB for the repo and every carried folder together.
if [ "$bytes" -gt $((64 * 1048576)) ]; then
  die "bundle is $mib MiB, over the 64 MiB a device session can carry; see MANIFEST.txt for the largest libraries"
elif [ "$bytes" -gt $((40 * 1048576)) ]; then
  note "warning: bundle is $mib MiB, above the 40 MiB budget (the repo and other carried folders share 64 MiB)"
fi
