#include "server/gradient_buffer_pool.h"

#include <utility>

namespace ps::server {

GradientBufferPool::GradientBufferPool(size_t max_kept)
    : shelf_(std::make_shared<Shelf>()) {
  shelf_->max_kept = max_kept;
}

std::unique_ptr<std::vector<float>> GradientBufferPool::Take(size_t size) {
  std::unique_ptr<std::vector<float>> buffer;
  {
    absl::MutexLock lock(&shelf_->mutex);
    if (!shelf_->idle.empty()) {
      buffer = std::move(shelf_->idle.back());
      shelf_->idle.pop_back();
    }
  }
  if (buffer == nullptr) buffer = std::make_unique<std::vector<float>>();
  buffer->resize(size);  // zeroes only what it adds: once per shard size
  return buffer;
}

void GradientBufferPool::GiveBack::operator()() const {
  absl::MutexLock lock(&shelf->mutex);
  if (shelf->idle.size() < shelf->max_kept) {
    shelf->idle.push_back(std::move(buffer));
  }
}

absl::Cord GradientBufferPool::Wrap(
    std::unique_ptr<std::vector<float>> buffer) {
  const absl::string_view bytes(reinterpret_cast<const char*>(buffer->data()),
                                buffer->size() * sizeof(float));
  return absl::MakeCordFromExternal(bytes, GiveBack{shelf_, std::move(buffer)});
}

size_t GradientBufferPool::idle() const {
  absl::MutexLock lock(&shelf_->mutex);
  return shelf_->idle.size();
}

}  // namespace ps::server
