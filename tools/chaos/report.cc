#include "tools/chaos/report.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "common/json.h"
#include "tools/chaos/shell.h"

namespace ps::chaos {
namespace {

using common::Json;

// A figure rounded to `digits` decimals, or null when there is none.
Json Figure(std::optional<double> value, int digits = 3) {
  return value ? Json(common::RoundTo(*value, digits)) : Json(nullptr);
}

// A double-quoted string with JSON's escapes, which gnuplot reads too.
std::string Quoted(const std::string& text) {
  return Json(text).dump(-1, ' ', false, Json::error_handler_t::replace);
}

std::optional<double> FinalAccuracy(const ExperimentResult* run) {
  if (run == nullptr || run->timeline.evaluations.empty()) return std::nullopt;
  return run->timeline.evaluations.back().accuracy;
}

std::optional<double> FinalEpoch(const ExperimentResult* run) {
  if (run == nullptr || run->timeline.evaluations.empty()) return std::nullopt;
  return run->timeline.evaluations.back().epoch;
}

std::optional<double> EndAccuracyOf(const ExperimentResult* run) {
  if (run == nullptr) return std::nullopt;
  const std::optional<EndAccuracy> end = MeasureEndAccuracy(run->timeline);
  return end ? std::optional<double>(end->accuracy) : std::nullopt;
}

int EndEvaluationsOf(const ExperimentResult& run) {
  const std::optional<EndAccuracy> end = MeasureEndAccuracy(run.timeline);
  return end ? end->evaluations : 0;
}

// run − baseline, when both are there.
std::optional<double> Delta(std::optional<double> run,
                            std::optional<double> baseline) {
  return run && baseline ? std::optional<double>(*run - *baseline)
                         : std::nullopt;
}

}  // namespace

absl::Status WriteSummaryJson(const Report& report, const std::string& path) {
  const ExperimentResult& run = *report.run;
  const ClusterSpec& c = report.scenario->cluster;
  Json j;
  j["scenario"] = report.scenario->name;
  j["cluster"] = {{"servers", c.servers}, {"workers", c.workers},
                  {"mode", c.mode},       {"model", c.model},
                  {"epochs", c.epochs},   {"network", report.network}};
  j["capabilities_missing"] = report.capabilities_missing;
  j["completed"] = run.completed;
  j["failure"] = run.failure.empty() ? Json(nullptr) : Json(run.failure);
  j["duration_s"] = Figure(run.duration_s);
  j["final_accuracy"] = Figure(FinalAccuracy(&run), 4);
  j["final_epoch"] = Figure(FinalEpoch(&run), 4);
  j["end_accuracy"] = Figure(EndAccuracyOf(&run), 4);
  j["end_accuracy_evaluations"] = EndEvaluationsOf(run);
  if (report.baseline != nullptr) {
    const ExperimentResult* base = report.baseline;
    j["baseline"] = {{"completed", base->completed},
                     {"duration_s", Figure(base->duration_s)},
                     {"final_accuracy", Figure(FinalAccuracy(base), 4)},
                     {"end_accuracy", Figure(EndAccuracyOf(base), 4)},
                     {"end_accuracy_evaluations", EndEvaluationsOf(*base)}};
    j["final_accuracy_delta"] =
        Figure(Delta(FinalAccuracy(&run), FinalAccuracy(base)), 4);
    j["end_accuracy_delta"] =
        Figure(Delta(EndAccuracyOf(&run), EndAccuracyOf(base)), 4);
  } else {
    j["baseline"] = nullptr;
    j["final_accuracy_delta"] = nullptr;
    j["end_accuracy_delta"] = nullptr;
  }
  j["faults"] = Json::array();
  for (const FaultReport& f : report.faults) {
    // Where a fault never applied, its window has no start or end.
    auto if_applied = [&f](double value) {
      return f.applied ? std::optional<double>(value) : std::nullopt;
    };
    j["faults"].push_back(
        {{"line", f.line},
         {"what", f.what},
         {"at", f.trigger},
         {"applied", f.applied},
         {"start_s", Figure(if_applied(f.start_s))},
         {"start_epoch", Figure(if_applied(f.start_epoch))},
         {"end_s", Figure(f.end_s)},
         {"window_end_s", Figure(if_applied(f.window_end_s))},
         {"detect_s", Figure(f.detect_s)},
         {"stall_s", Figure(f.stall_s)},
         {"stall_open", f.stall_open},
         {"pre_fault_samples_per_s", Figure(f.pre_fault_samples_per_s, 0)},
         {"recover_s", Figure(f.recover_s)},
         {"fault_samples_per_s", Figure(f.fault_samples_per_s, 0)},
         {"post_fault_samples_per_s", Figure(f.post_fault_samples_per_s, 0)},
         {"updates_lost", f.updates_lost},
         {"accuracy", Figure(f.accuracy, 4)},
         {"baseline_accuracy", Figure(f.baseline_accuracy, 4)},
         {"accuracy_delta", Figure(f.accuracy_delta, 4)},
         {"notes", f.notes}});
  }
  j["process_events"] = run.process_events;
  j["teardown"] = {{"clean", run.left_behind.empty()},
                   {"left_behind", run.left_behind}};
  std::ofstream out(path);
  // Bytes that are not UTF-8 (from a log line, say) become U+FFFD.
  out << j.dump(2, ' ', false, Json::error_handler_t::replace) << "\n";
  out.close();
  if (!out) return absl::UnavailableError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

std::string PlotScript(const Report& report, const std::string& out_dir) {
  const ExperimentResult& run = *report.run;
  // The x range holds every row drawn, rounded up: a run's last
  // evaluation can come after duration_s, and an x range that ends before
  // a run's only evaluation leaves gnuplot no point to draw (it fails).
  double x_max = std::max(1.0, run.duration_s);
  for (const Sample& s : run.timeline.samples) x_max = std::max(x_max, s.t);
  for (const Evaluation& e : run.timeline.evaluations) {
    x_max = std::max(x_max, e.t);
  }
  for (const EventRow& e : run.timeline.events) x_max = std::max(x_max, e.t);
  x_max = std::ceil(x_max * 10) / 10;
  // noenhanced: names and fault texts are drawn as written (enhanced text
  // would make the "_" of server_stop a subscript). The legend goes above
  // each panel, where no fault label can run into it.
  std::string script = absl::StrCat(
      "set terminal pngcairo noenhanced size 1200,800 font 'sans,10'\n"
      "set output '",
      out_dir,
      "/timeline.png'\n"
      "set datafile separator comma\n"
      "set key outside top center horizontal\n"
      "set grid\n"
      "set lmargin 10\nset rmargin 10\n"
      "set xrange [0:",
      absl::StrFormat("%.1f", x_max),
      "]\n"
      "set multiplot layout 2,1 title ",
      Quoted(absl::StrCat(
          report.scenario->name, " (", report.scenario->cluster.mode, ", ",
          report.scenario->cluster.servers, " servers x ",
          report.scenario->cluster.workers, " workers, ", report.network, ")")),
      "\n");
  // A dashed line and a label at every fault event, on both panels. A
  // label reads away from the plot's nearer edge, so none is cut off.
  std::string marks;
  int n = 0;
  for (const EventRow& e : run.timeline.events) {
    ++n;
    const bool near_right_edge = e.t > 0.6 * x_max;
    absl::StrAppend(&marks, "set arrow ", n, " from ", e.t, ", graph 0 to ",
                    e.t, ", graph 1 nohead dt 2 lw 1.5 lc rgb '",
                    e.start ? "#d62728" : "#2ca02c", "'\n");
    absl::StrAppend(
        &marks, "set label ", n, " ",
        Quoted(absl::StrReplaceAll(e.text, {{"'", ""}})), " at ", e.t,
        ", graph ", 0.97 - 0.07 * ((n - 1) % 4),
        near_right_edge ? " right offset -0.5,0" : " left offset 0.5,0",
        " font 'sans,8' tc rgb '", e.start ? "#d62728" : "#2ca02c", "'\n");
  }
  const std::string csv = out_dir + "/timeline.csv";
  const std::string base_csv = out_dir + "/baseline/timeline.csv";
  const bool baseline = report.baseline != nullptr;
  // A column without a point fails gnuplot ("all points y value
  // undefined"): a run too short to be evaluated draws an empty panel.
  std::vector<std::string> accuracy;
  if (!run.timeline.evaluations.empty()) {
    accuracy.push_back(absl::StrCat("'", csv,
                                    "' every ::1 using 1:($3*100) with steps "
                                    "lw 2 lc rgb '#1f77b4' title 'accuracy'"));
  }
  if (baseline && !report.baseline->timeline.evaluations.empty()) {
    accuracy.push_back(
        absl::StrCat("'", base_csv,
                     "' every ::1 using 1:($3*100) with steps lw 1 lc rgb "
                     "'#999999' title 'baseline accuracy'"));
  }
  const bool unevaluated = accuracy.empty();
  if (unevaluated) {
    accuracy.push_back("1/0 title 'accuracy: no evaluation in this run'");
  }
  absl::StrAppend(&script, marks, unevaluated ? "set yrange [0:100]\n" : "",
                  "set ylabel 'test accuracy (%)'\n"
                  "set format x ''\n"
                  "plot ",
                  absl::StrJoin(accuracy, ", "));
  absl::StrAppend(&script,
                  "\nunset label\nset autoscale y\nset format x '%g'\n", marks,
                  "set xlabel 'seconds since the workers started'\n"
                  "set ylabel 'examples/s'\n"
                  "set y2label 'live workers'\n"
                  "set y2tics\nset ytics nomirror\n"
                  "set y2range [0:",
                  report.scenario->cluster.workers + 1,
                  "]\n"
                  "plot '",
                  csv,
                  "' every ::1 using 1:4 with lines lw 2 lc rgb "
                  "'#ff7f0e' title 'throughput', '",
                  csv,
                  "' every ::1 using 1:5 axes x1y2 with steps lw 1.5 lc rgb "
                  "'#9467bd' title 'live workers'");
  if (baseline) {
    absl::StrAppend(&script, ", '", base_csv,
                    "' every ::1 using 1:4 with lines lw 1 lc rgb '#999999' "
                    "title 'baseline throughput'");
  }
  absl::StrAppend(&script, "\nunset multiplot\n");
  return script;
}

absl::Status WritePlot(const Report& report, const std::string& out_dir) {
  if (FindProgram("gnuplot").empty()) {
    return absl::NotFoundError(
        "gnuplot is not installed (Debian: gnuplot-nox; tools/setup.sh "
        "installs it): timeline.png not drawn");
  }
  const std::string script_path = out_dir + "/timeline.gp";
  {
    std::ofstream out(script_path);
    out << PlotScript(report, out_dir);
    if (!out) return absl::UnavailableError("cannot write " + script_path);
  }
  absl::StatusOr<std::string> drawn = RunCommand({"gnuplot", script_path});
  if (!drawn.ok()) return drawn.status();
  return absl::OkStatus();
}

}  // namespace ps::chaos
