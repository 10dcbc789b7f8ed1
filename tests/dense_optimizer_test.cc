// The server's optimizers on its dense tensors, through ParameterShard: each
// optimizer's sequence against a reference written out here, per-tensor
// overrides, sync reproducibility across shard counts, and the optimizer
// state through checkpoint, restore and reshard.
#include <cmath>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/float_bytes.h"
#include "common/key_range.h"
#include "common/lr_schedule.h"
#include "common/optimizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/checkpointer.h"
#include "server/parameter_shard.h"

namespace ps::server {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

constexpr uint64_t kIncarnation = 3;
constexpr float kRate = 0.1f;
constexpr float kL2 = 0.05f;
constexpr float kL1 = 0.01f;

// 5 weights (regularized) and 2 biases (exempt): 7 keys.
std::vector<common::TensorSpec> Model(const std::string& weights_optimizer = "",
                                      const std::string& bias_optimizer = "",
                                      const std::string& bias_schedule = "") {
  common::TensorSpec w{"w", {5}, false};
  w.optimizer = weights_optimizer;
  common::TensorSpec b{"b", {2}, true};
  b.optimizer = bias_optimizer;
  b.lr_schedule = bias_schedule;
  return {w, b};
}

std::vector<float> InitialTheta() {
  return {0.5f, -0.3f, 0.02f, 1.5f, -0.004f, 0.25f, -0.6f};
}

// Worker `worker`'s gradient of update `step` over all 7 keys: varied
// signs and sizes, some near the L1 threshold.
std::vector<float> Gradient(uint32_t worker, uint64_t step) {
  std::vector<float> g(7);
  for (size_t i = 0; i < g.size(); ++i) {
    g[i] = std::sin(1.0f + 0.7f * i + 1.3f * step + 2.1f * worker) *
           (0.2f + 0.3f * i);
  }
  return g;
}

ShardOptions Options(const std::string& optimizer, const std::string& schedule,
                     uint32_t shard_index = 0, uint32_t num_shards = 1,
                     uint32_t workers = 1) {
  ShardOptions options;
  options.mode = ConsistencyMode::kSync;
  options.num_workers = workers;
  options.max_workers = workers;
  options.shard_index = shard_index;
  options.num_shards = num_shards;
  options.update.learning_rate = kRate;
  options.update.l2 = kL2;
  options.update.l1 = kL1;
  options.optimizer = common::ParseOptimizerSpec(optimizer).value();
  options.lr_schedule = common::ParseLrSchedule(schedule).value();
  return options;
}

std::string Bytes(absl::Span<const float> values) {
  std::string out;
  common::FloatsToBytes(values, &out);
  return out;
}

// A shard of `options`, its workers registered and the model declared.
class Shard {
 public:
  Shard(const ShardOptions& options,
        const std::vector<common::TensorSpec>& tensors)
      : options_(options), shard_(std::make_unique<ParameterShard>(options)) {
    keys_ = common::BalancedPart(7, options.num_shards, options.shard_index);
    if (tensors.empty()) return;  // to be restored, workers and all
    for (uint32_t id = 0; id < options.num_workers; ++id) {
      EXPECT_TRUE(shard_->Register(id, kIncarnation).ok());
    }
    InitArgs args;
    args.tensors = tensors;
    args.shard_index = options.shard_index;
    args.num_shards = options.num_shards;
    args.values = Bytes(
        absl::MakeConstSpan(InitialTheta()).subspan(keys_.begin, keys_.size()));
    absl::StatusOr<InitResult> init = shard_->Init(args);
    EXPECT_TRUE(init.ok()) << init.status();
  }

  // Worker `worker`'s push of step `step` (round `step`, seq step + 1).
  void Push(uint32_t worker, uint64_t step) {
    const std::vector<float> all = Gradient(worker, step);
    PushArgs args;
    args.worker_id = worker;
    args.incarnation = kIncarnation;
    args.seq = step + 1;
    args.step = step;
    args.base_version = step;
    args.batch_size = 2 + worker;
    args.keys = keys_;
    args.gradient = absl::Cord(
        Bytes(absl::MakeConstSpan(all).subspan(keys_.begin, keys_.size())));
    absl::StatusOr<PushResult> pushed = shard_->Push(args);
    EXPECT_TRUE(pushed.ok()) << pushed.status();
  }

  std::vector<float> Theta() const {
    absl::StatusOr<common::ThetaFile> file = shard_->Snapshot();
    EXPECT_TRUE(file.ok()) << file.status();
    return file.ok() ? file->values : std::vector<float>();
  }

  ParameterShard& shard() { return *shard_; }

 private:
  ShardOptions options_;
  std::unique_ptr<ParameterShard> shard_;
  common::KeyRange keys_;
};

// One key's optimizer, written out from the formulas of common/optimizer.h
// in double precision: the independent reference.
struct Reference {
  std::string optimizer;
  double theta;
  bool regularize;
  double s0 = 0, s1 = 0;  // velocity | accumulator | m, v | z, n

  static double Shrink(double x, double threshold) {
    return x > threshold ? x - threshold : x < -threshold ? x + threshold : 0;
  }

  void Step(double g, double rate, uint64_t t) {
    const double l2 = regularize ? kL2 : 0;
    const double l1 = regularize ? kL1 : 0;
    double d = g + l2 * theta;
    double next = 0, eta = rate;
    if (optimizer == "sgd") {
      next = theta - rate * d;
    } else if (optimizer == "momentum") {
      s0 = 0.9 * s0 + d;
      next = theta - rate * s0;
    } else if (optimizer == "nesterov") {
      s0 = 0.9 * s0 + d;
      next = theta - rate * (d + 0.9 * s0);
    } else if (optimizer == "adagrad") {
      s0 += d * d;
      eta = rate / (std::sqrt(s0) + 1e-8);
      next = theta - eta * d;
    } else if (optimizer == "adam" || optimizer == "adamw") {
      const bool decoupled = optimizer == "adamw";
      if (decoupled) d = g;
      s0 = 0.9 * s0 + 0.1 * d;
      s1 = 0.999 * s1 + 0.001 * d * d;
      const double m_hat = s0 / (1 - std::pow(0.9, t));
      const double v_hat = s1 / (1 - std::pow(0.999, t));
      eta = rate / (std::sqrt(v_hat) + 1e-8);
      next = theta - (decoupled ? rate * l2 * theta : 0) - eta * m_hat;
    } else if (optimizer == "ftrl") {
      // ftrl(ftrl_beta=1,ftrl_l1=0.02,ftrl_l2=0.1)
      const double sigma = (std::sqrt(s1 + d * d) - std::sqrt(s1)) / rate;
      s0 += d - sigma * theta;
      s1 += d * d;
      eta = rate / (1 + std::sqrt(s1));
      next = std::abs(s0) <= 0.02 ? 0
                                  : -(s0 - std::copysign(0.02, s0)) /
                                        ((1 + std::sqrt(s1)) / rate + 0.1);
    }
    theta = Shrink(next, eta * l1);
  }
};

std::string Spec(const std::string& name) {
  return name == "ftrl" ? "ftrl(ftrl_beta=1,ftrl_l1=0.02,ftrl_l2=0.1)" : name;
}

// The mean of workers 0 and 1's gradients of `step` at key `key`, weighted
// by their batch sizes (2 and 3), as a sync round takes it.
double RoundMean(uint64_t step, size_t key) {
  return (2.0 * Gradient(0, step)[key] + 3.0 * Gradient(1, step)[key]) / 5.0;
}

void ExpectClose(const std::vector<float>& actual,
                 const std::vector<Reference>& expected,
                 const std::string& what) {
  ASSERT_EQ(actual.size(), expected.size());
  for (size_t i = 0; i < actual.size(); ++i) {
    EXPECT_NEAR(actual[i], expected[i].theta,
                1e-5 * (1 + std::abs(expected[i].theta)))
        << what << ", key " << i;
  }
}

class EachOptimizer : public ::testing::TestWithParam<std::string> {};

// Four sync rounds of two workers with L1 and L2 and a step schedule (the
// rate halves every 2 updates): θ follows the reference on every key, the
// exempt biases without L1/L2, after every round.
TEST_P(EachOptimizer, FollowsItsReferenceWithL1L2AndASchedule) {
  const std::string name = GetParam();
  Shard shard(Options(Spec(name), "step:2:0.5", 0, 1, 2), Model());
  std::vector<Reference> reference;
  for (size_t i = 0; i < 7; ++i) {
    reference.push_back({name, InitialTheta()[i], i < 5});
  }
  for (uint64_t step = 0; step < 4; ++step) {
    shard.Push(0, step);
    shard.Push(1, step);
    const double rate = kRate * std::pow(0.5, step / 2);
    for (size_t i = 0; i < 7; ++i) {
      reference[i].Step(RoundMean(step, i), rate, step + 1);
    }
    ExpectClose(shard.Theta(), reference,
                absl::StrCat(name, " after round ", step));
  }
  EXPECT_EQ(shard.shard().Status().version, 4u);
}

INSTANTIATE_TEST_SUITE_P(Optimizers, EachOptimizer,
                         ::testing::Values("sgd", "momentum", "nesterov",
                                           "adagrad", "adam", "adamw", "ftrl"));

// Async applies each push at once with its own update number.
TEST(DenseOptimizers, AsyncAppliesAdamPerPushWithTheVersionAsStep) {
  ShardOptions options = Options("adam", "constant", 0, 1, 2);
  options.mode = ConsistencyMode::kAsync;
  Shard shard(options, Model());
  std::vector<Reference> reference;
  for (size_t i = 0; i < 7; ++i) {
    reference.push_back({"adam", InitialTheta()[i], i < 5});
  }
  uint64_t t = 0;
  for (uint64_t step = 0; step < 2; ++step) {
    for (uint32_t worker = 0; worker < 2; ++worker) {
      shard.Push(worker, step);
      ++t;
      for (size_t i = 0; i < 7; ++i) {
        reference[i].Step(Gradient(worker, step)[i], kRate, t);
      }
    }
  }
  ExpectClose(shard.Theta(), reference, "async adam");
}

// The server runs momentum; the weights declare adam and the biases sgd
// with their own schedule: each tensor follows its own.
TEST(DenseOptimizers, ATensorsOwnOptimizerAndScheduleOverrideTheServers) {
  Shard shard(Options("momentum", "constant", 0, 1, 2),
              Model("adam", "sgd", "step:1:0.5"));
  std::vector<Reference> reference;
  for (size_t i = 0; i < 7; ++i) {
    reference.push_back({i < 5 ? "adam" : "sgd", InitialTheta()[i], i < 5});
  }
  for (uint64_t step = 0; step < 3; ++step) {
    shard.Push(0, step);
    shard.Push(1, step);
    for (size_t i = 0; i < 7; ++i) {
      const double rate = i < 5 ? kRate : kRate * std::pow(0.5, step);
      reference[i].Step(RoundMean(step, i), rate, step + 1);
    }
  }
  ExpectClose(shard.Theta(), reference, "adam weights, sgd biases");
  // Adam's m and v for the weights; momentum is nobody's here.
  absl::StatusOr<common::ThetaFile> file = shard.shard().Snapshot();
  ASSERT_TRUE(file.ok());
  EXPECT_EQ(file->state_names, (std::vector<std::string>{"m", "v"}));
  EXPECT_EQ(file->state[0][6], 0.0f);  // a bias: sgd keeps no state
  EXPECT_NE(file->state[0][0], 0.0f);
}

TEST(DenseOptimizers, InitRefusesABadOptimizerOrScheduleNamingTheTensor) {
  ParameterShard shard(Options("sgd", "constant"));
  for (const auto& [tensors, says] :
       std::vector<std::pair<std::vector<common::TensorSpec>, std::string>>{
           {Model("adam(beta1=1.5)"),
            "tensor 'w': optimizer 'adam(beta1=1.5)'"},
           {Model("", "rmsprop"), "tensor 'b': optimizer 'rmsprop'"},
           {Model("", "", "cosine:0"), "tensor 'b': bad learning-rate"}}) {
    InitArgs args;
    args.num_shards = 1;
    args.tensors = tensors;
    args.values = std::string(7 * sizeof(float), '\0');
    absl::StatusOr<InitResult> init = shard.Init(args);
    EXPECT_EQ(init.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(init.status().message(), HasSubstr(says));
  }
  // Nothing was declared: a good Init still creates the model.
  InitArgs good;
  good.num_shards = 1;
  good.tensors = Model("adam");
  good.values = std::string(7 * sizeof(float), '\0');
  ASSERT_TRUE(shard.Init(good).ok());
  // A second declaration with another optimizer is refused, saying so.
  good.tensors = Model("adamw");
  absl::StatusOr<InitResult> again = shard.Init(good);
  EXPECT_EQ(again.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(again.status().message(), HasSubstr("optimizer adamw"));
}

// θ over all keys of `shards`, in key order.
std::vector<float> Concatenated(std::vector<std::unique_ptr<Shard>>& shards) {
  std::vector<float> theta;
  for (auto& shard : shards) {
    const std::vector<float> part = shard->Theta();
    theta.insert(theta.end(), part.begin(), part.end());
  }
  return theta;
}

// Workers 0 and 1 push rounds [from, to) to every shard.
void Train(std::vector<std::unique_ptr<Shard>>& shards, uint64_t from,
           uint64_t to) {
  for (uint64_t step = from; step < to; ++step) {
    for (auto& shard : shards) {
      shard->Push(0, step);
      shard->Push(1, step);
    }
  }
}

std::vector<std::unique_ptr<Shard>> Shards(uint32_t count,
                                           const std::string& optimizer,
                                           bool declare = true) {
  std::vector<std::unique_ptr<Shard>> shards;
  for (uint32_t i = 0; i < count; ++i) {
    shards.push_back(std::make_unique<Shard>(
        Options(optimizer, "cosine:8", i, count, 2),
        declare ? Model("", "sgd") : std::vector<common::TensorSpec>()));
  }
  return shards;
}

bool SameBytes(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() &&
         std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

TEST(DenseOptimizers, SyncAdamIsByteIdenticalOnOneAndThreeShards) {
  std::vector<std::unique_ptr<Shard>> one = Shards(1, "adam");
  std::vector<std::unique_ptr<Shard>> three = Shards(3, "adam");
  Train(one, 0, 5);
  Train(three, 0, 5);
  const std::vector<float> theta = Concatenated(one);
  EXPECT_TRUE(SameBytes(theta, Concatenated(three)));
  EXPECT_FALSE(SameBytes(theta, InitialTheta()));
}

std::string FreshDir(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/dense_optimizer_" + name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

// Two shards train 3 rounds of adam and a half (worker 0's gradient of
// round 3 in the open round), checkpoint, and are restored onto three;
// worker 1 completes round 3 and two more rounds follow. θ is byte for
// byte an uninterrupted run's, so m, v and the step went through.
TEST(DenseOptimizers, AdamStateSurvivesACheckpointRestoredOntoOtherShards) {
  std::vector<std::unique_ptr<Shard>> uninterrupted = Shards(1, "adam");
  Train(uninterrupted, 0, 6);

  const std::string dir = FreshDir("reshard");
  {
    std::vector<std::unique_ptr<Shard>> two = Shards(2, "adam");
    Train(two, 0, 3);
    for (uint32_t i = 0; i < 2; ++i) {
      two[i]->Push(0, 3);
      auto checkpointer = Checkpointer::Open(dir, 3, i, 2);
      ASSERT_TRUE(checkpointer.ok()) << checkpointer.status();
      ASSERT_TRUE((*checkpointer)->Save(two[i]->shard(), "test").ok());
    }
  }
  std::vector<std::unique_ptr<Shard>> three = Shards(3, "adam", false);
  for (uint32_t i = 0; i < 3; ++i) {
    const ShardOptions options = Options("adam", "cosine:8", i, 3, 2);
    auto checkpointer = Checkpointer::Open(dir, 3, i, 3);
    ASSERT_TRUE(checkpointer.ok()) << checkpointer.status();
    auto loaded = (*checkpointer)
                      ->LoadLatest(options.update, options.optimizer,
                                   options.lr_schedule);
    ASSERT_TRUE(loaded.ok() && loaded->has_value()) << loaded.status();
    EXPECT_EQ((*loaded)->state_names, (std::vector<std::string>{"m", "v"}));
    ASSERT_TRUE(three[i]->shard().Restore(std::move(**loaded)).ok());
  }
  for (auto& shard : three) shard->Push(1, 3);
  Train(three, 4, 6);
  EXPECT_TRUE(SameBytes(Concatenated(three), Concatenated(uninterrupted)));
}

// A reshard whose old shards stopped a round apart closes the lagging
// shard's round with its optimizer, on its saved state.
TEST(DenseOptimizers, AReshardClosesALaggingRoundWithTheOptimizer) {
  const std::string dir = FreshDir("lagging");
  {
    std::vector<std::unique_ptr<Shard>> two = Shards(2, "adam");
    Train(two, 0, 2);
    // Shard 0 closes round 2; shard 1 is saved one round behind, holding
    // worker 0's gradient of it.
    two[0]->Push(0, 2);
    two[0]->Push(1, 2);
    two[1]->Push(0, 2);
    for (uint32_t i = 0; i < 2; ++i) {
      auto checkpointer = Checkpointer::Open(dir, 3, i, 2);
      ASSERT_TRUE(checkpointer.ok()) << checkpointer.status();
      ASSERT_TRUE((*checkpointer)->Save(two[i]->shard(), "test").ok());
    }
  }
  std::vector<std::unique_ptr<Shard>> one = Shards(1, "adam", false);
  const ShardOptions options = Options("adam", "cosine:8", 0, 1, 2);
  auto checkpointer = Checkpointer::Open(dir, 3, 0, 1);
  ASSERT_TRUE(checkpointer.ok()) << checkpointer.status();
  auto loaded =
      (*checkpointer)
          ->LoadLatest(options.update, options.optimizer, options.lr_schedule);
  ASSERT_TRUE(loaded.ok() && loaded->has_value()) << loaded.status();
  EXPECT_EQ((*loaded)->version, 3u);
  ASSERT_TRUE(one[0]->shard().Restore(std::move(**loaded)).ok());
  // Shard 1's keys took round 2 with worker 0's gradient alone (as that
  // shard would have closed it), on its adam state; shard 0's with both.
  std::vector<std::unique_ptr<Shard>> reference = Shards(2, "adam");
  Train(reference, 0, 2);
  reference[0]->Push(0, 2);
  reference[0]->Push(1, 2);
  reference[1]->Push(0, 2);
  // Worker 1 leaves: the round closes with worker 0's gradient alone.
  ASSERT_TRUE(reference[1]->shard().Leave(1, kIncarnation).ok());
  EXPECT_EQ(reference[1]->shard().Status().version, 3u);
  const std::vector<float> expected = Concatenated(reference);
  EXPECT_TRUE(SameBytes(one[0]->Theta(), expected));
}

}  // namespace
}  // namespace ps::server
