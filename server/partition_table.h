#ifndef PS_SERVER_PARTITION_TABLE_H_
#define PS_SERVER_PARTITION_TABLE_H_

#include <cstdint>
#include <map>
#include <optional>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "common/data_partition.h"
#include "common/key_range.h"

namespace ps::server {

// Which worker trains which part of the training set, per epoch: the
// training set cut into `plan.partitions` fixed partitions, leased to
// workers one at a time and marked done by the push that completes them.
//
// It lives on shard 0 only: one authority whose answers need no agreement
// between shards, kept in shard 0's checkpoint beside the workers' push
// bookkeeping, which is what makes "done" exactly-once (a completion rides
// on a push, and a retried push is recognised by its seq).
//
// Fault-free, the assignment does not depend on timing, so sync mode stays
// bit-for-bit reproducible: each epoch has a seeded order of the partitions,
// and slot k of epoch e's order belongs to worker (e·T + k) mod W (W: the
// workers the job expects, T: the slots of an epoch). Counting on across
// epochs, not from 0 in each, spreads an epoch's T mod W extra slots over
// the workers: 64 partitions over 3 workers would otherwise give worker 0
// one more in every epoch, and it would train the last E alone. A slot is
// reserved for its owner while the owner is live; the slots of an owner that is
// not (its lease expired, it left, or it never came) become takeable by any
// live worker, and so does a slot whose holder died. A worker takes others'
// slots only when none of its own is left in that epoch, so fault-free nobody
// takes another's slot (in sync mode a round cannot close before every expected
// worker registered). Workers with ids from W up (joiners beyond the expected
// ones) own nothing and take free slots from the back of an epoch's order, so
// they help where the owners would come last.
//
// With k-fold cross-validation (plan.kfold) the held-out fold's partitions
// have no slot in any epoch's order: they are never leased, and an epoch is
// done when its trainable partitions are.
//
// Where results depend on timing anyway (async, SSP, sync with a quorum),
// slots are not reserved for a live owner: a worker with none of its own
// left in an epoch also takes a live owner's free slots, from the back of
// the order, so fast workers take a straggler's remaining partitions
// instead of leaving it to train them alone.
//
// Not thread-safe: the shard's mutex guards it.
class PartitionTable {
 public:
  // `workers`: W, the workers the job expects (at least 1).
  // `reserve_for_live_owners`: a live owner's free slots are its own alone
  // (the timing-free assignment sync mode without a quorum needs).
  explicit PartitionTable(uint32_t workers,
                          bool reserve_for_live_owners = true);

  // The first plan wins; a different one is FAILED_PRECONDITION naming the
  // difference, and an invalid one INVALID_ARGUMENT.
  absl::Status Declare(const common::PartitionPlan& plan);
  bool declared() const { return declared_; }
  const common::PartitionPlan& plan() const { return plan_; }

  // The live incarnation of a worker id, nullopt while it is not live
  // (never registered, expired, left).
  using LiveIncarnation =
      absl::FunctionRef<std::optional<uint64_t>(uint32_t worker_id)>;

  enum class LeaseOutcome {
    kGranted,   // train `examples` of (epoch, partition)
    kNoneFree,  // every partition not done is held by, or reserved for, a
                // live worker
    kJobDone,   // every partition of every epoch is done
  };
  struct Grant {
    LeaseOutcome outcome = LeaseOutcome::kNoneFree;
    uint32_t epoch = 0;
    uint32_t partition = 0;
    common::KeyRange examples;
  };
  // The partition (worker_id, incarnation) trains next. A holder asking
  // again gets the partition it holds (a retried lease takes nothing more).
  // Otherwise the lowest epoch with a slot it may take, its own slots first
  // (in the epoch's order), then the takeable slots of others. Requires
  // declared().
  Grant Lease(uint32_t worker_id, uint64_t incarnation, LiveIncarnation live);

  // Whether a push's report that (epoch, partition) is done names a
  // partition of the job: INVALID_ARGUMENT for an epoch or partition the
  // plan has not, FAILED_PRECONDITION when nothing is declared. A push
  // failing it is malformed and refused whole.
  absl::Status ValidateCompletion(uint32_t epoch, uint32_t partition) const;
  // OK when (worker_id, incarnation) holds a valid (epoch, partition);
  // otherwise FAILED_PRECONDITION saying where it went: done, or leased to
  // another worker after this one's lease expired. Not an error of the
  // push: its gradient still counts, only the completion is not recorded
  // (the partition's holder reports it), so the table counts each
  // partition once.
  absl::Status CheckHeld(uint32_t epoch, uint32_t partition, uint32_t worker_id,
                         uint64_t incarnation) const;
  // Marks a partition CheckHeld found held as done.
  void Complete(uint32_t epoch, uint32_t partition);

  // Partitions trained per epoch: all but a held-out fold's.
  uint32_t trainable() const { return trainable_; }
  // Partitions done in each epoch (empty before a plan is declared).
  std::vector<uint32_t> DonePerEpoch() const;
  // Partitions done over all epochs.
  uint64_t done() const { return done_; }
  const common::PartitionRecord& record(uint32_t epoch,
                                        uint32_t partition) const {
    return records_[Index(epoch, partition)];
  }

  common::SavedPartitions Save() const;
  // Takes a checkpoint's table (plan and records) in place of this one's;
  // DATA_LOSS when it is malformed (a held-out partition leased or done,
  // say), nothing changed then.
  absl::Status Restore(const common::SavedPartitions& saved);

 private:
  size_t Index(uint32_t epoch, uint32_t partition) const {
    return size_t{epoch} * plan_.partitions + partition;
  }
  // Makes the per-epoch orders and empty records for plan_.
  void Build();
  // The worker id that owns slot `slot` of `epoch`.
  uint32_t Owner(uint32_t epoch, uint32_t slot) const;
  // The first slot of `epoch` that `worker_id` owns (its next ones follow
  // every W slots); trainable_ when it owns none.
  uint32_t FirstOwnSlot(uint32_t epoch, uint32_t worker_id) const;
  // Whether `worker_id` may lease the partition in slot `slot` of `epoch`.
  bool Takeable(uint32_t epoch, uint32_t slot, uint32_t worker_id,
                bool own_only, LiveIncarnation live) const;
  Grant Take(uint32_t epoch, uint32_t slot, uint32_t worker_id,
             uint64_t incarnation);

  uint32_t workers_;
  bool reserve_;
  bool declared_ = false;
  common::PartitionPlan plan_;
  // The index of the partition each worker id's newest incarnation holds.
  std::map<uint32_t, size_t> held_;
  // orders_[e][k]: the partition in slot k of epoch e.
  std::vector<std::vector<uint32_t>> orders_;
  uint32_t trainable_ = 0;
  std::vector<common::PartitionRecord> records_;
  uint64_t done_ = 0;
  std::vector<uint32_t> done_per_epoch_;
  // The lowest epoch with a partition not done: where every scan starts.
  uint32_t first_open_epoch_ = 0;
};

}  // namespace ps::server

#endif  // PS_SERVER_PARTITION_TABLE_H_
