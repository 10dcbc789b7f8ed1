#include "server/replication/vote_store.h"

#include <filesystem>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/cli.h"

namespace ps::server {

absl::StatusOr<VoteStore> VoteStore::Open(const std::string& dir,
                                          uint32_t replica_index) {
  std::error_code error;
  if (!std::filesystem::is_directory(dir, error)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--replica_state_dir=", dir,
                     " is not a directory; create it (each replica keeps its "
                     "vote there across restarts)"));
  }
  std::string path = absl::StrCat(dir, "/replica-", replica_index, ".vote");
  if (!std::filesystem::exists(path, error)) {
    return VoteStore(std::move(path), VoterState{});
  }
  const std::optional<std::string> contents = common::ReadWholeFile(path);
  std::vector<std::string> fields;
  if (contents.has_value()) {
    fields = absl::StrSplit(absl::StripAsciiWhitespace(*contents), ' ',
                            absl::SkipEmpty());
  }
  VoterState vote;
  if (fields.size() != 2 || !absl::SimpleAtoi(fields[0], &vote.term) ||
      !absl::SimpleAtoi(fields[1], &vote.voted_for)) {
    return absl::DataLossError(absl::StrCat(
        path,
        " does not hold this replica's vote (\"term voted_for\"); a replica "
        "that forgot its vote could vote twice in a term: restore the file, "
        "or remove it only if every other replica of the shard is in a "
        "later term"));
  }
  return VoteStore(std::move(path), vote);
}

absl::Status VoteStore::Save(const VoterState& vote) {
  if (absl::Status written = common::WriteFileAtomically(
          path_, absl::StrCat(vote.term, " ", vote.voted_for, "\n"));
      !written.ok()) {
    return written;
  }
  vote_ = vote;
  return absl::OkStatus();
}

}  // namespace ps::server
