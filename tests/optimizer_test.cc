#include "common/optimizer.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ps::common {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Each optimizer written out again from its paper, in double, one
// coordinate at a time with plain branches: the library must follow it.
struct ReferenceState {
  std::vector<double> theta, a, b;  // a, b: the state vectors, in order
};

double SoftThreshold(double x, double threshold) {
  if (x > threshold) return x - threshold;
  if (x < -threshold) return x + threshold;
  return 0;
}

void ReferenceStep(const OptimizerOptions& o, const UpdateOptions& u,
                   bool regularize, int t, const std::vector<float>& gradient,
                   ReferenceState& s) {
  const double lr = u.learning_rate;
  const double l2 = regularize ? u.l2 : 0;
  const double l1 = regularize ? u.l1 : 0;
  for (size_t i = 0; i < s.theta.size(); ++i) {
    const double theta = s.theta[i];
    double& a = s.a[i];
    double& b = s.b[i];
    const bool decoupled = o.kind == OptimizerKind::kAdamW;
    const double g = gradient[i] + (decoupled ? 0 : l2 * theta);
    double next = 0;
    double eta = lr;
    switch (o.kind) {
      case OptimizerKind::kSgd:
        next = theta - lr * g;
        break;
      case OptimizerKind::kMomentum:
        a = o.momentum * a + g;
        next = theta - lr * a;
        break;
      case OptimizerKind::kNesterov:
        a = o.momentum * a + g;
        next = theta - lr * (g + o.momentum * a);
        break;
      case OptimizerKind::kAdagrad:
        a += g * g;
        eta = lr / (std::sqrt(a) + o.epsilon);
        next = theta - eta * g;
        break;
      case OptimizerKind::kAdam:
      case OptimizerKind::kAdamW: {
        a = o.beta1 * a + (1 - o.beta1) * g;
        b = o.beta2 * b + (1 - o.beta2) * g * g;
        const double m_hat = a / (1 - std::pow(double{o.beta1}, t));
        const double v_hat = b / (1 - std::pow(double{o.beta2}, t));
        eta = lr / (std::sqrt(v_hat) + o.epsilon);
        next = theta - eta * m_hat;
        if (decoupled) next -= lr * l2 * theta;
        break;
      }
      case OptimizerKind::kFtrl: {
        // McMahan et al. 2013, algorithm 1, with a = z and b = n.
        const double sigma = (std::sqrt(b + g * g) - std::sqrt(b)) / lr;
        a += g - sigma * theta;
        b += g * g;
        if (std::abs(a) <= o.ftrl_l1) {
          next = 0;
        } else {
          const double sign = a < 0 ? -1 : 1;
          next = -(a - sign * o.ftrl_l1) /
                 ((o.ftrl_beta + std::sqrt(b)) / lr + o.ftrl_l2);
        }
        eta = lr / (o.ftrl_beta + std::sqrt(b));
        break;
      }
    }
    if (l1 > 0) next = SoftThreshold(next, eta * l1);
    const double lo = u.nonnegative ? std::max(u.clip_min, 0.0f) : u.clip_min;
    s.theta[i] = std::clamp(next, lo, double{u.clip_max});
  }
}

struct Regularization {
  std::string name;
  UpdateOptions update;
  bool regularize = true;
};

std::vector<Regularization> Regularizations() {
  std::vector<Regularization> all(5);
  all[0].name = "none";
  all[1].name = "l2";
  all[1].update.l2 = 0.3f;
  all[2].name = "l1+l2";
  all[2].update.l2 = 0.3f;
  all[2].update.l1 = 0.2f;
  all[3].name = "l1+l2+box";
  all[3].update = all[2].update;
  all[3].update.clip_min = -0.6f;
  all[3].update.clip_max = 0.7f;
  all[4].name = "l1+l2, exempt";
  all[4].update = all[2].update;
  all[4].regularize = false;
  return all;
}

std::vector<OptimizerOptions> EveryOptimizer() {
  std::vector<OptimizerOptions> all;
  for (OptimizerKind kind :
       {OptimizerKind::kSgd, OptimizerKind::kMomentum, OptimizerKind::kNesterov,
        OptimizerKind::kAdagrad, OptimizerKind::kAdam, OptimizerKind::kAdamW,
        OptimizerKind::kFtrl}) {
    OptimizerOptions o;
    o.kind = kind;
    o.momentum = 0.8f;
    o.beta1 = 0.7f;
    o.beta2 = 0.9f;
    o.epsilon = 1e-3f;
    o.ftrl_beta = 0.5f;
    o.ftrl_l1 = 0.05f;
    o.ftrl_l2 = 0.4f;
    all.push_back(o);
  }
  return all;
}

// The gradient of step t: a quadratic pull toward a target plus a term
// that changes sign, so that state and θ both move every step.
std::vector<float> GradientAt(int t, const std::vector<float>& theta) {
  std::vector<float> g(theta.size());
  for (size_t i = 0; i < theta.size(); ++i) {
    const float target = 0.4f * static_cast<float>(i) - 1.0f;
    g[i] = 0.9f * (theta[i] - target) +
           ((t + static_cast<int>(i)) % 2 == 0 ? 0.35f : -0.2f);
  }
  return g;
}

TEST(Optimizer, EverySequenceFollowsTheReferenceForFourSteps) {
  const std::vector<float> initial = {0.5f,  -0.3f, 1.2f, 0.0f,
                                      -0.9f, 0.05f, 2.0f};
  for (const OptimizerOptions& o : EveryOptimizer()) {
    for (Regularization r : Regularizations()) {
      r.update.learning_rate = 0.2f;
      SCOPED_TRACE(absl::StrCat(OptimizerName(o.kind), " with ", r.name));
      const size_t n = initial.size();
      std::vector<float> theta = initial;
      std::vector<std::vector<float>> state(OptimizerStateNames(o.kind).size(),
                                            std::vector<float>(n, 0.0f));
      std::vector<absl::Span<float>> spans;
      for (auto& each : state) spans.push_back(absl::MakeSpan(each));
      ReferenceState want{std::vector<double>(initial.begin(), initial.end()),
                          std::vector<double>(n, 0), std::vector<double>(n, 0)};
      for (int t = 1; t <= 4; ++t) {
        const std::vector<float> g = GradientAt(t, theta);
        ApplyOptimizer(o, r.update, r.regularize, t, g, absl::MakeSpan(theta),
                       spans);
        ReferenceStep(o, r.update, r.regularize, t, g, want);
        // float against double: a few ulps per operation and step.
        auto tolerance = [](double x) { return 2e-5 * (1 + std::abs(x)); };
        for (size_t i = 0; i < n; ++i) {
          ASSERT_NEAR(theta[i], want.theta[i], tolerance(want.theta[i]))
              << "step " << t << ", coordinate " << i;
          // The state vectors too, in the order the names give.
          const std::vector<double>* want_state[] = {&want.a, &want.b};
          for (size_t k = 0; k < state.size(); ++k) {
            const double w = (*want_state[k])[i];
            ASSERT_NEAR(state[k][i], w, tolerance(w))
                << OptimizerStateNames(o.kind)[k] << ", step " << t
                << ", coordinate " << i;
          }
        }
      }
    }
  }
}

TEST(Optimizer, SgdIsTheUpdateRuleBitForBit) {
  UpdateOptions u;
  u.learning_rate = 0.3f;
  u.l2 = 0.01f;
  u.l1 = 0.002f;
  u.max_norm = 1.5f;
  std::vector<float> theta(101), gradient(101);
  for (size_t i = 0; i < theta.size(); ++i) {
    theta[i] = 0.013f * static_cast<float>(i % 37) - 0.2f;
    gradient[i] = 0.029f * static_cast<float>(i % 13) - 0.17f;
  }
  std::vector<float> by_rule = theta;
  ApplyUpdate(u, true, gradient, absl::MakeSpan(by_rule));
  ApplyOptimizer(OptimizerOptions(), u, true, 1, gradient,
                 absl::MakeSpan(theta), {});
  EXPECT_EQ(std::memcmp(theta.data(), by_rule.data(), theta.size() * 4), 0);
}

TEST(Optimizer, ResultsDoNotDependOnHowKeysAreSplit) {
  UpdateOptions u;
  u.l2 = 0.01f;
  u.l1 = 0.003f;
  for (const OptimizerOptions& o : EveryOptimizer()) {
    SCOPED_TRACE(OptimizerName(o.kind));
    const size_t n = 50, k = OptimizerStateNames(o.kind).size();
    std::vector<float> whole(n), halves(n);
    for (size_t i = 0; i < n; ++i) whole[i] = halves[i] = 0.02f * i - 0.5f;
    std::vector<std::vector<float>> whole_state(k, std::vector<float>(n));
    std::vector<std::vector<float>> halves_state = whole_state;
    for (int t = 1; t <= 3; ++t) {
      const std::vector<float> g = GradientAt(t, whole);
      std::vector<absl::Span<float>> spans;
      for (auto& s : whole_state) spans.push_back(absl::MakeSpan(s));
      ApplyOptimizer(o, u, true, t, g, absl::MakeSpan(whole), spans);
      for (size_t begin : {size_t{0}, size_t{17}}) {
        const size_t size = begin == 0 ? 17 : n - 17;
        std::vector<absl::Span<float>> part;
        for (auto& s : halves_state) {
          part.push_back(absl::MakeSpan(s).subspan(begin, size));
        }
        ApplyOptimizer(o, u, true, t,
                       absl::MakeConstSpan(g).subspan(begin, size),
                       absl::MakeSpan(halves).subspan(begin, size), part);
      }
    }
    EXPECT_EQ(std::memcmp(whole.data(), halves.data(), n * 4), 0);
    for (size_t s = 0; s < k; ++s) {
      EXPECT_EQ(
          std::memcmp(whole_state[s].data(), halves_state[s].data(), n * 4), 0);
    }
  }
}

TEST(Optimizer, FtrlOwnL1ZeroesCoordinatesWhoseGradientsStaySmall) {
  OptimizerOptions o;
  o.kind = OptimizerKind::kFtrl;
  o.ftrl_l1 = 1.0f;
  UpdateOptions u;
  u.learning_rate = 0.5f;
  std::vector<float> theta = {0.0f, 0.0f};
  std::vector<float> z(2), n(2);
  const std::vector<absl::Span<float>> state = {absl::MakeSpan(z),
                                                absl::MakeSpan(n)};
  for (int t = 1; t <= 3; ++t) {
    ApplyOptimizer(o, u, true, t, {0.2f, -3.0f}, absl::MakeSpan(theta), state);
  }
  EXPECT_EQ(theta[0], 0.0f);  // |z| = 0.6 ≤ ℓ₁: exactly zero
  EXPECT_GT(theta[1], 0.0f);  // |z| > ℓ₁: moves against the gradient
}

TEST(Optimizer, NamesAndStateVectors) {
  for (const OptimizerOptions& o : EveryOptimizer()) {
    absl::StatusOr<OptimizerKind> parsed =
        ParseOptimizerKind(OptimizerName(o.kind));
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, o.kind);
  }
  EXPECT_THAT(OptimizerStateNames(OptimizerKind::kSgd), ElementsAre());
  EXPECT_THAT(OptimizerStateNames(OptimizerKind::kNesterov),
              ElementsAre("velocity"));
  EXPECT_THAT(OptimizerStateNames(OptimizerKind::kAdagrad),
              ElementsAre("accumulator"));
  EXPECT_THAT(OptimizerStateNames(OptimizerKind::kAdamW),
              ElementsAre("m", "v"));
  EXPECT_THAT(OptimizerStateNames(OptimizerKind::kFtrl), ElementsAre("z", "n"));
  EXPECT_THAT(ParseOptimizerKind("Adam").status().message(),
              HasSubstr("unknown optimizer 'Adam'; the optimizers are sgd"));
}

TEST(Optimizer, BadSettingsAreRejectedNamingTheField) {
  struct Case {
    OptimizerKind kind;
    void (*spoil)(OptimizerOptions&);
    const char* message;
  };
  const Case cases[] = {
      {OptimizerKind::kMomentum, [](OptimizerOptions& o) { o.momentum = 1; },
       "momentum must be in [0, 1), got 1"},
      {OptimizerKind::kNesterov,
       [](OptimizerOptions& o) { o.momentum = -0.1f; },
       "momentum must be in [0, 1)"},
      {OptimizerKind::kAdagrad, [](OptimizerOptions& o) { o.epsilon = 0; },
       "epsilon must be a positive finite number, got 0"},
      {OptimizerKind::kAdam, [](OptimizerOptions& o) { o.beta1 = NAN; },
       "beta1 must be in [0, 1), got nan"},
      {OptimizerKind::kAdamW, [](OptimizerOptions& o) { o.beta2 = 1; },
       "beta2 must be in [0, 1), got 1"},
      {OptimizerKind::kFtrl, [](OptimizerOptions& o) { o.ftrl_beta = 0; },
       "ftrl_beta must be a positive finite number, got 0"},
      {OptimizerKind::kFtrl, [](OptimizerOptions& o) { o.ftrl_l1 = -1; },
       "ftrl_l1 must be a finite number >= 0, got -1"},
      {OptimizerKind::kFtrl, [](OptimizerOptions& o) { o.ftrl_l2 = INFINITY; },
       "ftrl_l2 must be a finite number >= 0, got inf"},
  };
  for (const Case& c : cases) {
    OptimizerOptions o;
    o.kind = c.kind;
    EXPECT_TRUE(ValidateOptimizerOptions(o).ok()) << OptimizerName(c.kind);
    c.spoil(o);
    const absl::Status status = ValidateOptimizerOptions(o);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(status.message(), HasSubstr(c.message));
  }
  // Another optimizer's fields are not its business.
  OptimizerOptions sgd;
  sgd.momentum = 7;
  EXPECT_TRUE(ValidateOptimizerOptions(sgd).ok());
}

TEST(OptimizerSpec, EveryOptimizerReadsBackFromItsString) {
  for (OptimizerOptions o : EveryOptimizer()) {
    // The float after 3e-7: six digits would read back as 3e-7.
    o.epsilon = std::nextafter(3e-7f, 1.0f);
    const std::string text = OptimizerSpecString(o);
    absl::StatusOr<OptimizerOptions> parsed = ParseOptimizerSpec(text);
    ASSERT_TRUE(parsed.ok()) << text << ": " << parsed.status();
    EXPECT_EQ(OptimizerSpecString(*parsed), text);
    // Each setting's text reads back as the same float, so equal strings
    // mean equal settings.
    EXPECT_EQ(parsed->kind, o.kind);
    if (o.kind == OptimizerKind::kAdam) {
      EXPECT_EQ(parsed->epsilon, o.epsilon);
      EXPECT_NE(parsed->epsilon, 3e-7f);
    }
  }
  EXPECT_EQ(OptimizerSpecString(OptimizerOptions{}), "sgd");
}

TEST(OptimizerSpec, SettingsLeftOutKeepTheirDefaults) {
  absl::StatusOr<OptimizerOptions> adam =
      ParseOptimizerSpec(" adam ( beta2 = 0.99 ) ");
  ASSERT_TRUE(adam.ok()) << adam.status();
  EXPECT_EQ(adam->kind, OptimizerKind::kAdam);
  EXPECT_EQ(adam->beta1, 0.9f);
  EXPECT_EQ(adam->beta2, 0.99f);
  EXPECT_EQ(adam->epsilon, 1e-8f);
  absl::StatusOr<OptimizerOptions> ftrl =
      ParseOptimizerSpec("ftrl(ftrl_l1=1,ftrl_l2=0.5)");
  ASSERT_TRUE(ftrl.ok()) << ftrl.status();
  EXPECT_EQ(ftrl->ftrl_l1, 1.0f);
  EXPECT_EQ(ftrl->ftrl_l2, 0.5f);
  EXPECT_EQ(ftrl->ftrl_beta, 1.0f);
  EXPECT_TRUE(ParseOptimizerSpec("sgd()").ok());
}

TEST(OptimizerSpec, BadSpecsAreRejectedQuotingTheText) {
  const std::pair<const char*, const char*> cases[] = {
      {"adamax", "optimizer 'adamax': unknown optimizer 'adamax'"},
      {"adam(beta1=0.9", "optimizer 'adam(beta1=0.9': the settings must end"},
      {"adam(momentum=0.5)",
       "adam has no setting 'momentum'; its settings are beta1, beta2, "
       "epsilon"},
      {"sgd(momentum=0.5)", "sgd has no setting 'momentum'; it has none"},
      {"momentum(momentum=0.5,momentum=0.6)", "momentum is given twice"},
      {"adagrad(epsilon=tiny)", "epsilon must be KEY=NUMBER, got 'epsilon"},
      {"adagrad(epsilon)", "epsilon must be KEY=NUMBER"},
      {"nesterov(momentum=1)", "momentum must be in [0, 1), got 1"},
      {"ftrl(ftrl_l1=-2)", "ftrl_l1 must be a finite number >= 0, got -2"},
  };
  for (const auto& [text, message] : cases) {
    const absl::StatusOr<OptimizerOptions> parsed = ParseOptimizerSpec(text);
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument)
        << text;
    EXPECT_THAT(parsed.status().message(), HasSubstr(message)) << text;
  }
}

}  // namespace
}  // namespace ps::common
