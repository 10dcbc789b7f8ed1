#include "server/membership.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/error_info.h"
#include "spdlog/spdlog.h"

namespace ps::server {

Membership::Membership(uint32_t shard_index, uint32_t expected_workers,
                       uint32_t max_workers, absl::Duration lease_timeout)
    : shard_index_(shard_index),
      expected_workers_(expected_workers),
      lease_timeout_(lease_timeout),
      members_(std::max(expected_workers, max_workers)) {
  for (uint32_t id = 0; id < members_.size(); ++id) members_[id].worker_id = id;
}

absl::Status Membership::CheckId(uint32_t id) const {
  if (id >= members_.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown worker_id ", id, ": this server accepts worker ids 0 to ",
        members_.size() - 1, " (--max_workers=", members_.size(), ")"));
  }
  return absl::OkStatus();
}

absl::Status Membership::RegistrationRequired(absl::string_view message) const {
  return common::RegistrationRequiredError(
      message, {{"shard", absl::StrCat(shard_index_)}});
}

absl::StatusOr<Membership::Registration> Membership::Register(
    uint32_t id, uint64_t incarnation, absl::Time now) {
  if (absl::Status valid = CheckId(id); !valid.ok()) return valid;
  common::WorkerRecord& m = members_[id];
  const Registration registration{m.registered, m.clock};
  if (m.registered && incarnation < m.incarnation) {
    return absl::FailedPreconditionError(absl::StrCat(
        "worker ", id, " incarnation ", incarnation,
        " is older than the registered incarnation ", m.incarnation,
        ": a newer process with this worker id replaced this one"));
  }
  const bool first_seen = !m.registered;
  if (first_seen) ++ever_registered_;
  if (!m.registered || incarnation > m.incarnation) {
    // A new process: its pushes are numbered afresh. It resumes the old
    // one's pass over the data, so the clock (steps completed) carries over:
    // reset to 0, it would hold every SSP pull beyond the bound until the
    // new process pushed, and a process that died before its first push
    // would send the next one back to step 0.
    common::WorkerRecord fresh;
    fresh.worker_id = id;
    fresh.registrations = m.registrations;
    fresh.clock = m.clock;
    fresh.first_seen = first_seen;
    m = fresh;
  }
  m.registered = true;
  m.incarnation = incarnation;
  m.state = WorkerState::kLive;
  m.lease_expires = now + lease_timeout_;
  m.last_heartbeat = now;
  ++m.registrations;
  return registration;
}

bool Membership::AnyoneRegistered() const {
  return std::any_of(members_.begin(), members_.end(),
                     [](const common::WorkerRecord& m) {
                       return m.registered || m.registrations > 0;
                     });
}

absl::Status Membership::Restore(const common::WorkerRecord& saved,
                                 absl::Time now) {
  const uint32_t id = saved.worker_id;
  if (absl::Status valid = CheckId(id); !valid.ok()) return valid;
  common::WorkerRecord& m = members_[id];
  if (!m.registered) ++ever_registered_;
  m = saved;
  // What a running shard alone keeps starts afresh.
  m.first_seen = false;
  m.registrations = 0;
  m.registered = true;
  m.lease_expires = now + lease_timeout_;
  m.last_heartbeat = now;
  return absl::OkStatus();
}

absl::Status Membership::CheckLive(uint32_t id, uint64_t incarnation) const {
  if (absl::Status valid = CheckId(id); !valid.ok()) return valid;
  const common::WorkerRecord& m = members_[id];
  if (!m.registered) {
    return RegistrationRequired(
        absl::StrCat("worker ", id, " is not registered; register first"));
  }
  if (incarnation != m.incarnation) {
    return RegistrationRequired(
        absl::StrCat("worker ", id, " incarnation ", incarnation,
                     " is not the registered incarnation ", m.incarnation,
                     "; register again if this process is the current one"));
  }
  if (m.state != WorkerState::kLive) {
    return RegistrationRequired(absl::StrCat("worker ", id, " ",
                                             m.state == WorkerState::kExpired
                                                 ? "let its lease expire"
                                                 : "has left the job",
                                             "; register again to take part"));
  }
  return absl::OkStatus();
}

absl::Status Membership::Heartbeat(uint32_t id, uint64_t incarnation,
                                   absl::Time now) {
  if (absl::Status live = CheckLive(id, incarnation); !live.ok()) return live;
  common::WorkerRecord& m = members_[id];
  m.lease_expires = now + lease_timeout_;
  m.last_heartbeat = now;
  return absl::OkStatus();
}

absl::Status Membership::Leave(uint32_t id, uint64_t incarnation,
                               LeaveReason reason) {
  if (absl::Status valid = CheckId(id); !valid.ok()) return valid;
  common::WorkerRecord& m = members_[id];
  if (!m.registered || incarnation != m.incarnation) {
    return absl::FailedPreconditionError(absl::StrCat(
        "worker ", id, " incarnation ", incarnation, " is not registered"));
  }
  if (reason == LeaveReason::kIdle) {
    if (absl::Status live = CheckLive(id, incarnation); !live.ok()) {
      return live;
    }
    m.idle = true;
    return absl::OkStatus();
  }
  if (reason == LeaveReason::kStartFailed && m.first_seen && m.pushes == 0) {
    m = common::WorkerRecord{};
    m.worker_id = id;
    --ever_registered_;
    return absl::OkStatus();
  }
  m.state = WorkerState::kLeft;
  m.idle = false;
  m.finished = reason == LeaveReason::kFinished;
  return absl::OkStatus();
}

std::vector<uint32_t> Membership::Expire(absl::Time now) {
  std::vector<uint32_t> expired;
  for (uint32_t id = 0; id < members_.size(); ++id) {
    common::WorkerRecord& m = members_[id];
    if (m.registered && m.state == WorkerState::kLive &&
        m.lease_expires <= now) {
      m.state = WorkerState::kExpired;
      ++leases_expired_;
      expired.push_back(id);
    }
  }
  return expired;
}

bool Membership::IsLive(uint32_t id) const {
  return id < members_.size() && members_[id].registered &&
         members_[id].state == WorkerState::kLive;
}

std::vector<uint32_t> Membership::LiveWorkers() const {
  std::vector<uint32_t> live;
  for (uint32_t id = 0; id < members_.size(); ++id) {
    if (IsLive(id)) live.push_back(id);
  }
  return live;
}

std::vector<uint32_t> Membership::TrainingWorkers() const {
  std::vector<uint32_t> training;
  for (uint32_t id = 0; id < members_.size(); ++id) {
    if (IsLive(id) && !members_[id].idle) training.push_back(id);
  }
  return training;
}

std::optional<uint64_t> Membership::MinLiveClock() const {
  std::optional<uint64_t> lowest;
  for (uint32_t id : TrainingWorkers()) {
    lowest = std::min(lowest.value_or(UINT64_MAX), members_[id].clock);
  }
  return lowest;
}

std::optional<uint64_t> Membership::MaxLiveClock() const {
  std::optional<uint64_t> highest;
  for (uint32_t id : LiveWorkers()) {
    highest = std::max(highest.value_or(0), members_[id].clock);
  }
  return highest;
}

}  // namespace ps::server
