// psctl: the operator's view of a running job.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/cli.h"
#include "common/data_partition.h"
#include "common/float_bytes.h"
#include "common/parallel.h"
#include "common/rpc/channel.h"
#include "common/rpc/client_security_flags.h"
#include "common/rpc/convert.h"
#include "common/rpc/health.h"
#include "common/rpc/retry.h"
#include "common/theta_file.h"
#include "ps/v1/parameter_server.grpc.pb.h"
#include "ps/v1/replication.grpc.pb.h"

ABSL_FLAG(std::string, servers, "",
          "Comma-separated host:port of every server, in shard order.");
ABSL_FLAG(absl::Duration, timeout, absl::Seconds(5),
          "Give up on a server that has not answered after this long; "
          "servers are asked in parallel, so a command takes at most about "
          "this long however many are down.");
ABSL_FLAG(std::string, out, "", "export: the file to write θ to.");

namespace {

constexpr char kUsage[] =
    "psctl COMMAND --servers=host:port,...\n"
    "  status   per shard: key range, version, mode, live workers, counters;\n"
    "           a replicated shard's replicas: role, term, failovers, lag\n"
    "  health   exit 0 when every server's gRPC health check says SERVING\n"
    "  checkpoint  every server writes its checkpoint now\n"
    "  export --out=FILE  the whole θ as one self-describing file, which\n"
    "           ps_worker --init_from=FILE reads\n";

struct Server {
  std::string address;
  std::unique_ptr<ps::v1::ParameterServer::Stub> stub;
};

std::vector<Server> ConnectAll() {
  const std::string list = absl::GetFlag(FLAGS_servers);
  if (list.empty()) {
    ps::common::Die("--servers is required: host:port of every server");
  }
  std::vector<Server> servers;
  for (absl::string_view address : absl::StrSplit(list, ',')) {
    Server server;
    server.address = std::string(address);
    server.stub = ps::v1::ParameterServer::NewStub(
        ps::rpc::CreateChannel(server.address));
    servers.push_back(std::move(server));
  }
  return servers;
}

// One RPC to one server, retried until --timeout; `method` is the stub's
// method, e.g. &ps::v1::ParameterServer::Stub::Status.
template <typename Request, typename Response>
grpc::Status Call(Server& server,
                  grpc::Status (ps::v1::ParameterServer::Stub::*method)(
                      grpc::ClientContext*, const Request&, Response*),
                  Response* response, const Request& request = Request()) {
  ps::rpc::RetryPolicy policy;
  policy.rpc_deadline = absl::GetFlag(FLAGS_timeout);
  policy.max_retry_time = absl::GetFlag(FLAGS_timeout);
  return ps::rpc::CallWithRetry(
      policy, server.address, [&](grpc::ClientContext& context) {
        return (server.stub.get()->*method)(&context, request, response);
      });
}

// Says on stderr which server failed and why.
void ReportFailure(const Server& server, const grpc::Status& status) {
  std::fprintf(stderr, "psctl: %s: %s\n", server.address.c_str(),
               status.error_message().c_str());
}

const char* RoleName(ps::v1::ReplicaState::Role role) {
  switch (role) {
    case ps::v1::ReplicaState::PRIMARY:
      return "primary";
    case ps::v1::ReplicaState::BACKUP:
      return "backup";
    case ps::v1::ReplicaState::JOINING:
      return "joining (copying the primary's state)";
    default:
      return "unknown role";
  }
}

// "primary, term 1, 0 failovers", and for a backup how far behind
// `primary_version` (the shard's primary's version, when known) it is.
std::string ReplicaLine(const ps::v1::StatusResponse& s,
                        std::optional<uint64_t> primary_version) {
  const ps::v1::ReplicaState& r = s.replica();
  std::string line = absl::StrCat(r.witness() ? "witness (holds no θ), " : "",
                                  RoleName(r.role()), ", term ", r.term(), ", ",
                                  r.failovers(), " failovers");
  if (r.witness()) return line;  // it has no versions to lag by
  if (r.role() == ps::v1::ReplicaState::PRIMARY) {
    absl::StrAppend(&line, "; ", r.replication_bytes_sent(),
                    " bytes sent to backups, ", r.backups_dropped(),
                    " backups dropped");
  } else if (primary_version.has_value()) {
    const uint64_t lag =
        *primary_version > s.version() ? *primary_version - s.version() : 0;
    absl::StrAppend(&line, ", ", lag, " versions behind the primary");
  }
  return line;
}

// The backups a primary lists (ReplicaStatus): their addresses.
std::vector<std::string> BackupsOf(const std::string& primary) {
  std::unique_ptr<ps::v1::Replication::Stub> stub =
      ps::v1::Replication::NewStub(ps::rpc::CreateChannel(primary));
  grpc::ClientContext context;
  context.set_deadline(
      absl::ToChronoTime(absl::Now() + absl::GetFlag(FLAGS_timeout)));
  ps::v1::ReplicaStatusResponse status;
  std::vector<std::string> backups;
  if (!stub->ReplicaStatus(&context, ps::v1::ReplicaStatusRequest(), &status)
           .ok()) {
    return backups;
  }
  for (const ps::v1::BackupStatus& b : status.backups()) {
    backups.push_back(b.address());
  }
  return backups;
}

// A replicated shard's lines: this server's role, and for a primary each
// backup it lists, asked for its Status, with its lag in versions.
void PrintReplicas(const Server& server, const ps::v1::StatusResponse& s,
                   std::optional<uint64_t> primary_version) {
  const ps::v1::ReplicaState& r = s.replica();
  std::printf("  replica %u of %u: %s\n", r.replica_index(), r.replicas(),
              ReplicaLine(s, primary_version).c_str());
  if (r.role() != ps::v1::ReplicaState::PRIMARY) return;
  for (const std::string& address : BackupsOf(server.address)) {
    Server backup{address, ps::v1::ParameterServer::NewStub(
                               ps::rpc::CreateChannel(address))};
    ps::v1::StatusResponse b;
    const grpc::Status rpc =
        Call(backup, &ps::v1::ParameterServer::Stub::Status, &b);
    if (!rpc.ok()) {
      std::printf("  backup %s: not answering: %s\n", address.c_str(),
                  rpc.error_message().c_str());
      continue;
    }
    std::printf("  replica %u of %u (%s): %s\n", b.replica().replica_index(),
                b.replica().replicas(), address.c_str(),
                ReplicaLine(b, s.version()).c_str());
  }
}

// Prints one block per shard, in --servers order; fails when any server
// does not answer. Every server is asked at once: a dead one costs one
// --timeout in all, not one each.
int Status() {
  std::vector<Server> servers = ConnectAll();
  std::vector<ps::v1::StatusResponse> answers(servers.size());
  std::vector<grpc::Status> outcomes(servers.size());
  ps::common::ParallelFor(servers.size(), [&](size_t i) {
    outcomes[i] =
        Call(servers[i], &ps::v1::ParameterServer::Stub::Status, &answers[i]);
  });
  int exit_code = 0;
  for (size_t i = 0; i < servers.size(); ++i) {
    const Server& server = servers[i];
    const ps::v1::StatusResponse& s = answers[i];
    if (!outcomes[i].ok()) {
      ReportFailure(server, outcomes[i]);
      exit_code = 1;
      continue;
    }
    std::printf(
        "%s (advertised %s): shard %u/%u keys [%llu, %llu) %s version %llu, "
        "%u live workers of %u expected\n",
        server.address.c_str(), s.advertise().c_str(), s.shard_index(),
        s.num_shards(), static_cast<unsigned long long>(s.key_begin()),
        static_cast<unsigned long long>(s.key_end()),
        ps::rpc::ModeName(s.mode()).c_str(),
        static_cast<unsigned long long>(s.version()), s.live_workers(),
        s.expected_workers());
    std::printf(
        "  pushes: %llu applied, %llu stale, %llu duplicate, %llu rejected; "
        "rounds closed: %llu all-live, %llu quorum, %llu timeout; %llu leases "
        "expired\n",
        static_cast<unsigned long long>(s.pushes_applied()),
        static_cast<unsigned long long>(s.pushes_stale()),
        static_cast<unsigned long long>(s.pushes_duplicate()),
        static_cast<unsigned long long>(s.pushes_rejected()),
        static_cast<unsigned long long>(s.rounds_closed_all_live()),
        static_cast<unsigned long long>(s.rounds_closed_by_quorum()),
        static_cast<unsigned long long>(s.rounds_closed_by_timeout()),
        static_cast<unsigned long long>(s.leases_expired()));
    if (s.has_replica()) {
      // A backup's lag needs its primary's version: that of the primary of
      // its shard among the servers asked, if any.
      std::optional<uint64_t> primary_version;
      for (size_t j = 0; j < servers.size(); ++j) {
        if (outcomes[j].ok() && answers[j].shard_index() == s.shard_index() &&
            answers[j].replica().role() == ps::v1::ReplicaState::PRIMARY) {
          primary_version = answers[j].version();
        }
      }
      PrintReplicas(server, s, primary_version);
    }
    if (s.has_partitions()) {
      // Shard 0's partition table: what each epoch has done.
      // A held-out fold (--kfold) is never trained: counts are of the rest.
      const ps::v1::PartitionStatus& p = s.partitions();
      const ps::common::PartitionPlan plan = ps::rpc::FromProto(p.plan());
      const uint32_t trainable = ps::common::TrainablePartitions(plan);
      const uint64_t all = uint64_t{trainable} * plan.epochs;
      std::string per_epoch;
      for (int e = 0; e < p.done_per_epoch_size(); ++e) {
        absl::StrAppend(&per_epoch, e == 0 ? "" : ", ", "epoch ", e, " ",
                        p.done_per_epoch(e), "/", trainable);
      }
      const std::string folds = plan.kfold == 0
                                    ? std::string()
                                    : absl::StrCat(" (fold ", plan.fold, " of ",
                                                   plan.kfold, " held out)");
      std::printf(
          "  data partitions%s: %llu of %llu done (%.4f epochs): %s\n",
          folds.c_str(), static_cast<unsigned long long>(p.done()),
          static_cast<unsigned long long>(all),
          trainable > 0 ? static_cast<double>(p.done()) / trainable : 0.0,
          per_epoch.c_str());
    }
    for (const ps::v1::TableStatus& t : s.tables()) {
      std::printf(
          "  table %s (dim %u): %llu rows of %llu, %llu of %llu bytes; "
          "%llu created, %llu evicted, %llu refused\n",
          t.spec().name().c_str(), t.spec().dim(),
          static_cast<unsigned long long>(t.rows()),
          static_cast<unsigned long long>(t.capacity_rows()),
          static_cast<unsigned long long>(t.memory_bytes()),
          static_cast<unsigned long long>(t.memory_limit_bytes()),
          static_cast<unsigned long long>(t.rows_created()),
          static_cast<unsigned long long>(t.rows_evicted()),
          static_cast<unsigned long long>(t.rows_refused()));
    }
    for (const ps::v1::WorkerStatus& w : s.workers()) {
      std::printf(
          "  worker %u: %s%s, incarnation %llu, clock %llu, staleness %llu, "
          "last heartbeat %.1f s ago, %llu pushes\n",
          w.worker_id(), ps::rpc::WorkerStateName(w.state()).c_str(),
          w.finished() ? " (finished)"
          : w.idle()   ? " (idle: waiting for a data partition)"
                       : "",
          static_cast<unsigned long long>(w.incarnation()),
          static_cast<unsigned long long>(w.clock()),
          static_cast<unsigned long long>(w.staleness()),
          w.seconds_since_heartbeat(),
          static_cast<unsigned long long>(w.pushes()));
    }
  }
  return exit_code;
}

int Health() {
  const std::vector<Server> servers = ConnectAll();
  std::vector<absl::Status> outcomes(servers.size());
  ps::common::ParallelFor(servers.size(), [&](size_t i) {
    outcomes[i] =
        ps::rpc::CheckServing(servers[i].address, absl::GetFlag(FLAGS_timeout));
  });
  int exit_code = 0;
  for (size_t i = 0; i < servers.size(); ++i) {
    const Server& server = servers[i];
    const absl::Status& serving = outcomes[i];
    if (serving.ok()) {
      std::printf("%s: SERVING\n", server.address.c_str());
    } else {
      std::fprintf(stderr, "psctl: %s\n",
                   std::string(serving.message()).c_str());
      exit_code = 1;
    }
  }
  return exit_code;
}

int Checkpoint() {
  std::vector<Server> servers = ConnectAll();
  std::vector<ps::v1::CheckpointResponse> answers(servers.size());
  std::vector<grpc::Status> outcomes(servers.size());
  ps::common::ParallelFor(servers.size(), [&](size_t i) {
    outcomes[i] = Call(servers[i], &ps::v1::ParameterServer::Stub::Checkpoint,
                       &answers[i]);
  });
  int exit_code = 0;
  for (size_t i = 0; i < servers.size(); ++i) {
    const Server& server = servers[i];
    const ps::v1::CheckpointResponse& saved = answers[i];
    if (!outcomes[i].ok()) {
      ReportFailure(server, outcomes[i]);
      exit_code = 1;
      continue;
    }
    std::printf("%s: wrote %s (version %llu, %llu bytes, %.3f s)\n",
                server.address.c_str(), saved.path().c_str(),
                static_cast<unsigned long long>(saved.version()),
                static_cast<unsigned long long>(saved.bytes()),
                saved.seconds());
  }
  return exit_code;
}

// Export's failures that are the servers' or the file's, not the command
// line's: exit 1 like every other command (2 is for usage errors).
[[noreturn]] void ExportFailed(absl::string_view message) {
  std::fprintf(stderr, "psctl: %.*s\n", static_cast<int>(message.size()),
               message.data());
  std::exit(1);
}

// Table `spec`'s stored rows on all `servers`, in id order, read a page at a
// time; `model` takes them and the seed of the rows not stored.
void ExportTable(std::vector<Server>& servers,
                 const ps::common::TableSpec& spec,
                 ps::common::ThetaFile& model) {
  std::vector<std::pair<uint64_t, std::vector<float>>> rows;
  for (Server& server : servers) {
    ps::v1::ExportRowsRequest request;
    request.set_table(spec.name);
    request.set_from_start(true);
    for (bool done = false; !done;) {
      ps::v1::ExportRowsResponse page;
      grpc::Status rpc = Call(
          server, &ps::v1::ParameterServer::Stub::ExportRows, &page, request);
      if (!rpc.ok()) {
        ExportFailed(absl::StrCat(server.address, ": table '", spec.name,
                                  "': ", rpc.error_message()));
      }
      const std::string& keys = page.rows().keys();
      const size_t n = keys.size() / sizeof(uint64_t);
      std::vector<float> values(n * spec.dim);
      if (keys.size() % sizeof(uint64_t) != 0 ||
          !ps::common::BytesToFloats(page.rows().values(),
                                     absl::MakeSpan(values), "rows")
               .ok()) {
        ExportFailed(absl::StrCat(server.address, ": table '", spec.name,
                                  "': a malformed page of rows"));
      }
      for (size_t i = 0; i < n; ++i) {
        uint64_t id;
        std::memcpy(&id, keys.data() + i * sizeof(id), sizeof(id));
        rows.emplace_back(
            id, std::vector<float>(values.begin() + i * spec.dim,
                                   values.begin() + (i + 1) * spec.dim));
        request.set_from_start(false);
        request.set_after_id(id);
      }
      model.model_seed = page.model_seed();
      model.version = std::min(model.version, page.version());
      done = page.done() || n == 0;
    }
  }
  std::sort(rows.begin(), rows.end());
  ps::common::SavedTable& table = model.tables.emplace_back();
  table.spec = spec;
  for (const auto& [id, values] : rows) {
    if (!table.ids.empty() && table.ids.back() == id) {
      ExportFailed(absl::StrCat("two servers hold row ", id, " of table '",
                                spec.name, "': list --servers of one job"));
    }
    table.ids.push_back(id);
    table.rows.insert(table.rows.end(), values.begin(), values.end());
  }
}

// Reads every shard's slice (as it is now) into one file.
int Export() {
  const std::string out = absl::GetFlag(FLAGS_out);
  if (out.empty()) ps::common::Die("export needs --out=FILE");
  ps::common::ThetaFile model;
  std::vector<ps::common::TableSpec> tables;
  bool first = true;
  std::vector<Server> servers = ConnectAll();
  for (Server& server : servers) {
    ps::v1::StatusResponse status;
    ps::v1::PullResponse pulled;
    grpc::Status rpc =
        Call(server, &ps::v1::ParameterServer::Stub::Status, &status);
    if (rpc.ok() && !status.initialized()) {
      rpc = grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                         "holds no model yet");
    }
    if (rpc.ok()) {
      rpc = Call(server, &ps::v1::ParameterServer::Stub::Pull, &pulled);
    }
    if (!rpc.ok()) {
      ExportFailed(absl::StrCat(server.address, ": ", rpc.error_message()));
    }
    const std::vector<ps::common::TensorSpec> tensors =
        ps::rpc::FromProto(status.tensors());
    if (first) {
      for (const ps::v1::TableStatus& table : status.tables()) {
        tables.push_back(ps::rpc::FromProto(table.spec()));
      }
      model.tensors = tensors;
      model.version = pulled.version();
      model.samples_applied = pulled.samples_applied();
      first = false;
    } else if (std::string diff =
                   ps::common::DescribeDifference(model.tensors, tensors);
               !diff.empty()) {
      ExportFailed(absl::StrCat(server.address,
                                " holds another model than the first "
                                "server: ",
                                diff));
    }
    if (pulled.key_begin() != model.values.size()) {
      ExportFailed(
          absl::StrCat(server.address, " holds keys from ", pulled.key_begin(),
                       " but the servers before it end at ",
                       model.values.size(), ": list --servers in shard order"));
    }
    model.version = std::min(model.version, pulled.version());
    const size_t begin = model.values.size();
    model.values.resize(pulled.key_end());
    if (absl::Status copied = ps::common::BytesToFloats(
            pulled.values(), absl::MakeSpan(model.values).subspan(begin),
            absl::StrCat("the values of ", server.address));
        !copied.ok()) {
      ExportFailed(copied.message());
    }
  }
  if (model.values.size() != ps::common::NumKeys(model.tensors)) {
    ExportFailed(absl::StrCat("the servers hold ", model.values.size(),
                              " of the model's ",
                              ps::common::NumKeys(model.tensors),
                              " keys: is a shard missing from --servers?"));
  }
  model.keys = {0, model.values.size()};
  for (const ps::common::TableSpec& table : tables) {
    ExportTable(servers, table, model);
  }
  if (absl::Status written = ps::common::WriteThetaFile(out, model);
      !written.ok()) {
    ExportFailed(written.message());
  }
  size_t rows = 0;
  for (const ps::common::SavedTable& table : model.tables) {
    rows += table.ids.size();
  }
  std::printf(
      "wrote %s: %zu tensors, %zu values, %zu tables, %zu rows, version "
      "%llu\n",
      out.c_str(), model.tensors.size(), model.values.size(),
      model.tables.size(), rows,
      static_cast<unsigned long long>(model.version));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> arguments =
      ps::common::InitProgram(argc, argv, kUsage, /*max_arguments=*/1);
  ps::rpc::RouteGrpcLogsToSpdlog();
  // Failures are printed once, below, with the server they concern.
  ps::common::SetLogLevelOrDie("off");
  if (absl::GetFlag(FLAGS_timeout) <= absl::ZeroDuration()) {
    ps::common::Die("--timeout must be > 0");
  }
  ps::rpc::InstallClientSecurityFromFlags();
  const std::string command = arguments.empty() ? "" : arguments[0];
  if (command == "status") return Status();
  if (command == "health") return Health();
  if (command == "checkpoint") return Checkpoint();
  if (command == "export") return Export();
  ps::common::Die(absl::StrCat(
      command.empty() ? "a command is required"
                      : absl::StrCat("unknown command '", command, "'"),
      "\nusage: ", kUsage));
}
