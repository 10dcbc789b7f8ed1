#ifndef PS_SERVER_CHECKPOINTER_H_
#define PS_SERVER_CHECKPOINTER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/lr_schedule.h"
#include "common/optimizer.h"
#include "common/theta_file.h"
#include "common/update_rule.h"
#include "server/parameter_shard.h"

namespace ps::server {

struct SavedCheckpoint {
  std::string path;
  uint64_t version = 0;
  uint64_t bytes = 0;
  absl::Duration took;  // snapshot + encode + write + fsync
};

// One shard's checkpoints in a directory shared by the job's shards (or
// not: a shard only needs its own files unless the shard count changed).
// Files are named ckpt-<seq>-shard-<i>-of-<S>.theta; seq grows with every
// save of shard i, across restarts. Thread-safe.
class Checkpointer {
 public:
  // The directory must exist and be writable: a typo in its name must stop
  // the server, not start a fresh model. Holds an flock on
  // DIR/shard-<i>-of-<S>.lock while the Checkpointer lives, so a second
  // server given the same directory and shard is refused (two would number
  // their files alike, overwrite and prune each other's); the kernel drops
  // the lock when the holder dies, so a crash leaves nothing stale.
  static absl::StatusOr<std::unique_ptr<Checkpointer>> Open(
      std::string dir, uint32_t keep, uint32_t shard_index,
      uint32_t num_shards);

  // The newest good state for this shard: from the shard layout that saved
  // last (highest seq), assembled from its files when it had another number
  // of shards (so S shards restore onto S' ≠ S). Sync rounds open at the
  // stop are cut by key like θ; an old shard that stopped one round behind
  // has its open round closed with `update` first, so every key is at the
  // same round. An older layout is used only when the newest holds none of
  // this shard's keys. A corrupt newest file is reported and the one before
  // it used. nullopt when the directory holds no checkpoint; DATA_LOSS when
  // it holds some but none usable for this shard, or when restoring would
  // mix states.
  // `optimizer` and `lr_schedule` are the server's, for such a round's
  // tensors that name none; the optimizer state is cut by key like θ.
  absl::StatusOr<std::optional<common::ThetaFile>> LoadLatest(
      const common::UpdateOptions& update,
      const common::OptimizerOptions& optimizer = {},
      const common::LrSchedule& lr_schedule = {}) const;

  // Writes the shard's current state, logs it ("<why> checkpoint <path>
  // (version, bytes, time)"), then keeps the newest `keep` files of this
  // shard.
  absl::StatusOr<SavedCheckpoint> Save(const ParameterShard& shard,
                                       absl::string_view why)
      ABSL_LOCKS_EXCLUDED(mutex_);

  const std::string& dir() const { return dir_; }

  // The last successful Save and when it finished; nullopt before one.
  struct LastSave {
    SavedCheckpoint saved;
    absl::Time finished;
  };
  std::optional<LastSave> last_save() const ABSL_LOCKS_EXCLUDED(last_mutex_);

  ~Checkpointer();
  Checkpointer(const Checkpointer&) = delete;
  Checkpointer& operator=(const Checkpointer&) = delete;

  // What a checkpoint file's name says.
  struct FileName {
    uint64_t seq = 0;
    uint32_t shard_index = 0;
    uint32_t num_shards = 0;
    std::string path;
  };

 private:
  Checkpointer(std::string dir, uint32_t keep, uint32_t shard_index,
               uint32_t num_shards, uint64_t next_seq, int lock_fd);

  // LoadLatest from one layout's files (newest first); nullopt when they
  // hold none of this shard's keys.
  absl::StatusOr<std::optional<common::ThetaFile>> OwnLayout(
      const std::vector<FileName>& files) const;
  absl::StatusOr<std::optional<common::ThetaFile>> Reshard(
      const std::vector<FileName>& files, uint32_t layout,
      const common::UpdateOptions& update,
      const common::OptimizerOptions& optimizer,
      const common::LrSchedule& lr_schedule) const;

  const std::string dir_;
  const uint32_t keep_;
  const uint32_t shard_index_;
  const uint32_t num_shards_;
  absl::Mutex mutex_;  // one save at a time
  // Apart from mutex_, so a scrape does not wait for a save in progress.
  mutable absl::Mutex last_mutex_;
  std::optional<LastSave> last_save_ ABSL_GUARDED_BY(last_mutex_);
  uint64_t next_seq_ ABSL_GUARDED_BY(mutex_);
  // Holds the directory's lock for this shard; closing it releases it.
  const int lock_fd_;
};

}  // namespace ps::server

#endif  // PS_SERVER_CHECKPOINTER_H_
