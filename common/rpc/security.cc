#include "common/rpc/security.h"

#include <map>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "common/cli.h"
#include "grpcpp/security/auth_metadata_processor.h"

namespace ps::rpc {
namespace {

// The contents of `path`, which --`flag` named.
absl::StatusOr<std::string> ReadFlagFile(const std::string& path,
                                         const std::string& flag) {
  std::optional<std::string> contents = common::ReadWholeFile(path);
  if (!contents) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, "=", path, ": cannot read the file"));
  }
  return *std::move(contents);
}

absl::StatusOr<std::string> ReadPem(const std::string& path,
                                    const std::string& flag) {
  absl::StatusOr<std::string> pem = ReadFlagFile(path, flag);
  if (pem.ok() && !absl::StrContains(*pem, "-----BEGIN ")) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--", flag, "=", path, ": not a PEM file (no -----BEGIN line)"));
  }
  return pem;
}

constexpr char kBearer[] = "Bearer ";

// Checks the authorization metadata of every call but gRPC's health checks
// (Kubernetes and load balancers probe without credentials).
class TokenChecker final : public grpc::AuthMetadataProcessor {
 public:
  explicit TokenChecker(std::string token)
      : expected_(absl::StrCat(kBearer, token)) {}

  // The check is a comparison: run it on gRPC's thread.
  bool IsBlocking() const override { return false; }

  grpc::Status Process(const InputMetadata& metadata,
                       grpc::AuthContext* /*context*/, OutputMetadata* consumed,
                       OutputMetadata* /*response*/) override {
    if (auto path = metadata.find(":path");
        path != metadata.end() &&
        absl::StartsWith(
            absl::string_view(path->second.data(), path->second.size()),
            "/grpc.health.v1.Health/")) {
      return grpc::Status::OK;
    }
    auto given = metadata.find("authorization");
    if (given == metadata.end()) {
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                          "this server needs a token: give the client "
                          "--auth_token_file (authorization: Bearer …)");
    }
    const std::string value(given->second.data(), given->second.size());
    if (!ConstantTimeEquals(value, expected_)) {
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                          "the token does not match the server's "
                          "--auth_token_file");
    }
    consumed->insert({"authorization", value});
    return grpc::Status::OK;
  }

 private:
  const std::string expected_;
};

// Adds the bearer token to every call.
class TokenPlugin final : public grpc::MetadataCredentialsPlugin {
 public:
  explicit TokenPlugin(std::string token)
      : header_(absl::StrCat(kBearer, token)) {}

  bool IsBlocking() const override { return false; }

  grpc::Status GetMetadata(
      grpc::string_ref /*service_url*/, grpc::string_ref /*method_name*/,
      const grpc::AuthContext& /*channel_auth_context*/,
      std::multimap<grpc::string, grpc::string>* metadata) override {
    metadata->insert({"authorization", header_});
    return grpc::Status::OK;
  }

 private:
  const std::string header_;
};

absl::Mutex installed_mutex(absl::kConstInit);
std::shared_ptr<grpc::ChannelCredentials>* installed
    ABSL_GUARDED_BY(installed_mutex) = nullptr;

// A certificate needs its key and a key its certificate.
absl::Status CheckPair(const std::string& cert, const std::string& key,
                       const std::string& cert_flag,
                       const std::string& key_flag) {
  if (cert.empty() != key.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", cert_flag, " and --", key_flag, " go together"));
  }
  return absl::OkStatus();
}

}  // namespace

bool ConstantTimeEquals(const std::string& given, const std::string& expected) {
  unsigned char difference = given.size() == expected.size() ? 0 : 1;
  for (size_t i = 0; i < expected.size(); ++i) {
    const char other = i < given.size() ? given[i] : 0;
    difference |= static_cast<unsigned char>(other ^ expected[i]);
  }
  return difference == 0;
}

absl::StatusOr<std::string> ReadToken(const std::string& path,
                                      const std::string& flag) {
  absl::StatusOr<std::string> contents = ReadFlagFile(path, flag);
  if (!contents.ok()) return contents.status();
  std::string token(absl::StripTrailingAsciiWhitespace(*contents));
  if (token.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, "=", path, ": the file holds no token"));
  }
  for (char c : token) {
    // Metadata values are printable ASCII (HTTP/2 header rules).
    if (c < 0x20 || c > 0x7e) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", flag, "=", path,
                       ": the token must be printable ASCII on one line"));
    }
  }
  return token;
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const ServerSecurity& security) {
  if (absl::Status pair =
          CheckPair(security.tls_cert, security.tls_key, "tls_cert", "tls_key");
      !pair.ok()) {
    return pair;
  }
  if (security.tls_cert.empty()) {
    if (!security.tls_client_ca.empty() || !security.auth_token_file.empty()) {
      return absl::InvalidArgumentError(
          "--tls_client_ca and --auth_token_file need TLS: give --tls_cert "
          "and --tls_key too (a token sent in plaintext can be read and "
          "replayed by anyone on the path)");
    }
    return grpc::InsecureServerCredentials();
  }
  absl::StatusOr<std::string> cert = ReadPem(security.tls_cert, "tls_cert");
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key = ReadPem(security.tls_key, "tls_key");
  if (!key.ok()) return key.status();
  grpc::SslServerCredentialsOptions options(
      GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  options.pem_key_cert_pairs.push_back({*key, *cert});
  if (!security.tls_client_ca.empty()) {
    absl::StatusOr<std::string> ca =
        ReadPem(security.tls_client_ca, "tls_client_ca");
    if (!ca.ok()) return ca.status();
    options.pem_root_certs = *ca;
    options.client_certificate_request =
        GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  std::shared_ptr<grpc::ServerCredentials> credentials =
      grpc::SslServerCredentials(options);
  if (!security.auth_token_file.empty()) {
    absl::StatusOr<std::string> token =
        ReadToken(security.auth_token_file, "auth_token_file");
    if (!token.ok()) return token.status();
    credentials->SetAuthMetadataProcessor(
        std::make_shared<TokenChecker>(*token));
  }
  return credentials;
}

absl::Status InstallClientSecurity(const ClientSecurity& security) {
  if (absl::Status pair =
          CheckPair(security.tls_cert, security.tls_key, "tls_cert", "tls_key");
      !pair.ok()) {
    return pair;
  }
  if (security.tls_ca.empty()) {
    if (!security.tls_cert.empty() || !security.auth_token_file.empty()) {
      return absl::InvalidArgumentError(
          "--tls_cert and --auth_token_file need TLS: give --tls_ca (the CA "
          "that signed the servers' certificates) too");
    }
    return absl::OkStatus();
  }
  grpc::SslCredentialsOptions options;
  absl::StatusOr<std::string> ca = ReadPem(security.tls_ca, "tls_ca");
  if (!ca.ok()) return ca.status();
  options.pem_root_certs = *ca;
  if (!security.tls_cert.empty()) {
    absl::StatusOr<std::string> cert = ReadPem(security.tls_cert, "tls_cert");
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = ReadPem(security.tls_key, "tls_key");
    if (!key.ok()) return key.status();
    options.pem_cert_chain = *cert;
    options.pem_private_key = *key;
  }
  std::shared_ptr<grpc::ChannelCredentials> credentials =
      grpc::SslCredentials(options);
  if (!security.auth_token_file.empty()) {
    absl::StatusOr<std::string> token =
        ReadToken(security.auth_token_file, "auth_token_file");
    if (!token.ok()) return token.status();
    credentials = grpc::CompositeChannelCredentials(
        credentials, grpc::MetadataCredentialsFromPlugin(
                         std::make_unique<TokenPlugin>(*token)));
  }
  absl::MutexLock lock(&installed_mutex);
  delete installed;
  installed = new std::shared_ptr<grpc::ChannelCredentials>(credentials);
  return absl::OkStatus();
}

std::shared_ptr<grpc::ChannelCredentials> ClientCredentials() {
  absl::MutexLock lock(&installed_mutex);
  if (installed == nullptr) return grpc::InsecureChannelCredentials();
  return *installed;
}

}  // namespace ps::rpc
