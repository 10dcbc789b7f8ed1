#ifndef PS_TOOLS_CHAOS_REPORT_H_
#define PS_TOOLS_CHAOS_REPORT_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "tools/chaos/analysis.h"
#include "tools/chaos/experiment.h"
#include "tools/chaos/scenario.h"

namespace ps::chaos {

struct Report {
  const Scenario* scenario = nullptr;
  std::string network;  // "namespaces" or "loopback"
  std::vector<std::string> capabilities_missing;
  const ExperimentResult* run = nullptr;
  const ExperimentResult* baseline = nullptr;  // null without --baseline
  std::vector<FaultReport> faults;             // measured
};

// DIR/summary.json (README, "ps_chaos": every field defined there).
absl::Status WriteSummaryJson(const Report& report, const std::string& path);

// The gnuplot script that draws DIR/timeline.png from DIR/timeline.csv
// (and DIR/baseline/timeline.csv). Text is drawn as it is written
// (noenhanced: "server_stop" is no subscript), the legend sits above each
// panel, and fault labels stay inside the plot.
std::string PlotScript(const Report& report, const std::string& out_dir);

// DIR/timeline.png through gnuplot: accuracy, throughput and live workers
// over time, a line at every fault event. The gnuplot script is kept beside
// it (timeline.gp), so the plot can be redrawn or restyled.
absl::Status WritePlot(const Report& report, const std::string& out_dir);

}  // namespace ps::chaos

#endif  // PS_TOOLS_CHAOS_REPORT_H_
