#ifndef PS_COMMON_RPC_SECURITY_OPTIONS_H_
#define PS_COMMON_RPC_SECURITY_OPTIONS_H_

// The files TLS and tokens are made from, as plain structs without gRPC, so
// code that only passes them on (the launchers' command lines) needs no
// gRPC headers. common/rpc/security.h turns them into credentials.
#include <string>

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

}  // namespace ps::rpc

#endif  // PS_COMMON_RPC_SECURITY_OPTIONS_H_
