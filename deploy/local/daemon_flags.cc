#include "deploy/local/daemon_flags.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace ps::launch {
namespace {

// Appends --NAME=VALUE for the fields that are set.
class ArgList {
 public:
  template <typename T>
  void Add(const char* name, const std::optional<T>& value) {
    if (value) args_.push_back(absl::StrCat("--", name, "=", *value));
  }
  void Add(const char* name, const std::optional<absl::Duration>& value) {
    // Whole milliseconds: what absl's duration flags parse back exactly.
    if (value) {
      args_.push_back(
          absl::StrCat("--", name, "=", absl::ToInt64Milliseconds(*value), "ms"));
    }
  }
  void Add(const char* name, const std::string& value) {
    if (!value.empty()) args_.push_back(absl::StrCat("--", name, "=", value));
  }
  void AddVerbatim(const std::vector<std::string>& args) {
    args_.insert(args_.end(), args.begin(), args.end());
  }
  std::vector<std::string> Take() { return std::move(args_); }

 private:
  std::vector<std::string> args_;
};

std::vector<std::string> Command(const std::string& bin_dir,
                                 const char* program,
                                 std::vector<std::string> args) {
  args.insert(args.begin(), absl::StrCat(bin_dir, "/", program));
  return args;
}

}  // namespace

std::vector<std::string> ServerArgs(const ServerFlags& flags) {
  ArgList args;
  args.Add("listen", flags.listen);
  args.Add("port_file", flags.port_file);
  args.Add("shard_index", flags.shard_index);
  args.Add("num_shards", flags.num_shards);
  args.Add("num_workers", flags.num_workers);
  args.Add("mode", flags.mode);
  args.Add("lr", flags.lr);
  args.Add("l2", flags.l2);
  args.Add("l1", flags.l1);
  args.Add("lease_timeout", flags.lease_timeout);
  args.Add("sync_quorum", flags.sync_quorum);
  args.Add("checkpoint_dir", flags.checkpoint_dir);
  args.Add("checkpoint_every", flags.checkpoint_every);
  args.Add("log_level", flags.log_level);
  args.AddVerbatim(flags.extra);
  args.Add("inject_faults", flags.inject_faults);
  return args.Take();
}

std::vector<std::string> WorkerArgs(const WorkerFlags& flags) {
  ArgList args;
  if (!flags.servers.empty()) {
    args.Add("servers", absl::StrJoin(flags.servers, ","));
  }
  args.Add("rank", flags.rank);
  args.Add("num_workers", flags.num_workers);
  args.Add("model", flags.model);
  args.Add("epochs", flags.epochs);
  args.Add("batch_size", flags.batch_size);
  args.Add("seed", flags.seed);
  args.Add("eval_every", flags.eval_every);
  args.Add("data_dir", flags.data_dir);
  args.Add("rpc_deadline", flags.rpc_deadline);
  args.Add("max_retry_time", flags.max_retry_time);
  args.Add("metrics_out", flags.metrics_out);
  args.Add("log_level", flags.log_level);
  args.AddVerbatim(flags.extra);
  args.Add("inject_faults", flags.inject_faults);
  return args.Take();
}

std::vector<std::string> ServerCommand(const std::string& bin_dir,
                                       const ServerFlags& flags) {
  return Command(bin_dir, "ps_server", ServerArgs(flags));
}

std::vector<std::string> WorkerCommand(const std::string& bin_dir,
                                       const WorkerFlags& flags) {
  return Command(bin_dir, "ps_worker", WorkerArgs(flags));
}

}  // namespace ps::launch
