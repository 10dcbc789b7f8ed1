#include "server/replication/replication_log.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace ps::server {

void ReplicationLog::Record(absl::Time now, ShardChange change) {
  absl::MutexLock lock(&mutex_);
  ++last_index_;
  // With no live backup nobody needs the change: only its index counts.
  const bool any_live =
      std::any_of(backups_.begin(), backups_.end(),
                  [](const auto& b) { return b.second.live; });
  if (!any_live) return;
  entries_.push_back(std::make_shared<const Entry>(
      Entry{last_index_, now, std::move(change)}));
}

uint64_t ReplicationLog::last_index() const {
  absl::MutexLock lock(&mutex_);
  return last_index_;
}

ReplicationLog::Joined ReplicationLog::AddBackup(uint32_t replica,
                                                 const std::string& address,
                                                 bool witness) {
  absl::MutexLock lock(&mutex_);
  Backup& backup = backups_[replica];
  backup.address = address;
  backup.witness = witness;
  backup.committed = 0;
  backup.declared = 0;
  backup.generation = next_generation_++;
  backup.live = true;
  backup.confirmed = false;
  backup.acked = last_index_;
  // A joining backup may restore the quorum: writes wait the grace for it.
  if (LiveBackups() < required_backups_) quorum_lost_at_ = absl::Now();
  Trim();
  spdlog::info("replication: replica {} ({}) joined at change {}{}", replica,
               address, last_index_, witness ? " as a witness" : "");
  return {last_index_, backup.generation};
}

bool ReplicationLog::Current(uint32_t replica, uint64_t generation) const {
  auto it = backups_.find(replica);
  return !closed_ && it != backups_.end() && it->second.live &&
         it->second.generation == generation;
}

std::optional<std::vector<ReplicationLog::EntryPtr>> ReplicationLog::Next(
    uint32_t replica, uint64_t generation, uint64_t after, size_t max,
    absl::Duration wait) {
  absl::MutexLock lock(&mutex_);
  // A witness is sent no changes, only what is committed: with each
  // heartbeat, and at once when a write waits for it (no backup that holds
  // θ is live: TakeSatisfied).
  auto ready = [&]() ABSL_SHARED_LOCKS_REQUIRED(mutex_) {
    if (!Current(replica, generation)) return true;
    const Backup& backup = backups_.at(replica);
    if (backup.witness) return !HolderLive() && Committed() > backup.declared;
    return last_index_ > after;
  };
  mutex_.AwaitWithTimeout(absl::Condition(&ready), wait);
  if (!Current(replica, generation)) return std::nullopt;
  std::vector<EntryPtr> out;
  if (backups_.at(replica).witness) return out;
  for (const EntryPtr& e : entries_) {
    if (e->index <= after) continue;
    if (out.size() == max) break;
    out.push_back(e);
  }
  return out;
}

uint64_t ReplicationLog::DeclareCommitted(uint32_t replica,
                                          uint64_t generation) {
  absl::MutexLock lock(&mutex_);
  const uint64_t committed = Committed();
  if (Current(replica, generation)) {
    Backup& backup = backups_[replica];
    backup.declared = std::max(backup.declared, committed);
  }
  return committed;
}

void ReplicationLog::Acknowledge(uint32_t replica, uint64_t generation,
                                 uint64_t index, uint64_t committed) {
  std::vector<Done> ready;
  {
    absl::MutexLock lock(&mutex_);
    if (!Current(replica, generation)) return;
    Backup& backup = backups_[replica];
    backup.acked = std::max(backup.acked, index);
    backup.committed = std::max(backup.committed, committed);
    backup.confirmed = true;
    Trim();
    ready = TakeSatisfied();
  }
  for (Done& done : ready) done(absl::OkStatus());
}

void ReplicationLog::Drop(uint32_t replica, uint64_t generation,
                          const std::string& why) {
  std::vector<Done> ready;
  std::multimap<uint64_t, Done> refused;
  absl::Status no_quorum;
  {
    absl::MutexLock lock(&mutex_);
    DropLocked(replica, generation, why);
    // Silent for drop_after already: no grace.
    if (LiveBackups() < required_backups_) {
      quorum_lost_at_ = absl::InfinitePast();
    }
    refused = TakeAllIfNoQuorum();
    if (!refused.empty()) no_quorum = NoQuorum();
    ready = TakeSatisfied();
  }
  for (auto& [index, done] : refused) done(no_quorum);
  for (Done& done : ready) done(absl::OkStatus());
}

size_t ReplicationLog::LiveBackups() const {
  return std::count_if(backups_.begin(), backups_.end(), [](const auto& b) {
    return b.second.live && b.second.confirmed;
  });
}

bool ReplicationLog::NoQuorumNow() const {
  return LiveBackups() < required_backups_ &&
         absl::Now() - quorum_lost_at_ >= join_grace_;
}

std::multimap<uint64_t, ReplicationLog::Done>
ReplicationLog::TakeAllIfNoQuorum() {
  std::multimap<uint64_t, Done> refused;
  if (NoQuorumNow()) refused.swap(waiting_);
  return refused;
}

void ReplicationLog::ExpireWithoutQuorum() {
  std::multimap<uint64_t, Done> refused;
  absl::Status no_quorum;
  {
    absl::MutexLock lock(&mutex_);
    refused = TakeAllIfNoQuorum();
    if (!refused.empty()) no_quorum = NoQuorum();
  }
  for (auto& [index, done] : refused) done(no_quorum);
}

absl::Status ReplicationLog::NoQuorum() const {
  return absl::UnavailableError(absl::StrCat(
      "the change is applied on this primary but not acknowledged: ",
      LiveBackups(), " backups are live and a majority of the replicas needs ",
      required_backups_,
      " (this primary may be cut off from a majority that elects another); "
      "retry (a retried push is applied once)"));
}

void ReplicationLog::DropLocked(uint32_t replica, uint64_t generation,
                                const std::string& why) {
  if (!Current(replica, generation)) return;
  Backup& backup = backups_[replica];
  backup.live = false;
  ++dropped_;
  spdlog::warn(
      "replication: dropped replica {} ({}) at change {} of {}: {}; writes "
      "no longer wait for it until it joins again",
      replica, backup.address, backup.acked, last_index_, why);
  Trim();
}

void ReplicationLog::WhenAcknowledged(uint64_t index, Done done) {
  std::vector<Done> ready;
  std::optional<std::string> closed;
  absl::Status no_quorum;
  {
    absl::MutexLock lock(&mutex_);
    if (closed_) {
      closed = closed_why_;
    } else if (NoQuorumNow()) {
      no_quorum = NoQuorum();
    } else {
      waiting_.emplace(index, std::move(done));
      ready = TakeSatisfied();
    }
  }
  if (closed.has_value()) {
    done(absl::UnavailableError(
        absl::StrCat(*closed, "; retry (a retried push is applied once)")));
  } else if (!no_quorum.ok()) {
    done(no_quorum);
  }
  for (Done& d : ready) d(absl::OkStatus());
}

std::vector<ReplicationLog::Done> ReplicationLog::TakeSatisfied() {
  if (LiveBackups() < required_backups_) return {};
  // Every live backup that holds θ acknowledged it; with none live, every
  // live witness holds it committed, so a backup dropped before it cannot
  // win a witness's vote (README, "A witness for two replicas").
  uint64_t acked = Committed();
  if (!HolderLive()) {
    // Every live backup is a witness.
    for (const auto& [replica, backup] : backups_) {
      if (backup.live) acked = std::min(acked, backup.committed);
    }
  }
  std::vector<Done> ready;
  auto end = waiting_.upper_bound(acked);
  for (auto it = waiting_.begin(); it != end; ++it) {
    ready.push_back(std::move(it->second));
  }
  waiting_.erase(waiting_.begin(), end);
  return ready;
}

void ReplicationLog::Close(const std::string& why) {
  std::multimap<uint64_t, Done> waiting;
  {
    absl::MutexLock lock(&mutex_);
    closed_ = true;
    closed_why_ = why;
    waiting.swap(waiting_);
  }
  for (auto& [index, done] : waiting) {
    done(absl::UnavailableError(
        absl::StrCat("change ", index, " is applied here but ", why,
                     " before every backup acknowledged it; retry (a retried "
                     "push is applied once)")));
  }
}

void ReplicationLog::Reopen(uint64_t index) {
  absl::MutexLock lock(&mutex_);
  quorum_lost_at_ = absl::Now();
  closed_ = false;
  closed_why_.clear();
  entries_.clear();
  backups_.clear();
  last_index_ = index;
}

std::vector<ReplicationLog::BackupProgress> ReplicationLog::Backups() const {
  absl::MutexLock lock(&mutex_);
  std::vector<BackupProgress> out;
  for (const auto& [replica, backup] : backups_) {
    out.push_back({replica, backup.address, backup.live, backup.acked});
  }
  return out;
}

uint64_t ReplicationLog::backups_dropped() const {
  absl::MutexLock lock(&mutex_);
  return dropped_;
}

bool ReplicationLog::HolderLive() const {
  return std::any_of(backups_.begin(), backups_.end(), [](const auto& b) {
    return b.second.live && !b.second.witness;
  });
}

uint64_t ReplicationLog::Committed() const {
  uint64_t committed = last_index_;
  for (const auto& [replica, backup] : backups_) {
    if (backup.live && !backup.witness) {
      committed = std::min(committed, backup.acked);
    }
  }
  return committed;
}

void ReplicationLog::Trim() {
  // What every live backup that holds θ has: a witness is sent none.
  const uint64_t keep_after = Committed();
  while (!entries_.empty() && entries_.front()->index <= keep_after) {
    entries_.pop_front();
  }
}

}  // namespace ps::server
