#ifndef PS_WORKER_MATRIX_KERNELS_H_
#define PS_WORKER_MATRIX_KERNELS_H_

#include <cstdint>

// The models' matrix products, built once per instruction set
// (worker/CMakeLists.txt) and chosen at run time by matrix_product.cc.
// Only plain pointers cross this header: each build has an Eigen of its own.
namespace ps::worker::matrix_kernels {

// A row-major matrix whose row r starts at data + r * stride.
struct ConstView {
  const float* data;
  int64_t rows, cols, stride;
};
struct View {
  float* data;
  int64_t rows, cols, stride;
};

struct Kernels {
  void (*product)(ConstView a, ConstView b, View out);             // a b
  void (*transposed_product)(ConstView a, ConstView b, View out);  // aᵀ b
  void (*product_transposed)(ConstView a, ConstView b, View out);  // a bᵀ
};

// Built with the build's own flags: runs wherever the program runs.
extern const Kernels kBaseline;
#ifdef PS_MATRIX_KERNELS_X86
extern const Kernels kAvx2;    // AVX2 and FMA
extern const Kernels kAvx512;  // AVX-512 F, BW, DQ and VL, with AVX2 and FMA
#endif

}  // namespace ps::worker::matrix_kernels

#endif  // PS_WORKER_MATRIX_KERNELS_H_
