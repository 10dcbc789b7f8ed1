#ifndef PS_SERVER_REPLICATION_REPLICATION_LOG_H_
#define PS_SERVER_REPLICATION_REPLICATION_LOG_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/shard_journal.h"

namespace ps::server {

// The primary's side of replication, without gRPC: the shard's changes in
// the order they took effect, kept until every live backup acknowledged
// them; the backups and their progress; and a write's wait for them.
// Thread-safe. Record runs under the shard's lock, so the log's order is the
// order the changes took effect.
class ReplicationLog final : public ShardJournal {
 public:
  struct Entry {
    uint64_t index = 0;
    absl::Time time;
    ShardChange change;
  };
  using EntryPtr = std::shared_ptr<const Entry>;

  struct BackupProgress {
    uint32_t replica = 0;
    std::string address;
    bool live = false;
    uint64_t acked = 0;
  };

  // A write is acknowledged only while at least `required_backups` backups
  // are live (with the primary, a majority of the replicas: README,
  // "Elections"); 0 acknowledges with none. A backup counts once it
  // answered an Apply after joining (it holds the state). A new log (a
  // primary just started or elected) or a joining backup lets writes wait
  // up to `join_grace` for the quorum before it refuses them.
  explicit ReplicationLog(size_t required_backups = 0,
                          absl::Duration join_grace = absl::ZeroDuration())
      : required_backups_(required_backups),
        join_grace_(join_grace),
        quorum_lost_at_(absl::Now()) {}

  void Record(absl::Time now, ShardChange change) override;

  // The index of the last change recorded (0 before the first).
  uint64_t last_index() const;

  // Counts `replica` among the live backups, as having applied every change
  // up to the last one recorded; answers that index. Call it where the
  // backup's state is taken (ParameterShard::Snapshot's at_instant), so no
  // change falls between the state and the stream. A replica that joins
  // again starts over: the returned generation tells its sender whether it
  // is still the current one. A `witness` holds no state: it counts like a
  // backup toward the quorum, but is sent no changes, only which are
  // committed (DeclareCommitted), and a write waits for it only while no
  // backup that holds θ is live.
  struct Joined {
    uint64_t index = 0;
    uint64_t generation = 0;
  };
  Joined AddBackup(uint32_t replica, const std::string& address,
                   bool witness = false);

  // Up to `max` changes after `after` for `replica`'s sender, waiting at most
  // `wait` for one (an empty answer: send a heartbeat). nullopt when that
  // generation of the backup is no longer live (dropped, joined again) or
  // the log is closed: its sender stops. A witness's sender always gets
  // none, and is woken early only when a write waits for the witness to
  // hold more committed (DeclareCommitted).
  std::optional<std::vector<EntryPtr>> Next(uint32_t replica,
                                            uint64_t generation, uint64_t after,
                                            size_t max, absl::Duration wait);

  // What a witness's next Apply tells it is committed: every change up to
  // the least any live backup that holds θ acknowledged (all of them, with
  // none live). A witness votes with that position (README, "A witness for
  // two replicas"): never ahead of a live backup, so it never keeps that
  // backup, which holds every acknowledged change, from taking over; ahead
  // of a dropped one, which may lack acknowledged changes.
  uint64_t DeclareCommitted(uint32_t replica, uint64_t generation);

  // `replica` (this generation) applied every change up to `index`; a
  // witness also holds every change up to `committed` as committed.
  void Acknowledge(uint32_t replica, uint64_t generation, uint64_t index,
                   uint64_t committed = 0);

  // Stops counting `replica` (this generation): a write no longer waits for
  // it. Logged and counted; it comes back only by joining again.
  void Drop(uint32_t replica, uint64_t generation, const std::string& why);

  // Runs `done` once every live backup that holds θ acknowledged `index`
  // (with none live, once every live witness holds it committed; at once
  // when no backup is live and none is required), or with UNAVAILABLE when
  // the log closes first or fewer than the required backups are live (after a
  // drop, or after the join grace of a new log: ExpireWithoutQuorum): this
  // primary may be cut off from a majority that elects another, so it
  // acknowledges nothing; the worker retries. It runs on the
  // thread that acknowledges (or drops, or closes), outside the log's lock;
  // nothing waits on a thread. A backup that does not answer is dropped
  // (Drop), which bounds the wait.
  using Done = std::function<void(absl::Status)>;
  void WhenAcknowledged(uint64_t index, Done done);

  // Fails the waits (UNAVAILABLE) once a new log's join grace passed
  // without the required backups. The primary calls it every tick.
  void ExpireWithoutQuorum();

  // Ends every wait (UNAVAILABLE, saying `why`) and every sender.
  void Close(const std::string& why);
  // After Close, on a replica that takes over as primary: an empty log
  // whose last change is `index` (the last one it applied), no backups.
  void Reopen(uint64_t index);

  std::vector<BackupProgress> Backups() const;
  uint64_t backups_dropped() const;

 private:
  struct Backup {
    std::string address;
    uint64_t generation = 0;
    bool live = false;
    bool witness = false;
    // A witness: the last change it holds committed, and the last one its
    // sender was given to declare so (DeclareCommitted).
    uint64_t committed = 0;
    uint64_t declared = 0;
    uint64_t acked = 0;
    // It answered an Apply since it joined: it holds the state it was
    // sent, and counts toward the quorum.
    bool confirmed = false;
  };
  // The last change every live backup that holds θ acknowledged (the last
  // recorded if none is live): what a witness is told is committed.
  uint64_t Committed() const ABSL_SHARED_LOCKS_REQUIRED(mutex_);
  // A live backup that is not a witness.
  bool HolderLive() const ABSL_SHARED_LOCKS_REQUIRED(mutex_);
  // Forgets the changes every live backup acknowledged.
  void Trim() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  bool Current(uint32_t replica, uint64_t generation) const
      ABSL_SHARED_LOCKS_REQUIRED(mutex_);
  void DropLocked(uint32_t replica, uint64_t generation, const std::string& why)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // The waits every live backup's acknowledgements now satisfy.
  std::vector<Done> TakeSatisfied() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // Live backups that answered since they joined (Backup::confirmed).
  size_t LiveBackups() const ABSL_SHARED_LOCKS_REQUIRED(mutex_);
  // Every wait, when fewer than the required backups are live and the
  // grace since that began passed.
  std::multimap<uint64_t, Done> TakeAllIfNoQuorum()
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // Fewer than the required backups live, past the grace.
  bool NoQuorumNow() const ABSL_SHARED_LOCKS_REQUIRED(mutex_);
  // UNAVAILABLE for a write that the live backups cannot acknowledge.
  absl::Status NoQuorum() const ABSL_SHARED_LOCKS_REQUIRED(mutex_);

  const size_t required_backups_;
  const absl::Duration join_grace_;
  // Since when fewer than the required backups are live: a new log's
  // start or a backup's join (the grace runs), or InfinitePast after a
  // drop (none).
  absl::Time quorum_lost_at_ ABSL_GUARDED_BY(mutex_);

  mutable absl::Mutex mutex_;
  // Changes after the ones every live backup acknowledged, in index order.
  std::deque<EntryPtr> entries_ ABSL_GUARDED_BY(mutex_);
  uint64_t last_index_ ABSL_GUARDED_BY(mutex_) = 0;
  std::map<uint32_t, Backup> backups_ ABSL_GUARDED_BY(mutex_);
  uint64_t next_generation_ ABSL_GUARDED_BY(mutex_) = 1;
  uint64_t dropped_ ABSL_GUARDED_BY(mutex_) = 0;
  bool closed_ ABSL_GUARDED_BY(mutex_) = false;
  std::string closed_why_ ABSL_GUARDED_BY(mutex_);
  // Writes waiting for their change's index to be acknowledged.
  std::multimap<uint64_t, Done> waiting_ ABSL_GUARDED_BY(mutex_);
};

}  // namespace ps::server

#endif  // PS_SERVER_REPLICATION_REPLICATION_LOG_H_
