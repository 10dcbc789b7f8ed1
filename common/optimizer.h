#ifndef PS_COMMON_OPTIMIZER_H_
#define PS_COMMON_OPTIMIZER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/update_rule.h"

namespace ps::common {

// The server-side optimizers: pure functions over one segment of θ, its
// gradient g and the optimizer's named state vectors, all elementwise in key
// order (each value of θ and of the state depends on its own key only,
// except through the ball of max_norm), so results do not depend on how
// keys are split across shards, and a checkpoint stores the state per key.
// Every state vector starts at 0.
//
// They compose with UpdateOptions (DESIGN §1) in one way for all, with α the
// (scheduled) learning_rate and t ≥ 1 the number of this update:
//   ĝ  = g + λ₂·θ + β·∇C(θ)             L2 and penalty as gradient terms
//                                        (AdamW: ĝ = g + β·∇C(θ), see below)
//   θ' = θ − ηᵢ·dᵢ                       the optimizer's step, with ηᵢ its
//                                        per-coordinate step size
//   θ' = prox_{ηᵢ·λ₁}(θ')                L1: exact soft-threshold by ηᵢ·λ₁
//   θ  = Π_K(θ')                         hard constraints, as ApplyUpdate
// Per optimizer (state in brackets, in this order):
//   sgd       ηᵢ = α, dᵢ = ĝ: exactly ApplyUpdate, bit for bit.
//   momentum  [velocity] v = μ·v + ĝ; ηᵢ = α, dᵢ = v.
//   nesterov  [velocity] v = μ·v + ĝ; ηᵢ = α, dᵢ = ĝ + μ·v.
//   adagrad   [accumulator] G = G + ĝ²; ηᵢ = α/(√G + ε), dᵢ = ĝ.
//   adam      [m, v] m = β₁·m + (1−β₁)·ĝ, v = β₂·v + (1−β₂)·ĝ²;
//             ηᵢ = α/(√v̂ + ε) with v̂ = v/(1−β₂ᵗ), dᵢ = m/(1−β₁ᵗ). L2 goes
//             through the moments, so it is scaled down where v is large.
//   adamw     [m, v] as adam, but λ₂ is decoupled weight decay (Loshchilov
//             and Hutter): θ' = θ − α·λ₂·θ − ηᵢ·dᵢ, the same decay for
//             every coordinate whatever its gradient history.
//   ftrl      [z, n] FTRL-proximal (McMahan et al. 2013, algorithm 1) on ĝ:
//             σ = (√(n + ĝ²) − √n)/α, z = z + ĝ − σ·θ, n = n + ĝ²,
//             θ' = 0 if |z| ≤ ℓ₁, else −(z − sgn(z)·ℓ₁)/((β + √n)/α + ℓ₂),
//             with ℓ₁, ℓ₂ = ftrl_l1, ftrl_l2: its own regularization, in
//             closed form on the accumulated z (ℓ₁ once, not per step: the
//             usual way to make FTRL sparse). The shared λ₁ is still the
//             soft-threshold after it, with ηᵢ = α/(β + √n); leave it 0 with
//             ftrl unless both are wanted.
// regularize = false (biases) drops λ₁ and λ₂ (and adamw's decay), not ftrl's
// own ℓ₁, ℓ₂, which are part of the optimizer; constraints apply either way.
enum class OptimizerKind {
  kSgd,
  kMomentum,
  kNesterov,
  kAdagrad,
  kAdam,
  kAdamW,
  kFtrl
};

// The optimizer and its settings; each field is used by the optimizers
// named in its comment and ignored by the rest.
struct OptimizerOptions {
  OptimizerKind kind = OptimizerKind::kSgd;
  // momentum, nesterov: μ, in [0, 1). Default: 0.9
  float momentum = 0.9f;
  // adam, adamw: the moments' decay rates β₁, β₂, in [0, 1).
  // Default: 0.9, 0.999
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  // adagrad, adam, adamw: ε > 0 in the denominator. Default: 1e-8
  float epsilon = 1e-8f;
  // ftrl: β > 0 in the per-coordinate step α/(β + √n). Default: 1
  float ftrl_beta = 1.0f;
  // ftrl: its own L1 and L2 strengths ℓ₁, ℓ₂ ≥ 0. Default: 0
  float ftrl_l1 = 0.0f;
  float ftrl_l2 = 0.0f;
};

// "sgd", "momentum", "nesterov", "adagrad", "adam", "adamw", "ftrl".
absl::StatusOr<OptimizerKind> ParseOptimizerKind(absl::string_view name);
absl::string_view OptimizerName(OptimizerKind kind);

// An optimizer and its settings as one string, the syntax of --optimizer
// and of a tensor's or table's declaration: NAME or NAME(KEY=VALUE,...),
// with the settings the optimizer uses, named as OptimizerOptions' fields:
//   sgd | momentum(momentum=0.9) | nesterov(momentum=0.9) |
//   adagrad(epsilon=1e-8) | adam(beta1=0.9,beta2=0.999,epsilon=1e-8) |
//   adamw(...as adam) | ftrl(ftrl_beta=1,ftrl_l1=0,ftrl_l2=0)
// Settings left out keep their defaults. INVALID_ARGUMENT quoting the text
// for an unknown optimizer or setting, a setting given twice, a value that
// is not a number, or one out of range (ValidateOptimizerOptions).
absl::StatusOr<OptimizerOptions> ParseOptimizerSpec(absl::string_view text);

// `options` in ParseOptimizerSpec's syntax with every setting its kind uses,
// each written so that it parses back to the same float.
std::string OptimizerSpecString(const OptimizerOptions& options);

// The names of the kind's state vectors, in the order ApplyOptimizer takes
// them (empty for sgd): what a checkpoint stores beside θ.
const std::vector<std::string>& OptimizerStateNames(OptimizerKind kind);

// Rejects settings out of range for the chosen optimizer (the others'
// fields are not checked), naming the field, its range and the value.
absl::Status ValidateOptimizerOptions(const OptimizerOptions& options);

// Applies one update of `options` to a segment of θ; `state` holds one span
// per OptimizerStateNames(kind), each θ-sized. `step` is t ≥ 1, this
// update's number (adam and adamw's bias correction). Options and sizes
// are the caller's to validate; no locks here.
void ApplyOptimizer(const OptimizerOptions& options,
                    const UpdateOptions& update, bool regularize, uint64_t step,
                    absl::Span<const float> gradient, absl::Span<float> theta,
                    absl::Span<const absl::Span<float>> state);

}  // namespace ps::common

#endif  // PS_COMMON_OPTIMIZER_H_
