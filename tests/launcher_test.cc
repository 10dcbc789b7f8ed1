// The launcher library (deploy/local): the command lines every launcher
// gives the daemons.
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "deploy/local/daemon_flags.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ps::launch {
namespace {

using ::testing::ElementsAre;

TEST(DaemonFlags, UnsetFieldsAreLeftToTheDaemonsDefaults) {
  EXPECT_THAT(ServerArgs(ServerFlags()), ElementsAre());
  EXPECT_THAT(WorkerArgs(WorkerFlags()), ElementsAre());
}

TEST(DaemonFlags, ExtraFlagsComeAfterTheLaunchersOwnSoTheyWin) {
  ServerFlags server;
  server.listen = "127.0.0.1:0";
  server.shard_index = 1;
  server.num_shards = 2;
  server.lease_timeout = absl::Milliseconds(1500);
  server.extra = {"--lr=0.5"};
  server.inject_faults = "@faults.spec";
  EXPECT_THAT(ServerCommand("/bin", server),
              ElementsAre("/bin/ps_server", "--listen=127.0.0.1:0",
                          "--shard_index=1", "--num_shards=2",
                          "--lease_timeout=1500ms", "--lr=0.5",
                          "--inject_faults=@faults.spec"));
}

TEST(DaemonFlags, AWorkerGetsTheServerListInShardOrder) {
  WorkerFlags worker;
  worker.servers = {"127.0.0.1:5", "127.0.0.1:4"};
  worker.rank = 0;
  worker.num_workers = 2;
  worker.eval_every = 0.25;
  worker.metrics_out = "m.jsonl";
  worker.extra = {"--epochs=1"};
  EXPECT_THAT(WorkerCommand("bin", worker),
              ElementsAre("bin/ps_worker", "--servers=127.0.0.1:5,127.0.0.1:4",
                          "--rank=0", "--num_workers=2", "--eval_every=0.25",
                          "--metrics_out=m.jsonl", "--epochs=1"));
}

}  // namespace
}  // namespace ps::launch
