#!/usr/bin/env bash
# matrix_kernel_symbols_test: an object of worker/matrix_kernels.cc, built
# for one instruction set, defines no symbol another file of the program
# could also define, so the linker never swaps in another build's code
# (worker/matrix_kernels.cc says why). Besides its own table, each name
# it defines must hold its own Eigen namespace.
#   tests/matrix_kernel_symbols_test.sh NM OBJECT NAME
# NAME is the build's PS_MATRIX_KERNELS_NAME: Baseline, Avx2 or Avx512.
set -euo pipefail
nm=$1 object=$2 name=$3
defined=$("$nm" --defined-only --extern-only --format=just-symbols "$object")
table="_ZN2ps6worker14matrix_kernels$((${#name} + 1))k${name}E"
# Eigen's own symbols, renamed: one per template it instantiated.
eigen="ps_eigen_${name}"
if ! grep -qx "$table" <<<"$defined"; then
  echo "FAIL: $object does not define its table $table" >&2
  exit 1
fi
if ! grep -q "$eigen" <<<"$defined"; then
  echo "FAIL: $object defines nothing in namespace $eigen: is Eigen renamed?" >&2
  exit 1
fi
# DW.ref.__gxx_personality_v0: the same pointer to libstdc++'s exception
# personality in every C++ object.
escaped=$(grep -vx -e "$table" -e 'DW.ref.__gxx_personality_v0' <<<"$defined" |
  grep -v "$eigen" || true)
if [[ -n "$escaped" ]]; then
  echo "FAIL: $object defines names that other files may define too:" >&2
  echo "$escaped" >&2
  exit 1
fi
echo "$object: $(wc -l <<<"$defined") symbols, all its own"
