#include "server/pull_wait_list.h"

#include <utility>

namespace ps::server {

bool PullWaitList::Park(Ticket ticket, Parked pull) {
  if (closed_) return false;
  parked_.emplace(ticket, std::move(pull));
  return true;
}

PullWaitList::Done PullWaitList::Take(Ticket ticket) {
  auto it = parked_.find(ticket);
  if (it == parked_.end()) return nullptr;
  Done done = std::move(it->second.done);
  parked_.erase(it);
  return done;
}

std::vector<PullWaitList::Parked> PullWaitList::TakeExpired(absl::Time now) {
  std::vector<Parked> expired;
  for (auto it = parked_.begin(); it != parked_.end();) {
    if (it->second.expires <= now) {
      expired.push_back(std::move(it->second));
      parked_.erase(it++);
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
      answerable.push_back(std::move(it->second));
      parked_.erase(it++);
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
  return parked;
}

}  // namespace ps::server
