#ifndef PS_COMMON_RPC_CLIENT_SECURITY_FLAGS_H_
#define PS_COMMON_RPC_CLIENT_SECURITY_FLAGS_H_

// --tls_ca --tls_cert --tls_key --auth_token_file, defined once for every
// program that talks to the servers (a binary linking this file has them).
#include "common/rpc/security.h"

namespace ps::rpc {

// What those flags say, unchecked (launchers hand them on to workers).
ClientSecurity ClientSecurityFromFlags();

// Installs what those flags name for every channel CreateChannel opens
// (security.h); a bad flag or file Dies with one line naming it.
void InstallClientSecurityFromFlags();

}  // namespace ps::rpc

#endif  // PS_COMMON_RPC_CLIENT_SECURITY_FLAGS_H_
