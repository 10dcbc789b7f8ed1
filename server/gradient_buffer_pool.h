#ifndef PS_SERVER_GRADIENT_BUFFER_POOL_H_
#define PS_SERVER_GRADIENT_BUFFER_POOL_H_

#include <cstddef>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/cord.h"
#include "absl/synchronization/mutex.h"

namespace ps::server {

// Float buffers that compressed gradients are decoded into, reused from
// push to push: a fresh shard-sized buffer per push is zeroed, and may be
// faulted in, every time, which cost more than the decoding itself.
// Thread-safe: pushes decode on gRPC's threads side by side.
class GradientBufferPool {
 public:
  // At most `max_kept` idle buffers are kept (about the pushes decoded at
  // once); more are freed when they come back.
  explicit GradientBufferPool(size_t max_kept = 8);

  // A buffer of `size` floats, its contents whatever an earlier push left.
  std::unique_ptr<std::vector<float>> Take(size_t size);

  // A Cord over `buffer`'s floats (no copy). The buffer comes back to the
  // pool when the Cord's last copy is gone, even one that outlives the pool.
  absl::Cord Wrap(std::unique_ptr<std::vector<float>> buffer);

  // Idle buffers now (for tests).
  size_t idle() const;

 private:
  struct Shelf {
    size_t max_kept;
    mutable absl::Mutex mutex;
    std::vector<std::unique_ptr<std::vector<float>>> idle
        ABSL_GUARDED_BY(mutex);
  };
  // MakeCordFromExternal's releaser: puts `buffer` back on the shelf.
  struct GiveBack {
    std::shared_ptr<Shelf> shelf;
    mutable std::unique_ptr<std::vector<float>> buffer;
    void operator()() const;
  };

  std::shared_ptr<Shelf> shelf_;
};

}  // namespace ps::server

#endif  // PS_SERVER_GRADIENT_BUFFER_POOL_H_
