#include "common/error_info.h"

#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace ps::common {
namespace {

// Each field is one absl::Status payload under its own key, so the values
// need no encoding of their own.
constexpr absl::string_view kPayloadPrefix = "ps.common/ErrorInfo/";
constexpr absl::string_view kReasonKey = "ps.common/ErrorInfo/reason";
constexpr absl::string_view kDomainKey = "ps.common/ErrorInfo/domain";
constexpr absl::string_view kMetadataPrefix = "ps.common/ErrorInfo/metadata/";

}  // namespace

absl::Status WithErrorInfo(absl::Status status, const ErrorInfo& info) {
  std::vector<std::string> old_keys;
  status.ForEachPayload([&](absl::string_view key, const absl::Cord&) {
    if (absl::StartsWith(key, kPayloadPrefix)) old_keys.emplace_back(key);
  });
  for (const std::string& key : old_keys) status.ErasePayload(key);
  status.SetPayload(kReasonKey, absl::Cord(info.reason));
  status.SetPayload(kDomainKey, absl::Cord(info.domain));
  for (const auto& [key, value] : info.metadata) {
    status.SetPayload(absl::StrCat(kMetadataPrefix, key), absl::Cord(value));
  }
  return status;
}

std::optional<ErrorInfo> GetErrorInfo(const absl::Status& status) {
  const auto reason = status.GetPayload(kReasonKey);
  if (!reason.has_value()) return std::nullopt;
  ErrorInfo info;
  info.reason = std::string(*reason);
  info.domain =
      std::string(status.GetPayload(kDomainKey).value_or(absl::Cord()));
  status.ForEachPayload([&](absl::string_view key, const absl::Cord& value) {
    if (absl::ConsumePrefix(&key, kMetadataPrefix)) {
      info.metadata[std::string(key)] = std::string(value);
    }
  });
  return info;
}

bool HasErrorReason(const absl::Status& status, absl::string_view reason) {
  std::optional<ErrorInfo> info = GetErrorInfo(status);
  return info.has_value() && info->domain == kErrorDomain &&
         info->reason == reason;
}

absl::Status RegistrationRequiredError(
    absl::string_view message, std::map<std::string, std::string> metadata) {
  return WithErrorInfo(
      absl::FailedPreconditionError(message),
      ErrorInfo{kRegistrationRequired, kErrorDomain, std::move(metadata)});
}

}  // namespace ps::common
