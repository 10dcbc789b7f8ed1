// Scenario files: what they can say, and every bad input rejected with its
// line before anything starts.
#include "tools/chaos/scenario.h"

#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ps::chaos {
namespace {

using ::testing::HasSubstr;

std::string ReadFileOrEmpty(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)),
                     std::istreambuf_iterator<char>());
}

constexpr char kCluster[] =
    "cluster:\n"      // line 1
    "  servers: 2\n"  // 2
    "  workers: 3\n"  // 3
    "  mode: sync\n"  // 4
    "faults:\n";      // 5

TEST(Scenario, ReadsTheClusterAndEveryKindOfFault) {
  const std::string text = std::string(kCluster) +
                           "  - at: 0.5 epoch\n"  // 6
                           "    kill: worker 2\n"
                           "    for: 3s\n"
                           "  - at: 1 epoch\n"  // 9
                           "    stop: worker 1\n"
                           "  - at: 1.2 epoch\n"  // 11
                           "    cont: worker 1\n"
                           "  - at: 2s\n"  // 13
                           "    rpc: workers\n"
                           "    delay: 1ms..5ms\n"
                           "    error: ABORTED:0.1\n"
                           "    methods: [Push, Pull]\n"
                           "    seed: 9\n"
                           "    for: 4s\n"
                           "  - at: 3s\n"  // 20
                           "    net: worker 0\n"
                           "    loss: 5%\n"
                           "    rate: 10mbit\n"
                           "    partition: servers\n"
                           "  - at: 4s\n"  // 25
                           "    cpu: server 1\n"
                           "    quota: 20%\n"
                           "  - at: 5s\n"  // 28
                           "    restart: server 0, server 1\n";
  absl::StatusOr<Scenario> s = ParseScenario(text, "all.yaml");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->name, "all");
  EXPECT_EQ(s->cluster.servers, 2u);
  EXPECT_EQ(s->cluster.workers, 3u);
  ASSERT_EQ(s->faults.size(), 7u);
  const FaultEvent& kill = s->faults[0];
  EXPECT_EQ(kill.line, 6);
  EXPECT_EQ(kill.action, FaultEvent::Action::kKill);
  EXPECT_EQ(kill.at.unit, Trigger::Unit::kEpoch);
  EXPECT_DOUBLE_EQ(kill.at.value, 0.5);
  ASSERT_TRUE(kill.duration.has_value());
  EXPECT_EQ(*kill.duration, absl::Seconds(3));
  EXPECT_EQ(kill.targets,
            (std::vector<ProcessRef>{{ProcessRef::Kind::kWorker, 2}}));
  const FaultEvent& rpc = s->faults[3];
  EXPECT_EQ(rpc.targets.size(), 3u);
  EXPECT_EQ(rpc.at.unit, Trigger::Unit::kSeconds);
  EXPECT_EQ(rpc.rpc.seed, 9u);
  EXPECT_EQ(rpc.rpc.error_code, grpc::StatusCode::ABORTED);
  EXPECT_EQ(rpc.rpc.methods, (std::vector<std::string>{"Push", "Pull"}));
  const FaultEvent& net = s->faults[4];
  EXPECT_DOUBLE_EQ(net.loss, 0.05);
  EXPECT_EQ(net.rate, "10mbit");
  EXPECT_EQ(net.partition.size(), 2u);
  EXPECT_DOUBLE_EQ(s->faults[5].cpu, 0.2);
  EXPECT_EQ(s->faults[6].targets.size(), 2u);
  EXPECT_TRUE(s->NeedsNetwork());
  EXPECT_TRUE(s->NeedsCgroups());
  EXPECT_EQ(kill.Describe(), "kill worker 2: for 3s");
}

// The error for `faults` (appended to kCluster) must name `line` and say
// `says`.
void ExpectRejected(const std::string& faults, int line,
                    const std::string& says) {
  absl::StatusOr<Scenario> s =
      ParseScenario(std::string(kCluster) + faults, "bad.yaml");
  ASSERT_FALSE(s.ok()) << faults;
  EXPECT_THAT(std::string(s.status().message()),
              HasSubstr(absl::StrCat("bad.yaml:", line, ": ")))
      << faults;
  EXPECT_THAT(std::string(s.status().message()), HasSubstr(says)) << faults;
}

TEST(Scenario, RejectsAnUnknownKeyNamingItsLine) {
  ExpectRejected("  - at: 1s\n    kill: worker 0\n    fro: 2s\n", 8,
                 "unknown key 'fro' in a fault");
  absl::StatusOr<Scenario> s =
      ParseScenario("cluster:\n  servers: 1\n  wrokers: 2\n", "c.yaml");
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.status().message()),
              HasSubstr("c.yaml:3: unknown key 'wrokers' in cluster"));
  s = ParseScenario("cluster: {}\nfault: []\n", "t.yaml");
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.status().message()),
              HasSubstr("t.yaml:2: unknown key 'fault' in the scenario"));
}

TEST(Scenario, RejectsAProcessThatDoesNotExist) {
  ExpectRejected("  - at: 1s\n    kill: worker 3\n", 7,
                 "worker 3 does not exist: the cluster has 3 workers (0 to 2)");
  ExpectRejected("  - at: 1s\n    stop: server 2\n", 7,
                 "server 2 does not exist");
  ExpectRejected("  - at: 1s\n    stop: the printer\n", 7, "is not a process");
  ExpectRejected("  - at: 1s\n    net: worker 0\n    partition: worker 5\n", 8,
                 "worker 5 does not exist");
}

// A nested list used to end the targets silently: [worker 0, [worker 1],
// bogus 99] targeted worker 0 alone.
TEST(Scenario, RejectsATargetListWithAnItemThatIsNotAProcessName) {
  ExpectRejected("  - at: 1s\n    kill: [worker 0, [worker 1], bogus 99]\n", 7,
                 "each item of kill must be one process name");
  ExpectRejected("  - at: 1s\n    kill:\n      - worker 0\n      - {a: 1}\n", 9,
                 "each item of kill must be one process name");
  ExpectRejected("  - at: 1s\n    kill: [worker 0, bogus 99]\n", 7,
                 "'bogus 99' in kill is not a process");
}

// Only one document used to be read: a second one, whatever it said, was
// ignored without a word.
TEST(Scenario, RejectsASecondYamlDocument) {
  ExpectRejected(
      "  - at: 1s\n    kill: worker 0\n---\nfaults:\n"
      "  - at: 2s\n    kill: worker 9\n",
      8, "holds a second YAML document");
  ExpectRejected("  - at: 1s\n    kill: worker 0\n---\n", 8,
                 "holds a second YAML document");
  // One document that starts with the marker is fine.
  EXPECT_TRUE(ParseScenario(std::string("---\n") + kCluster +
                                "  - at: 1s\n    kill: worker 0\n",
                            "one.yaml")
                  .ok());
}

// Found by tests/fuzz/scenario_fuzzer: on a stray flow token yaml-cpp 0.7's
// LoadAll yields empty documents forever, eating memory. In a child process
// with an alarm, so that a hang fails the test instead of stalling it.
TEST(Scenario, AStrayCommaIsAnErrorNotAHang) {
  for (const char* text : {",n", "cluster: {servers: 1}\n,"}) {
    EXPECT_EXIT(
        {
          alarm(20);
          std::_Exit(ParseScenario(text, "stray.yaml").ok() ? 1 : 0);
        },
        ::testing::ExitedWithCode(0), "")
        << text;
    if (HasFailure()) return;
    absl::StatusOr<Scenario> s = ParseScenario(text, "stray.yaml");
    ASSERT_FALSE(s.ok());
    EXPECT_THAT(std::string(s.status().message()), HasSubstr("stray.yaml:"))
        << text;
    EXPECT_THAT(std::string(s.status().message()), HasSubstr("not valid YAML"))
        << text;
  }
}

TEST(Scenario, RejectsATriggerThatCanNeverFire) {
  ExpectRejected("  - at: inf epoch\n    kill: worker 0\n", 6,
                 "is neither a time");
  ExpectRejected("  - at: nan epoch\n    kill: worker 0\n", 6,
                 "is neither a time");
  ExpectRejected("  - at: 1e400 epoch\n    kill: worker 0\n", 6,
                 "is neither a time");
  // kCluster runs the default 3 epochs.
  ExpectRejected("  - at: 3.5 epoch\n    kill: worker 0\n", 6,
                 "after the run's 3 epochs");
}

TEST(Scenario, RejectsTimesOutOfOrder) {
  ExpectRejected(
      "  - at: 10s\n    kill: worker 0\n  - at: 5s\n    kill: worker 1\n", 8,
      "at 5s comes before 10s of the fault on line 6");
  ExpectRejected(
      "  - at: 1 epoch\n    kill: worker 0\n"
      "  - at: 20s\n    kill: worker 1\n"
      "  - at: 0.5 epoch\n    kill: worker 2\n",
      10, "0.5 epoch comes before 1 epoch");
}

TEST(Scenario, RejectsFaultsThatDoNotMakeSense) {
  ExpectRejected("  - at: 1s\n    kill: worker 0\n    stop: worker 1\n", 6,
                 "has both 'kill' and 'stop'");
  ExpectRejected("  - at: 1s\n", 6, "needs one action");
  ExpectRejected("  - kill: worker 0\n", 6, "needs 'at'");
  ExpectRejected("  - at: soon\n    kill: worker 0\n", 6,
                 "neither a time since training started");
  ExpectRejected("  - at: 1s\n    kill: worker 0\n    loss: 5%\n", 8,
                 "'loss' is a setting of net faults, not of kill");
  ExpectRejected("  - at: 1s\n    restart: worker 0\n    for: 2s\n", 8,
                 "'for' does not apply to restart");
  ExpectRejected("  - at: 1s\n    rpc: worker 0\n    drop: 2\n", 6,
                 "not a probability");
  ExpectRejected("  - at: 1s\n    rpc: worker 0\n", 6,
                 "needs delay, drop or error");
  ExpectRejected("  - at: 1s\n    net: worker 0\n    rate: fast\n", 8,
                 "not a bandwidth");
  ExpectRejected("  - at: 1s\n    net: worker 0\n    partition: worker 0\n", 8,
                 "not itself a target");
  ExpectRejected("  - at: 1s\n    cpu: server 0\n", 6, "needs quota");
  ExpectRejected("  - at: 1s\n    kill: worker 0\n    for: -2s\n", 8,
                 "must be a duration");
}

TEST(Scenario, RejectsBadClusterValuesAndBadYaml) {
  absl::StatusOr<Scenario> s =
      ParseScenario("cluster:\n  mode: bulk\n", "m.yaml");
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.status().message()),
              HasSubstr("m.yaml:2: mode 'bulk' is not sync, ssp or async"));
  s = ParseScenario("cluster:\n  workers: 0\n", "w.yaml");
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.status().message()),
              HasSubstr("w.yaml:2: workers"));
  s = ParseScenario("cluster:\n  workers: 2\n  sync_quorum: 3\n", "q.yaml");
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("q.yaml:3:"));
  s = ParseScenario("cluster:\n  servers: [1\nfaults: []\n", "y.yaml");
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("not valid YAML"));
  s = ParseScenario(
      "cluster:\n  network: loopback\nfaults:\n  - at: 1s\n    net: worker 0\n"
      "    loss: 1%\n",
      "l.yaml");
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.status().message()),
              HasSubstr("l.yaml:4: loss and rate need network"));
}

constexpr char kReplicatedCluster[] =
    "cluster:\n"       // line 1
    "  servers: 2\n"   // 2
    "  replicas: 3\n"  // 3
    "  workers: 2\n"   // 4
    "faults:\n";       // 5

TEST(Scenario, ReplicatedTargetsNameAPrimaryOrAReplica) {
  absl::StatusOr<Scenario> s = ParseScenario(
      std::string(kReplicatedCluster) +
          "  - at: 1s\n    kill: server 1 primary\n    for: 2s\n"
          "  - at: 2s\n    stop: [server 0 replica 2, Server 1 Replica 0]\n"
          "  - at: 3s\n    cont: server 0 replica 2\n"
          "  - at: 4s\n    net: server 0 primary\n"
          "    partition: server 1 replica 1\n"
          "  - at: 5s\n    restart: servers\n",
      "r.yaml");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->cluster.replicas, 3u);
  using K = ProcessRef::Kind;
  ASSERT_EQ(s->faults.size(), 5u);
  EXPECT_EQ(s->faults[0].targets,
            (std::vector<ProcessRef>{{K::kServer, 1, ProcessRef::kPrimary}}));
  EXPECT_TRUE(s->faults[0].targets[0].primary());
  EXPECT_EQ(s->faults[0].Describe(), "kill server 1 primary: for 2s");
  EXPECT_EQ(s->faults[1].targets,
            (std::vector<ProcessRef>{{K::kServer, 0, 2}, {K::kServer, 1, 0}}));
  EXPECT_EQ(s->faults[1].targets[1].ToString(), "server 1 replica 0");
  EXPECT_EQ(s->faults[3].partition,
            (std::vector<ProcessRef>{{K::kServer, 1, 1}}));
  // "servers" is every process of every shard.
  EXPECT_EQ(s->faults[4].targets.size(), 6u);
  EXPECT_EQ(s->faults[4].targets[5], (ProcessRef{K::kServer, 1, 2}));
}

TEST(Scenario, WithoutReplicasTargetsAreTheSameAsBefore) {
  absl::StatusOr<Scenario> s = ParseScenario(
      std::string(kCluster) + "  - at: 1s\n    kill: server 1\n", "o.yaml");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->cluster.replicas, 1u);
  EXPECT_EQ(s->faults[0].targets[0],
            (ProcessRef{ProcessRef::Kind::kServer, 1}));
  EXPECT_FALSE(s->faults[0].targets[0].replica.has_value());
  EXPECT_EQ(s->faults[0].Describe(), "kill server 1");
}

TEST(Scenario, RejectsReplicaTargetsThatDoNotFitTheCluster) {
  const auto rejected = [](const std::string& text, const std::string& says) {
    absl::StatusOr<Scenario> s = ParseScenario(text, "x.yaml");
    ASSERT_FALSE(s.ok()) << text;
    EXPECT_THAT(std::string(s.status().message()), HasSubstr(says)) << text;
  };
  const std::string replicated = kReplicatedCluster;
  rejected(replicated + "  - at: 1s\n    kill: server 1\n",
           "x.yaml:7: 'server 1' in kill is one of 3 replicas: say 'server 1 "
           "primary' or 'server 1 replica K'");
  rejected(replicated + "  - at: 1s\n    kill: server 1 replica 3\n",
           "server 1 replica 3 does not exist: each server has 3 replicas "
           "(0 to 2)");
  rejected(replicated + "  - at: 1s\n    kill: server 1 backup\n",
           "say 'server 1 primary' or 'server 1 replica K'");
  rejected(replicated + "  - at: 1s\n    kill: worker 1 primary\n",
           "names a replica, but workers have none");
  rejected(replicated + "  - at: 1s\n    cont: server 1 primary\n",
           "name its replica ('server 1 replica 0'), not server 1 primary");
  rejected(replicated +
               "  - at: 1s\n    net: worker 0\n    partition: server 1 "
               "primary\n",
           "partition peers are fixed for the fault's length");
  rejected(std::string(kCluster) + "  - at: 1s\n    kill: server 1 primary\n",
           "x.yaml:7: 'server 1 primary' in kill names a replica, but the "
           "cluster has no replicas (cluster key replicas)");
  rejected("cluster:\n  replicas: 0\n",
           "x.yaml:2: replicas must be a whole number from 1 to 8, not '0'");
  rejected("cluster:\n  replicas: 9\n", "replicas must be a whole number");
  rejected("cluster:\n  replica_witness: true\n",
           "replica_witness needs replicas of 2 or more");
  rejected("cluster:\n  replicas: 2\n  replica_witness: maybe\n",
           "replica_witness must be true or false, not 'maybe'");
}

// A witness is one more process per server, replica R, and a target.
TEST(Scenario, AWitnessIsReplicaRAndATarget) {
  absl::StatusOr<Scenario> s = ParseScenario(
      "cluster:\n  replicas: 2\n  replica_witness: true\nfaults:\n"
      "  - at: 1s\n    kill: server 0 replica 2\n",
      "w.yaml");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_TRUE(s->cluster.replica_witness);
  EXPECT_EQ(s->cluster.per_shard(), 3u);
  EXPECT_EQ(s->faults[0].targets[0],
            (ProcessRef{ProcessRef::Kind::kServer, 0, 2}));
}

// Every deploy/experiments/*.yaml, by file name, as LoadScenario read it.
std::vector<std::pair<std::string, absl::StatusOr<Scenario>>> Presets() {
  std::vector<std::pair<std::string, absl::StatusOr<Scenario>>> presets;
  const std::string dir = std::string(PS_SOURCE_DIR) + "/deploy/experiments";
  DIR* d = opendir(dir.c_str());
  EXPECT_NE(d, nullptr) << dir;
  if (d == nullptr) return presets;
  while (dirent* entry = readdir(d)) {
    const std::string name = entry->d_name;
    if (!absl::EndsWith(name, ".yaml")) continue;
    presets.emplace_back(name, LoadScenario(dir + "/" + name));
  }
  closedir(d);
  return presets;
}

TEST(Scenario, EveryPresetInDeployExperimentsIsValid) {
  const auto presets = Presets();
  for (const auto& [name, s] : presets) {
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_FALSE(s->faults.empty()) << name;
  }
  EXPECT_GE(presets.size(), 7u);
}

// A worker pushes with PushPull on every step but its last: a preset that
// delays only Push slows one RPC per worker and makes no straggler.
TEST(Scenario, EveryPresetThatSlowsPushesSlowsPushPullToo) {
  int checked = 0;
  for (const auto& [name, s] : Presets()) {
    ASSERT_TRUE(s.ok()) << s.status();
    for (const FaultEvent& f : s->faults) {
      const std::vector<std::string>& methods = f.rpc.methods;
      if (f.action != FaultEvent::Action::kRpc ||
          std::find(methods.begin(), methods.end(), "Push") == methods.end()) {
        continue;
      }
      ++checked;
      EXPECT_THAT(methods, ::testing::Contains("PushPull"))
          << name << ":" << f.line;
    }
  }
  EXPECT_GE(checked, 2) << "the straggler presets";
}

TEST(Scenario, TheFormatExampleInTheExperimentsReadmeIsValid) {
  const std::string readme = ReadFileOrEmpty(std::string(PS_SOURCE_DIR) +
                                             "/deploy/experiments/README.md");
  const size_t begin = readme.find("```yaml\nname: my-experiment");
  ASSERT_NE(begin, std::string::npos);
  const size_t text = begin + std::string("```yaml\n").size();
  const size_t end = readme.find("```", text);
  absl::StatusOr<Scenario> s =
      ParseScenario(readme.substr(text, end - text), "README.md");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->faults.size(), 7u);
}

}  // namespace
}  // namespace ps::chaos
