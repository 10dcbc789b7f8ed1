// Failover of replicated shards on real processes (README, "Replicated
// shards"): 2 shards x 2 replicas (ps_server --replicas=2) and 2 ps_worker
// processes training Fashion-MNIST softmax, told every replica
// (--servers=a0|a1,b0|b1). Shard 1's primary is killed (kill -9) or
// stopped for 5 s (SIGSTOP, then SIGCONT) mid-training.
#include <signal.h>

#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <regex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/theta_file.h"
#include "gtest/gtest.h"
#include "ps/v1/replication.grpc.pb.h"
#include "tests/job.h"
#include "tests/replica_status.h"

namespace ps {
namespace {

using test_support::BinDir;
using test_support::CheckpointBytes;
using test_support::FreshDir;
using test_support::ReadFile;
using test_support::ReplicaStatus;

constexpr uint32_t kShards = 2;
constexpr uint32_t kWorkers = 2;
constexpr uint32_t kEpochs = 3;

struct Replica {
  common::Subprocess process;
  std::string address;
};

ps::v1::StatusResponse ShardStatus(const std::string& address) {
  return test_support::ShardStatus(address, absl::Seconds(10));
}

// A job of kShards shards, each on `replicas` ps_server processes.
class Job {
 public:
  Job(std::string dir, std::string mode, uint32_t replicas)
      : dir_(std::move(dir)), mode_(std::move(mode)) {
    for (uint32_t s = 0; s < kShards; ++s) {
      std::vector<Replica>& shard = shards_.emplace_back();
      std::vector<std::string> peers(replicas, "127.0.0.1:0");
      for (uint32_t r = 0; r < replicas; ++r) {
        shard.push_back(StartServer(s, r, peers));
        peers[r] = shard.back().address;
      }
    }
  }

  // The workers' --servers: each shard's replicas joined by '|'.
  std::vector<std::string> Servers() const {
    std::vector<std::string> servers;
    for (const std::vector<Replica>& shard : shards_) {
      std::string entry;
      for (const Replica& r : shard) {
        absl::StrAppend(&entry, entry.empty() ? "" : "|", r.address);
      }
      servers.push_back(entry);
    }
    return servers;
  }

  void StartWorkers() {
    for (uint32_t rank = 0; rank < kWorkers; ++rank) {
      launch::WorkerFlags flags;
      flags.servers = Servers();
      flags.rank = rank;
      flags.num_workers = kWorkers;
      flags.extra = {"--model=softmax", absl::StrCat("--epochs=", kEpochs)};
      auto worker = common::Subprocess::Spawn(
          launch::WorkerCommand(BinDir(), flags), WorkerLog(rank));
      ASSERT_TRUE(worker.ok()) << worker.status();
      workers_.push_back(std::move(*worker));
    }
  }

  void WaitForWorkers() {
    for (common::Subprocess& worker : workers_) {
      EXPECT_EQ(worker.WaitFor(absl::Seconds(300)), 0)
          << "a worker failed; see " << dir_;
    }
  }

  std::string WorkerLog(uint32_t rank) const {
    return absl::StrCat(dir_, "/worker-", rank, ".log");
  }

  Replica& replica(uint32_t shard, uint32_t index) {
    return shards_[shard][index];
  }

  // The replica that is primary of `shard` now (every other one answering
  // agrees), or nullptr.
  Replica* Primary(uint32_t shard) {
    if (shards_[shard].size() == 1) return &shards_[shard][0];
    // The newest term's: a primary just continued after SIGSTOP still
    // says PRIMARY (of its old term) until it hears of the new one.
    Replica* primary = nullptr;
    uint64_t newest = 0;
    for (Replica& r : shards_[shard]) {
      std::optional<ps::v1::ReplicaStatusResponse> status =
          ReplicaStatus(r.address);
      if (status.has_value() && status->role() == ps::v1::PRIMARY &&
          status->term() > newest) {
        primary = &r;
        newest = status->term();
      }
    }
    return primary;
  }

  // θ of every shard, from its primary's checkpoint.
  std::vector<std::vector<float>> Theta() {
    std::vector<std::vector<float>> theta;
    for (uint32_t s = 0; s < kShards; ++s) {
      Replica* primary = Primary(s);
      EXPECT_NE(primary, nullptr);
      if (primary == nullptr) return {};
      absl::StatusOr<common::ThetaFile> file =
          common::DecodeThetaFile(CheckpointBytes(primary->address), "θ");
      EXPECT_TRUE(file.ok()) << file.status();
      if (!file.ok()) return {};
      theta.push_back(file->values);
    }
    return theta;
  }

  const std::string& dir() const { return dir_; }

 private:
  Replica StartServer(uint32_t shard, uint32_t index,
                      const std::vector<std::string>& peers) {
    const std::string name = absl::StrCat("shard-", shard, "-replica-", index);
    std::vector<std::string> argv = {
        BinDir() + "/ps_server",
        "--listen=127.0.0.1:0",
        absl::StrCat("--port_file=", dir_, "/", name, ".port"),
        absl::StrCat("--checkpoint_dir=", dir_, "/", name),
        absl::StrCat("--shard_index=", shard),
        absl::StrCat("--num_shards=", kShards),
        absl::StrCat("--num_workers=", kWorkers),
        absl::StrCat("--mode=", mode_)};
    if (peers.size() > 1) {
      argv.push_back(absl::StrCat("--replicas=", peers.size()));
      argv.push_back(absl::StrCat("--replica_index=", index));
      argv.push_back(
          absl::StrCat("--replica_peers=", absl::StrJoin(peers, ",")));
    }
    std::filesystem::create_directories(absl::StrCat(dir_, "/", name));
    auto server =
        common::Subprocess::Spawn(argv, absl::StrCat(dir_, "/", name, ".log"));
    EXPECT_TRUE(server.ok()) << server.status();
    EXPECT_TRUE(test_support::WaitForPortFile(
        *server, absl::StrCat(dir_, "/", name, ".port"),
        absl::StrCat(dir_, "/", name, ".log")));
    const std::string address =
        absl::StrCat("127.0.0.1:", ReadFile(dir_ + "/" + name + ".port"));
    if (index > 0) {
      EXPECT_TRUE(test_support::WaitUntil([&] {
        std::optional<ps::v1::ReplicaStatusResponse> status =
            ReplicaStatus(address);
        return status.has_value() && status->role() == ps::v1::BACKUP;
      })) << name
          << " never joined; see " << dir_;
    }
    return {std::move(*server), address};
  }

  std::string dir_;
  std::string mode_;
  std::vector<std::vector<Replica>> shards_;
  std::vector<common::Subprocess> workers_;
};

// The pushes worker `rank` saw acknowledged (applied, or answered as stale
// or duplicate), from its last line.
uint64_t AcknowledgedPushes(const std::string& log) {
  std::smatch m;
  const std::string text = ReadFile(log);
  static const std::regex kFinished(
      R"(finished: (\d+) shard pushes applied or accepted, (\d+) stale, (\d+) duplicate)");
  EXPECT_TRUE(std::regex_search(text, m, kFinished)) << log;
  if (m.empty()) return 0;
  return std::stoull(m[1]) + std::stoull(m[2]) + std::stoull(m[3]);
}

// The fault-free run's θ, once per mode.
std::vector<std::vector<float>> FaultFreeTheta(const std::string& mode) {
  static std::map<std::string, std::vector<std::vector<float>>> theta;
  if (theta.count(mode) == 0) {
    Job job(FreshDir(absl::StrCat("failover_reference_", mode)), mode, 1);
    job.StartWorkers();
    job.WaitForWorkers();
    theta[mode] = job.Theta();
  }
  return theta[mode];
}

enum class Fault { kKill, kStop };

class Failover
    : public ::testing::TestWithParam<std::tuple<std::string, Fault>> {};

TEST_P(Failover, TrainingFinishesAndLosesNoAcknowledgedPush) {
  const auto [mode, fault] = GetParam();
  const std::string name = absl::StrCat(
      "failover_", mode, fault == Fault::kKill ? "_kill" : "_stop");
  Job job(FreshDir(name), mode, 2);
  job.StartWorkers();
  Replica& victim = job.replica(1, 0);
  Replica& heir = job.replica(1, 1);
  // Mid-training: the first epoch is under way.
  ASSERT_TRUE(test_support::WaitUntil(
      [&] {
        std::optional<ps::v1::ReplicaStatusResponse> s =
            ReplicaStatus(victim.address);
        return s.has_value() && s->version() >= 300;
      },
      absl::Seconds(120)));
  if (fault == Fault::kKill) {
    ASSERT_EQ(kill(victim.process.pid(), SIGKILL), 0);
  } else {
    ASSERT_EQ(kill(victim.process.pid(), SIGSTOP), 0);
  }
  // The backup takes over with the next term.
  ASSERT_TRUE(test_support::WaitUntil([&] {
    std::optional<ps::v1::ReplicaStatusResponse> s =
        ReplicaStatus(heir.address);
    return s.has_value() && s->role() == ps::v1::PRIMARY && s->term() == 2;
  })) << "see "
      << job.dir();
  if (fault == Fault::kStop) {
    // Training goes on without it meanwhile.
    const uint64_t at_takeover = ReplicaStatus(heir.address)->version();
    ASSERT_TRUE(test_support::WaitUntil(
        [&] { return ReplicaStatus(heir.address)->version() > at_takeover; }));
    absl::SleepFor(absl::Seconds(5));  // the fault itself: stopped for 5 s
    ASSERT_EQ(kill(victim.process.pid(), SIGCONT), 0);
  }
  job.WaitForWorkers();

  // Every push a worker saw acknowledged is on the surviving primaries,
  // applied once: each worker's pushes there, and every example of every
  // epoch in the sample counts.
  for (uint32_t s = 0; s < kShards; ++s) {
    Replica* primary = job.Primary(s);
    ASSERT_NE(primary, nullptr);
    const ps::v1::StatusResponse status = ShardStatus(primary->address);
    ASSERT_EQ(status.workers_size(), static_cast<int>(kWorkers));
    for (const ps::v1::WorkerStatus& w : status.workers()) {
      const uint64_t acknowledged =
          AcknowledgedPushes(job.WorkerLog(w.worker_id()));
      EXPECT_EQ(w.pushes() * kShards, acknowledged)
          << "shard " << s << ", worker " << w.worker_id();
      EXPECT_EQ(w.last_seq() * kShards, acknowledged)
          << "shard " << s << ", worker " << w.worker_id();
    }
    EXPECT_EQ(status.samples_applied(), uint64_t{60000} * kEpochs)
        << "shard " << s;
  }
  EXPECT_EQ(job.Primary(1), &heir);

  if (fault == Fault::kStop) {
    // The old primary was fenced, stepped down and copied the new
    // primary's state; it ends with it byte for byte.
    std::optional<ps::v1::ReplicaStatusResponse> done =
        ReplicaStatus(heir.address);
    ASSERT_TRUE(done.has_value());
    ASSERT_TRUE(test_support::WaitUntil([&] {
      std::optional<ps::v1::ReplicaStatusResponse> s =
          ReplicaStatus(victim.address);
      return s.has_value() && s->role() == ps::v1::BACKUP && s->term() == 2 &&
             s->log_index() >= done->log_index();
    })) << "the old primary did not rejoin; see "
        << job.dir();
    const std::string primary_state = CheckpointBytes(heir.address);
    ASSERT_FALSE(primary_state.empty());
    EXPECT_TRUE(CheckpointBytes(victim.address) == primary_state)
        << "the old primary's state differs from the new one's; see "
        << job.dir();
  }

  // Sync: the round in flight survived, so θ is a fault-free run's, byte
  // for byte.
  if (mode == "sync") {
    const std::vector<std::vector<float>> theta = job.Theta();
    const std::vector<std::vector<float>> expected = FaultFreeTheta(mode);
    ASSERT_EQ(theta.size(), expected.size());
    for (size_t s = 0; s < theta.size(); ++s) {
      ASSERT_EQ(theta[s].size(), expected[s].size());
      EXPECT_EQ(std::memcmp(theta[s].data(), expected[s].data(),
                            theta[s].size() * sizeof(float)),
                0)
          << "shard " << s << "'s θ differs from the fault-free run's; see "
          << job.dir();
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    ModesAndFaults, Failover,
    ::testing::Combine(::testing::Values("sync", "async"),
                       ::testing::Values(Fault::kKill, Fault::kStop)),
    [](const auto& info) {
      return absl::StrCat(
          std::get<0>(info.param),
          std::get<1>(info.param) == Fault::kKill ? "_Kill9" : "_Sigstop");
    });

// A backup stopped longer than the primary waits for it (1 s) is dropped;
// after SIGCONT it finds its primary alive, joins again by itself (state,
// then changes) while training goes on, and ends with the primary's state.
TEST(Failover, AStoppedBackupIsDroppedAndRejoinsByItself) {
  Job job(FreshDir("failover_backup_stop"), "async", 2);
  job.StartWorkers();
  Replica& primary = job.replica(1, 0);
  Replica& backup = job.replica(1, 1);
  ASSERT_TRUE(test_support::WaitUntil(
      [&] {
        std::optional<ps::v1::ReplicaStatusResponse> s =
            ReplicaStatus(primary.address);
        return s.has_value() && s->version() >= 300;
      },
      absl::Seconds(120)));
  ASSERT_EQ(kill(backup.process.pid(), SIGSTOP), 0);
  ASSERT_TRUE(test_support::WaitUntil([&] {
    std::optional<ps::v1::ReplicaStatusResponse> s =
        ReplicaStatus(primary.address);
    return s.has_value() && s->backups_dropped() == 1;
  })) << "see "
      << job.dir();
  ASSERT_EQ(kill(backup.process.pid(), SIGCONT), 0);
  job.WaitForWorkers();
  const std::optional<ps::v1::ReplicaStatusResponse> done =
      ReplicaStatus(primary.address);
  ASSERT_TRUE(done.has_value());
  // The primary stayed the primary, in term 1: the backup did not take
  // over when it woke to silence.
  EXPECT_EQ(done->role(), ps::v1::PRIMARY);
  EXPECT_EQ(done->term(), 1u);
  ASSERT_TRUE(test_support::WaitUntil([&] {
    std::optional<ps::v1::ReplicaStatusResponse> s =
        ReplicaStatus(backup.address);
    return s.has_value() && s->role() == ps::v1::BACKUP &&
           s->log_index() >= done->log_index();
  })) << "the backup did not rejoin; see "
      << job.dir();
  EXPECT_EQ(ReplicaStatus(backup.address)->term(), 1u);
  const std::string primary_state = CheckpointBytes(primary.address);
  ASSERT_FALSE(primary_state.empty());
  EXPECT_TRUE(CheckpointBytes(backup.address) == primary_state)
      << "the rejoined backup's state differs; see " << job.dir();
}

}  // namespace
}  // namespace ps
