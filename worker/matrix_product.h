#ifndef PS_WORKER_MATRIX_PRODUCT_H_
#define PS_WORKER_MATRIX_PRODUCT_H_

#include <Eigen/Core>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "common/dataset.h"

// The models' matrix products, where a dense model spends its time. They
// run on the best kernels this CPU can run (matrix_kernels.h): one portable
// program uses AVX2 or AVX-512 where the CPU has it.
namespace ps::worker {

using ConstMatrixRef = Eigen::Ref<const common::RowMatrix>;
using MatrixRef = Eigen::Ref<common::RowMatrix>;

// out = a b
void Product(const ConstMatrixRef& a, const ConstMatrixRef& b, MatrixRef out);
// out = aᵀ b
void TransposedProduct(const ConstMatrixRef& a, const ConstMatrixRef& b,
                       MatrixRef out);
// out = a bᵀ
void ProductTransposed(const ConstMatrixRef& a, const ConstMatrixRef& b,
                       MatrixRef out);

// The kernels' names, best first: "avx512", "avx2" (x86-64 only) and
// "baseline" (the build's own flags).
std::vector<absl::string_view> AllMatrixKernels();
// Those of AllMatrixKernels() this CPU runs.
std::vector<absl::string_view> MatrixKernelsThisCpuRuns();
// Chooses the kernels for every later product: "auto" (the default) is the
// best this CPU runs. Naming one pins it, say to rule the instruction set
// out when comparing runs on different CPUs. InvalidArgument for a name
// not in AllMatrixKernels(), FailedPrecondition for one this CPU lacks.
absl::Status UseMatrixKernels(absl::string_view name);
// The name of the kernels in use.
absl::string_view MatrixKernelsInUse();

}  // namespace ps::worker

#endif  // PS_WORKER_MATRIX_PRODUCT_H_
