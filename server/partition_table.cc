#include "server/partition_table.h"

#include <algorithm>
#include <numeric>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/splitmix64.h"

namespace ps::server {

using common::PartitionRecord;
using common::PartitionState;

namespace {

std::string Describe(const common::PartitionPlan& plan) {
  std::string folds = plan.kfold == 0 ? std::string("no held-out fold")
                                      : absl::StrCat("fold ", plan.fold, " of ",
                                                     plan.kfold, " held out");
  return absl::StrCat(plan.partitions, " partitions of ", plan.train_size,
                      " examples for ", plan.epochs, " epochs with seed ",
                      plan.seed, ", ", folds);
}

}  // namespace

PartitionTable::PartitionTable(uint32_t workers, bool reserve_for_live_owners)
    : workers_(std::max<uint32_t>(workers, 1)),
      reserve_(reserve_for_live_owners) {}

absl::Status PartitionTable::Declare(const common::PartitionPlan& plan) {
  if (absl::Status valid = common::ValidatePartitionPlan(plan); !valid.ok()) {
    return valid;
  }
  if (declared_) {
    if (plan == plan_) return absl::OkStatus();
    return absl::FailedPreconditionError(absl::StrCat(
        "the job's data partitions were declared as ", Describe(plan_),
        "; this worker asks for ", Describe(plan),
        ": every worker needs the same --data_partitions, --epochs, --seed, "
        "--kfold, --fold and training set"));
  }
  plan_ = plan;
  declared_ = true;
  Build();
  return absl::OkStatus();
}

void PartitionTable::Build() {
  // A held-out fold's partitions have no slot: nobody can lease them.
  std::vector<uint32_t> trainable;
  for (uint32_t p = 0; p < plan_.partitions; ++p) {
    if (!common::HeldOut(plan_, p)) trainable.push_back(p);
  }
  trainable_ = static_cast<uint32_t>(trainable.size());
  orders_.assign(plan_.epochs, {});
  for (uint32_t e = 0; e < plan_.epochs; ++e) {
    // Fisher–Yates with our own draw (std::shuffle's is the library's), a
    // stream per (seed, epoch): the same order in every build.
    std::vector<uint32_t>& order = orders_[e];
    order = trainable;
    common::SplitMix64Stream rng(common::SplitMix64(plan_.seed) ^
                                 common::SplitMix64(e + 1));
    for (size_t i = order.size(); i > 1; --i) {
      std::swap(order[i - 1], order[rng.Next() % i]);
    }
  }
  records_.assign(size_t{plan_.epochs} * plan_.partitions, PartitionRecord{});
  done_per_epoch_.assign(plan_.epochs, 0);
  done_ = 0;
  first_open_epoch_ = 0;
  held_.clear();
}

uint32_t PartitionTable::Owner(uint32_t epoch, uint32_t slot) const {
  return static_cast<uint32_t>((uint64_t{epoch} * trainable_ + slot) %
                               workers_);
}

uint32_t PartitionTable::FirstOwnSlot(uint32_t epoch,
                                      uint32_t worker_id) const {
  if (worker_id >= workers_) return trainable_;  // a joiner owns none
  const uint32_t first_owner = Owner(epoch, 0);
  return (worker_id + workers_ - first_owner) % workers_;
}

bool PartitionTable::Takeable(uint32_t epoch, uint32_t slot, uint32_t worker_id,
                              bool own_only, LiveIncarnation live) const {
  const PartitionRecord& r = records_[Index(epoch, orders_[epoch][slot])];
  if (r.state == PartitionState::kDone) return false;
  if (r.state == PartitionState::kLeased &&
      live(r.worker_id) == r.incarnation) {
    return false;  // a live holder keeps it
  }
  const uint32_t owner = Owner(epoch, slot);
  if (owner == worker_id) return true;
  if (own_only) return false;
  if (!live(owner).has_value()) return true;  // its owner is gone
  // A live owner's slot, while nobody ever held it: a joiner beyond the
  // expected workers takes one, and anyone when slots are not reserved.
  return (worker_id >= workers_ || !reserve_) &&
         r.state == PartitionState::kFree;
}

PartitionTable::Grant PartitionTable::Take(uint32_t epoch, uint32_t slot,
                                           uint32_t worker_id,
                                           uint64_t incarnation) {
  const uint32_t partition = orders_[epoch][slot];
  const size_t index = Index(epoch, partition);
  records_[index] = {PartitionState::kLeased, worker_id, incarnation};
  held_[worker_id] = index;
  return {LeaseOutcome::kGranted, epoch, partition,
          common::PartitionExamples(plan_, partition)};
}

PartitionTable::Grant PartitionTable::Lease(uint32_t worker_id,
                                            uint64_t incarnation,
                                            LiveIncarnation live) {
  Grant none;
  if (done_ == uint64_t{trainable_} * plan_.epochs) {
    none.outcome = LeaseOutcome::kJobDone;
    return none;
  }
  if (auto held = held_.find(worker_id); held != held_.end()) {
    const PartitionRecord& r = records_[held->second];
    if (r.state == PartitionState::kLeased && r.worker_id == worker_id &&
        r.incarnation == incarnation) {
      const uint32_t epoch =
          static_cast<uint32_t>(held->second / plan_.partitions);
      const uint32_t partition =
          static_cast<uint32_t>(held->second % plan_.partitions);
      return {LeaseOutcome::kGranted, epoch, partition,
              common::PartitionExamples(plan_, partition)};
    }
  }
  const uint32_t slots = trainable_;
  for (uint32_t e = first_open_epoch_; e < plan_.epochs; ++e) {
    if (done_per_epoch_[e] == slots) continue;
    // Its own slots first, in the epoch's order: fault-free, that is all a
    // worker ever takes.
    for (uint32_t k = FirstOwnSlot(e, worker_id); k < slots; k += workers_) {
      if (Takeable(e, k, worker_id, /*own_only=*/true, live)) {
        return Take(e, k, worker_id, incarnation);
      }
    }
    // Then others': a joiner, or a worker taking a live owner's slots, from
    // the back, where the owners come last.
    const bool from_back = worker_id >= workers_ || !reserve_;
    for (uint32_t i = 0; i < slots; ++i) {
      const uint32_t k = from_back ? slots - 1 - i : i;
      if (Takeable(e, k, worker_id, /*own_only=*/false, live)) {
        return Take(e, k, worker_id, incarnation);
      }
    }
  }
  none.outcome = LeaseOutcome::kNoneFree;
  return none;
}

absl::Status PartitionTable::ValidateCompletion(uint32_t epoch,
                                                uint32_t partition) const {
  if (!declared_) {
    return absl::FailedPreconditionError(
        "no data partitions are declared on this server: lease a partition "
        "before reporting one done");
  }
  if (epoch >= plan_.epochs) {
    return absl::InvalidArgumentError(
        absl::StrCat("epoch ", epoch, " is not an epoch of the job (",
                     plan_.epochs, " epochs, numbered from 0)"));
  }
  if (partition >= plan_.partitions) {
    return absl::InvalidArgumentError(absl::StrCat(
        "partition ", partition, " is not a partition of the job (",
        plan_.partitions, " partitions, numbered from 0)"));
  }
  if (common::HeldOut(plan_, partition)) {
    return absl::FailedPreconditionError(
        absl::StrCat("partition ", partition, " of epoch ", epoch,
                     " is in fold ", plan_.fold, " of ", plan_.kfold,
                     ", held out for validation: it is never trained"));
  }
  return absl::OkStatus();
}

absl::Status PartitionTable::CheckHeld(uint32_t epoch, uint32_t partition,
                                       uint32_t worker_id,
                                       uint64_t incarnation) const {
  const PartitionRecord& r = records_[Index(epoch, partition)];
  if (r.state == PartitionState::kLeased && r.worker_id == worker_id &&
      r.incarnation == incarnation) {
    return absl::OkStatus();
  }
  const std::string which =
      absl::StrCat("partition ", partition, " of epoch ", epoch);
  switch (r.state) {
    case PartitionState::kDone:
      return absl::FailedPreconditionError(
          absl::StrCat(which, " is done already (by worker ", r.worker_id,
                       "): a partition is trained once per epoch"));
    case PartitionState::kFree:
      return absl::FailedPreconditionError(absl::StrCat(
          which, " is not leased to worker ", worker_id, " incarnation ",
          incarnation, " (nobody holds it): lease it first"));
    case PartitionState::kLeased:
      break;
  }
  return absl::FailedPreconditionError(absl::StrCat(
      which, " is not leased to worker ", worker_id, " incarnation ",
      incarnation, " but to worker ", r.worker_id, " incarnation ",
      r.incarnation, " (its lease was given back when this one's expired?)"));
}

void PartitionTable::Complete(uint32_t epoch, uint32_t partition) {
  const size_t index = Index(epoch, partition);
  PartitionRecord& r = records_[index];
  if (r.state == PartitionState::kDone) return;
  if (auto held = held_.find(r.worker_id);
      held != held_.end() && held->second == index) {
    held_.erase(held);
  }
  r.state = PartitionState::kDone;
  ++done_;
  ++done_per_epoch_[epoch];
  while (first_open_epoch_ < plan_.epochs &&
         done_per_epoch_[first_open_epoch_] == trainable_) {
    ++first_open_epoch_;
  }
}

std::vector<uint32_t> PartitionTable::DonePerEpoch() const {
  return done_per_epoch_;
}

common::SavedPartitions PartitionTable::Save() const {
  return {plan_, records_};
}

absl::Status PartitionTable::Restore(const common::SavedPartitions& saved) {
  if (absl::Status valid = common::ValidatePartitionPlan(saved.plan);
      !valid.ok()) {
    return absl::DataLossError(absl::StrCat(
        "the checkpoint's partition plan is malformed: ", valid.message()));
  }
  if (saved.records.size() !=
      size_t{saved.plan.epochs} * saved.plan.partitions) {
    return absl::DataLossError(
        absl::StrCat("the checkpoint's partition table holds ",
                     saved.records.size(), " records for ", saved.plan.epochs,
                     " epochs of ", saved.plan.partitions, " partitions"));
  }
  for (size_t i = 0; i < saved.records.size(); ++i) {
    const uint32_t partition = static_cast<uint32_t>(i % saved.plan.partitions);
    if (saved.records[i].state != PartitionState::kFree &&
        common::HeldOut(saved.plan, partition)) {
      return absl::DataLossError(
          absl::StrCat("the checkpoint's partition table has partition ",
                       partition, " of epoch ", i / saved.plan.partitions, " ",
                       common::PartitionStateName(saved.records[i].state),
                       " though its fold is held out"));
    }
  }
  plan_ = saved.plan;
  declared_ = true;
  Build();
  records_ = saved.records;
  for (size_t i = 0; i < records_.size(); ++i) {
    const PartitionRecord& r = records_[i];
    if (r.state == PartitionState::kDone) {
      ++done_;
      ++done_per_epoch_[i / plan_.partitions];
    } else if (r.state == PartitionState::kLeased) {
      // The newest incarnation's lease is the one Lease hands back.
      auto [it, inserted] = held_.emplace(r.worker_id, i);
      if (!inserted && records_[it->second].incarnation < r.incarnation) {
        it->second = i;
      }
    }
  }
  while (first_open_epoch_ < plan_.epochs &&
         done_per_epoch_[first_open_epoch_] == trainable_) {
    ++first_open_epoch_;
  }
  return absl::OkStatus();
}

}  // namespace ps::server
