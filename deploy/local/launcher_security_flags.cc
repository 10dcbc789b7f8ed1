#include "deploy/local/launcher_security_flags.h"

#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "common/cli.h"
#include "common/rpc/client_security_flags.h"

ABSL_FLAG(std::string, server_tls_cert, "",
          "With --server_tls_key and --tls_ca: the certificate (PEM) every "
          "server this program starts serves TLS with; it must name the "
          "address the workers dial (127.0.0.1 on loopback). Empty: "
          "plaintext.");
ABSL_FLAG(std::string, server_tls_key, "",
          "The private key of --server_tls_cert (PEM).");

namespace ps::launch {

JobSecurity JobSecurityFromFlagsOrDie() {
  JobSecurity job;
  job.client = rpc::ClientSecurityFromFlags();
  job.server_tls_cert = absl::GetFlag(FLAGS_server_tls_cert);
  job.server_tls_key = absl::GetFlag(FLAGS_server_tls_key);
  if (job.server_tls_cert.empty() != job.server_tls_key.empty()) {
    common::Die("--server_tls_cert and --server_tls_key go together");
  }
  // Half of TLS would leave every worker unable to reach a server.
  if (job.client.tls_ca.empty() != job.server_tls_cert.empty()) {
    common::Die(
        "--tls_ca and --server_tls_cert go together: the servers serve TLS "
        "with --server_tls_cert and --server_tls_key, and the workers check "
        "them against --tls_ca");
  }
  common::DieIfError(InstallClientSecurity(job.client), "cannot set up TLS");
  common::DieIfError(rpc::MakeServerCredentials(ServerSecurityOf(job)).status(),
                     "the servers' credentials (--server_tls_cert, "
                     "--server_tls_key)");
  return job;
}

rpc::ServerSecurity ServerSecurityOf(const JobSecurity& job) {
  return {job.server_tls_cert, job.server_tls_key, ServersClientCa(job),
          job.client.auth_token_file};
}

std::vector<std::string> JobSecurityArgs(const JobSecurity& job) {
  std::vector<std::string> args;
  for (const auto& [name, value] :
       {std::pair<const char*, const std::string&>{"tls_ca", job.client.tls_ca},
        {"tls_cert", job.client.tls_cert},
        {"tls_key", job.client.tls_key},
        {"auth_token_file", job.client.auth_token_file},
        {"server_tls_cert", job.server_tls_cert},
        {"server_tls_key", job.server_tls_key}}) {
    if (!value.empty()) args.push_back(absl::StrCat("--", name, "=", value));
  }
  return args;
}

}  // namespace ps::launch
