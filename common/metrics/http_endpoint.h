#ifndef PS_COMMON_METRICS_HTTP_ENDPOINT_H_
#define PS_COMMON_METRICS_HTTP_ENDPOINT_H_

// The daemon's edge for metrics: GET /metrics serves a Registry's Render()
// over HTTP (cpp-httplib), on one thread of its own.

#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "common/metrics/registry.h"

namespace httplib {
class Server;
}

namespace ps::common::metrics {

struct HostPort {
  std::string host;
  int port = 0;
};

// "HOST:PORT" (or "[v6]:PORT"), port 0 to 65535. INVALID_ARGUMENT, saying
// what is wrong, for anything else.
absl::StatusOr<HostPort> ParseListenAddress(const std::string& address);

class MetricsEndpoint {
 public:
  // Binds `listen` ("HOST:PORT"; port 0 picks a free one) and serves
  // `registry`, which must outlive the endpoint. INVALID_ARGUMENT for a
  // malformed address, UNAVAILABLE when it cannot be bound (in use, not
  // local).
  static absl::StatusOr<std::unique_ptr<MetricsEndpoint>> Start(
      const std::string& listen, const Registry* registry);

  // Stops serving: the listening socket closes and the thread ends.
  ~MetricsEndpoint();
  MetricsEndpoint(const MetricsEndpoint&) = delete;
  MetricsEndpoint& operator=(const MetricsEndpoint&) = delete;

  // The bound port (the one picked, for port 0).
  int port() const { return port_; }

 private:
  MetricsEndpoint() = default;

  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace ps::common::metrics

#endif  // PS_COMMON_METRICS_HTTP_ENDPOINT_H_
