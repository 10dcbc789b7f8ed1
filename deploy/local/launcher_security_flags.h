#ifndef PS_DEPLOY_LOCAL_LAUNCHER_SECURITY_FLAGS_H_
#define PS_DEPLOY_LOCAL_LAUNCHER_SECURITY_FLAGS_H_

// --server_tls_cert --server_tls_key, defined once for the programs that
// start servers (ps_local, ps_chaos, ps_bench; a binary linking this file
// has them). With the client flags of common/rpc/client_security_flags.h
// (--tls_ca --tls_cert --tls_key --auth_token_file) they are the job's
// credentials: the servers get the servers' side, the workers and the
// launcher's own calls the clients' side.
#include "common/rpc/security.h"
#include "deploy/local/daemon_flags.h"

namespace ps::launch {

// The job's credentials those flags name, checked now (pairs complete,
// files readable, TLS on both sides or on neither) and installed for this
// program's own channels; a bad flag or file Dies with one line naming it.
JobSecurity JobSecurityFromFlagsOrDie();

// What the servers of `job` get, as ps_server's flags would give it.
rpc::ServerSecurity ServerSecurityOf(const JobSecurity& job);

// The flags that give another run of this program (ps_bench's echo server)
// the same credentials.
std::vector<std::string> JobSecurityArgs(const JobSecurity& job);

}  // namespace ps::launch

#endif  // PS_DEPLOY_LOCAL_LAUNCHER_SECURITY_FLAGS_H_
