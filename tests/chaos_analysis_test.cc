// The recovery figures ps_chaos computes from a run's timeline
// (tools/chaos/analysis.cc), on timelines built by hand.
#include <cmath>
#include <cstdint>
#include <optional>
#include <vector>

#include "gtest/gtest.h"
#include "tools/chaos/analysis.h"
#include "tools/chaos/scenario.h"
#include "tools/chaos/timeline.h"

namespace ps::chaos {
namespace {

constexpr double kPollS = 0.1;
constexpr uint64_t kBatch = 64;

// A 2-shard sync run polled every 100 ms: `before_rate` examples/s until
// `stop_s`, server 0 stopped (no answer) until `cont_s`, then `after_rate`
// until `end_s`. Every 64 examples are one round, so versions follow.
Timeline StoppedServerRun(double before_rate, double stop_s, double cont_s,
                          double after_rate, double end_s) {
  Timeline run;
  double applied = 0;
  for (int i = 0; i * kPollS <= end_s + 1e-9; ++i) {
    const double t = i * kPollS;
    const bool stopped = t > stop_s + 1e-9 && t < cont_s - 1e-9;
    // Nothing trains while a shard is stopped; the first poll after the
    // cont still shows the old counts.
    if (i > 0 && !stopped && t > cont_s + 1e-9) applied += after_rate * kPollS;
    if (i > 0 && t <= stop_s + 1e-9) applied += before_rate * kPollS;
    Sample sample;
    sample.t = t;
    for (int s = 0; s < 2; ++s) {
      ServerSample server;
      server.up = !(stopped && s == 0);
      server.samples_applied = static_cast<uint64_t>(std::llround(applied));
      server.version = server.samples_applied / kBatch;
      server.live_workers = 3;
      sample.servers.push_back(server);
    }
    run.samples.push_back(sample);
  }
  return run;
}

FaultEvent StopServer0() {
  FaultEvent stop;
  stop.action = FaultEvent::Action::kStop;
  stop.targets = {{ProcessRef::Kind::kServer, 0}};
  return stop;
}

FaultReport Measure(const Timeline& run, double stop_s, double cont_s,
                    double window_end_s) {
  FaultReport report;
  report.applied = true;
  report.start_s = stop_s;
  report.end_s = cont_s;
  report.window_end_s = window_end_s;
  report.window_ends_at_finish = true;
  MeasureFault(run, nullptr, StopServer0(), {}, report);
  return report;
}

// A 5 s SIGSTOP of a server near the end of a short run: training comes
// back faster than before, and the first worker finishes 0.9 s after the
// stall. The 2 s interval does not fit; what is left of the window does.
TEST(ChaosAnalysis, RecoveryIsFoundWhenLessThanTheIntervalIsLeftAfterTheStall) {
  const Timeline run = StoppedServerRun(118000, 5.0, 10.0, 131000, 11.0);
  const FaultReport report = Measure(run, 5.0, 10.0, 11.0);
  ASSERT_TRUE(report.pre_fault_samples_per_s.has_value());
  EXPECT_NEAR(*report.pre_fault_samples_per_s, 118000, 1000);
  ASSERT_TRUE(report.stall_s.has_value());
  EXPECT_NEAR(*report.stall_s, 5.1, 1e-6);
  EXPECT_FALSE(report.stall_open);
  ASSERT_TRUE(report.recover_s.has_value())
      << "throughput came back to 131k examples/s, above the 118k before";
  // Progress resumed at the poll after the cont (10.1 s).
  EXPECT_NEAR(*report.recover_s, 5.1, 1e-6);
  ASSERT_EQ(report.notes.size(), 1u);
  EXPECT_NE(report.notes[0].find("0.90 s left in the window"),
            std::string::npos)
      << report.notes[0];
}

TEST(ChaosAnalysis, AShortWindowWhoseThroughputStayedLowIsNoRecovery) {
  const Timeline run = StoppedServerRun(118000, 5.0, 10.0, 60000, 11.0);
  const FaultReport report = Measure(run, 5.0, 10.0, 11.0);
  ASSERT_TRUE(report.pre_fault_samples_per_s.has_value());
  EXPECT_FALSE(report.recover_s.has_value()) << *report.recover_s;
}

// With room for the whole interval, recovery still needs 2 s at the
// recovered rate, and no note is added.
TEST(ChaosAnalysis, ALongWindowStillJudgesRecoveryOverTwoSeconds) {
  const Timeline run = StoppedServerRun(100000, 5.0, 10.0, 100000, 20.0);
  const FaultReport report = Measure(run, 5.0, 10.0, 20.0);
  ASSERT_TRUE(report.recover_s.has_value());
  EXPECT_NEAR(*report.recover_s, 5.1, 1e-6);
  EXPECT_TRUE(report.notes.empty()) << report.notes[0];
}

// A fault still on when the window closes has nothing after its stall to
// judge: no recovery, and no note about a window of 0 s.
TEST(ChaosAnalysis, NoRecoveryIsJudgedWhenNothingIsLeftAfterTheStall) {
  const Timeline run = StoppedServerRun(118000, 5.0, 10.0, 131000, 12.0);
  // The first worker finished just after the poll at which progress
  // resumed.
  const FaultReport report = Measure(run, 5.0, 10.0, 10.1 + 1e-6);
  ASSERT_TRUE(report.stall_s.has_value());
  EXPECT_NEAR(*report.stall_s, 5.1, 1e-6);
  EXPECT_FALSE(report.recover_s.has_value());
  EXPECT_TRUE(report.notes.empty()) << report.notes[0];
}

// Evaluations every 0.1 epoch up to 3.0 and a last one at 3.0 again (the
// final θ): the end is the mean of those from epoch 2.5 on, both ends in.
TEST(ChaosAnalysis, EndAccuracyIsTheMeanOfTheLastHalfEpochsEvaluations) {
  Timeline run;
  for (int i = 1; i <= 30; ++i) {
    run.evaluations.push_back({0.1 * i, 0.1 * i, i >= 25 ? 0.8 : 0.5, 0});
  }
  run.evaluations.back().accuracy = 0.83;
  run.evaluations.push_back({3.1, 3.0, 0.86, 0});
  const std::optional<EndAccuracy> end = MeasureEndAccuracy(run);
  ASSERT_TRUE(end.has_value());
  EXPECT_EQ(end->evaluations, 7);
  EXPECT_NEAR(end->accuracy, (5 * 0.8 + 0.83 + 0.86) / 7, 1e-12);

  // A run evaluated once ends at that evaluation; one never evaluated has
  // no end to judge.
  run.evaluations = {{1.2, 1.0, 0.81, 0}};
  EXPECT_NEAR(MeasureEndAccuracy(run)->accuracy, 0.81, 1e-12);
  EXPECT_EQ(MeasureEndAccuracy(run)->evaluations, 1);
  run.evaluations.clear();
  EXPECT_FALSE(MeasureEndAccuracy(run).has_value());
}

}  // namespace
}  // namespace ps::chaos
