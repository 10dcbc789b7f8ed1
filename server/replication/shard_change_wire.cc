#include "server/replication/shard_change_wire.h"

#include <string>
#include <type_traits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/rpc/convert.h"
#include "server/wire_messages.h"

namespace ps::server {
namespace {

void ToProto(const PushArgs& args, ps::v1::PushRequest* proto) {
  proto->set_worker_id(args.worker_id);
  proto->set_incarnation(args.incarnation);
  proto->set_seq(args.seq);
  proto->set_step(args.step);
  proto->set_base_version(args.base_version);
  proto->set_batch_size(args.batch_size);
  proto->set_key_begin(args.keys.begin);
  proto->set_key_end(args.keys.end);
  proto->set_gradient(std::string(args.gradient));
  for (const SparseRows& rows : args.sparse) {
    ps::v1::SparseRows* r = proto->add_sparse();
    r->set_table(rows.table);
    r->set_keys(rows.keys);
    r->set_values(rows.values);
  }
  if (args.completes.has_value()) {
    proto->mutable_completes()->set_epoch(args.completes->epoch);
    proto->mutable_completes()->set_partition(args.completes->partition);
  }
}

void ToProto(const InitArgs& args, ps::v1::InitRequest* proto) {
  proto->set_worker_id(args.worker_id);
  proto->set_shard_index(args.shard_index);
  proto->set_num_shards(args.num_shards);
  rpc::ToProto(args.tensors, proto->mutable_tensors());
  rpc::ToProto(args.tables, proto->mutable_tables());
  proto->set_values(std::string(args.values));
  proto->set_model_seed(args.model_seed);
}

}  // namespace

void ToProto(const ReplicationLog::Entry& entry, ps::v1::ShardChange* proto) {
  proto->set_index(entry.index);
  proto->set_time_unix_nanos(absl::ToUnixNanos(entry.time));
  std::visit(
      [proto](const auto& c) {
        using T = std::decay_t<decltype(c)>;
        if constexpr (std::is_same_v<T, RegisterChange>) {
          proto->mutable_registration()->set_worker_id(c.worker_id);
          proto->mutable_registration()->set_incarnation(c.incarnation);
        } else if constexpr (std::is_same_v<T, HeartbeatChange>) {
          proto->mutable_heartbeat()->set_worker_id(c.worker_id);
          proto->mutable_heartbeat()->set_incarnation(c.incarnation);
        } else if constexpr (std::is_same_v<T, LeaveChange>) {
          proto->mutable_leave()->set_worker_id(c.worker_id);
          proto->mutable_leave()->set_incarnation(c.incarnation);
          proto->mutable_leave()->set_reason(LeaveReasonToProto(c.reason));
        } else if constexpr (std::is_same_v<T, InitArgs>) {
          ToProto(c, proto->mutable_init());
        } else if constexpr (std::is_same_v<T, PushArgs>) {
          ToProto(c, proto->mutable_push());
        } else if constexpr (std::is_same_v<T, LeasePartitionChange>) {
          ps::v1::LeasePartitionRequest* lease =
              proto->mutable_lease_partition();
          lease->set_worker_id(c.worker_id);
          lease->set_incarnation(c.incarnation);
          rpc::ToProto(c.plan, lease->mutable_plan());
        } else if constexpr (std::is_same_v<T, TickChange>) {
          proto->mutable_tick();
        } else {
          static_assert(std::is_same_v<T, RejectedPushChange>);
          proto->mutable_rejected_push();
        }
      },
      entry.change);
}

absl::StatusOr<ShardChange> ShardChangeFromProto(
    const ps::v1::ShardChange& proto) {
  switch (proto.change_case()) {
    case ps::v1::ShardChange::kRegistration:
      return RegisterChange{proto.registration().worker_id(),
                            proto.registration().incarnation()};
    case ps::v1::ShardChange::kHeartbeat:
      return HeartbeatChange{proto.heartbeat().worker_id(),
                             proto.heartbeat().incarnation()};
    case ps::v1::ShardChange::kLeave:
      return LeaveChange{proto.leave().worker_id(), proto.leave().incarnation(),
                         LeaveReasonFromProto(proto.leave().reason())};
    case ps::v1::ShardChange::kInit:
      return InitArgsFromProto(proto.init(), absl::Cord(proto.init().values()));
    case ps::v1::ShardChange::kPush:
      return PushArgsFromProto(proto.push(),
                               absl::Cord(proto.push().gradient()));
    case ps::v1::ShardChange::kLeasePartition:
      return LeasePartitionChange{
          proto.lease_partition().worker_id(),
          proto.lease_partition().incarnation(),
          rpc::FromProto(proto.lease_partition().plan())};
    case ps::v1::ShardChange::kTick:
      return TickChange{};
    case ps::v1::ShardChange::kRejectedPush:
      return RejectedPushChange{};
    case ps::v1::ShardChange::CHANGE_NOT_SET:
      break;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("change ", proto.index(),
                   " carries no change this replica knows; run the same "
                   "ps_server build on every replica"));
}

void Replay(ParameterShard& shard, const ShardChange& change) {
  std::visit(
      [&shard](const auto& c) {
        using T = std::decay_t<decltype(c)>;
        if constexpr (std::is_same_v<T, RegisterChange>) {
          (void)shard.Register(c.worker_id, c.incarnation);
        } else if constexpr (std::is_same_v<T, HeartbeatChange>) {
          (void)shard.Heartbeat(c.worker_id, c.incarnation);
        } else if constexpr (std::is_same_v<T, LeaveChange>) {
          (void)shard.Leave(c.worker_id, c.incarnation, c.reason);
        } else if constexpr (std::is_same_v<T, InitArgs>) {
          (void)shard.Init(c);
        } else if constexpr (std::is_same_v<T, PushArgs>) {
          (void)shard.Push(c);
        } else if constexpr (std::is_same_v<T, LeasePartitionChange>) {
          (void)shard.LeasePartition(c.worker_id, c.incarnation, c.plan);
        } else if constexpr (std::is_same_v<T, TickChange>) {
          shard.Tick(shard.Now());
        } else {
          static_assert(std::is_same_v<T, RejectedPushChange>);
          shard.CountRejectedPush();
        }
      },
      change);
}

}  // namespace ps::server
