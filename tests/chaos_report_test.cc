// ps_chaos's timeline.png (tools/chaos/report.cc): the gnuplot script it
// writes, and the picture gnuplot draws from it.
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "common/json.h"
#include "gtest/gtest.h"
#include "tests/job.h"
#include "tools/chaos/experiment.h"
#include "tools/chaos/report.h"
#include "tools/chaos/scenario.h"
#include "tools/chaos/timeline.h"

namespace ps::chaos {
namespace {

// A 10 s loopback run of "server_stop" with one fault at the left edge
// of the plot and its end at the right edge.
struct StoppedServerReport {
  StoppedServerReport() {
    scenario.name = "server_stop";
    scenario.cluster.mode = "sync";
    scenario.cluster.servers = 2;
    scenario.cluster.workers = 3;
    run.duration_s = 10;
    for (int i = 0; i <= 100; ++i) {
      Sample sample;
      sample.t = 0.1 * i;
      sample.servers.assign(2,
                            ServerSample{true, static_cast<uint64_t>(i),
                                         static_cast<uint64_t>(640 * i), 3, 0});
      run.timeline.samples.push_back(sample);
      if (i % 10 == 5) {
        run.timeline.evaluations.push_back(
            {sample.t, 0.1 * i, 0.7 + 0.001 * i, 640u * i});
      }
    }
    run.timeline.events = {{0.3, 0, true, "stop server 0: for 9s"},
                           {9.3, 0, false, "end: stop server 0: for 9s"}};
    report.scenario = &scenario;
    report.network = "loopback";
    report.run = &run;
  }
  Scenario scenario;
  ExperimentResult run;
  Report report;
};

// The script's lines that start with `prefix`.
std::vector<std::string> LinesStartingWith(const std::string& script,
                                           const std::string& prefix) {
  std::vector<std::string> found;
  for (absl::string_view line : absl::StrSplit(script, '\n')) {
    if (absl::StartsWith(line, prefix)) found.emplace_back(line);
  }
  return found;
}

TEST(ChaosPlot, AnUnderscoreInTheScenarioNameIsNoSubscript) {
  const StoppedServerReport stopped;
  const std::string script = PlotScript(stopped.report, "/out");
  // Enhanced text, gnuplot's default, reads "_s" as a subscript s.
  const std::vector<std::string> terminal =
      LinesStartingWith(script, "set terminal");
  ASSERT_EQ(terminal.size(), 1u) << script;
  EXPECT_TRUE(absl::StrContains(terminal[0], " noenhanced")) << terminal[0];
  EXPECT_TRUE(absl::StrContains(
      script, "title \"server_stop (sync, 2 servers x 3 workers, loopback)\""))
      << script;
}

TEST(ChaosPlot, TheLegendIsOutsideThePlotAndLabelsStayInside) {
  const StoppedServerReport stopped;
  const std::string script = PlotScript(stopped.report, "/out");
  const std::vector<std::string> key = LinesStartingWith(script, "set key");
  ASSERT_EQ(key.size(), 1u) << script;
  EXPECT_TRUE(absl::StrContains(key[0], " outside")) << key[0];
  // Each fault's label, on both panels: the start's at the left edge reads
  // rightwards, the end's at the right edge leftwards.
  const std::vector<std::string> labels =
      LinesStartingWith(script, "set label");
  ASSERT_EQ(labels.size(), 4u) << script;
  for (const std::string& label : labels) {
    if (absl::StrContains(label, "\"stop server 0")) {
      EXPECT_TRUE(absl::StrContains(label, " left ")) << label;
    } else {
      EXPECT_TRUE(absl::StrContains(label, "\"end: stop server 0")) << label;
      EXPECT_TRUE(absl::StrContains(label, " right ")) << label;
    }
  }
}

TEST(ChaosPlot, GnuplotDrawsTheScript) {
  const StoppedServerReport stopped;
  const std::string dir = test_support::FreshDir("chaos_plot");
  ASSERT_TRUE(
      WriteTimelineCsv(stopped.run.timeline, dir + "/timeline.csv").ok());
  const absl::Status drawn = WritePlot(stopped.report, dir);
  ASSERT_TRUE(drawn.ok()) << drawn;
  const std::string png = test_support::ReadFile(dir + "/timeline.png");
  ASSERT_GT(png.size(), 8u);
  EXPECT_EQ(png.substr(1, 3), "PNG");
  EXPECT_EQ(test_support::ReadFile(dir + "/timeline.gp"),
            PlotScript(stopped.report, dir));
  EXPECT_EQ(std::system(("rm -rf '" + dir + "'").c_str()), 0);
}

// A short run evaluated once, at the end, a little after duration_s (the
// runner reads the last evaluation after the workers stop): as the Security
// test's 1.2 s ps_chaos run over mTLS that failed with "all points y value
// undefined" when its x range ended at 1.2 and the evaluation came at 1.222.
TEST(ChaosPlot, ARunsOnlyEvaluationAfterItsDurationIsStillDrawn) {
  StoppedServerReport stopped;
  stopped.run.duration_s = 1.21;
  stopped.run.timeline.samples.resize(13);
  stopped.run.timeline.samples.back().t = 1.222;
  stopped.run.timeline.evaluations = {{1.222, 1.0, 0.81, 60000}};
  stopped.run.timeline.events.clear();
  const std::string dir = test_support::FreshDir("chaos_plot_short");
  ASSERT_TRUE(
      WriteTimelineCsv(stopped.run.timeline, dir + "/timeline.csv").ok());
  const absl::Status drawn = WritePlot(stopped.report, dir);
  EXPECT_TRUE(drawn.ok()) << drawn;
  EXPECT_EQ(LinesStartingWith(PlotScript(stopped.report, dir), "set xrange"),
            std::vector<std::string>{"set xrange [0:1.3]"});
  EXPECT_EQ(std::system(("rm -rf '" + dir + "'").c_str()), 0);
}

// A short run whose only evaluation came after its last sample: the
// Security test's 2.1 s ps_chaos run over mTLS failed so, with "all points
// y value undefined" (no row of timeline.csv had its accuracy). And a run
// never evaluated draws an empty accuracy panel.
TEST(ChaosPlot, ARunsEvaluationAfterItsLastSampleHasARowAndNoneIsDrawnEmpty) {
  StoppedServerReport stopped;
  stopped.run.duration_s = 2;
  stopped.run.timeline.samples.resize(21);
  stopped.run.timeline.evaluations = {{2.3, 1.0, 0.8092, 60000}};
  stopped.run.timeline.events.clear();
  const std::string dir = test_support::FreshDir("chaos_plot_late");
  ASSERT_TRUE(
      WriteTimelineCsv(stopped.run.timeline, dir + "/timeline.csv").ok());
  EXPECT_TRUE(absl::StrContains(test_support::ReadFile(dir + "/timeline.csv"),
                                "\n2.300,1.0000,0.8092,,"));
  absl::Status drawn = WritePlot(stopped.report, dir);
  EXPECT_TRUE(drawn.ok()) << drawn;

  stopped.run.timeline.evaluations.clear();
  ASSERT_TRUE(
      WriteTimelineCsv(stopped.run.timeline, dir + "/timeline.csv").ok());
  drawn = WritePlot(stopped.report, dir);
  EXPECT_TRUE(drawn.ok()) << drawn;
  EXPECT_EQ(std::system(("rm -rf '" + dir + "'").c_str()), 0);
}

// summary.json judges the end over the last half epoch's evaluations (their
// mean), beside the final evaluation, for the run and its baseline.
TEST(ChaosSummary, EndAccuracyIsTheLastHalfEpochsMeanBesideTheFinalOne) {
  StoppedServerReport stopped;  // evaluated at epochs 0.5 … 9.5
  ExperimentResult baseline;
  baseline.completed = true;
  baseline.timeline.evaluations = {
      {1, 8.9, 0.70, 0}, {2, 9.2, 0.80, 0}, {3, 9.5, 0.84, 0}};
  stopped.report.baseline = &baseline;
  const std::string dir = test_support::FreshDir("chaos_summary");
  ASSERT_TRUE(WriteSummaryJson(stopped.report, dir + "/summary.json").ok());
  const std::string text = test_support::ReadFile(dir + "/summary.json");
  const common::Json j = common::ParseJsonObject(text);
  // The run is evaluated every epoch: its last half epoch holds only the
  // final evaluation. The baseline's holds two of its three.
  EXPECT_DOUBLE_EQ(j.value("final_accuracy", 0.0), 0.795) << text;
  EXPECT_DOUBLE_EQ(j.value("end_accuracy", 0.0), 0.795) << text;
  EXPECT_EQ(j.value("end_accuracy_evaluations", 0), 1) << text;
  EXPECT_DOUBLE_EQ(j.at("baseline").value("final_accuracy", 0.0), 0.84) << text;
  EXPECT_DOUBLE_EQ(j.at("baseline").value("end_accuracy", 0.0), 0.82) << text;
  EXPECT_EQ(j.at("baseline").value("end_accuracy_evaluations", 0), 2) << text;
  EXPECT_DOUBLE_EQ(j.value("final_accuracy_delta", 0.0), -0.045) << text;
  EXPECT_DOUBLE_EQ(j.value("end_accuracy_delta", 0.0), -0.025) << text;

  stopped.report.baseline = nullptr;
  ASSERT_TRUE(WriteSummaryJson(stopped.report, dir + "/summary.json").ok());
  const common::Json alone =
      common::ParseJsonObject(test_support::ReadFile(dir + "/summary.json"));
  EXPECT_TRUE(alone.at("end_accuracy_delta").is_null());
  EXPECT_DOUBLE_EQ(alone.value("end_accuracy", 0.0), 0.795);
  EXPECT_EQ(std::system(("rm -rf '" + dir + "'").c_str()), 0);
}

}  // namespace
}  // namespace ps::chaos
