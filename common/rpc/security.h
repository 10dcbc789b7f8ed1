#ifndef PS_COMMON_RPC_SECURITY_H_
#define PS_COMMON_RPC_SECURITY_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/rpc/security_options.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"

// TLS, client certificates and bearer tokens on every channel. A token is
// only ever sent over TLS: in plaintext anyone on the path could read it and
// push into θ with it (gRPC itself refuses call credentials without TLS).
namespace ps::rpc {

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
