#include "common/rpc/client_security_flags.h"

#include <string>

#include "absl/flags/flag.h"
#include "common/cli.h"
#include "common/rpc/security.h"

ABSL_FLAG(std::string, tls_ca, "",
          "PEM file of the CA that signed the servers' certificates: talk "
          "TLS to them. Empty: plaintext.");
ABSL_FLAG(std::string, tls_cert, "",
          "With --tls_key: this client's certificate (PEM), for servers "
          "that require one (--tls_client_ca).");
ABSL_FLAG(std::string, tls_key, "", "The private key of --tls_cert (PEM).");
ABSL_FLAG(std::string, auth_token_file, "",
          "A file holding the servers' token, sent on every call as "
          "'authorization: Bearer …' (needs --tls_ca).");

namespace ps::rpc {

ClientSecurity ClientSecurityFromFlags() {
  return {absl::GetFlag(FLAGS_tls_ca), absl::GetFlag(FLAGS_tls_cert),
          absl::GetFlag(FLAGS_tls_key), absl::GetFlag(FLAGS_auth_token_file)};
}

void InstallClientSecurityFromFlags() {
  common::DieIfError(InstallClientSecurity(ClientSecurityFromFlags()),
                     "cannot set up TLS");
}

}  // namespace ps::rpc
