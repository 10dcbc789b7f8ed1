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
  EXPECT_THAT(
      ServerCommand("/bin", server),
      ElementsAre("/bin/ps_server", "--listen=127.0.0.1:0", "--shard_index=1",
                  "--num_shards=2", "--lease_timeout=1500ms", "--lr=0.5",
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

TEST(DaemonFlags, AReplicaGetsItsIndexItsPeersAndItsVoteDirectory) {
  ServerFlags server;
  server.replicas = 3;
  server.replica_index = 2;
  server.replica_peers = {"127.0.0.1:7", "127.0.0.1:8", "127.0.0.1:0"};
  server.replica_state_dir = "job/server-0-votes";
  EXPECT_THAT(ServerArgs(server),
              ElementsAre("--replicas=3", "--replica_index=2",
                          "--replica_peers=127.0.0.1:7,127.0.0.1:8,127.0.0.1:0",
                          "--replica_state_dir=job/server-0-votes"));
  server.replica_witness = true;
  EXPECT_EQ(ServerArgs(server).back(), "--replica_witness=true");
}

// The servers get the servers' certificate, the client CA when clients have
// certificates, and the token; the workers the clients' side.
TEST(DaemonFlags, TheJobsCredentialsGoToEachSideAsItsFlags) {
  JobSecurity security;
  security.client = {"ca.pem", "client.pem", "client.key", "token"};
  security.server_tls_cert = "server.pem";
  security.server_tls_key = "server.key";
  ServerFlags server;
  server.security = security;
  EXPECT_THAT(ServerArgs(server),
              ElementsAre("--tls_cert=server.pem", "--tls_key=server.key",
                          "--tls_client_ca=ca.pem", "--auth_token_file=token"));
  WorkerFlags worker;
  worker.security = security;
  EXPECT_THAT(WorkerArgs(worker),
              ElementsAre("--tls_ca=ca.pem", "--tls_cert=client.pem",
                          "--tls_key=client.key", "--auth_token_file=token"));
  // Without client certificates the servers ask for none.
  server.security.client.tls_cert.clear();
  server.security.client.tls_key.clear();
  EXPECT_THAT(ServerArgs(server),
              ElementsAre("--tls_cert=server.pem", "--tls_key=server.key",
                          "--auth_token_file=token"));
}

TEST(SplitCommandLine, SplitsAsAShellWouldWithoutRunningOne) {
  absl::StatusOr<std::vector<std::string>> words = SplitCommandLine(
      R"(  python3  'my dir/train.py' --name="a \"b\" $HOME" c\ d '' )");
  ASSERT_TRUE(words.ok()) << words.status();
  EXPECT_THAT(*words, ElementsAre("python3", "my dir/train.py",
                                  "--name=a \"b\" $HOME", "c d", ""));
  EXPECT_FALSE(SplitCommandLine("python3 'open").ok());
  EXPECT_FALSE(SplitCommandLine("python3 \"open").ok());
  EXPECT_FALSE(SplitCommandLine("python3 \\").ok());
}

TEST(ParseWorkerPrograms, ARangeCoversItsRanksAndABareCommandEveryRank) {
  absl::StatusOr<std::vector<WorkerProgram>> programs =
      ParseWorkerPrograms({"0-1:python3 a.py", "3:b --x"}, 4);
  ASSERT_TRUE(programs.ok()) << programs.status();
  ASSERT_EQ(programs->size(), 2u);
  EXPECT_EQ((*programs)[0].first_rank, 0u);
  EXPECT_EQ((*programs)[0].last_rank, 1u);
  EXPECT_THAT((*programs)[0].command, ElementsAre("python3", "a.py"));
  EXPECT_EQ((*programs)[1].first_rank, 3u);
  EXPECT_EQ((*programs)[1].last_rank, 3u);

  programs = ParseWorkerPrograms({"python3 a.py --at=1:2"}, 4);
  ASSERT_TRUE(programs.ok()) << programs.status();
  EXPECT_EQ((*programs)[0].first_rank, 0u);
  EXPECT_EQ((*programs)[0].last_rank, 3u);
  EXPECT_THAT((*programs)[0].command,
              ElementsAre("python3", "a.py", "--at=1:2"));
}

TEST(ParseWorkerPrograms, OverlapsAndRanksOutsideTheJobAreErrors) {
  EXPECT_FALSE(ParseWorkerPrograms({"0-2:a", "2-3:b"}, 4).ok());
  EXPECT_FALSE(ParseWorkerPrograms({"a", "3:b"}, 4).ok());
  EXPECT_FALSE(ParseWorkerPrograms({"a", "b"}, 4).ok());
  EXPECT_FALSE(ParseWorkerPrograms({"2-4:a"}, 4).ok());
  EXPECT_FALSE(ParseWorkerPrograms({"3-2:a"}, 4).ok());
  EXPECT_FALSE(ParseWorkerPrograms({"1:"}, 4).ok());
}

}  // namespace
}  // namespace ps::launch
