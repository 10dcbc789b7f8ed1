// The deploy files, run. Every container that deploy/compose and the
// rendered deploy/k8s manifests define is started here with exactly the
// command line, environment and mounted flagfiles the files give it; only
// host names and ports become loopback ones (and workers get a short run).
// The job must train to the end and pass the health checks the files
// define. A flag a daemon does not know stops it, and the test names it.
#include <httplib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/subprocess.h"
#include "deploy/local/daemon_flags.h"
#include "deploy/local/deploy_files.h"
#include "deploy/local/launcher.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/job.h"

namespace ps {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

using launch::Capture;
using launch::ComposeJob;
using launch::Container;
using launch::FlagValue;
using launch::KubernetesJob;
using launch::LastLines;
using launch::LoopbackNetwork;
using launch::Program;
using Job = launch::DeployJob;
using test_support::BinDir;
using test_support::ReadFile;

// A new directory for one job's logs and flagfile copies.
std::string TempDir(const std::string& name) {
  std::string dir = absl::StrCat(::testing::TempDir(), "/ps_", name, "_XXXXXX");
  EXPECT_NE(mkdtemp(dir.data()), nullptr) << dir;
  return dir;
}

// --- Running the deploy files on loopback ------------------------------

// Whether this machine lets us give a process its own hostname.
bool CanSetHostname() {
  absl::StatusOr<std::string> name = Capture(
      "unshare --user --map-root-user --uts /bin/sh -c "
      "'hostname ps-probe-0 && hostname' 2>/dev/null");
  return name.ok() && *name == "ps-probe-0\n";
}

class JobRunner {
 public:
  // `secrets_dir` stands in for the secrets the files mount: a compose
  // secret's file and a Kubernetes Secret's directory are found there by
  // name.
  JobRunner(Job job, std::string dir, std::string secrets_dir = "")
      : job_(std::move(job)),
        dir_(std::move(dir)),
        secrets_dir_(std::move(secrets_dir)),
        network_(job_) {}

  // Starts the servers, waits for their health checks, runs the workers to
  // the end, checks health again and stops the servers with SIGTERM.
  absl::Status Run() {
    if (job_.servers.empty() || job_.workers.empty()) {
      return absl::InvalidArgumentError("the job has no servers or no workers");
    }
    if (absl::Status consistent = CheckCounts(); !consistent.ok()) {
      return consistent;
    }
    set_hostname_ = CanSetHostname();
    for (size_t i = 0; i < job_.servers.size(); ++i) {
      absl::StatusOr<common::Subprocess> server = Start(job_.servers[i], i, {});
      if (!server.ok()) return server.status();
      servers_.push_back(std::move(*server));
    }
    for (size_t i = 0; i < job_.servers.size(); ++i) {
      if (absl::Status healthy = WaitHealthy(i, absl::Seconds(60));
          !healthy.ok()) {
        return healthy;
      }
      if (absl::Status scraped = CheckMetrics(i); !scraped.ok()) {
        return scraped;
      }
    }
    std::vector<common::Subprocess> workers;
    // A worker's own addresses (its --metrics_listen) are its alone.
    int self = static_cast<int>(job_.servers.size());
    for (Container& worker : job_.workers) {
      // Appended last, so it overrides the flagfile's --epochs: only to
      // keep the test short.
      launch::WorkerFlags short_run;
      short_run.epochs = 1;
      absl::StatusOr<common::Subprocess> process =
          Start(worker, self++, launch::WorkerArgs(short_run));
      if (!process.ok()) return process.status();
      workers.push_back(std::move(*process));
    }
    // Every worker watched at once: one that fails at start-up is named at
    // once, not after the others waited out their sync rounds for it.
    const absl::Time give_up = absl::Now() + absl::Seconds(600);
    while (true) {
      // Poll keeps a finished worker's status: each pass looks at all.
      std::optional<size_t> running;
      for (size_t i = 0; i < workers.size(); ++i) {
        std::optional<int> status = workers[i].Poll();
        if (!status) {
          if (!running) running = i;
        } else if (!common::ExitedCleanly(*status)) {
          return Failed(job_.workers[i], common::DescribeWaitStatus(*status));
        }
      }
      if (!running) break;
      if (absl::Now() > give_up) {
        return Failed(job_.workers[*running], "did not finish in time");
      }
      absl::SleepFor(absl::Milliseconds(50));
    }
    for (size_t i = 0; i < job_.servers.size(); ++i) {
      if (absl::Status healthy = WaitHealthy(i, absl::Seconds(10));
          !healthy.ok()) {
        return healthy;
      }
      const int status = servers_[i].Stop(absl::Seconds(30));
      if (!common::ExitedCleanly(status)) {
        return Failed(
            job_.servers[i],
            absl::StrCat(common::DescribeWaitStatus(status), " on SIGTERM"));
      }
      // With checkpoints on, SIGTERM leaves one in the mounted volume.
      const Container& c = job_.servers[i];
      const std::string checkpoints =
          MapVolumes(c, FlagValue(c, "checkpoint_dir"));
      std::error_code error;
      if (!checkpoints.empty() &&
          std::filesystem::is_empty(checkpoints, error)) {
        return Failed(c, absl::StrCat("left no checkpoint in ", checkpoints,
                                      " on SIGTERM"));
      }
    }
    return absl::OkStatus();
  }

 private:
  // The numbers the files must agree on, checked here rather than left to
  // a sync round that would wait for a worker that never comes. A shard
  // with replicas counts once: by its replica 0.
  absl::Status CheckCounts() {
    const std::string servers = absl::StrCat(std::count_if(
        job_.servers.begin(), job_.servers.end(), [](const Container& c) {
          const std::string replica = FlagValue(c, "replica_index");
          return replica.empty() || replica == "0";
        }));
    const std::string workers = absl::StrCat(job_.workers.size());
    for (const Container& c : job_.servers) {
      if (FlagValue(c, "num_shards") != servers ||
          FlagValue(c, "num_workers") != workers) {
        return absl::InvalidArgumentError(absl::StrCat(
            c.name, " has --num_shards=", FlagValue(c, "num_shards"),
            " --num_workers=", FlagValue(c, "num_workers"),
            " but the file runs ", servers, " servers and ", workers,
            " workers"));
      }
    }
    for (const Container& c : job_.workers) {
      const std::vector<std::string> listed =
          absl::StrSplit(FlagValue(c, "servers"), ',', absl::SkipEmpty());
      if (absl::StrCat(listed.size()) != servers ||
          FlagValue(c, "num_workers") != workers) {
        return absl::InvalidArgumentError(absl::StrCat(
            c.name, " lists ", listed.size(), " servers with --num_workers=",
            FlagValue(c, "num_workers"), " but the file runs ", servers,
            " servers and ", workers, " workers"));
      }
    }
    return absl::OkStatus();
  }

  // Server i's /metrics, where its --metrics_listen says, names its shard:
  // its hostname's ordinal, as ps_server reads it (a deploy file without
  // metrics passes).
  absl::Status CheckMetrics(size_t i) {
    const Container& c = job_.servers[i];
    const std::string listen = FlagValue(c, "metrics_listen");
    if (listen.empty()) return absl::OkStatus();
    absl::StatusOr<std::string> address = network_.Rewrite(listen, i);
    if (!address.ok()) return address.status();
    httplib::Client client(absl::StrCat("http://", *address));
    client.set_connection_timeout(10);
    client.set_read_timeout(10);
    httplib::Result scraped = client.Get("/metrics");
    const std::string shard =
        c.hostname.empty() ? absl::StrCat(i)
                           : c.hostname.substr(c.hostname.rfind('-') + 1);
    const std::string series =
        absl::StrCat("ps_server_version{shard=\"", shard, "\"");
    if (!scraped || scraped->status != 200 ||
        !absl::StrContains(scraped->body, series)) {
      return Failed(c, absl::StrCat("serves no ", series, "…} on ", listen,
                                    " (", *address, ")/metrics"));
    }
    return absl::OkStatus();
  }

  std::string LogPath(const Container& c) {
    return absl::StrCat(dir_, "/", c.name, ".log");
  }

  absl::Status Failed(const Container& c, const std::string& what) {
    return absl::AbortedError(
        absl::StrCat(c.name, " (", absl::StrJoin(c.argv, " "), ") ", what,
                     "; its log ends:\n", LastLines(LogPath(c), 15)));
  }

  // `text` with the container's volume and secret mount paths replaced by
  // our directories and files standing in for them.
  std::string MapVolumes(const Container& c, const std::string& text) {
    std::vector<std::pair<std::string, std::string>> replacements;
    for (const auto& [mount_path, name] : c.volumes) {
      const std::string dir = absl::StrCat(dir_, "/volumes/", name);
      std::filesystem::create_directories(dir);
      replacements.emplace_back(mount_path, dir);
    }
    for (const auto& [mount_path, name] : c.secrets) {
      replacements.emplace_back(mount_path,
                                absl::StrCat(secrets_dir_, "/", name));
    }
    return absl::StrReplaceAll(text, replacements);
  }

  // The container's command line with loopback addresses, its flagfiles
  // written (rewritten the same way) where our copies live, and its
  // environment set through env(1).
  absl::StatusOr<common::Subprocess> Start(
      const Container& c, int self, const std::vector<std::string>& extra) {
    std::vector<std::string> argv = {"/usr/bin/env"};
    for (const auto& [name, value] : c.env)
      argv.push_back(absl::StrCat(name, "=", value));
    const std::string ordinal = c.hostname.substr(c.hostname.rfind('-') + 1);
    if (Program(c) == "ps_server" && !c.hostname.empty()) {
      if (set_hostname_) {
        // ps_server reads its shard index from the hostname, as in the pod
        // or the compose container: give it that hostname in a UTS
        // namespace of its own.
        for (const char* arg :
             {"unshare", "--user", "--map-root-user", "--uts", "/bin/sh", "-c",
              "hostname \"$0\" && exec \"$@\""}) {
          argv.push_back(arg);
        }
        argv.push_back(c.hostname);
      }
    }
    argv.push_back(absl::StrCat(BinDir(), "/", Program(c)));
    for (size_t i = 1; i < c.argv.size(); ++i) {
      absl::StatusOr<std::string> arg =
          network_.Rewrite(MapVolumes(c, c.argv[i]), self);
      if (!arg.ok()) return arg.status();
      if (absl::StartsWith(*arg, "--flagfile=")) {
        std::vector<std::string> paths;
        for (absl::string_view path : absl::StrSplit(arg->substr(11), ',')) {
          auto file = c.files.find(std::string(path));
          if (file == c.files.end()) {
            return absl::NotFoundError(absl::StrCat(
                c.name, ": ", path, " is not mounted from the deploy files"));
          }
          absl::StatusOr<std::string> contents =
              network_.Rewrite(MapVolumes(c, file->second), self);
          if (!contents.ok()) return contents.status();
          paths.push_back(absl::StrCat(dir_, "/", c.name, "-",
                                       path.substr(path.rfind('/') + 1)));
          std::ofstream(paths.back()) << *contents;
        }
        *arg = absl::StrCat("--flagfile=", absl::StrJoin(paths, ","));
      }
      argv.push_back(*arg);
    }
    if (Program(c) == "ps_server" && !c.hostname.empty() && !set_hostname_) {
      // Without namespaces the hostname cannot be faked: pass the ordinal
      // the pod's hostname would give (ps-server-1 → 1) as a flag instead.
      launch::ServerFlags shard;
      uint32_t index = 0;
      if (!absl::SimpleAtoi(ordinal, &index)) {
        return absl::InvalidArgumentError(absl::StrCat(
            c.name, ": hostname ", c.hostname, " has no ordinal suffix"));
      }
      shard.shard_index = index;
      for (std::string& arg : launch::ServerArgs(shard)) argv.push_back(arg);
      std::fprintf(stderr, "note: cannot set a hostname here; %s gets %s\n",
                   c.name.c_str(), argv.back().c_str());
    }
    for (const std::string& arg : extra) argv.push_back(arg);
    return common::Subprocess::Spawn(argv, LogPath(c));
  }

  // Every health check the file defines for server i passes within `limit`.
  absl::Status WaitHealthy(size_t i, absl::Duration limit) {
    const Container& c = job_.servers[i];
    const absl::Time give_up = absl::Now() + limit;
    for (const std::vector<std::string>& check : c.health_checks) {
      std::vector<std::string> argv;
      for (const std::string& arg : check) {
        absl::StatusOr<std::string> rewritten =
            network_.Rewrite(MapVolumes(c, arg), i);
        if (!rewritten.ok()) return rewritten.status();
        argv.push_back(*rewritten);
      }
      if (argv[0].find('/') == std::string::npos) {
        argv[0] = absl::StrCat(BinDir(), "/", argv[0]);
      }
      const std::string log = absl::StrCat(dir_, "/", c.name, "-health.log");
      while (true) {
        if (std::optional<int> status = servers_[i].Poll()) {
          return Failed(c, absl::StrCat(common::DescribeWaitStatus(*status),
                                        " before its health check passed"));
        }
        std::remove(log.c_str());
        absl::StatusOr<common::Subprocess> probe =
            common::Subprocess::Spawn(argv, log);
        if (!probe.ok()) return probe.status();
        std::optional<int> status = probe->WaitFor(absl::Seconds(20));
        if (status && common::ExitedCleanly(*status)) break;
        if (absl::Now() > give_up) {
          return absl::DeadlineExceededError(
              absl::StrCat(c.name, ": health check `", absl::StrJoin(argv, " "),
                           "` still fails: ", ReadFile(log)));
        }
        absl::SleepFor(absl::Milliseconds(200));
      }
    }
    return absl::OkStatus();
  }

  Job job_;
  std::string dir_;
  std::string secrets_dir_;
  LoopbackNetwork network_;
  bool set_hostname_ = false;
  std::vector<common::Subprocess> servers_;
};

const std::string kDeploy = absl::StrCat(PS_SOURCE_DIR, "/deploy");

// The job the files define has that many servers, each with a health
// check, and trains to the end.
void ExpectTrains(absl::StatusOr<Job> job, size_t servers, size_t workers,
                  const std::string& name) {
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->servers.size(), servers);
  EXPECT_EQ(job->workers.size(), workers);
  for (const Container& server : job->servers) {
    EXPECT_FALSE(server.health_checks.empty()) << server.name;
  }
  absl::Status ran =
      JobRunner(*std::move(job), TempDir(absl::StrCat("deploy_", name))).Run();
  EXPECT_TRUE(ran.ok()) << ran;
}

TEST(DeployFiles, ComposeJobTrainsAndItsHealthChecksPass) {
  ExpectTrains(ComposeJob(kDeploy + "/compose/docker-compose.yml"), 2, 2,
               "compose");
}

TEST(DeployFiles, KubernetesJobTrainsAndItsProbesPass) {
  ExpectTrains(KubernetesJob(kDeploy + "/k8s"), 2, 2, "k8s");
}

TEST(DeployFiles, KubernetesOverlayExampleJobTrains) {
  ExpectTrains(KubernetesJob(kDeploy + "/k8s-overlays/example"), 4, 4,
               "overlay");
}

// Two shards, each on two replicas and a witness, that find each other by
// their pods' DNS names and ordinals (the pod-index label).
TEST(DeployFiles, KubernetesReplicatedOverlayJobTrains) {
  ExpectTrains(KubernetesJob(kDeploy + "/k8s-overlays/replicated"), 6, 2,
               "replicated");
}

// The TLS variants: every daemon gets its side of the job's credentials
// from the mounted secrets (certificates made now by tests/make_certs.sh
// into `certs_dir` under the runner's `secrets_dir`), the health checks pass
// over mutual TLS, and the job trains.
void ExpectTrainsOverMutualTls(absl::StatusOr<Job> job,
                               const std::string& secrets_dir,
                               const std::string& certs_dir,
                               const std::string& name) {
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_EQ(std::system(absl::StrCat(PS_SOURCE_DIR, "/tests/make_certs.sh '",
                                     certs_dir, "'")
                            .c_str()),
            0);
  for (const Container& server : job->servers) {
    for (const char* flag :
         {"tls_cert", "tls_key", "tls_client_ca", "auth_token_file"}) {
      EXPECT_NE(FlagValue(server, flag), "") << server.name << " --" << flag;
    }
    EXPECT_FALSE(server.health_checks.empty()) << server.name;
  }
  for (const Container& worker : job->workers) {
    for (const char* flag :
         {"tls_ca", "tls_cert", "tls_key", "auth_token_file"}) {
      EXPECT_NE(FlagValue(worker, flag), "") << worker.name << " --" << flag;
    }
  }
  absl::Status ran =
      JobRunner(*std::move(job), TempDir(absl::StrCat("deploy_", name)),
                secrets_dir)
          .Run();
  EXPECT_TRUE(ran.ok()) << ran;
}

TEST(DeployFiles, ComposeTlsJobTrainsOverMutualTlsAndItsHealthChecksPass) {
  // Compose secrets are files: ./tls/ca.crt is found as ca.crt.
  const std::string secrets = TempDir("compose_secrets");
  ExpectTrainsOverMutualTls(
      ComposeJob(kDeploy + "/compose/docker-compose.yml",
                 {kDeploy + "/compose/docker-compose.tls.yml"}),
      secrets, secrets, "compose_tls");
}

TEST(DeployFiles, KubernetesTlsOverlayJobTrainsOverMutualTlsAndItsProbesPass) {
  // The Secret ps-tls is a directory of its keys.
  const std::string secrets = TempDir("k8s_secrets");
  ExpectTrainsOverMutualTls(KubernetesJob(kDeploy + "/k8s-overlays/tls"),
                            secrets, secrets + "/ps-tls", "k8s_tls");
}

TEST(DeployFiles, AFlagADaemonDoesNotKnowFailsTheLaunchAndIsNamed) {
  absl::StatusOr<Job> job = KubernetesJob(kDeploy + "/k8s");
  ASSERT_TRUE(job.ok()) << job.status();
  // As if the ConfigMap's server.flags had a typo.
  job->servers[0].files["/etc/ps/server.flags"] += "--lerning_rate=0.1\n";
  absl::Status ran =
      JobRunner(*std::move(job), TempDir("deploy_bad_flag")).Run();
  EXPECT_FALSE(ran.ok());
  EXPECT_THAT(std::string(ran.message()),
              HasSubstr("Unknown command line flag 'lerning_rate'"));
}

// A worker that fails at start-up is the one named, not a peer that waited
// out its sync rounds for it first.
TEST(DeployFiles, AWorkerThatFailsAtStartUpIsTheOneNamed) {
  absl::StatusOr<Job> job = KubernetesJob(kDeploy + "/k8s");
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_GE(job->workers.size(), 2u);
  Container& last = job->workers.back();
  last.files["/etc/ps/worker.flags"] += "--lerning_rate=0.1\n";
  const std::string name = last.name;
  absl::Status ran =
      JobRunner(*std::move(job), TempDir("deploy_bad_worker")).Run();
  EXPECT_FALSE(ran.ok());
  EXPECT_THAT(std::string(ran.message()), StartsWith(name + " ("));
  EXPECT_THAT(std::string(ran.message()),
              HasSubstr("Unknown command line flag 'lerning_rate'"));
}

}  // namespace
}  // namespace ps
