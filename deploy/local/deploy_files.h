#ifndef PS_DEPLOY_LOCAL_DEPLOY_FILES_H_
#define PS_DEPLOY_LOCAL_DEPLOY_FILES_H_

// What the deploy files would run (deploy/compose, deploy/k8s), read as
// `docker-compose config` and `kubectl kustomize` render them, and how to
// run it on loopback: deploy_launch_test starts every container's daemon
// with exactly these command lines.
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace ps::launch {

// One container of a deploy file, as it would run.
struct Container {
  std::string name;                    // service or pod name, "ps-server-1"
  std::string hostname;                // what gethostname() says inside it
  std::vector<std::string> dns_names;  // how other containers reach it
  std::vector<std::string> argv;       // command and args, as written
  std::vector<std::pair<std::string, std::string>> env;
  std::map<std::string, std::string> files;  // mount path → contents
  // Storage mounted for output (checkpoints): mount path → storage name.
  // Containers that mount the same name share it.
  std::map<std::string, std::string> volumes;
  // Secrets mounted: mount path → a Kubernetes Secret's name (a directory
  // of its keys) or a compose secret's file name ("ca.crt").
  std::map<std::string, std::string> secrets;
  std::vector<std::vector<std::string>> health_checks;  // run inside it
};

// The daemons a deploy file defines.
struct DeployJob {
  std::vector<Container> servers;
  std::vector<Container> workers;
};

// The program a container runs, without its directory: "ps_server".
std::string Program(const Container& container);

// The compose file, with `overrides` merged over it in order, as
// `docker-compose config` resolves them (anchors merged, paths absolute):
// what compose would really run.
absl::StatusOr<DeployJob> ComposeJob(
    const std::string& compose_file,
    const std::vector<std::string>& overrides = {});

// The manifests `kubectl kustomize DIR` renders: what `kubectl apply -k`
// would create.
absl::StatusOr<DeployJob> KubernetesJob(const std::string& kustomize_dir);

// A deploy file's flag value: its flagfiles first, then its args, the last
// one winning as in absl. Empty when it is not set.
std::string FlagValue(const Container& container, const std::string& flag);

// Runs a shell command and returns its stdout; stderr goes to the caller's.
absl::StatusOr<std::string> Capture(const std::string& command);

// The first of `count` consecutive TCP ports of 127.0.0.1 that were free a
// moment ago, from below the kernel's ephemeral range so that no outgoing
// connection takes one before its daemon binds it; 0 when none are.
int FreeLoopbackPorts(int count);

// Maps every host:port a deploy file writes to a loopback address: a
// server's DNS names (from anywhere) and its own wildcard or loopback
// address (from inside it) become 127.0.0.1 and a free port of its own.
class LoopbackNetwork {
 public:
  explicit LoopbackNetwork(const DeployJob& job);

  // `text` with every host:port mapped; `self`: the container `text` comes
  // from (servers by index, then the workers; its own wildcard or loopback
  // addresses get ports of their own), or -1. An error names an address of
  // no server.
  absl::StatusOr<std::string> Rewrite(const std::string& text, int self);

 private:
  std::map<std::string, int> server_by_name_;
  std::map<std::pair<int, int>, int> ports_;  // (server, its port) → ours
};

}  // namespace ps::launch

#endif  // PS_DEPLOY_LOCAL_DEPLOY_FILES_H_
