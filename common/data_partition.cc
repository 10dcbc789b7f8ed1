#include "common/data_partition.h"

#include "absl/strings/str_cat.h"

namespace ps::common {

absl::Status ValidatePartitionPlan(const PartitionPlan& plan) {
  if (plan.partitions == 0) {
    return absl::InvalidArgumentError("--data_partitions must be at least 1");
  }
  if (plan.epochs == 0) {
    return absl::InvalidArgumentError("--epochs must be at least 1");
  }
  if (plan.partitions > plan.train_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--data_partitions=", plan.partitions, " is more than the ",
        plan.train_size,
        " training examples: every partition must hold at least one"));
  }
  if (uint64_t{plan.partitions} * plan.epochs > kMaxPartitionSlots) {
    return absl::InvalidArgumentError(
        absl::StrCat("--data_partitions=", plan.partitions,
                     " times --epochs=", plan.epochs, " is more than the ",
                     kMaxPartitionSlots, " partition slots a server tracks"));
  }
  if (plan.kfold == 0) {
    if (plan.fold != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--fold=", plan.fold, " needs --kfold=K (the number of folds)"));
    }
    return absl::OkStatus();
  }
  if (plan.kfold < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("--kfold=", plan.kfold,
                     " must be at least 2: one fold is held out, the rest "
                     "trained"));
  }
  if (plan.fold >= plan.kfold) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--fold=", plan.fold, " is not a fold of --kfold=", plan.kfold,
        " (folds are numbered 0 to ", plan.kfold - 1, ")"));
  }
  if (plan.partitions < plan.kfold) {
    return absl::InvalidArgumentError(
        absl::StrCat("--kfold=", plan.kfold,
                     " needs at least as many partitions: "
                     "--data_partitions=",
                     plan.partitions, " would leave a fold without examples"));
  }
  return absl::OkStatus();
}

KeyRange PartitionExamples(const PartitionPlan& plan, uint32_t partition) {
  return BalancedPart(plan.train_size, plan.partitions, partition);
}

bool HeldOut(const PartitionPlan& plan, uint32_t partition) {
  return plan.kfold > 0 && partition % plan.kfold == plan.fold;
}

uint32_t TrainablePartitions(const PartitionPlan& plan) {
  if (plan.kfold == 0) return plan.partitions;
  // Partitions fold..P-1 in steps of K.
  const uint32_t held_out =
      plan.fold < plan.partitions
          ? (plan.partitions - plan.fold - 1) / plan.kfold + 1
          : 0;
  return plan.partitions - held_out;
}

std::vector<KeyRange> HeldOutExamples(const PartitionPlan& plan) {
  std::vector<KeyRange> examples;
  if (plan.kfold == 0) return examples;
  for (uint32_t p = plan.fold; p < plan.partitions; p += plan.kfold) {
    examples.push_back(PartitionExamples(plan, p));
  }
  return examples;
}

absl::string_view PartitionStateName(PartitionState state) {
  switch (state) {
    case PartitionState::kFree:
      return "free";
    case PartitionState::kLeased:
      return "leased";
    case PartitionState::kDone:
      return "done";
  }
  return "unknown";
}

}  // namespace ps::common
