#include "deploy/local/deploy_files.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <optional>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "common/cli.h"
#include "common/subprocess.h"
#include "yaml-cpp/yaml.h"

namespace ps::launch {
namespace {

ABSL_CONST_INIT absl::Mutex port_cursor_mutex(absl::kConstInit);
int port_cursor ABSL_GUARDED_BY(port_cursor_mutex) = 0;

// Whether a listener could bind 127.0.0.1:port now.
bool LoopbackPortFree(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  sockaddr_in address = {};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(port);
  const bool bound =
      bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0;
  close(fd);
  return bound;
}

absl::Status AddToJob(Container container, DeployJob& job) {
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

// The pod's volume called `name`; not a map when there is none (a claim
// from the StatefulSet's volumeClaimTemplates).
YAML::Node FindVolume(const YAML::Node& pod_spec, const std::string& name) {
  for (const YAML::Node& volume : pod_spec["volumes"]) {
    if (volume["name"].as<std::string>() == name) return volume;
  }
  return YAML::Node();
}

// The containers of one pod. Kubernetes expands $(VAR) in command and args
// from the container's env, some of it from the downward API (a
// StatefulSet's pod also has its ordinal as the label
// apps.kubernetes.io/pod-index: `pod_index`).
absl::Status AddPod(const YAML::Node& pod_spec, const std::string& pod_name,
                    const std::string& hostname,
                    const std::vector<std::string>& dns_names,
                    const std::string& namespace_name,
                    std::vector<std::pair<std::string, std::string>> env,
                    const std::map<std::string, YAML::Node>& config_maps,
                    DeployJob& job, std::optional<int> pod_index = {}) {
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
      } else if (field == "metadata.labels['apps.kubernetes.io/pod-index']" &&
                 pod_index.has_value()) {
        c.env.emplace_back(name, absl::StrCat(*pod_index));
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
          value = absl::StrReplaceAll(
              value, {{absl::StrCat("$(", name, ")"), variable_value}});
        }
        c.argv.push_back(value);
      }
    }
    for (const YAML::Node& mount : spec["volumeMounts"]) {
      const std::string mount_path = mount["mountPath"].as<std::string>();
      const std::string volume_name = mount["name"].as<std::string>();
      const YAML::Node volume = FindVolume(pod_spec, volume_name);
      if (volume.IsMap() && volume["secret"]) {
        c.secrets[mount_path] =
            volume["secret"]["secretName"].as<std::string>();
        continue;
      }
      if (!volume.IsMap() || !volume["configMap"]) {
        // A volumeClaimTemplate's claim or other storage of this pod's own.
        c.volumes[mount_path] = absl::StrCat(pod_name, "-", volume_name);
        continue;
      }
      const std::string map_name =
          volume["configMap"]["name"].as<std::string>();
      auto found = config_maps.find(map_name);
      if (found == config_maps.end()) {
        return absl::NotFoundError(absl::StrCat(pod_name, " mounts ConfigMap ",
                                                map_name,
                                                ", which is not rendered"));
      }
      for (const auto& entry : found->second) {
        c.files[absl::StrCat(mount_path, "/", entry.first.as<std::string>())] =
            entry.second.as<std::string>();
      }
    }
    // A grpc probe is gRPC health checking against the pod's port: what
    // psctl health does. An exec probe runs its command.
    for (const char* kind :
         {"startupProbe", "readinessProbe", "livenessProbe"}) {
      const YAML::Node& probe = spec[kind];
      if (!probe) continue;
      if (probe["exec"]) {
        c.health_checks.push_back(
            probe["exec"]["command"].as<std::vector<std::string>>());
        continue;
      }
      if (!probe["grpc"]) {
        return absl::UnimplementedError(absl::StrCat(
            pod_name, ": the test runs only grpc and exec probes, not this ",
            kind));
      }
      c.health_checks.push_back(
          {"psctl", "health",
           absl::StrCat("--servers=127.0.0.1:",
                        probe["grpc"]["port"].as<int>()),
           absl::StrCat("--timeout=", probe["timeoutSeconds"].as<int>(1),
                        "s")});
    }
    if (absl::Status added = AddToJob(std::move(c), job); !added.ok()) {
      return added;
    }
  }
  return absl::OkStatus();
}

bool IsHostChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' ||
         c == '-' || c == '_';
}

}  // namespace

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

std::string Program(const Container& container) {
  const std::string& path = container.argv.empty() ? "" : container.argv[0];
  return path.substr(path.rfind('/') + 1);
}

absl::StatusOr<DeployJob> ComposeJob(
    const std::string& compose_file,
    const std::vector<std::string>& overrides) {
  std::string files = absl::StrCat("-f '", compose_file, "'");
  for (const std::string& file : overrides) {
    absl::StrAppend(&files, " -f '", file, "'");
  }
  absl::StatusOr<std::string> config =
      Capture(absl::StrCat("docker-compose ", files, " config"));
  if (!config.ok()) return config.status();
  const YAML::Node resolved = YAML::Load(*config);
  DeployJob job;
  for (const auto& service : resolved["services"]) {
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
        c.files[target] = common::ReadWholeFile(source).value_or(
            "");  // a bind-mounted flagfile
      } else if (!source.empty()) {
        c.volumes[target] = source;  // a named volume
      }
    }
    // Compose mounts a secret's file at /run/secrets/TARGET (TARGET
    // defaults to the secret's name).
    for (const auto& secret : spec["secrets"]) {
      const std::string name = secret["source"].as<std::string>();
      const std::string file =
          resolved["secrets"][name]["file"].as<std::string>("");
      if (file.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat(c.name, ": secret ", name, " has no file"));
      }
      c.secrets[absl::StrCat("/run/secrets/",
                             secret["target"].as<std::string>(name))] =
          file.substr(file.rfind('/') + 1);
    }
    const YAML::Node& health = spec["healthcheck"];
    if (health && !health["disable"].as<bool>(false) && health["test"]) {
      std::vector<std::string> test =
          health["test"].as<std::vector<std::string>>();
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

absl::StatusOr<DeployJob> KubernetesJob(const std::string& kustomize_dir) {
  absl::StatusOr<std::string> rendered =
      Capture(absl::StrCat("kubectl kustomize '", kustomize_dir, "'"));
  if (!rendered.ok()) return rendered.status();
  const std::vector<YAML::Node> objects = YAML::LoadAll(*rendered);
  std::map<std::string, YAML::Node> config_maps;
  for (const YAML::Node& object : objects) {
    if (object["kind"].as<std::string>() == "ConfigMap") {
      config_maps[object["metadata"]["name"].as<std::string>()] =
          object["data"];
    }
  }
  DeployJob job;
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
                   namespace_name, {}, config_maps, job, i);
        if (!added.ok()) return added;
      }
    } else if (kind == "Job") {
      // An Indexed Job sets JOB_COMPLETION_INDEX in pod i's containers.
      const bool indexed =
          spec["completionMode"].as<std::string>("") == "Indexed";
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

int FreeLoopbackPorts(int count) {
  // Below the kernel's ephemeral range (32768 up): bind(0) and every
  // outgoing connection of a busy machine take ports from there, and one of
  // them took a port we had picked before its daemon bound it. A cursor
  // from a start of this process's own, so it never hands a port out twice.
  constexpr int kFirst = 20000;
  constexpr int kEnd = 32768;
  absl::MutexLock lock(&port_cursor_mutex);
  if (port_cursor == 0) {
    port_cursor = kFirst + static_cast<int>(
                               (static_cast<uint32_t>(getpid()) * 2654435761u) %
                               (kEnd - kFirst));
  }
  for (int tried = 0; tried < kEnd - kFirst; tried += count) {
    if (port_cursor + count > kEnd) port_cursor = kFirst;
    const int first = port_cursor;
    port_cursor += count;
    bool all_free = true;
    for (int port = first; all_free && port < first + count; ++port) {
      all_free = LoopbackPortFree(port);
    }
    if (all_free) return first;
  }
  return 0;
}

LoopbackNetwork::LoopbackNetwork(const DeployJob& job) {
  for (size_t i = 0; i < job.servers.size(); ++i) {
    for (const std::string& name : job.servers[i].dns_names) {
      if (!name.empty()) server_by_name_[name] = static_cast<int>(i);
    }
  }
}

absl::StatusOr<std::string> LoopbackNetwork::Rewrite(const std::string& text,
                                                     int self) {
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
    if (auto found = server_by_name_.find(host);
        found != server_by_name_.end()) {
      server = found->second;
    } else if (host == "0.0.0.0" || host == "127.0.0.1" ||
               host == "localhost") {
      server = self;
    }
    if (server < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the address ", text.substr(host_begin, port_end - host_begin),
          " names no server of the deploy file"));
    }
    int& port = ports_[{
        server, std::stoi(text.substr(colon + 1, port_end - colon - 1))}];
    if (port == 0) port = FreeLoopbackPorts(1);
    if (port == 0) {
      return absl::ResourceExhaustedError(
          "no free loopback port below the ephemeral range");
    }
    absl::StrAppend(&result, text.substr(done, host_begin - done),
                    "127.0.0.1:", port);
    done = port_end;
    colon = port_end - 1;
  }
  result.append(text, done);
  return result;
}

}  // namespace ps::launch
