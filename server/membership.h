#ifndef PS_SERVER_MEMBERSHIP_H_
#define PS_SERVER_MEMBERSHIP_H_

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/worker_record.h"

namespace ps::server {

// The state's enum lives in common: checkpoints and the wire share it.
using common::WorkerState;
using common::WorkerStateName;

// Why a worker left (LeaveRequest.Reason).
enum class LeaveReason {
  kStopped,      // told to stop, or failed mid-run: a restart resumes it
  kFinished,     // pushed every step of its epochs
  kStartFailed,  // failed before its first push
  kIdle,  // not a leave: nothing to train for now (no data partition free);
          // stays live, counts toward no round until its next push
};

// The workers a shard has seen, with their leases. A worker counts toward
// rounds and SSP bounds only while training: live (registered, lease not
// expired, not left) and not idle. Not thread-safe: the shard's mutex guards
// it.
class Membership {
 public:
  // Ids are valid in [0, max_workers); the job starts (see gathered()) once
  // `expected_workers` distinct ids have registered. `shard_index` names the
  // shard in the REGISTRATION_REQUIRED errors' metadata.
  Membership(uint32_t shard_index, uint32_t expected_workers,
             uint32_t max_workers, absl::Duration lease_timeout);

  // Starts or renews a lease. The same incarnation renews (after an expiry
  // too); a newer one replaces the old process and restarts its push
  // bookkeeping, keeping its clock (where it resumes); an older one is
  // refused.
  struct Registration {
    bool rejoined = false;     // the id was registered before
    uint64_t resume_step = 0;  // the previous process's clock
  };
  absl::StatusOr<Registration> Register(uint32_t id, uint64_t incarnation,
                                        absl::Time now);
  absl::Status Heartbeat(uint32_t id, uint64_t incarnation, absl::Time now);
  // Ends the lease. kStartFailed for an id first seen by this incarnation,
  // which pushed nothing, forgets the id: it no longer counts toward
  // gathered(), so a worker that could not start does not let the next
  // run's sync rounds close before its real workers joined. kIdle keeps the
  // lease (REGISTRATION_REQUIRED unless live) and marks the worker idle
  // until NoteTraining.
  absl::Status Leave(uint32_t id, uint64_t incarnation, LeaveReason reason);
  // The worker pushed: it trains again, if it was idle.
  void NoteTraining(uint32_t id) { members_[id].idle = false; }

  // Brings back a worker from a checkpoint: its pushes' bookkeeping as it
  // was, and, if it was live, a fresh lease (it may well still be running).
  absl::Status Restore(const common::WorkerRecord& saved, absl::Time now);

  // OK when (id, incarnation) holds a live lease; otherwise
  // FAILED_PRECONDITION with reason REGISTRATION_REQUIRED
  // (common/error_info.h): the worker registers again.
  absl::Status CheckLive(uint32_t id, uint64_t incarnation) const;

  // Expires the leases that ran out by `now`; returns their ids.
  std::vector<uint32_t> Expire(absl::Time now);

  // Whether `expected_workers` ids have registered at least once: until
  // then no sync round may close, so the first rounds do not run ahead of
  // workers still starting.
  bool gathered() const { return ever_registered_ >= expected_workers_; }
  // Whether any worker registered with this shard's process: its records
  // then hold state (incarnations, seqs) of their own.
  bool AnyoneRegistered() const;

  bool IsLive(uint32_t id) const;
  std::vector<uint32_t> LiveWorkers() const;
  // Live and not idle: the workers a sync round waits for.
  std::vector<uint32_t> TrainingWorkers() const;
  // Over training workers (an idle one holds no SSP reader back); nullopt
  // when none trains.
  std::optional<uint64_t> MinLiveClock() const;
  std::optional<uint64_t> MaxLiveClock() const;

  common::WorkerRecord& at(uint32_t id) { return members_[id]; }
  const std::vector<common::WorkerRecord>& members() const { return members_; }
  uint32_t max_workers() const {
    return static_cast<uint32_t>(members_.size());
  }
  absl::Duration lease_timeout() const { return lease_timeout_; }
  uint64_t leases_expired() const { return leases_expired_; }

 private:
  absl::Status CheckId(uint32_t id) const;
  absl::Status RegistrationRequired(absl::string_view message) const;

  uint32_t shard_index_;
  uint32_t expected_workers_;
  absl::Duration lease_timeout_;
  std::vector<common::WorkerRecord> members_;
  uint32_t ever_registered_ = 0;
  uint64_t leases_expired_ = 0;
};

}  // namespace ps::server

#endif  // PS_SERVER_MEMBERSHIP_H_
