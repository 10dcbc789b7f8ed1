#include "common/metrics/http_endpoint.h"

#include <httplib.h>
#include <sys/socket.h>

#include <atomic>
#include <memory>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace ps::common::metrics {
namespace {

// Prometheus's text format, the version promtool and every scraper accept.
constexpr char kContentType[] = "text/plain; version=0.0.4; charset=utf-8";

}  // namespace

absl::StatusOr<HostPort> ParseListenAddress(const std::string& address) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", address, "' has no port: give HOST:PORT"));
  }
  HostPort parsed;
  parsed.host = address.substr(0, colon);
  if (parsed.host.size() >= 2 && parsed.host.front() == '[' &&
      parsed.host.back() == ']') {
    parsed.host = parsed.host.substr(1, parsed.host.size() - 2);
  }
  if (parsed.host.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "'", address, "' has no host: give HOST:PORT, e.g. 0.0.0.0:9100"));
  }
  const std::string port = address.substr(colon + 1);
  if (!absl::SimpleAtoi(port, &parsed.port) || parsed.port < 0 ||
      parsed.port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        "'", address, "': port '", port, "' is not a number from 0 to 65535"));
  }
  return parsed;
}

absl::StatusOr<std::unique_ptr<MetricsEndpoint>> MetricsEndpoint::Start(
    const std::string& listen, const Registry* registry) {
  absl::StatusOr<HostPort> address = ParseListenAddress(listen);
  if (!address.ok()) return address.status();
  std::unique_ptr<MetricsEndpoint> endpoint(new MetricsEndpoint);
  endpoint->server_ = std::make_unique<httplib::Server>();
  httplib::Server& server = *endpoint->server_;
  // Scrapes are rare and small: one thread, not httplib's pool of eight.
  server.new_task_queue = [] { return new httplib::ThreadPool(1); };
  // httplib's default adds SO_REUSEPORT, which lets a second daemon bind a
  // port in use and take half its scrapes: refuse it instead.
  server.set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  server.Get("/metrics",
             [registry](const httplib::Request&, httplib::Response& response) {
               response.set_content(registry->Render(), kContentType);
             });
  if (address->port == 0) {
    endpoint->port_ = server.bind_to_any_port(address->host);
  } else if (server.bind_to_port(address->host, address->port)) {
    endpoint->port_ = address->port;
  }
  if (endpoint->port_ <= 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", listen,
                     ": the address is not local or the port is in use"));
  }
  auto listening_ended = std::make_shared<std::atomic<bool>>(false);
  endpoint->thread_ = std::thread([&server, listening_ended] {
    server.listen_after_bind();
    listening_ended->store(true);
  });
  // httplib's stop() does nothing before the loop runs, so a destructor
  // right after Start would wait forever: return once it runs.
  while (!server.is_running() && !listening_ended->load()) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  return endpoint;
}

MetricsEndpoint::~MetricsEndpoint() {
  if (server_ != nullptr) server_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace ps::common::metrics
