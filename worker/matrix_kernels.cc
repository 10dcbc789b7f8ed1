// Compiled once per instruction set, each time with PS_MATRIX_KERNELS_NAME
// set to the name of the table it defines (Baseline, Avx2, Avx512).
#include "worker/matrix_kernels.h"

// Eigen is all templates and inline functions. Built with other -m flags,
// its instantiations would carry the same names as those of the portable
// files, and the linker keeps one copy of each name for the whole program:
// a portable caller could end up in AVX code. Renaming Eigen's namespace
// for this file gives each build copies of its own;
// tests/matrix_kernel_symbols_test.sh checks that nothing else escapes.
#define PS_CONCAT_(a, b) a##b
#define PS_CONCAT(a, b) PS_CONCAT_(a, b)
#define Eigen PS_CONCAT(ps_eigen_, PS_MATRIX_KERNELS_NAME)
#include <Eigen/Core>

namespace ps::worker::matrix_kernels {
namespace {

using Matrix =
    Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using ConstMap =
    Eigen::Map<const Matrix, Eigen::Unaligned, Eigen::OuterStride<>>;
using Map = Eigen::Map<Matrix, Eigen::Unaligned, Eigen::OuterStride<>>;

ConstMap In(ConstView m) {
  return ConstMap(m.data, m.rows, m.cols, Eigen::OuterStride<>(m.stride));
}

Map Out(View m) {
  return Map(m.data, m.rows, m.cols, Eigen::OuterStride<>(m.stride));
}

void Product(ConstView a, ConstView b, View out) {
  Out(out).noalias() = In(a) * In(b);
}

void TransposedProduct(ConstView a, ConstView b, View out) {
  Out(out).noalias() = In(a).transpose() * In(b);
}

void ProductTransposed(ConstView a, ConstView b, View out) {
  Out(out).noalias() = In(a) * In(b).transpose();
}

}  // namespace

extern const Kernels PS_CONCAT(k, PS_MATRIX_KERNELS_NAME) = {
    Product, TransposedProduct, ProductTransposed};

}  // namespace ps::worker::matrix_kernels
