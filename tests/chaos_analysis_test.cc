// The recovery figures ps_chaos computes from a run's timeline
// (tools/chaos/analysis.cc), on timelines built by hand.
#include <cmath>
#include <cstdint>
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

}  // namespace
}  // namespace ps::chaos
