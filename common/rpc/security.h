#ifndef PS_COMMON_RPC_SECURITY_H_
#define PS_COMMON_RPC_SECURITY_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"

// TLS, client certificates and bearer tokens on every channel. A token is
// only ever sent over TLS: in plaintext anyone on the path could read it and
// push into θ with it (gRPC itself refuses call credentials without TLS).
namespace ps::rpc {

// What a server's --tls_cert --tls_key --tls_client_ca --auth_token_file
// name (PEM files; a file holding the token). All empty: plaintext, open.
struct ServerSecurity {
  std::string tls_cert;
  std::string tls_key;
  std::string tls_client_ca;    // set: clients must show a cert it signed
  std::string auth_token_file;  // set: every call but health needs the token
};

// What a client's --tls_ca --tls_cert --tls_key --auth_token_file name.
// tls_ca set: TLS, the server's certificate checked against it.
struct ClientSecurity {
  std::string tls_ca;
  std::string tls_cert;  // with tls_key: this client's certificate
  std::string tls_key;
  std::string auth_token_file;
};

// The credentials `security` asks for, its files read and checked now;
// errors name the flag and the file. Insecure when all is empty.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const ServerSecurity& security);

// Makes every channel CreateChannel opens from now on use `security`;
// errors as for MakeServerCredentials. Called once, at start-up.
absl::Status InstallClientSecurity(const ClientSecurity& security);

// The installed client credentials (insecure when none were installed).
std::shared_ptr<grpc::ChannelCredentials> ClientCredentials();

// Whether `given` equals `expected`, in time that depends on the length of
// `expected` only, so a caller cannot guess a token byte by byte.
bool ConstantTimeEquals(const std::string& given, const std::string& expected);

// The token in `path`: its contents without a trailing newline; an empty or
// unreadable file is an error naming `flag`.
absl::StatusOr<std::string> ReadToken(const std::string& path,
                                      const std::string& flag);

}  // namespace ps::rpc

#endif  // PS_COMMON_RPC_SECURITY_H_
