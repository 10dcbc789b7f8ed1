#ifndef PS_BENCH_TRANSFER_H_
#define PS_BENCH_TRANSFER_H_

#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "bench/measure.h"
#include "common/rpc/security.h"
#include "deploy/local/daemon_flags.h"

namespace ps::bench {

struct TransferOptions {
  // Where ps_server and ps_bench are. Default: beside this executable
  std::string bin_dir;
  // Port files and server logs; must exist.
  std::string out_dir;
  // Client threads, each with its own ParameterClient (and connections), as
  // separate worker processes would have. Default: 1
  uint32_t workers = 1;
  // ps_server processes; the model is split evenly over them. Default: 1
  uint32_t servers = 1;
  // Model sizes in floats.
  std::vector<uint64_t> sizes;
  // Time spent on each figure (one op kind at one size). Default: 1 s
  absl::Duration duration = absl::Seconds(1);
  // Each client repeats an op at least this often, however slow. Default: 3
  uint32_t min_ops = 3;
  // The op kinds take turns this many times, each for duration / rounds.
  // Default: 5
  uint32_t rounds = 5;
  // The ops measured beside the echo (always first): push, pull, push+pull,
  // pushpull. Default (empty): all.
  std::vector<std::string> ops;
  // The workers' ClientOptions::max_message_bytes: a shard of more bytes
  // is pushed and pulled in chunks of at most this size. Default: 4 MiB
  uint64_t max_message_bytes = 4 << 20;
  // The job's credentials, the echo server's too; this program's own
  // channels use those installed by the caller. Default: none, plaintext
  launch::JobSecurity security;
};

// Fails, naming the known ops, unless every op is push, pull, push+pull or
// pushpull.
absl::Status ValidateTransferOps(const std::vector<std::string>& ops);

// Figures for one model size.
struct TransferResult {
  uint32_t workers = 0;
  uint32_t servers = 0;
  uint64_t floats = 0;
  uint64_t max_message_bytes = 0;
  double memcpy_gb_per_s = 0;
  // echo, push, pull, push+pull (two calls), pushpull (one PushPull call):
  // bytes counted once per direction moved.
  std::vector<OpStats> ops;
  std::vector<int64_t> server_peak_rss_bytes;  // one per ps_server
};

// For every size: starts `servers` ps_server processes (async mode) and a
// raw echo server, then measures echo, push, pull and push+pull from
// `workers` client threads, and memcpy of the same bytes. Calls `report`
// after each size.
absl::Status RunTransfer(
    const TransferOptions& options,
    const std::function<void(const TransferResult&)>& report);

// The table's header and one size's rows, and one JSON line per op.
void PrintTransferHeader(const TransferOptions& options, std::FILE* out);
void PrintTransferResult(const TransferResult& result, std::FILE* out);
std::string TransferJsonLines(const TransferResult& result);

// The echo server ps_bench runs as a separate process: serves on a free
// loopback port with `security` (as a ps_server of the job would), writes
// the port to `port_file`, and runs until SIGTERM/SIGINT.
int RunEchoServer(const std::string& port_file,
                  const rpc::ServerSecurity& security);

}  // namespace ps::bench

#endif  // PS_BENCH_TRANSFER_H_
