#include "tools/chaos/experiment.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "common/cli.h"
#include "common/json.h"
#include "common/parallel.h"
#include "common/rpc/channel.h"
#include "deploy/local/launcher.h"
#include "ps/v1/parameter_server.grpc.pb.h"
#include "spdlog/spdlog.h"
#include "tools/chaos/cluster.h"
#include "tools/chaos/cpu_throttle.h"
#include "tools/chaos/leftovers.h"
#include "tools/chaos/network_sandbox.h"

namespace ps::chaos {
namespace {

// Asks every server for its Status at once; a shard none of whose
// replicas answers within `deadline` (killed, stopped, cut off) is marked
// down. With replicas, the shard's sample is its most advanced replica's
// (a backup follows its primary, and the primary changes at a failover).
class StatusPoller {
 public:
  StatusPoller(const std::vector<std::vector<std::string>>& shards,
               absl::Duration deadline)
      : deadline_(deadline) {
    for (const std::vector<std::string>& replicas : shards) {
      for (const std::string& address : replicas) {
        shard_of_.push_back(stubs_per_shard_.size());
        stubs_.push_back(
            ps::v1::ParameterServer::NewStub(rpc::CreateChannel(address)));
      }
      stubs_per_shard_.push_back(replicas.size());
    }
  }

  std::vector<ServerSample> Poll() {
    std::vector<ServerSample> replies(stubs_.size());
    common::ParallelFor(stubs_.size(), [&](size_t i) {
      grpc::ClientContext context;
      context.set_deadline(absl::ToChronoTime(absl::Now() + deadline_));
      ps::v1::StatusResponse status;
      if (!stubs_[i]->Status(&context, ps::v1::StatusRequest(), &status).ok()) {
        return;
      }
      replies[i] = {true, status.version(), status.samples_applied(),
                    status.live_workers(), status.leases_expired()};
    });
    std::vector<ServerSample> samples(stubs_per_shard_.size());
    for (size_t i = 0; i < replies.size(); ++i) {
      ServerSample& shard = samples[shard_of_[i]];
      if (replies[i].up && (!shard.up || replies[i].version > shard.version)) {
        shard = replies[i];
      }
    }
    return samples;
  }

 private:
  absl::Duration deadline_;
  std::vector<std::unique_ptr<ps::v1::ParameterServer::Stub>> stubs_;
  std::vector<size_t> shard_of_;         // per stub
  std::vector<size_t> stubs_per_shard_;  // its size: the shards
};

// Turns the scenario's faults on and off, on processes (signals), their
// gRPC layer (fault files), their links (sandbox) and CPU (cgroups); and
// says what it did instead when the machine does not allow something.
class FaultApplier {
 public:
  FaultApplier(const Scenario& scenario, Cluster& cluster,
               NetworkSandbox* sandbox, CpuThrottle* throttle)
      : scenario_(scenario),
        cluster_(cluster),
        sandbox_(sandbox),
        throttle_(throttle) {}

  // Starts fault i; returns problems (one line each, also in notes).
  absl::Status Start(int i, std::vector<std::string>& notes) {
    const FaultEvent& f = scenario_.faults[i];
    absl::Status result;
    auto keep = [&result](absl::Status s) {
      if (result.ok()) result = s;
    };
    // "server I primary" is whichever replica is the primary now; the
    // fault's end undoes it on that same replica.
    std::vector<ProcessRef>& targets = resolved_[i];
    targets.clear();
    for (const ProcessRef& t : f.targets) {
      absl::StatusOr<ProcessRef> resolved = cluster_.Resolve(t);
      if (!resolved.ok()) {
        keep(resolved.status());
        continue;
      }
      if (t.primary()) {
        notes.push_back(
            absl::StrCat(t.ToString(), " was ", resolved->ToString()));
      }
      targets.push_back(*resolved);
    }
    for (const ProcessRef& t : targets) {
      switch (f.action) {
        case FaultEvent::Action::kKill:
          keep(cluster_.Kill(t));
          break;
        case FaultEvent::Action::kStop:
          keep(cluster_.Stop(t));
          break;
        case FaultEvent::Action::kCont:
          keep(cluster_.Cont(t));
          break;
        case FaultEvent::Action::kRestart:
          keep(cluster_.Restart(t));
          keep(ReapplyCpu(t));
          break;
        case FaultEvent::Action::kRpc:
        case FaultEvent::Action::kNet:
        case FaultEvent::Action::kCpu:
          active_[t.ToString()].push_back(i);
          break;
      }
    }
    if (f.action == FaultEvent::Action::kRpc ||
        f.action == FaultEvent::Action::kNet ||
        f.action == FaultEvent::Action::kCpu) {
      keep(Refresh(f, targets, notes));
    }
    return result;
  }

  // Undoes fault i (after its `for`).
  absl::Status End(int i, std::vector<std::string>& notes) {
    const FaultEvent& f = scenario_.faults[i];
    const std::vector<ProcessRef>& targets = resolved_[i];
    absl::Status result;
    for (const ProcessRef& t : targets) {
      absl::Status s;
      if (f.action == FaultEvent::Action::kKill) {
        s = cluster_.Restart(t);
        if (s.ok()) s = ReapplyCpu(t);
      }
      if (f.action == FaultEvent::Action::kStop) s = cluster_.Cont(t);
      std::vector<int>& active = active_[t.ToString()];
      active.erase(std::remove(active.begin(), active.end(), i), active.end());
      if (result.ok()) result = s;
    }
    if (f.action == FaultEvent::Action::kRpc ||
        f.action == FaultEvent::Action::kNet ||
        f.action == FaultEvent::Action::kCpu) {
      absl::Status s = Refresh(f, targets, notes);
      if (result.ok()) result = s;
    }
    return result;
  }

 private:
  // Makes every target's fault file, link and CPU limit match the faults
  // active on it now.
  absl::Status Refresh(const FaultEvent& changed,
                       const std::vector<ProcessRef>& touched,
                       std::vector<std::string>& notes) {
    absl::Status result;
    for (const ProcessRef& t : touched) {
      absl::Status s = WriteFaultFile(t, notes);
      if (s.ok() && changed.action == FaultEvent::Action::kNet &&
          sandbox_ != nullptr) {
        s = sandbox_->Apply(cluster_.daemon(t).host, LinkFaultsOf(t));
      }
      if (s.ok() && changed.action == FaultEvent::Action::kCpu) {
        s = ApplyCpu(t, notes);
      }
      if (result.ok()) result = s;
    }
    return result;
  }

  std::vector<const FaultEvent*> Active(const ProcessRef& t,
                                        FaultEvent::Action action) {
    std::vector<const FaultEvent*> faults;
    for (int i : active_[t.ToString()]) {
      if (scenario_.faults[i].action == action) {
        faults.push_back(&scenario_.faults[i]);
      }
    }
    return faults;
  }

  LinkFaults LinkFaultsOf(const ProcessRef& t) {
    LinkFaults link;
    for (const FaultEvent* f : Active(t, FaultEvent::Action::kNet)) {
      link.loss = std::max(link.loss, f->loss);
      if (!f->rate.empty()) link.rate = f->rate;  // the newest cap
      for (const ProcessRef& peer : f->partition) {
        const std::string address = cluster_.AddressOf(peer);
        if (std::find(link.cut_from.begin(), link.cut_from.end(), address) ==
            link.cut_from.end()) {
          link.cut_from.push_back(address);
        }
      }
    }
    return link;
  }

  // The newest rpc fault on t, plus what its net faults need in-process:
  // latency always (no netem here), loss and partitions without a sandbox.
  absl::Status WriteFaultFile(const ProcessRef& t,
                              std::vector<std::string>& notes) {
    const Daemon& d = cluster_.daemon(t);
    rpc::FaultSpec spec;
    spec.client = spec.server = true;
    bool any = false;
    for (const FaultEvent* f : Active(t, FaultEvent::Action::kRpc)) {
      spec = f->rpc;
      any = true;
    }
    for (const FaultEvent* f : Active(t, FaultEvent::Action::kNet)) {
      if (f->latency > absl::ZeroDuration()) {
        // Each call crosses the link twice; the injector delays it once.
        spec.delay_min += 2 * f->latency;
        spec.delay_max += 2 * f->latency;
        any = true;
      }
      if (sandbox_ == nullptr && !f->partition.empty()) {
        // Without namespaces: every call the target makes is lost, and
        // every reply it would send.
        spec.drop_probability = 1;
        spec.error_probability = 0;
        spec.methods.clear();
        any = true;
      }
      if (sandbox_ == nullptr && f->loss > 0 && spec.drop_probability < 1) {
        // A lost packet costs a TCP retransmission; a failed call costs a
        // retry: the nearest thing our gRPC layer can do.
        spec.error_probability =
            std::min(1 - spec.drop_probability,
                     std::max(spec.error_probability, f->loss));
        spec.error_code = grpc::StatusCode::UNAVAILABLE;
        any = true;
      }
      if (sandbox_ == nullptr && !f->rate.empty()) {
        notes.push_back(absl::StrCat("rate ", f->rate, " on ", t.ToString(),
                                     " skipped: bandwidth caps need network "
                                     "namespaces and tc"));
      }
    }
    if (d.fault_file.empty()) {
      if (any) {
        return absl::FailedPreconditionError(
            absl::StrCat(t.ToString(), " was started without a fault file"));
      }
      return absl::OkStatus();
    }
    return common::WriteFileAtomically(
        d.fault_file, any ? rpc::FormatFaultSpec(spec) + "\n" : "");
  }

  absl::Status ApplyCpu(const ProcessRef& t, std::vector<std::string>& notes) {
    double share = 1;
    for (const FaultEvent* f : Active(t, FaultEvent::Action::kCpu)) {
      share = f->cpu;  // the newest limit
    }
    if (throttle_ == nullptr) {
      if (share < 1) {
        notes.push_back(
            absl::StrCat("cpu limit on ", t.ToString(),
                         " skipped: no cgroup v1 cpu controller (needs root)"));
      }
      return absl::OkStatus();
    }
    const Daemon& d = cluster_.daemon(t);
    if (!d.running()) return absl::OkStatus();
    return throttle_->Limit(d.host, d.process->pid(), share);
  }

  // A restarted process starts outside the cgroup: put it back in.
  absl::Status ReapplyCpu(const ProcessRef& t) {
    if (Active(t, FaultEvent::Action::kCpu).empty()) return absl::OkStatus();
    std::vector<std::string> ignored;
    return ApplyCpu(t, ignored);
  }

  const Scenario& scenario_;
  Cluster& cluster_;
  NetworkSandbox* sandbox_;
  CpuThrottle* throttle_;
  // The processes each started fault hit, by fault index.
  std::map<int, std::vector<ProcessRef>> resolved_;
  std::map<std::string, std::vector<int>> active_;  // process → faults
};

bool NeedsFaultFiles(const Scenario& s, bool namespaces) {
  for (const FaultEvent& f : s.faults) {
    if (f.action == FaultEvent::Action::kRpc) return true;
    if (f.action == FaultEvent::Action::kNet &&
        (f.latency > absl::ZeroDuration() || !namespaces)) {
      return true;
    }
  }
  return false;
}

void Say(bool verbose, const std::string& line) {
  if (!verbose) return;
  std::printf("ps_chaos: %s\n", line.c_str());
  std::fflush(stdout);
}

// One run of a scenario, in named steps that RunExperiment calls in order.
// Owns what the run creates (network namespaces, CPU throttling) until
// Teardown.
class ExperimentRun {
 public:
  ExperimentRun(const Scenario& scenario, const ExperimentOptions& options)
      : scenario_(scenario),
        options_(options),
        metrics_path_(options.out_dir + "/metrics.jsonl"),
        state_(scenario.faults.size(), State::kPending),
        undo_at_(scenario.faults.size(), -1) {}

  // One report per fault of the scenario, filled in as the run goes.
  void ListFaults() {
    for (size_t i = 0; i < scenario_.faults.size(); ++i) {
      FaultReport r;
      r.index = static_cast<int>(i);
      r.line = scenario_.faults[i].line;
      r.what = scenario_.faults[i].Describe();
      r.trigger = scenario_.faults[i].at.ToString();
      result_.faults.push_back(std::move(r));
    }
  }

  // Network namespaces, CPU throttling and fault files, as far as the
  // scenario needs them. False (with the failure recorded) when the
  // namespaces cannot be made.
  bool PrepareResources() {
    const ClusterSpec& c = scenario_.cluster;
    if (options_.namespaces) {
      std::vector<std::string> hosts;
      for (uint32_t i = 0; i < c.servers; ++i) {
        for (uint32_t r = 0; r < c.per_shard(); ++r) {
          hosts.push_back(ServerHost(i, r));
        }
      }
      for (uint32_t i = 0; i < c.workers; ++i)
        hosts.push_back(absl::StrCat("w", i));
      absl::StatusOr<std::unique_ptr<NetworkSandbox>> made =
          NetworkSandbox::Create(hosts, options_.caps.nft);
      if (!made.ok()) {
        result_.failure = std::string(made.status().message());
        return false;
      }
      sandbox_ = std::move(*made);
      result_.subnet = absl::StrCat(sandbox_->subnet(), ".0/24");
    }
    if (options_.apply_faults && scenario_.NeedsCgroups() &&
        options_.caps.cgroup_cpu) {
      throttle_ = std::make_unique<CpuThrottle>(options_.caps.cgroup_cpu_root);
    }
    fault_files_ = options_.apply_faults &&
                   NeedsFaultFiles(scenario_, options_.namespaces);
    if (fault_files_) {
      mkdir(absl::StrCat(options_.out_dir, "/faults").c_str(), 0755);
    }
    std::remove(metrics_path_.c_str());
    return true;
  }

  // Starts the cluster, watches it until training ends or fails (applying
  // and undoing faults on time), then turns every fault off, stops the
  // cluster and judges the run.
  void Train() {
    Cluster cluster(scenario_, options_.out_dir, options_.bin_dir,
                    sandbox_.get(), fault_files_, options_.security);
    cluster_ = &cluster;
    StartCluster();
    FaultApplier applier(scenario_, cluster, sandbox_.get(), throttle_.get());
    applier_ = &applier;
    StatusPoller poller(cluster.replica_addresses(),
                        std::clamp(scenario_.poll_every * 1.5,
                                   absl::Milliseconds(100), absl::Seconds(1)));
    const absl::Time give_up = t0_ + scenario_.timeout;
    while (result_.failure.empty()) {
      const absl::Time next_poll = absl::Now() + scenario_.poll_every;
      if (options_.interrupted()) {
        result_.failure = "interrupted";
        break;
      }
      if (absl::Now() > give_up) {
        result_.failure =
            absl::StrCat("timeout: training did not finish within ",
                         absl::FormatDuration(scenario_.timeout));
        break;
      }
      Sample sample;
      sample.servers = poller.Poll();
      sample.t = Now();
      result_.timeline.samples.push_back(std::move(sample));
      ReadNewEvaluations();
      if (options_.apply_faults) ApplyDueFaults();
      ReapEnded();
      if (!cluster.AnyWorkerRunning() && !RestartPending()) break;
      if (const absl::Duration rest = next_poll - absl::Now();
          rest > absl::ZeroDuration()) {
        absl::SleepFor(rest);
      }
    }
    EndFaults();
    result_.duration_s = Now();
    cluster.StopAll(absl::Seconds(10));
    for (const std::string& ended : cluster.Reap()) {
      result_.process_events.push_back(
          absl::StrFormat("%.2f s: %s", Now(), ended));
    }
    JudgeCompletion();
    applier_ = nullptr;
    cluster_ = nullptr;
  }

  // Removes what the run created, also after a failure, then looks for
  // anything of ours left behind.
  void Teardown() {
    if (throttle_) {
      for (std::string& line : throttle_->Teardown()) {
        result_.left_behind.push_back(std::move(line));
      }
    }
    if (sandbox_) {
      for (std::string& line : sandbox_->Teardown()) {
        result_.left_behind.push_back(std::move(line));
      }
    }
    for (std::string& line :
         LeftAfterWaiting([] { return ResourcesOf(getpid()); })) {
      if (std::find(result_.left_behind.begin(), result_.left_behind.end(),
                    line) == result_.left_behind.end()) {
        result_.left_behind.push_back(std::move(line));
      }
    }
  }

  ExperimentResult TakeResult() { return std::move(result_); }

 private:
  enum class State { kPending, kActive, kDone };

  double Now() const { return absl::ToDoubleSeconds(absl::Now() - t0_); }

  void StartCluster() {
    if (fault_files_) {
      for (const Daemon& d : cluster_->daemons()) {
        (void)common::WriteFileAtomically(d.fault_file, "");
      }
    }
    if (absl::Status started = cluster_->Start(options_.interrupted);
        !started.ok()) {
      result_.failure =
          absl::StrCat("cannot start the cluster: ", started.message());
    }
    t0_ = absl::Now();
    const ClusterSpec& c = scenario_.cluster;
    Say(options_.verbose,
        absl::StrCat(
            c.servers, " servers (",
            absl::StrJoin(cluster_->server_addresses(), ","), ")",
            c.replicas > 1 ? absl::StrCat(" x ", c.replicas, " replicas") : "",
            c.replica_witness ? " and a witness each" : "", " and ", c.workers,
            " workers started",
            options_.namespaces ? " in network namespaces" : "",
            options_.apply_faults ? "" : " (baseline: no faults)"));
  }

  // Rank 0's evaluations written since the last look, and the epoch now.
  void ReadNewEvaluations() {
    const std::string metrics =
        common::ReadWholeFile(metrics_path_).value_or("");
    std::vector<absl::string_view> lines = absl::StrSplit(metrics, '\n');
    // The last piece is partial (or empty): only whole lines count.
    for (; metrics_lines_ + 1 < lines.size(); ++metrics_lines_) {
      const common::Json line = common::ParseJsonObject(lines[metrics_lines_]);
      Evaluation e;
      e.t = Now();
      e.epoch = common::NumberField(line, "epoch").value_or(0);
      e.accuracy = common::NumberField(line, "test_accuracy").value_or(0);
      e.samples = static_cast<uint64_t>(
          common::NumberField(line, "samples").value_or(0));
      if (e.epoch > 0 && e.samples > 0) {
        result_.timeline.train_size = e.samples / e.epoch;
      }
      result_.timeline.evaluations.push_back(e);
      if (options_.verbose) {
        Say(true, absl::StrFormat("%7.2f s  epoch %.2f  accuracy %.2f%%", e.t,
                                  e.epoch, 100 * e.accuracy));
      }
    }
    epoch_now_ = result_.timeline.EpochAt(result_.timeline.samples.size() - 1);
    if (!result_.timeline.evaluations.empty()) {
      epoch_now_ =
          std::max(epoch_now_, result_.timeline.evaluations.back().epoch);
    }
  }

  // Undoes the faults whose time is up, then starts those whose trigger
  // (seconds or epochs) was reached.
  void ApplyDueFaults() {
    for (size_t i = 0; i < scenario_.faults.size(); ++i) {
      if (state_[i] == State::kActive && Now() >= undo_at_[i]) {
        Apply(static_cast<int>(i), false);
      }
    }
    for (size_t i = 0; i < scenario_.faults.size(); ++i) {
      const Trigger& at = scenario_.faults[i].at;
      const double progress =
          at.unit == Trigger::Unit::kSeconds ? Now() : epoch_now_;
      if (state_[i] == State::kPending && progress >= at.value) {
        Apply(static_cast<int>(i), true);
      }
    }
  }

  void Apply(int i, bool start) {
    std::vector<std::string> notes;
    const absl::Status s =
        start ? applier_->Start(i, notes) : applier_->End(i, notes);
    FaultReport& r = result_.faults[i];
    const FaultEvent& f = scenario_.faults[i];
    if (start) {
      r.applied = true;
      r.start_s = Now();
      r.start_epoch = epoch_now_;
      state_[i] = f.duration ? State::kActive : State::kDone;
      if (f.duration) undo_at_[i] = Now() + absl::ToDoubleSeconds(*f.duration);
    } else {
      r.end_s = Now();
      state_[i] = State::kDone;
    }
    for (const std::string& note : notes) {
      if (std::find(r.notes.begin(), r.notes.end(), note) == r.notes.end()) {
        r.notes.push_back(note);
      }
    }
    if (!s.ok()) r.notes.push_back(std::string(s.message()));
    Record(i, start,
           absl::StrCat(start ? "" : "end: ", r.what,
                        s.ok() ? "" : absl::StrCat(" (", s.message(), ")")));
  }

  void Record(int i, bool start, const std::string& text) {
    result_.timeline.events.push_back({Now(), i, start, text});
    Say(options_.verbose,
        absl::StrFormat("%7.2f s  epoch %.2f  %s", Now(), epoch_now_, text));
  }

  // Notes the processes that ended by themselves since the last look.
  void ReapEnded() {
    for (const std::string& ended : cluster_->Reap()) {
      if (!result_.first_worker_done_s && absl::StartsWith(ended, "worker") &&
          absl::EndsWith(ended, "exited with status 0")) {
        result_.first_worker_done_s = Now();
      }
      result_.process_events.push_back(
          absl::StrFormat("%.2f s: %s", Now(), ended));
      Say(options_.verbose, absl::StrFormat("%7.2f s  %s", Now(), ended));
    }
  }

  // A killed or stopped process is still to be restarted or continued.
  bool RestartPending() const {
    for (size_t i = 0; i < scenario_.faults.size(); ++i) {
      if (state_[i] == State::kActive &&
          (scenario_.faults[i].action == FaultEvent::Action::kKill ||
           scenario_.faults[i].action == FaultEvent::Action::kStop)) {
        return true;
      }
    }
    return false;
  }

  // Whatever is still on is turned off before the processes stop, so
  // every process ends the way a healthy one does.
  void EndFaults() {
    for (size_t i = 0; i < scenario_.faults.size(); ++i) {
      if (state_[i] == State::kActive) Apply(static_cast<int>(i), false);
      if (state_[i] == State::kPending && options_.apply_faults) {
        result_.faults[i].notes.push_back(
            "not applied: the run ended before its trigger");
      }
    }
  }

  // Completed: every worker that was not killed for good exited 0, and
  // rank 0 evaluated. Also collects the workers' version regressions.
  void JudgeCompletion() {
    bool workers_ok = result_.failure.empty();
    for (const Daemon& d : cluster_->daemons()) {
      if (d.ref.kind != ProcessRef::Kind::kWorker) continue;
      if (d.killed && !d.running()) continue;
      if (!d.exit_status || !common::ExitedCleanly(*d.exit_status)) {
        workers_ok = false;
        if (result_.failure.empty()) {
          result_.failure = absl::StrCat(
              d.ref.ToString(), " did not finish: ",
              d.exit_status ? common::DescribeWaitStatus(*d.exit_status)
                            : "still running",
              "; see ", d.log);
        }
      }
    }
    result_.completed = workers_ok && !result_.timeline.evaluations.empty();
    if (workers_ok && result_.timeline.evaluations.empty()) {
      result_.failure = "training finished but rank 0 wrote no evaluation";
    }
    for (const Daemon& d : cluster_->daemons()) {
      if (d.ref.kind != ProcessRef::Kind::kWorker) continue;
      for (VersionRegression r :
           ParseRegressions(common::ReadWholeFile(d.log).value_or(""),
                            cluster_->server_addresses())) {
        result_.regressions.push_back(r);
      }
    }
  }

  const Scenario& scenario_;
  const ExperimentOptions& options_;
  const std::string metrics_path_;
  ExperimentResult result_;
  std::unique_ptr<NetworkSandbox> sandbox_;
  std::unique_ptr<CpuThrottle> throttle_;
  bool fault_files_ = false;
  // While Train runs.
  Cluster* cluster_ = nullptr;
  FaultApplier* applier_ = nullptr;
  absl::Time t0_ = absl::Now();  // when the cluster was started
  std::vector<State> state_;     // per fault
  std::vector<double> undo_at_;  // per fault: seconds, for timed ones
  size_t metrics_lines_ = 0;     // of metrics.jsonl, read so far
  double epoch_now_ = 0;
};

}  // namespace

ExperimentResult RunExperiment(const Scenario& scenario,
                               const ExperimentOptions& options) {
  ExperimentRun run(scenario, options);
  run.ListFaults();
  if (!run.PrepareResources()) return run.TakeResult();
  run.Train();
  run.Teardown();
  return run.TakeResult();
}

}  // namespace ps::chaos
