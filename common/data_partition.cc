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
  return absl::OkStatus();
}

KeyRange PartitionExamples(const PartitionPlan& plan, uint32_t partition) {
  return BalancedPart(plan.train_size, plan.partitions, partition);
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
