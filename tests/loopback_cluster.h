#ifndef PS_TESTS_LOOPBACK_CLUSTER_H_
#define PS_TESTS_LOOPBACK_CLUSTER_H_

// Real servers in the test's own process, on loopback ports the system
// picks, stopped when the Cluster goes.
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "server/ps_server.h"
#include "worker/parameter_client.h"

namespace ps::test_support {

struct Cluster {
  std::vector<std::unique_ptr<server::PsServer>> servers;
  std::vector<std::string> addresses;
};

// `shards` servers expecting `workers` workers; `configure` adjusts each
// server's shard options beyond these.
inline Cluster StartCluster(
    uint32_t shards, uint32_t workers, server::ConsistencyMode mode,
    common::UpdateOptions update = {}, absl::Duration lease = absl::Seconds(5),
    const std::function<void(server::ShardOptions&)>& configure = nullptr) {
  Cluster cluster;
  for (uint32_t i = 0; i < shards; ++i) {
    server::ServerOptions options;
    options.listen = "127.0.0.1:0";
    options.shard.shard_index = i;
    options.shard.num_shards = shards;
    options.shard.num_workers = workers;
    options.shard.max_workers = workers;
    options.shard.mode = mode;
    options.shard.update = update;
    options.shard.lease_timeout = lease;
    if (configure) configure(options.shard);
    auto server = server::PsServer::Start(options);
    EXPECT_TRUE(server.ok()) << server.status();
    cluster.addresses.push_back(absl::StrCat("127.0.0.1:", (*server)->port()));
    cluster.servers.push_back(std::move(*server));
  }
  return cluster;
}

inline worker::ClientOptions ClientFor(const Cluster& cluster,
                                       uint32_t worker) {
  worker::ClientOptions options;
  options.servers = cluster.addresses;
  options.worker_id = worker;
  options.retry.rpc_deadline = absl::Seconds(20);
  options.retry.max_retry_time = absl::Seconds(30);
  return options;
}

}  // namespace ps::test_support

#endif  // PS_TESTS_LOOPBACK_CLUSTER_H_
