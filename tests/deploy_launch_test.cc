// The deploy files, run. Every container that deploy/compose and the
// rendered deploy/k8s manifests define is started here with exactly the
// command line, environment and mounted flagfiles the files give it; only
// host names and ports become loopback ones (and workers get a short run).
// The job must train to the end and pass the health checks the files
// define. A flag a daemon does not know stops it, and the test names it.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
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
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/subprocess.h"
#include "deploy/local/daemon_flags.h"
#include "deploy/local/launcher.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/job.h"
#include "yaml-cpp/yaml.h"

namespace ps {
namespace {

using ::testing::HasSubstr;

using launch::LastLines;
using test_support::BinDir;
using test_support::ReadFile;

// A new directory for one job's logs and flagfile copies.
std::string TempDir(const std::string& name) {
  std::string dir = absl::StrCat(::testing::TempDir(), "/ps_", name, "_XXXXXX");
  EXPECT_NE(mkdtemp(dir.data()), nullptr) << dir;
  return dir;
}

// Runs a shell command and returns its stdout; stderr goes to the test log.
absl::StatusOr<std::string> Capture(const std::string& command) {
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return absl::InternalError("popen failed");
  std::string output;
  char buffer[4096];
  while (size_t n = fread(buffer, 1, sizeof(buffer), pipe)) {
    output.append(buffer, n);
  }
  const int status = pclose(pipe);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "`", command, "` failed (", common::DescribeWaitStatus(status),
        "); tools/setup.sh installs it"));
  }
  return output;
}

// One container of a deploy file, as it would run.
struct Container {
  std::string name;      // service or pod name, "ps-server-1"
  std::string hostname;  // what gethostname() says inside it
  std::vector<std::string> dns_names;  // how other containers reach it
  std::vector<std::string> argv;       // command and args, as written
  std::vector<std::pair<std::string, std::string>> env;
  std::map<std::string, std::string> files;  // mount path → contents
  // Storage mounted for output (checkpoints): mount path → storage name.
  // Containers that mount the same name share it.
  std::map<std::string, std::string> volumes;
  std::vector<std::vector<std::string>> health_checks;  // run inside it
};

struct Job {
  std::vector<Container> servers;
  std::vector<Container> workers;
};

std::string Program(const Container& container) {
  const std::string& path = container.argv.empty() ? "" : container.argv[0];
  return path.substr(path.rfind('/') + 1);
}

absl::Status AddToJob(Container container, Job& job) {
  const std::string program = Program(container);
  if (program == "ps_server") {
    job.servers.push_back(std::move(container));
  } else if (program == "ps_worker") {
    job.workers.push_back(std::move(container));
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        container.name, " runs '", program, "', not ps_server or ps_worker"));
  }
  return absl::OkStatus();
}

// --- Reading the deploy files -------------------------------------------

// The compose file as `docker-compose config` resolves it (anchors merged,
// paths absolute): what compose would really run.
absl::StatusOr<Job> ComposeJob(const std::string& compose_file) {
  absl::StatusOr<std::string> config =
      Capture(absl::StrCat("docker-compose -f '", compose_file, "' config"));
  if (!config.ok()) return config.status();
  Job job;
  for (const auto& service : YAML::Load(*config)["services"]) {
    Container c;
    c.name = service.first.as<std::string>();
    const YAML::Node& spec = service.second;
    c.hostname = spec["hostname"] ? spec["hostname"].as<std::string>() : "";
    c.dns_names = {c.name, c.hostname};
    if (!spec["command"] || !spec["command"].IsSequence()) {
      return absl::InvalidArgumentError(
          absl::StrCat(c.name, ": command must be a list"));
    }
    c.argv = spec["command"].as<std::vector<std::string>>();
    for (const auto& variable : spec["environment"]) {
      c.env.emplace_back(variable.first.as<std::string>(),
                         variable.second.as<std::string>());
    }
    for (const auto& volume : spec["volumes"]) {
      // Short syntax "source:target[:mode]" (docker-compose 1.x) or long.
      std::string source, target;
      if (volume.IsMap()) {
        source = volume["source"].as<std::string>("");
        target = volume["target"].as<std::string>("");
      } else {
        std::vector<std::string> parts =
            absl::StrSplit(volume.as<std::string>(), ':');
        source = parts[0];
        target = parts.size() > 1 ? parts[1] : "";
      }
      if (absl::StartsWith(source, "/")) {
        c.files[target] = ReadFile(source);  // a bind-mounted flagfile
      } else if (!source.empty()) {
        c.volumes[target] = source;  // a named volume
      }
    }
    const YAML::Node& health = spec["healthcheck"];
    if (health && !health["disable"].as<bool>(false) && health["test"]) {
      std::vector<std::string> test = health["test"].as<std::vector<std::string>>();
      if (test.size() > 1 && test[0] == "CMD") {
        c.health_checks.emplace_back(test.begin() + 1, test.end());
      } else if (test.size() == 2 && test[0] == "CMD-SHELL") {
        c.health_checks.push_back({"/bin/sh", "-c", test[1]});
      }
    }
    if (absl::Status added = AddToJob(std::move(c), job); !added.ok()) {
      return added;
    }
  }
  return job;
}

// The pod's volume called `name`; not a map when there is none (a claim
// from the StatefulSet's volumeClaimTemplates).
YAML::Node FindVolume(const YAML::Node& pod_spec, const std::string& name) {
  for (const YAML::Node& volume : pod_spec["volumes"]) {
    if (volume["name"].as<std::string>() == name) return volume;
  }
  return YAML::Node();
}

// The containers of one pod. Kubernetes expands $(VAR) in command and args
// from the container's env, some of it from the downward API.
absl::Status AddPod(const YAML::Node& pod_spec, const std::string& pod_name,
                    const std::string& hostname,
                    const std::vector<std::string>& dns_names,
                    const std::string& namespace_name,
                    std::vector<std::pair<std::string, std::string>> env,
                    const std::map<std::string, YAML::Node>& config_maps,
                    Job& job) {
  for (const YAML::Node& spec : pod_spec["containers"]) {
    Container c;
    c.name = pod_name;
    c.hostname = hostname;
    c.dns_names = dns_names;
    c.env = env;
    for (const YAML::Node& variable : spec["env"]) {
      const std::string name = variable["name"].as<std::string>();
      const std::string field =
          variable["valueFrom"]["fieldRef"]["fieldPath"].as<std::string>("");
      if (variable["value"]) {
        c.env.emplace_back(name, variable["value"].as<std::string>());
      } else if (field == "metadata.name") {
        c.env.emplace_back(name, pod_name);
      } else if (field == "metadata.namespace") {
        c.env.emplace_back(name, namespace_name);
      } else {
        return absl::UnimplementedError(absl::StrCat(
            pod_name, ": the test cannot give env ", name, " its value"));
      }
    }
    if (!spec["command"]) {
      return absl::InvalidArgumentError(
          absl::StrCat(pod_name, ": a container without a command"));
    }
    for (const char* part : {"command", "args"}) {
      for (const YAML::Node& arg : spec[part]) {
        std::string value = arg.as<std::string>();
        for (const auto& [name, variable_value] : c.env) {
          value = absl::StrReplaceAll(value, {{absl::StrCat("$(", name, ")"),
                                              variable_value}});
        }
        c.argv.push_back(value);
      }
    }
    for (const YAML::Node& mount : spec["volumeMounts"]) {
      const std::string mount_path = mount["mountPath"].as<std::string>();
      const std::string volume_name = mount["name"].as<std::string>();
      const YAML::Node volume = FindVolume(pod_spec, volume_name);
      if (!volume.IsMap() || !volume["configMap"]) {
        // A volumeClaimTemplate's claim or other storage of this pod's own.
        c.volumes[mount_path] = absl::StrCat(pod_name, "-", volume_name);
        continue;
      }
      const std::string map_name = volume["configMap"]["name"].as<std::string>();
      auto found = config_maps.find(map_name);
      if (found == config_maps.end()) {
        return absl::NotFoundError(absl::StrCat(
            pod_name, " mounts ConfigMap ", map_name, ", which is not rendered"));
      }
      for (const auto& entry : found->second) {
        c.files[absl::StrCat(mount_path, "/", entry.first.as<std::string>())] =
            entry.second.as<std::string>();
      }
    }
    // A grpc probe is gRPC health checking against the pod's port: what
    // psctl health does.
    for (const char* kind : {"startupProbe", "readinessProbe", "livenessProbe"}) {
      const YAML::Node& probe = spec[kind];
      if (!probe) continue;
      if (!probe["grpc"]) {
        return absl::UnimplementedError(absl::StrCat(
            pod_name, ": the test runs only grpc probes, not this ", kind));
      }
      c.health_checks.push_back(
          {"psctl", "health",
           absl::StrCat("--servers=127.0.0.1:", probe["grpc"]["port"].as<int>()),
           absl::StrCat("--timeout=", probe["timeoutSeconds"].as<int>(1), "s")});
    }
    if (absl::Status added = AddToJob(std::move(c), job); !added.ok()) {
      return added;
    }
  }
  return absl::OkStatus();
}

// The manifests `kubectl kustomize DIR` renders: what `kubectl apply -k`
// would create.
absl::StatusOr<Job> KubernetesJob(const std::string& kustomize_dir) {
  absl::StatusOr<std::string> rendered =
      Capture(absl::StrCat("kubectl kustomize '", kustomize_dir, "'"));
  if (!rendered.ok()) return rendered.status();
  const std::vector<YAML::Node> objects = YAML::LoadAll(*rendered);
  std::map<std::string, YAML::Node> config_maps;
  for (const YAML::Node& object : objects) {
    if (object["kind"].as<std::string>() == "ConfigMap") {
      config_maps[object["metadata"]["name"].as<std::string>()] = object["data"];
    }
  }
  Job job;
  for (const YAML::Node& object : objects) {
    const std::string kind = object["kind"].as<std::string>();
    const std::string name = object["metadata"]["name"].as<std::string>();
    const std::string namespace_name =
        object["metadata"]["namespace"].as<std::string>("default");
    const YAML::Node& spec = object["spec"];
    if (kind == "StatefulSet") {
      // Pod N is named and hostnamed NAME-N; the headless service gives
      // it the DNS name NAME-N.SERVICE (and longer forms).
      const std::string service = spec["serviceName"].as<std::string>();
      for (int i = 0; i < spec["replicas"].as<int>(1); ++i) {
        const std::string pod = absl::StrCat(name, "-", i);
        const std::string dns = absl::StrCat(pod, ".", service);
        std::vector<std::string> dns_names = {
            dns, absl::StrCat(dns, ".", namespace_name),
            absl::StrCat(dns, ".", namespace_name, ".svc"),
            absl::StrCat(dns, ".", namespace_name, ".svc.cluster.local")};
        absl::Status added =
            AddPod(spec["template"]["spec"], pod, pod, dns_names,
                   namespace_name, {}, config_maps, job);
        if (!added.ok()) return added;
      }
    } else if (kind == "Job") {
      // An Indexed Job sets JOB_COMPLETION_INDEX in pod i's containers.
      const bool indexed = spec["completionMode"].as<std::string>("") == "Indexed";
      for (int i = 0; i < spec["completions"].as<int>(1); ++i) {
        std::vector<std::pair<std::string, std::string>> env;
        if (indexed) env.emplace_back("JOB_COMPLETION_INDEX", absl::StrCat(i));
        const std::string pod = absl::StrCat(name, "-", i);
        absl::Status added = AddPod(spec["template"]["spec"], pod, pod, {},
                                    namespace_name, env, config_maps, job);
        if (!added.ok()) return added;
      }
    }
  }
  return job;
}

// --- Running them on loopback -------------------------------------------

int FreeLoopbackPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address = {};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address));
  getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  close(fd);
  return ntohs(address.sin_port);
}

bool IsHostChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' ||
         c == '-' || c == '_';
}

// Maps every host:port a deploy file writes to a loopback address: a
// server's DNS names (from anywhere) and its own wildcard or loopback
// address (from inside it) become 127.0.0.1 and a free port of its own.
class LoopbackNetwork {
 public:
  explicit LoopbackNetwork(const Job& job) {
    for (size_t i = 0; i < job.servers.size(); ++i) {
      for (const std::string& name : job.servers[i].dns_names) {
        if (!name.empty()) server_by_name_[name] = static_cast<int>(i);
      }
    }
  }

  // `self`: the server whose container `text` comes from, or -1. (No
  // std::regex: GCC 12 warns inside <regex> in sanitizer builds.)
  absl::StatusOr<std::string> Rewrite(const std::string& text, int self) {
    std::string result;
    size_t done = 0;
    for (size_t colon = text.find(':'); colon != std::string::npos;
         colon = text.find(':', colon + 1)) {
      size_t host_begin = colon;
      while (host_begin > done && IsHostChar(text[host_begin - 1])) --host_begin;
      size_t port_end = colon + 1;
      while (port_end < text.size() && absl::ascii_isdigit(text[port_end])) {
        ++port_end;
      }
      if (host_begin == colon || port_end == colon + 1) continue;
      const std::string host = text.substr(host_begin, colon - host_begin);
      int server = -1;
      if (auto found = server_by_name_.find(host); found != server_by_name_.end()) {
        server = found->second;
      } else if (host == "0.0.0.0" || host == "127.0.0.1" || host == "localhost") {
        server = self;
      }
      if (server < 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "the address ", text.substr(host_begin, port_end - host_begin),
            " names no server of the deploy file"));
      }
      int& port = ports_[{server, std::stoi(text.substr(colon + 1, port_end - colon - 1))}];
      if (port == 0) port = FreeLoopbackPort();
      absl::StrAppend(&result, text.substr(done, host_begin - done),
                      "127.0.0.1:", port);
      done = port_end;
      colon = port_end - 1;
    }
    result.append(text, done);
    return result;
  }

 private:
  std::map<std::string, int> server_by_name_;
  std::map<std::pair<int, int>, int> ports_;  // (server, its port) → ours
};

// Whether this machine lets us give a process its own hostname.
bool CanSetHostname() {
  absl::StatusOr<std::string> name = Capture(
      "unshare --user --map-root-user --uts /bin/sh -c "
      "'hostname ps-probe-0 && hostname' 2>/dev/null");
  return name.ok() && *name == "ps-probe-0\n";
}

// A deploy file's flag value: its flagfiles first, then its args, the last
// one winning as in absl.
std::string FlagValue(const Container& container, const std::string& flag) {
  std::vector<std::string> flags;
  for (const std::string& arg : container.argv) {
    if (absl::StartsWith(arg, "--flagfile=")) {
      for (absl::string_view path : absl::StrSplit(arg.substr(11), ',')) {
        auto file = container.files.find(std::string(path));
        if (file == container.files.end()) continue;
        for (absl::string_view line : absl::StrSplit(file->second, '\n')) {
          flags.emplace_back(line);
        }
      }
    } else {
      flags.push_back(arg);
    }
  }
  std::string value;
  for (const std::string& line : flags) {
    if (absl::StartsWith(line, absl::StrCat("--", flag, "="))) {
      value = line.substr(flag.size() + 3);
    }
  }
  return value;
}

class JobRunner {
 public:
  JobRunner(Job job, std::string dir)
      : job_(std::move(job)), dir_(std::move(dir)), network_(job_) {}

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
      if (absl::Status healthy = WaitHealthy(i, absl::Seconds(60)); !healthy.ok()) {
        return healthy;
      }
    }
    std::vector<common::Subprocess> workers;
    for (Container& worker : job_.workers) {
      // Appended last, so it overrides the flagfile's --epochs: only to
      // keep the test short.
      launch::WorkerFlags short_run;
      short_run.epochs = 1;
      absl::StatusOr<common::Subprocess> process =
          Start(worker, -1, launch::WorkerArgs(short_run));
      if (!process.ok()) return process.status();
      workers.push_back(std::move(*process));
    }
    const absl::Time give_up = absl::Now() + absl::Seconds(600);
    for (size_t i = 0; i < workers.size(); ++i) {
      const absl::Duration left = std::max(give_up - absl::Now(), absl::ZeroDuration());
      std::optional<int> status = workers[i].WaitFor(left);
      if (!status || !common::ExitedCleanly(*status)) {
        return Failed(job_.workers[i],
                      status ? common::DescribeWaitStatus(*status)
                             : "did not finish in time");
      }
    }
    for (size_t i = 0; i < job_.servers.size(); ++i) {
      if (absl::Status healthy = WaitHealthy(i, absl::Seconds(10)); !healthy.ok()) {
        return healthy;
      }
      const int status = servers_[i].Stop(absl::Seconds(30));
      if (!common::ExitedCleanly(status)) {
        return Failed(job_.servers[i], absl::StrCat(
            common::DescribeWaitStatus(status), " on SIGTERM"));
      }
      // With checkpoints on, SIGTERM leaves one in the mounted volume.
      const Container& c = job_.servers[i];
      const std::string checkpoints = MapVolumes(c, FlagValue(c, "checkpoint_dir"));
      std::error_code error;
      if (!checkpoints.empty() && std::filesystem::is_empty(checkpoints, error)) {
        return Failed(c, absl::StrCat("left no checkpoint in ", checkpoints,
                                      " on SIGTERM"));
      }
    }
    return absl::OkStatus();
  }

 private:
  // The numbers the files must agree on, checked here rather than left to
  // a sync round that would wait for a worker that never comes.
  absl::Status CheckCounts() {
    const std::string servers = absl::StrCat(job_.servers.size());
    const std::string workers = absl::StrCat(job_.workers.size());
    for (const Container& c : job_.servers) {
      if (FlagValue(c, "num_shards") != servers ||
          FlagValue(c, "num_workers") != workers) {
        return absl::InvalidArgumentError(absl::StrCat(
            c.name, " has --num_shards=", FlagValue(c, "num_shards"),
            " --num_workers=", FlagValue(c, "num_workers"), " but the file runs ",
            servers, " servers and ", workers, " workers"));
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

  std::string LogPath(const Container& c) { return absl::StrCat(dir_, "/", c.name, ".log"); }

  absl::Status Failed(const Container& c, const std::string& what) {
    return absl::AbortedError(absl::StrCat(
        c.name, " (", absl::StrJoin(c.argv, " "), ") ", what, "; its log ends:\n",
        LastLines(LogPath(c), 15)));
  }

  // `text` with the container's volume mount paths replaced by our
  // directories standing in for those volumes.
  std::string MapVolumes(const Container& c, const std::string& text) {
    std::vector<std::pair<std::string, std::string>> replacements;
    for (const auto& [mount_path, name] : c.volumes) {
      const std::string dir = absl::StrCat(dir_, "/volumes/", name);
      std::filesystem::create_directories(dir);
      replacements.emplace_back(mount_path, dir);
    }
    return absl::StrReplaceAll(text, replacements);
  }

  // The container's command line with loopback addresses, its flagfiles
  // written (rewritten the same way) where our copies live, and its
  // environment set through env(1).
  absl::StatusOr<common::Subprocess> Start(const Container& c, int self,
                                           const std::vector<std::string>& extra) {
    std::vector<std::string> argv = {"/usr/bin/env"};
    for (const auto& [name, value] : c.env) argv.push_back(absl::StrCat(name, "=", value));
    const std::string ordinal = c.hostname.substr(c.hostname.rfind('-') + 1);
    if (Program(c) == "ps_server" && !c.hostname.empty()) {
      if (set_hostname_) {
        // ps_server reads its shard index from the hostname, as in the pod
        // or the compose container: give it that hostname in a UTS
        // namespace of its own.
        for (const char* arg : {"unshare", "--user", "--map-root-user", "--uts",
                                "/bin/sh", "-c", "hostname \"$0\" && exec \"$@\""}) {
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
        absl::StatusOr<std::string> rewritten = network_.Rewrite(arg, i);
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
        absl::StatusOr<common::Subprocess> probe = common::Subprocess::Spawn(argv, log);
        if (!probe.ok()) return probe.status();
        std::optional<int> status = probe->WaitFor(absl::Seconds(20));
        if (status && common::ExitedCleanly(*status)) break;
        if (absl::Now() > give_up) {
          return absl::DeadlineExceededError(absl::StrCat(
              c.name, ": health check `", absl::StrJoin(argv, " "),
              "` still fails: ", ReadFile(log)));
        }
        absl::SleepFor(absl::Milliseconds(200));
      }
    }
    return absl::OkStatus();
  }

  Job job_;
  std::string dir_;
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

TEST(DeployFiles, AFlagADaemonDoesNotKnowFailsTheLaunchAndIsNamed) {
  absl::StatusOr<Job> job = KubernetesJob(kDeploy + "/k8s");
  ASSERT_TRUE(job.ok()) << job.status();
  // As if the ConfigMap's server.flags had a typo.
  job->servers[0].files["/etc/ps/server.flags"] += "--lerning_rate=0.1\n";
  absl::Status ran = JobRunner(*std::move(job), TempDir("deploy_bad_flag")).Run();
  EXPECT_FALSE(ran.ok());
  EXPECT_THAT(std::string(ran.message()),
              HasSubstr("Unknown command line flag 'lerning_rate'"));
}

}  // namespace
}  // namespace ps
