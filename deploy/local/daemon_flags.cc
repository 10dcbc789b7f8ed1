#include "deploy/local/daemon_flags.h"

#include <tuple>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

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
      args_.push_back(absl::StrCat("--", name, "=",
                                   absl::ToInt64Milliseconds(*value), "ms"));
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

// "R1-R2" or "R" as a range of ranks; nullopt when `text` is neither.
std::optional<std::pair<uint32_t, uint32_t>> ParseRankRange(
    absl::string_view text) {
  const std::vector<absl::string_view> ends = absl::StrSplit(text, '-');
  uint32_t first = 0;
  uint32_t last = 0;
  if (ends.size() > 2 || !absl::SimpleAtoi(ends.front(), &first) ||
      !absl::SimpleAtoi(ends.back(), &last) ||
      !absl::ascii_isdigit(static_cast<unsigned char>(ends.front()[0]))) {
    return std::nullopt;
  }
  return std::make_pair(first, last);
}

std::string RangeText(const WorkerProgram& program) {
  return absl::StrCat(program.first_rank, "-", program.last_rank);
}

}  // namespace

absl::StatusOr<std::vector<std::string>> SplitCommandLine(
    absl::string_view command) {
  std::vector<std::string> words;
  std::string word;
  bool in_word = false;
  char quote = 0;  // ' or " while inside quotes
  for (size_t i = 0; i < command.size(); ++i) {
    const char c = command[i];
    if (quote == '\'') {
      if (c == '\'') {
        quote = 0;
      } else {
        word += c;
      }
    } else if (quote == '"') {
      if (c == '"') {
        quote = 0;
      } else if (c == '\\' && i + 1 < command.size() &&
                 absl::string_view("\"\\$`").find(command[i + 1]) !=
                     absl::string_view::npos) {
        word += command[++i];
      } else {
        word += c;
      }
    } else if (c == ' ' || c == '\t' || c == '\n') {
      if (in_word) words.push_back(std::move(word));
      word.clear();
      in_word = false;
    } else {
      in_word = true;
      if (c == '\'' || c == '"') {
        quote = c;
      } else if (c == '\\') {
        if (i + 1 == command.size()) {
          return absl::InvalidArgumentError("a lone backslash at the end");
        }
        word += command[++i];
      } else {
        word += c;
      }
    }
  }
  if (quote != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("an unterminated ", std::string(1, quote), " quote"));
  }
  if (in_word) words.push_back(std::move(word));
  return words;
}

absl::StatusOr<std::vector<WorkerProgram>> ParseWorkerPrograms(
    const std::vector<std::string>& values, uint32_t num_workers) {
  std::vector<WorkerProgram> programs;
  for (const std::string& value : values) {
    const std::string where = absl::StrCat("--worker_command=", value);
    WorkerProgram program;
    program.last_rank = num_workers - 1;
    absl::string_view command = value;
    if (const size_t colon = command.find(':');
        colon != absl::string_view::npos) {
      if (auto range = ParseRankRange(command.substr(0, colon))) {
        std::tie(program.first_rank, program.last_rank) = *range;
        command.remove_prefix(colon + 1);
        if (program.first_rank > program.last_rank ||
            program.last_rank >= num_workers) {
          return absl::InvalidArgumentError(absl::StrCat(
              where, ": ranks ", RangeText(program), " are not within 0-",
              num_workers - 1, " (--workers=", num_workers, ")"));
        }
      }
    }
    absl::StatusOr<std::vector<std::string>> words = SplitCommandLine(command);
    if (!words.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": ", words.status().message()));
    }
    if (words->empty()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": no command"));
    }
    program.command = *std::move(words);
    for (const WorkerProgram& other : programs) {
      if (program.first_rank <= other.last_rank &&
          other.first_rank <= program.last_rank) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": ranks ", RangeText(program),
                         " overlap ranks ", RangeText(other),
                         " of an earlier --worker_command; each rank "
                         "runs one program"));
      }
    }
    programs.push_back(std::move(program));
  }
  return programs;
}

std::string ServersClientCa(const JobSecurity& job) {
  return job.client.tls_cert.empty() ? "" : job.client.tls_ca;
}

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
  args.Add("metrics_listen", flags.metrics_listen);
  args.Add("log_level", flags.log_level);
  args.Add("replicas", flags.replicas);
  args.Add("replica_index", flags.replica_index);
  if (!flags.replica_peers.empty()) {
    args.Add("replica_peers", absl::StrJoin(flags.replica_peers, ","));
  }
  args.Add("replica_state_dir", flags.replica_state_dir);
  if (flags.replica_witness) args.Add("replica_witness", std::string("true"));
  const JobSecurity& security = flags.security;
  args.Add("tls_cert", security.server_tls_cert);
  args.Add("tls_key", security.server_tls_key);
  args.Add("tls_client_ca", ServersClientCa(security));
  args.Add("auth_token_file", security.client.auth_token_file);
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
  args.Add("data_partitions", flags.data_partitions);
  args.Add("kfold", flags.kfold);
  args.Add("fold", flags.fold);
  args.Add("model", flags.model);
  args.Add("epochs", flags.epochs);
  args.Add("batch_size", flags.batch_size);
  args.Add("seed", flags.seed);
  args.Add("eval_every", flags.eval_every);
  args.Add("compression", flags.compression);
  args.Add("data_dir", flags.data_dir);
  args.Add("data_format", flags.data_format);
  args.Add("train", flags.train);
  args.Add("test", flags.test);
  args.Add("rpc_deadline", flags.rpc_deadline);
  args.Add("max_retry_time", flags.max_retry_time);
  args.Add("max_message_bytes", flags.max_message_bytes);
  args.Add("metrics_out", flags.metrics_out);
  args.Add("metrics_listen", flags.metrics_listen);
  args.Add("log_level", flags.log_level);
  const rpc::ClientSecurity& client = flags.security.client;
  args.Add("tls_ca", client.tls_ca);
  args.Add("tls_cert", client.tls_cert);
  args.Add("tls_key", client.tls_key);
  args.Add("auth_token_file", client.auth_token_file);
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
