#include "server/pull_wait_list.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/error_info.h"

namespace ps::server {

absl::Status PullWaitList::CheckRoom(uint32_t worker_id) const {
  if (parked_.size() >= max_parked_) {
    return common::WithErrorInfo(
        absl::ResourceExhaustedError(absl::StrCat(
            "this server already holds ", parked_.size(),
            " waiting pulls, its bound (--max_parked_pulls=", max_parked_,
            "); retry later")),
        {common::kTooManyParkedPulls,
         common::kErrorDomain,
         {{"bound", "total"}}});
  }
  auto it = per_worker_.find(worker_id);
  if (it != per_worker_.end() && it->second >= max_per_worker_) {
    return common::WithErrorInfo(
        absl::ResourceExhaustedError(absl::StrCat(
            "worker ", worker_id, " already has ", it->second,
            " waiting pulls on this shard, the most one worker id may have (",
            max_per_worker_,
            "); a worker waits for one pull per shard at a time")),
        {common::kTooManyParkedPulls,
         common::kErrorDomain,
         {{"bound", "per_worker"}}});
  }
  return absl::OkStatus();
}

bool PullWaitList::Park(Ticket ticket, Parked pull) {
  if (closed_) return false;
  ++per_worker_[pull.args.worker_id];
  parked_.emplace(ticket, std::move(pull));
  return true;
}

PullWaitList::Parked PullWaitList::Remove(Iterator it) {
  Parked pull = std::move(it->second);
  parked_.erase(it);
  auto count = per_worker_.find(pull.args.worker_id);
  if (--count->second == 0) per_worker_.erase(count);
  return pull;
}

PullWaitList::Done PullWaitList::Take(Ticket ticket) {
  auto it = parked_.find(ticket);
  if (it == parked_.end()) return nullptr;
  return Remove(it).done;
}

std::vector<PullWaitList::Parked> PullWaitList::TakeExpired(absl::Time now) {
  std::vector<Parked> expired;
  for (auto it = parked_.begin(); it != parked_.end();) {
    if (it->second.expires <= now) {
      expired.push_back(Remove(it++));
    } else {
      ++it;
    }
  }
  return expired;
}

std::vector<PullWaitList::Parked> PullWaitList::TakeAnswerable(
    const ConsistencyPolicy& policy, uint64_t version,
    const Membership& members) {
  std::vector<Parked> answerable;
  for (auto it = parked_.begin(); it != parked_.end();) {
    const PullArgs& args = it->second.args;
    if (policy.MayAnswerPull(args.min_version, args.clock, version, members)) {
      answerable.push_back(Remove(it++));
    } else {
      ++it;
    }
  }
  return answerable;
}

std::vector<PullWaitList::Done> PullWaitList::Close() {
  closed_ = true;
  std::vector<Done> parked;
  parked.reserve(parked_.size());
  for (auto& [ticket, pull] : parked_) parked.push_back(std::move(pull.done));
  parked_.clear();
  per_worker_.clear();
  return parked;
}

}  // namespace ps::server
