#include "common/optimizer.h"

#include <algorithm>
#include <array>
#include <cassert>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/cpu_clones.h"

namespace ps::common {
namespace {

constexpr std::array<std::pair<OptimizerKind, absl::string_view>, 7> kNames = {
    {{OptimizerKind::kSgd, "sgd"},
     {OptimizerKind::kMomentum, "momentum"},
     {OptimizerKind::kNesterov, "nesterov"},
     {OptimizerKind::kAdagrad, "adagrad"},
     {OptimizerKind::kAdam, "adam"},
     {OptimizerKind::kAdamW, "adamw"},
     {OptimizerKind::kFtrl, "ftrl"}}};

// The UpdateOptions terms every optimizer shares (optimizer.h's formula).
// kGeneral = false when there is no penalty, L1 or box, so that the usual
// loop has no branches and vectorises; both give the same values.
template <bool kGeneral>
struct SharedTerms {
  float l2, l1, lo, hi, beta, ball_scale;
  bool penalize, clamp;

  // ĝ = g + λ₂·θ + β·∇C(θ).
  float Gradient(float theta, float gradient) const {
    float step = gradient + l2 * theta;
    if (kGeneral && penalize) {
      const float box_gradient =
          std::max(theta - hi, 0.0f) - std::max(lo - theta, 0.0f);
      step += beta * (box_gradient + ball_scale * theta);
    }
    return step;
  }

  // The soft-threshold by η·λ₁, then the box.
  float Finish(float next, float eta) const {
    if constexpr (!kGeneral) return next;
    if (l1 > 0) {
      const float threshold = eta * l1;
      next -= std::min(std::max(next, -threshold), threshold);
    }
    return clamp ? std::min(std::max(next, lo), hi) : next;
  }
};

absl::Status CheckUnitInterval(absl::string_view name, float value) {
  if (!(value >= 0 && value < 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, " must be in [0, 1), got ", value));
  }
  return absl::OkStatus();
}

absl::Status CheckPositive(absl::string_view name, float value) {
  if (!std::isfinite(value) || value <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, " must be a positive finite number, got ", value));
  }
  return absl::OkStatus();
}

absl::Status CheckNonNegative(absl::string_view name, float value) {
  if (!std::isfinite(value) || value < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, " must be a finite number >= 0, got ", value));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<OptimizerKind> ParseOptimizerKind(absl::string_view name) {
  for (const auto& [kind, kind_name] : kNames) {
    if (name == kind_name) return kind;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown optimizer '", name,
                   "'; the optimizers are sgd, momentum, nesterov, adagrad, "
                   "adam, adamw, ftrl"));
}

absl::string_view OptimizerName(OptimizerKind kind) {
  for (const auto& [each, name] : kNames) {
    if (each == kind) return name;
  }
  return "unknown";
}

const std::vector<std::string>& OptimizerStateNames(OptimizerKind kind) {
  static const auto* const kNone = new std::vector<std::string>();
  static const auto* const kVelocity = new std::vector<std::string>{"velocity"};
  static const auto* const kAccumulator =
      new std::vector<std::string>{"accumulator"};
  static const auto* const kMoments = new std::vector<std::string>{"m", "v"};
  static const auto* const kFtrl = new std::vector<std::string>{"z", "n"};
  switch (kind) {
    case OptimizerKind::kSgd:
      return *kNone;
    case OptimizerKind::kMomentum:
    case OptimizerKind::kNesterov:
      return *kVelocity;
    case OptimizerKind::kAdagrad:
      return *kAccumulator;
    case OptimizerKind::kAdam:
    case OptimizerKind::kAdamW:
      return *kMoments;
    case OptimizerKind::kFtrl:
      return *kFtrl;
  }
  return *kNone;
}

absl::Status ValidateOptimizerOptions(const OptimizerOptions& o) {
  switch (o.kind) {
    case OptimizerKind::kSgd:
      return absl::OkStatus();
    case OptimizerKind::kMomentum:
    case OptimizerKind::kNesterov:
      return CheckUnitInterval("momentum", o.momentum);
    case OptimizerKind::kAdagrad:
      return CheckPositive("epsilon", o.epsilon);
    case OptimizerKind::kAdam:
    case OptimizerKind::kAdamW:
      for (auto [name, value] :
           {std::pair{"beta1", o.beta1}, std::pair{"beta2", o.beta2}}) {
        if (absl::Status s = CheckUnitInterval(name, value); !s.ok()) return s;
      }
      return CheckPositive("epsilon", o.epsilon);
    case OptimizerKind::kFtrl:
      if (absl::Status s = CheckPositive("ftrl_beta", o.ftrl_beta); !s.ok()) {
        return s;
      }
      for (auto [name, value] :
           {std::pair{"ftrl_l1", o.ftrl_l1}, std::pair{"ftrl_l2", o.ftrl_l2}}) {
        if (absl::Status s = CheckNonNegative(name, value); !s.ok()) return s;
      }
      return absl::OkStatus();
  }
  return absl::InvalidArgumentError("unknown optimizer kind");
}

namespace {

struct Setting {
  absl::string_view name;
  float OptimizerOptions::*field;
};

// The settings each optimizer uses, in the order OptimizerSpecString writes
// them.
std::vector<Setting> SettingsOf(OptimizerKind kind) {
  switch (kind) {
    case OptimizerKind::kSgd:
      return {};
    case OptimizerKind::kMomentum:
    case OptimizerKind::kNesterov:
      return {{"momentum", &OptimizerOptions::momentum}};
    case OptimizerKind::kAdagrad:
      return {{"epsilon", &OptimizerOptions::epsilon}};
    case OptimizerKind::kAdam:
    case OptimizerKind::kAdamW:
      return {{"beta1", &OptimizerOptions::beta1},
              {"beta2", &OptimizerOptions::beta2},
              {"epsilon", &OptimizerOptions::epsilon}};
    case OptimizerKind::kFtrl:
      return {{"ftrl_beta", &OptimizerOptions::ftrl_beta},
              {"ftrl_l1", &OptimizerOptions::ftrl_l1},
              {"ftrl_l2", &OptimizerOptions::ftrl_l2}};
  }
  return {};
}

// The shortest of %g's forms that reads back as `value`.
std::string FloatText(float value) {
  for (int digits : {6, 9}) {
    std::string text = absl::StrFormat("%.*g", digits, value);
    float back = 0;
    if (absl::SimpleAtof(text, &back) && back == value) return text;
  }
  return absl::StrFormat("%.9g", value);
}

}  // namespace

absl::StatusOr<OptimizerOptions> ParseOptimizerSpec(absl::string_view text) {
  const auto bad = [text](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("optimizer '", text, "': ", why));
  };
  absl::string_view rest = absl::StripAsciiWhitespace(text);
  absl::string_view settings;
  if (const size_t open = rest.find('('); open != absl::string_view::npos) {
    if (!absl::EndsWith(rest, ")"))
      return bad("the settings must end with ')'");
    settings = rest.substr(open + 1, rest.size() - open - 2);
    rest = absl::StripAsciiWhitespace(rest.substr(0, open));
  }
  absl::StatusOr<OptimizerKind> kind = ParseOptimizerKind(rest);
  if (!kind.ok()) return bad(kind.status().message());
  OptimizerOptions options;
  options.kind = *kind;
  const std::vector<Setting> known = SettingsOf(*kind);
  std::vector<absl::string_view> seen;
  for (absl::string_view item :
       absl::StrSplit(settings, ',', absl::SkipWhitespace())) {
    const std::pair<absl::string_view, absl::string_view> key_value =
        absl::StrSplit(item, absl::MaxSplits('=', 1));
    const absl::string_view key = absl::StripAsciiWhitespace(key_value.first);
    const auto setting =
        std::find_if(known.begin(), known.end(),
                     [key](const Setting& s) { return s.name == key; });
    if (setting == known.end()) {
      std::vector<absl::string_view> names;
      for (const Setting& s : known) names.push_back(s.name);
      return bad(absl::StrCat(
          OptimizerName(*kind), " has no setting '", key, "'; ",
          names.empty()
              ? "it has none"
              : absl::StrCat("its settings are ", absl::StrJoin(names, ", "))));
    }
    if (std::find(seen.begin(), seen.end(), key) != seen.end()) {
      return bad(absl::StrCat(key, " is given twice"));
    }
    seen.push_back(key);
    const absl::string_view value =
        absl::StripAsciiWhitespace(key_value.second);
    if (!absl::SimpleAtof(value, &(options.*(setting->field)))) {
      return bad(absl::StrCat(key, " must be KEY=NUMBER, got '", item, "'"));
    }
  }
  if (absl::Status s = ValidateOptimizerOptions(options); !s.ok()) {
    return bad(s.message());
  }
  return options;
}

std::string OptimizerSpecString(const OptimizerOptions& options) {
  std::vector<std::string> settings;
  for (const Setting& s : SettingsOf(options.kind)) {
    settings.push_back(absl::StrCat(s.name, "=", FloatText(options.*s.field)));
  }
  if (settings.empty()) return std::string(OptimizerName(options.kind));
  return absl::StrCat(OptimizerName(options.kind), "(",
                      absl::StrJoin(settings, ","), ")");
}

namespace {

// FTRL's closed form: 0 when |z| ≤ ℓ₁, else −(z − sgn(z)·ℓ₁)/denominator.
// Written as a division on every key and a bit mask (+0 where |z| ≤ ℓ₁,
// the quotient otherwise, NaN included): a `?:` let the compiler move the
// division under the condition, and a division that may trap kept the
// loop scalar.
inline float FtrlWeight(float z, float l1, float denominator) {
  const float shrunk = -(z - std::copysign(l1, z)) / denominator;
  uint32_t bits;
  std::memcpy(&bits, &shrunk, sizeof(bits));
  bits &= -static_cast<uint32_t>(!(std::abs(z) <= l1));
  float weight;
  std::memcpy(&weight, &bits, sizeof(weight));
  return weight;
}

// The elementwise part of every optimizer but sgd.
template <bool kGeneral>
[[gnu::always_inline]] inline void UpdateElements(
    const OptimizerOptions& o, const UpdateOptions& update, bool regularize,
    uint64_t step, absl::Span<const float> gradient, absl::Span<float> theta,
    absl::Span<const absl::Span<float>> state) {
  const size_t n = theta.size();
  const float lr = update.learning_rate;
  SharedTerms<kGeneral> c;
  c.l2 = regularize ? update.l2 : 0.0f;
  c.l1 = regularize ? update.l1 : 0.0f;
  c.lo = update.box_lower();
  c.hi = update.clip_max;
  c.beta = update.penalty_beta;
  c.penalize = update.penalty_beta > 0;
  c.clamp = !c.penalize && update.has_box();
  c.ball_scale = BallPenaltyScale(update, theta);
  const float* __restrict g = gradient.data();
  float* __restrict t = theta.data();

  switch (o.kind) {
    case OptimizerKind::kSgd:
      break;
    case OptimizerKind::kMomentum:
    case OptimizerKind::kNesterov: {
      float* __restrict v = state[0].data();
      const float mu = o.momentum;
      const bool nesterov = o.kind == OptimizerKind::kNesterov;
      for (size_t i = 0; i < n; ++i) {
        const float d = c.Gradient(t[i], g[i]);
        v[i] = mu * v[i] + d;
        const float direction = nesterov ? d + mu * v[i] : v[i];
        t[i] = c.Finish(t[i] - lr * direction, lr);
      }
      break;
    }
    case OptimizerKind::kAdagrad: {
      float* __restrict accumulator = state[0].data();
      const float epsilon = o.epsilon;
      for (size_t i = 0; i < n; ++i) {
        const float d = c.Gradient(t[i], g[i]);
        accumulator[i] += d * d;
        const float eta = lr / (std::sqrt(accumulator[i]) + epsilon);
        t[i] = c.Finish(t[i] - eta * d, eta);
      }
      break;
    }
    case OptimizerKind::kAdam:
    case OptimizerKind::kAdamW: {
      float* __restrict m = state[0].data();
      float* __restrict v = state[1].data();
      const double t_steps = static_cast<double>(step);
      const float m_correction =
          static_cast<float>(1 - std::pow(double{o.beta1}, t_steps));
      const float v_correction =
          static_cast<float>(1 - std::pow(double{o.beta2}, t_steps));
      // AdamW takes λ₂ out of the gradient and decays θ by α·λ₂ directly.
      const float decay = o.kind == OptimizerKind::kAdamW ? lr * c.l2 : 0.0f;
      if (o.kind == OptimizerKind::kAdamW) c.l2 = 0;
      // In locals: read through `o` after each store to m and v (which the
      // compiler must assume may alias it), they kept the loop scalar.
      const float beta1 = o.beta1, beta2 = o.beta2, epsilon = o.epsilon;
      const float keep1 = 1 - beta1, keep2 = 1 - beta2;
      for (size_t i = 0; i < n; ++i) {
        const float d = c.Gradient(t[i], g[i]);
        m[i] = beta1 * m[i] + keep1 * d;
        v[i] = beta2 * v[i] + keep2 * d * d;
        const float eta = lr / (std::sqrt(v[i] / v_correction) + epsilon);
        t[i] = c.Finish(t[i] - decay * t[i] - eta * (m[i] / m_correction), eta);
      }
      break;
    }
    case OptimizerKind::kFtrl: {
      float* __restrict z = state[0].data();
      float* __restrict accumulator = state[1].data();
      const float beta = o.ftrl_beta, l1 = o.ftrl_l1, l2 = o.ftrl_l2;
      for (size_t i = 0; i < n; ++i) {
        const float d = c.Gradient(t[i], g[i]);
        const float old_root = std::sqrt(accumulator[i]);
        accumulator[i] += d * d;
        const float root = std::sqrt(accumulator[i]);
        z[i] += d - (root - old_root) / lr * t[i];
        const float eta = lr / (beta + root);
        t[i] = c.Finish(FtrlWeight(z[i], l1, (beta + root) / lr + l2), eta);
      }
      break;
    }
  }
}

// Each of the two, built for each instruction set (common/cpu_clones.h).
PS_CPU_CLONES void UpdateWithTerms(const OptimizerOptions& o,
                                   const UpdateOptions& update, bool regularize,
                                   uint64_t step,
                                   absl::Span<const float> gradient,
                                   absl::Span<float> theta,
                                   absl::Span<const absl::Span<float>> state) {
  UpdateElements<true>(o, update, regularize, step, gradient, theta, state);
}

PS_CPU_CLONES void UpdatePlain(const OptimizerOptions& o,
                               const UpdateOptions& update, bool regularize,
                               uint64_t step, absl::Span<const float> gradient,
                               absl::Span<float> theta,
                               absl::Span<const absl::Span<float>> state) {
  UpdateElements<false>(o, update, regularize, step, gradient, theta, state);
}

}  // namespace

void ApplyOptimizer(const OptimizerOptions& o, const UpdateOptions& update,
                    bool regularize, uint64_t step,
                    absl::Span<const float> gradient, absl::Span<float> theta,
                    absl::Span<const absl::Span<float>> state) {
  assert(gradient.size() == theta.size());
  assert(state.size() == OptimizerStateNames(o.kind).size());
  if (o.kind == OptimizerKind::kSgd) {
    ApplyUpdate(update, regularize, gradient, theta);
    return;
  }
  const float l1 = regularize ? update.l1 : 0.0f;
  const bool penalize = update.penalty_beta > 0;
  if (penalize || l1 > 0 || update.has_box()) {
    UpdateWithTerms(o, update, regularize, step, gradient, theta, state);
  } else {
    UpdatePlain(o, update, regularize, step, gradient, theta, state);
  }
  ProjectOntoBall(update, theta);
}

}  // namespace ps::common
