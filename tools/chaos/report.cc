#include "tools/chaos/report.h"

#include <algorithm>
#include <fstream>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "tools/chaos/shell.h"

namespace ps::chaos {
namespace {

std::string Json(const std::string& text) {
  std::string out = "\"";
  for (char c : text) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          out += absl::StrFormat("\\u%04x", c);
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

std::string Json(std::optional<double> value, int digits = 3) {
  return value ? absl::StrFormat("%.*f", digits, *value) : "null";
}

std::string Json(const std::vector<std::string>& lines) {
  std::vector<std::string> items;
  for (const std::string& line : lines) items.push_back(Json(line));
  return absl::StrCat("[", absl::StrJoin(items, ", "), "]");
}

std::optional<double> FinalAccuracy(const ExperimentResult* run) {
  if (run == nullptr || run->timeline.evaluations.empty()) return std::nullopt;
  return run->timeline.evaluations.back().accuracy;
}

std::optional<double> FinalEpoch(const ExperimentResult* run) {
  if (run == nullptr || run->timeline.evaluations.empty()) return std::nullopt;
  return run->timeline.evaluations.back().epoch;
}

}  // namespace

absl::Status WriteSummaryJson(const Report& report, const std::string& path) {
  const ExperimentResult& run = *report.run;
  const ClusterSpec& c = report.scenario->cluster;
  std::string j = "{\n";
  absl::StrAppend(&j, "  \"scenario\": ", Json(report.scenario->name), ",\n");
  absl::StrAppend(&j, "  \"cluster\": {\"servers\": ", c.servers,
                  ", \"workers\": ", c.workers, ", \"mode\": ", Json(c.mode),
                  ", \"model\": ", Json(c.model), ", \"epochs\": ", c.epochs,
                  ", \"network\": ", Json(report.network), "},\n");
  absl::StrAppend(&j, "  \"capabilities_missing\": ",
                  Json(report.capabilities_missing), ",\n");
  absl::StrAppend(&j, "  \"completed\": ", run.completed ? "true" : "false",
                  ",\n");
  absl::StrAppend(&j, "  \"failure\": ",
                  run.failure.empty() ? "null" : Json(run.failure), ",\n");
  absl::StrAppend(&j, "  \"duration_s\": ", Json(run.duration_s), ",\n");
  absl::StrAppend(&j, "  \"final_accuracy\": ", Json(FinalAccuracy(&run), 4),
                  ",\n");
  absl::StrAppend(&j, "  \"final_epoch\": ", Json(FinalEpoch(&run), 4), ",\n");
  if (report.baseline != nullptr) {
    const std::optional<double> base = FinalAccuracy(report.baseline);
    const std::optional<double> mine = FinalAccuracy(&run);
    absl::StrAppend(
        &j, "  \"baseline\": {\"completed\": ",
        report.baseline->completed ? "true" : "false",
        ", \"duration_s\": ", Json(report.baseline->duration_s),
        ", \"final_accuracy\": ", Json(base, 4), "},\n");
    absl::StrAppend(&j, "  \"final_accuracy_delta\": ",
                    Json(base && mine ? std::optional<double>(*mine - *base)
                                      : std::nullopt,
                         4),
                    ",\n");
  } else {
    absl::StrAppend(&j, "  \"baseline\": null,\n  \"final_accuracy_delta\": null,\n");
  }
  absl::StrAppend(&j, "  \"faults\": [");
  for (size_t i = 0; i < report.faults.size(); ++i) {
    const FaultReport& f = report.faults[i];
    absl::StrAppend(&j, i ? ",\n" : "\n", "    {\"line\": ", f.line,
                    ", \"what\": ", Json(f.what), ", \"at\": ", Json(f.trigger),
                    ", \"applied\": ", f.applied ? "true" : "false",
                    ",\n     \"start_s\": ",
                    Json(f.applied ? std::optional<double>(f.start_s)
                                   : std::nullopt),
                    ", \"start_epoch\": ",
                    Json(f.applied ? std::optional<double>(f.start_epoch)
                                   : std::nullopt),
                    ", \"end_s\": ", Json(f.end_s),
                    ", \"window_end_s\": ",
                    Json(f.applied ? std::optional<double>(f.window_end_s)
                                   : std::nullopt),
                    ",\n     \"detect_s\": ", Json(f.detect_s),
                    ", \"stall_s\": ", Json(f.stall_s),
                    ", \"stall_open\": ", f.stall_open ? "true" : "false",
                    ", \"pre_fault_samples_per_s\": ",
                    Json(f.pre_fault_samples_per_s, 0),
                    ", \"recover_s\": ", Json(f.recover_s),
                    ", \"fault_samples_per_s\": ",
                    Json(f.fault_samples_per_s, 0),
                    ", \"post_fault_samples_per_s\": ",
                    Json(f.post_fault_samples_per_s, 0),
                    ", \"updates_lost\": ", f.updates_lost,
                    ",\n     \"accuracy\": ", Json(f.accuracy, 4),
                    ", \"baseline_accuracy\": ", Json(f.baseline_accuracy, 4),
                    ", \"accuracy_delta\": ", Json(f.accuracy_delta, 4),
                    ", \"notes\": ", Json(f.notes), "}");
  }
  absl::StrAppend(&j, report.faults.empty() ? "],\n" : "\n  ],\n");
  absl::StrAppend(&j, "  \"process_events\": ", Json(run.process_events),
                  ",\n");
  absl::StrAppend(&j, "  \"teardown\": {\"clean\": ",
                  run.left_behind.empty() ? "true" : "false",
                  ", \"left_behind\": ", Json(run.left_behind), "}\n}\n");
  std::ofstream out(path);
  out << j;
  out.close();
  if (!out) return absl::UnavailableError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

absl::Status WritePlot(const Report& report, const std::string& out_dir) {
  if (FindProgram("gnuplot").empty()) {
    return absl::NotFoundError(
        "gnuplot is not installed (Debian: gnuplot-nox; tools/setup.sh "
        "installs it): timeline.png not drawn");
  }
  const ExperimentResult& run = *report.run;
  std::string script = absl::StrCat(
      "set terminal pngcairo size 1200,800 font 'sans,10'\n"
      "set output '", out_dir, "/timeline.png'\n"
      "set datafile separator comma\n"
      "set key inside left top opaque\n"
      "set grid\n"
      "set lmargin 10\nset rmargin 10\n"
      "set xrange [0:", absl::StrFormat("%.1f", std::max(1.0, run.duration_s)),
      "]\n"
      "set multiplot layout 2,1 title ",
      Json(absl::StrCat(report.scenario->name, " (", report.scenario->cluster.mode,
                        ", ", report.scenario->cluster.servers, " servers x ",
                        report.scenario->cluster.workers, " workers, ",
                        report.network, ")")),
      "\n");
  // A dashed line and a label at every fault event, on both panels.
  std::string marks;
  int n = 0;
  for (const EventRow& e : run.timeline.events) {
    ++n;
    absl::StrAppend(&marks, "set arrow ", n, " from ", e.t, ", graph 0 to ",
                    e.t, ", graph 1 nohead dt 2 lw 1.5 lc rgb '",
                    e.start ? "#d62728" : "#2ca02c", "'\n");
    absl::StrAppend(&marks, "set label ", n, " ",
                    Json(absl::StrReplaceAll(e.text, {{"'", ""}})), " at ", e.t,
                    ", graph ", 0.97 - 0.07 * ((n - 1) % 4),
                    " left offset 0.5,0 font 'sans,8' tc rgb '",
                    e.start ? "#d62728" : "#2ca02c", "'\n");
  }
  const std::string csv = out_dir + "/timeline.csv";
  const std::string base_csv = out_dir + "/baseline/timeline.csv";
  const bool baseline = report.baseline != nullptr;
  absl::StrAppend(&script, marks,
                  "set ylabel 'test accuracy (%)'\n"
                  "set format x ''\n"
                  "plot '", csv, "' every ::1 using 1:($3*100) with steps lw 2 "
                  "lc rgb '#1f77b4' title 'accuracy'");
  if (baseline) {
    absl::StrAppend(&script, ", '", base_csv,
                    "' every ::1 using 1:($3*100) with steps lw 1 lc rgb "
                    "'#999999' title 'baseline accuracy'");
  }
  absl::StrAppend(&script, "\nunset label\nset format x '%g'\n", marks,
                  "set xlabel 'seconds since the workers started'\n"
                  "set ylabel 'examples/s'\n"
                  "set y2label 'live workers'\n"
                  "set y2tics\nset ytics nomirror\n"
                  "set y2range [0:", report.scenario->cluster.workers + 1, "]\n"
                  "plot '", csv, "' every ::1 using 1:4 with lines lw 2 lc rgb "
                  "'#ff7f0e' title 'throughput', '", csv,
                  "' every ::1 using 1:5 axes x1y2 with steps lw 1.5 lc rgb "
                  "'#9467bd' title 'live workers'");
  if (baseline) {
    absl::StrAppend(&script, ", '", base_csv,
                    "' every ::1 using 1:4 with lines lw 1 lc rgb '#999999' "
                    "title 'baseline throughput'");
  }
  absl::StrAppend(&script, "\nunset multiplot\n");
  const std::string script_path = out_dir + "/timeline.gp";
  {
    std::ofstream out(script_path);
    out << script;
    if (!out) return absl::UnavailableError("cannot write " + script_path);
  }
  absl::StatusOr<std::string> drawn = RunCommand({"gnuplot", script_path});
  if (!drawn.ok()) return drawn.status();
  return absl::OkStatus();
}

}  // namespace ps::chaos
