#ifndef PS_TOOLS_CHAOS_EXPERIMENT_H_
#define PS_TOOLS_CHAOS_EXPERIMENT_H_

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "deploy/local/daemon_flags.h"
#include "tools/chaos/analysis.h"
#include "tools/chaos/capabilities.h"
#include "tools/chaos/scenario.h"
#include "tools/chaos/timeline.h"

namespace ps::chaos {

struct ExperimentOptions {
  // Logs, metrics, fault files and checkpoints go here (must exist).
  std::string out_dir;
  // Where ps_server and ps_worker are.
  std::string bin_dir;
  // false: a baseline run of the same cluster with no fault at all.
  bool apply_faults = true;
  // Each daemon in its own network namespace (needs caps.network()).
  bool namespaces = false;
  Capabilities caps;
  // Polled often; true ends the run early (Ctrl-C).
  std::function<bool()> interrupted = [] { return false; };
  // Progress lines on stdout.
  bool verbose = true;
  // The job's credentials (ps_chaos's TLS and token flags); this program's
  // own calls (Status polls) use those installed by the caller.
  launch::JobSecurity security;
};

struct ExperimentResult {
  // Training finished: every worker not killed for good exited 0.
  bool completed = false;
  std::string failure;  // why not, when not
  double duration_s = 0;
  Timeline timeline;
  // One per scenario fault: when it was applied and what the runner did
  // in place of what the machine could not (the measured fields are
  // filled by MeasureFault afterwards).
  std::vector<FaultReport> faults;
  // The namespaces' /24 ("198.51.100.0/24"); empty on loopback.
  std::string subnet;
  std::vector<std::string> process_events;
  // When the first worker finished training (exited 0 by itself): from
  // then on the job winds down, which is no fault's doing.
  std::optional<double> first_worker_done_s;  // "worker 1 exited with status 0"
  std::vector<VersionRegression> regressions;
  // What teardown could not remove; empty when clean.
  std::vector<std::string> left_behind;
};

// Runs the scenario once: starts the cluster (in namespaces when asked),
// applies the faults on their triggers, polls every server's Status,
// tails rank 0's metrics, and tears everything down, whatever happens.
ExperimentResult RunExperiment(const Scenario& scenario,
                               const ExperimentOptions& options);

}  // namespace ps::chaos

#endif  // PS_TOOLS_CHAOS_EXPERIMENT_H_
