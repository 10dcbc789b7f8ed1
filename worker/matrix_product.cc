#include "worker/matrix_product.h"

#include <atomic>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "worker/matrix_kernels.h"

namespace ps::worker {
namespace {

struct Choice {
  absl::string_view name;
  const matrix_kernels::Kernels* kernels;
  bool (*cpu_runs)();
};

bool Always() { return true; }

#ifdef PS_MATRIX_KERNELS_X86
// __builtin_cpu_supports also asks whether the OS saves the wide registers.
bool CpuRunsAvx2() {
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

bool CpuRunsAvx512() {
  return CpuRunsAvx2() && __builtin_cpu_supports("avx512f") &&
         __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512vl");
}
#endif

// Best first.
const Choice kChoices[] = {
#ifdef PS_MATRIX_KERNELS_X86
    {"avx512", &matrix_kernels::kAvx512, CpuRunsAvx512},
    {"avx2", &matrix_kernels::kAvx2, CpuRunsAvx2},
#endif
    {"baseline", &matrix_kernels::kBaseline, Always},
};

const Choice* BestThisCpuRuns() {
  for (const Choice& choice : kChoices) {
    if (choice.cpu_runs()) return &choice;
  }
  return nullptr;  // unreachable: the baseline runs everywhere
}

std::atomic<const Choice*> chosen{nullptr};

const Choice& Chosen() {
  const Choice* choice = chosen.load(std::memory_order_acquire);
  if (choice == nullptr) {
    // Two first callers both store the same best choice.
    choice = BestThisCpuRuns();
    chosen.store(choice, std::memory_order_release);
  }
  return *choice;
}

const matrix_kernels::Kernels& Kernels() { return *Chosen().kernels; }

matrix_kernels::ConstView In(const ConstMatrixRef& m) {
  return {m.data(), m.rows(), m.cols(), m.outerStride()};
}

matrix_kernels::View Out(MatrixRef& m) {
  return {m.data(), m.rows(), m.cols(), m.outerStride()};
}

}  // namespace

void Product(const ConstMatrixRef& a, const ConstMatrixRef& b, MatrixRef out) {
  Kernels().product(In(a), In(b), Out(out));
}

void TransposedProduct(const ConstMatrixRef& a, const ConstMatrixRef& b,
                       MatrixRef out) {
  Kernels().transposed_product(In(a), In(b), Out(out));
}

void ProductTransposed(const ConstMatrixRef& a, const ConstMatrixRef& b,
                       MatrixRef out) {
  Kernels().product_transposed(In(a), In(b), Out(out));
}

std::vector<absl::string_view> AllMatrixKernels() {
  std::vector<absl::string_view> names;
  for (const Choice& choice : kChoices) names.push_back(choice.name);
  return names;
}

std::vector<absl::string_view> MatrixKernelsThisCpuRuns() {
  std::vector<absl::string_view> names;
  for (const Choice& choice : kChoices) {
    if (choice.cpu_runs()) names.push_back(choice.name);
  }
  return names;
}

absl::Status UseMatrixKernels(absl::string_view name) {
  if (name == "auto") {
    chosen.store(BestThisCpuRuns(), std::memory_order_release);
    return absl::OkStatus();
  }
  for (const Choice& choice : kChoices) {
    if (choice.name != name) continue;
    if (!choice.cpu_runs()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "this CPU cannot run the ", name, " matrix kernels; it runs: ",
          absl::StrJoin(MatrixKernelsThisCpuRuns(), ", ")));
    }
    chosen.store(&choice, std::memory_order_release);
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown matrix kernels \"", name, "\": auto, ",
                   absl::StrJoin(AllMatrixKernels(), ", ")));
}

absl::string_view MatrixKernelsInUse() { return Chosen().name; }

}  // namespace ps::worker
