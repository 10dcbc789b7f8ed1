// ps_chaos: runs a fault-tolerance experiment described by a scenario file
// and reports how training rode through it (README, "ps_chaos").
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/cli.h"
#include "common/stop_signal.h"
#include "common/subprocess.h"
#include "deploy/local/launcher_security_flags.h"
#include "tools/chaos/analysis.h"
#include "tools/chaos/capabilities.h"
#include "tools/chaos/experiment.h"
#include "tools/chaos/leftovers.h"
#include "tools/chaos/report.h"
#include "tools/chaos/scenario.h"

ABSL_FLAG(std::string, out, "",
          "run: directory for timeline.csv, summary.json, timeline.png and "
          "every process's log (created if missing).");
ABSL_FLAG(bool, baseline, false,
          "run: first run the same cluster without faults (into OUT/baseline) "
          "and report accuracy deltas against it.");
ABSL_FLAG(std::string, bin_dir, "",
          "Where ps_server and ps_worker are; default: beside ps_chaos.");
ABSL_FLAG(bool, quiet, false, "run: print only the summary.");

namespace {

using ps::common::Die;

constexpr char kUsage[] =
    "ps_chaos COMMAND ...\n"
    "  run SCENARIO --out DIR [--baseline]   run the experiment\n"
    "  check SCENARIO                        validate the scenario only\n"
    "  cleanup                               remove what killed runs left\n"
    "Scenario format and presets: deploy/experiments/README.md";

// "1.96 s", "45210" (no unit: a rate, no decimals), or "-".
std::string Figure(std::optional<double> value, const char* unit) {
  if (!value) return "-";
  return *unit ? absl::StrFormat("%.2f %s", *value, unit)
               : absl::StrFormat("%.0f", *value);
}

namespace chaos = ps::chaos;

// --out, created if missing; dies when it cannot be written.
std::string OutDirOrDie() {
  const std::string out = absl::GetFlag(FLAGS_out);
  if (out.empty()) Die("run needs --out DIR");
  if (std::system(absl::StrCat("mkdir -p '", out, "'").c_str()) != 0 ||
      access(out.c_str(), W_OK) != 0) {
    Die(absl::StrCat("cannot create or write --out=", out));
  }
  return out;
}

// Whether the run uses network namespaces: what the scenario asks for and
// the machine allows (probed, into `caps`, only when the scenario needs
// it). Dies when the scenario cannot run without them.
bool UseNamespacesOrDie(const chaos::Scenario& scenario,
                        const std::string& scenario_path,
                        chaos::Capabilities& caps) {
  const chaos::ClusterSpec::Network network = scenario.cluster.network;
  const bool wants_namespaces =
      network == chaos::ClusterSpec::Network::kNamespaces ||
      (network == chaos::ClusterSpec::Network::kAuto &&
       scenario.NeedsNetwork());
  if (wants_namespaces || scenario.NeedsCgroups()) {
    caps = chaos::ProbeCapabilities();
    for (const std::string& line : caps.missing) {
      std::printf("ps_chaos: not available here: %s\n", line.c_str());
    }
  }
  const bool namespaces = wants_namespaces && caps.network();
  if (network == chaos::ClusterSpec::Network::kNamespaces && !namespaces) {
    Die("the scenario asks for network: namespaces, which this machine does "
        "not allow (see above); use network: auto to fall back to "
        "in-process injection");
  }
  if (wants_namespaces && !namespaces) {
    std::printf(
        "ps_chaos: falling back to loopback with in-process fault "
        "injection\n");
  }
  for (const chaos::FaultEvent& f : scenario.faults) {
    if (namespaces || f.action != chaos::FaultEvent::Action::kNet ||
        f.partition.empty()) {
      continue;
    }
    for (const chaos::ProcessRef& t : f.targets) {
      if (t.kind == chaos::ProcessRef::Kind::kServer) {
        Die(absl::StrCat(scenario_path, ":", f.line,
                         ": partitioning a server needs network "
                         "namespaces, which this machine does not allow"));
      }
    }
  }
  return namespaces;
}

// The same cluster without faults, into OUT/baseline.
chaos::ExperimentResult RunBaseline(const chaos::Scenario& scenario,
                                    chaos::ExperimentOptions options,
                                    const std::string& out) {
  options.out_dir = out + "/baseline";
  mkdir(options.out_dir.c_str(), 0755);
  options.apply_faults = false;
  std::printf("ps_chaos: baseline run (no faults) into %s\n",
              options.out_dir.c_str());
  chaos::ExperimentResult baseline = chaos::RunExperiment(scenario, options);
  (void)chaos::WriteTimelineCsv(baseline.timeline,
                                options.out_dir + "/timeline.csv");
  if (!baseline.completed) {
    std::fprintf(stderr, "ps_chaos: the baseline run failed: %s\n",
                 baseline.failure.c_str());
  }
  return baseline;
}

// The figures of every fault. Each fault's window ends where the next
// applied fault starts, or when the first worker finished (the end of
// training is no fault's doing).
std::vector<chaos::FaultReport> MeasureFaults(
    const chaos::Scenario& scenario, const chaos::ExperimentResult& run,
    const chaos::ExperimentResult* baseline) {
  std::vector<chaos::FaultReport> faults = run.faults;
  for (chaos::FaultReport& f : faults) {
    f.window_end_s = run.duration_s;
    if (run.first_worker_done_s && *run.first_worker_done_s > f.start_s) {
      f.window_end_s = *run.first_worker_done_s;
      f.window_ends_at_finish = true;
    }
    for (const chaos::FaultReport& g : run.faults) {
      if (g.applied && g.index != f.index && g.start_s > f.start_s &&
          g.start_s < f.window_end_s) {
        f.window_end_s = g.start_s;
        f.window_ends_at_finish = false;
      }
    }
    chaos::MeasureFault(run.timeline,
                        baseline != nullptr ? &baseline->timeline : nullptr,
                        scenario.faults[f.index], run.regressions, f);
  }
  return faults;
}

// timeline.csv, summary.json and timeline.png; false when one failed (it
// says which).
bool WriteOutputs(const chaos::Report& report, const std::string& out) {
  bool ok = true;
  for (const absl::Status& s :
       {chaos::WriteTimelineCsv(report.run->timeline, out + "/timeline.csv"),
        chaos::WriteSummaryJson(report, out + "/summary.json"),
        chaos::WritePlot(report, out)}) {
    if (!s.ok()) {
      std::fprintf(stderr, "ps_chaos: %s\n", std::string(s.message()).c_str());
      ok = false;
    }
  }
  return ok;
}

// "82.71% (6 evaluations; baseline 82.50%, +0.21 points)", or "-".
std::string EndAccuracyText(const chaos::Report& report) {
  const std::optional<chaos::EndAccuracy> end =
      chaos::MeasureEndAccuracy(report.run->timeline);
  if (!end) return "-";
  std::string text = absl::StrFormat("%.2f%% (%d evaluations",
                                     100 * end->accuracy, end->evaluations);
  const std::optional<chaos::EndAccuracy> base =
      report.baseline == nullptr
          ? std::nullopt
          : chaos::MeasureEndAccuracy(report.baseline->timeline);
  if (base) {
    absl::StrAppendFormat(&text, "; baseline %.2f%%, %+.2f points",
                          100 * base->accuracy,
                          100 * (end->accuracy - base->accuracy));
  }
  return text + ")";
}

// One paragraph per fault, then the run's line.
void PrintSummary(const chaos::Report& report, const std::string& out) {
  for (const chaos::FaultReport& f : report.faults) {
    std::printf(
        "ps_chaos: line %d, %s at %s: %s; detect %s, stall %s%s, recover %s "
        "(examples/s %s before, %s during, %s after), %llu updates lost, "
        "accuracy delta %s\n",
        f.line, f.what.c_str(), f.trigger.c_str(),
        f.applied ? absl::StrFormat("applied at %.2f s (epoch %.2f)", f.start_s,
                                    f.start_epoch)
                        .c_str()
                  : "not applied",
        Figure(f.detect_s, "s").c_str(), Figure(f.stall_s, "s").c_str(),
        f.stall_open ? " (still stalled)" : "",
        Figure(f.recover_s, "s").c_str(),
        Figure(f.pre_fault_samples_per_s, "").c_str(),
        Figure(f.fault_samples_per_s, "").c_str(),
        Figure(f.post_fault_samples_per_s, "").c_str(),
        static_cast<unsigned long long>(f.updates_lost),
        f.accuracy_delta
            ? absl::StrFormat("%+.2f points", 100 * *f.accuracy_delta).c_str()
            : "-");
    for (const std::string& note : f.notes) {
      std::printf("ps_chaos:   note: %s\n", note.c_str());
    }
  }
  const chaos::ExperimentResult& run = *report.run;
  std::printf(
      "ps_chaos: %s in %.1f s; final accuracy %s; end accuracy %s; outputs "
      "in %s\n",
      run.completed ? "training completed"
                    : absl::StrCat("FAILED: ", run.failure).c_str(),
      run.duration_s,
      run.timeline.evaluations.empty()
          ? "-"
          : absl::StrFormat("%.2f%%",
                            100 * run.timeline.evaluations.back().accuracy)
                .c_str(),
      EndAccuracyText(report).c_str(), out.c_str());
}

int Run(const std::string& scenario_path) {
  absl::StatusOr<chaos::Scenario> scenario = chaos::LoadScenario(scenario_path);
  if (!scenario.ok()) Die(scenario.status().message());
  chaos::ExperimentOptions options;
  options.security = ps::launch::JobSecurityFromFlagsOrDie();
  const std::string out = OutDirOrDie();
  options.bin_dir = absl::GetFlag(FLAGS_bin_dir);
  if (options.bin_dir.empty()) options.bin_dir = ps::common::ExecutableDir();
  options.namespaces =
      UseNamespacesOrDie(*scenario, scenario_path, options.caps);
  options.interrupted = [] { return ps::common::StopSignalReceived() != 0; };
  options.verbose = !absl::GetFlag(FLAGS_quiet);

  // Teardown must run to the end: repeated signals are ignored.
  ps::common::CatchStopSignals();

  chaos::Report report;
  report.scenario = &*scenario;
  report.network = options.namespaces ? "namespaces" : "loopback";
  report.capabilities_missing = options.caps.missing;
  chaos::ExperimentResult baseline;
  if (absl::GetFlag(FLAGS_baseline)) {
    baseline = RunBaseline(*scenario, options, out);
    report.baseline = &baseline;
  }
  chaos::ExperimentResult run;
  if (ps::common::StopSignalReceived() == 0) {
    options.out_dir = out;
    options.apply_faults = true;
    run = chaos::RunExperiment(*scenario, options);
  } else {
    run.failure = "interrupted";
  }
  report.run = &run;
  if (!run.subnet.empty()) report.network = "namespaces " + run.subnet;
  report.faults = MeasureFaults(*scenario, run, report.baseline);

  int exit_code = run.completed ? 0 : 1;
  if (!WriteOutputs(report, out)) exit_code = 1;
  PrintSummary(report, out);
  for (const chaos::ExperimentResult* r : {&baseline, &run}) {
    for (const std::string& line : r->left_behind) {
      std::fprintf(stderr, "ps_chaos: left behind: %s\n", line.c_str());
      exit_code = 1;
    }
  }
  if (const int signal = ps::common::StopSignalReceived(); signal != 0) {
    return 128 + signal;
  }
  return exit_code;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args =
      ps::common::InitProgram(argc, argv, kUsage, /*max_arguments=*/2);
  if (args.empty()) Die(absl::StrCat("a command is needed\n", kUsage));
  if (args[0] == "run" || args[0] == "check") {
    if (args.size() != 2) Die(absl::StrCat(args[0], " needs SCENARIO"));
    if (args[0] == "run") return Run(args[1]);
    absl::StatusOr<ps::chaos::Scenario> scenario =
        ps::chaos::LoadScenario(args[1]);
    if (!scenario.ok()) Die(scenario.status().message());
    std::printf("%s: %zu faults, valid\n", args[1].c_str(),
                scenario->faults.size());
    return 0;
  }
  if (args[0] == "cleanup" && args.size() == 1) {
    const std::vector<std::string> lines = ps::chaos::CleanUpDeadRuns();
    for (const std::string& line : lines) std::printf("%s\n", line.c_str());
    if (lines.empty()) std::printf("ps_chaos: nothing left by earlier runs\n");
    return 0;
  }
  Die(absl::StrCat("unknown command '", args[0], "'\n", kUsage));
}
