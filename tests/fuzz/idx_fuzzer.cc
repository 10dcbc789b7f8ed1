// libFuzzer target: the IDX reader (common/dataset), plain or gzip, as it
// reads Fashion-MNIST. The input is one image file and one label file:
//   [num_classes: 1 byte][label file's length: 2 bytes, big-endian]
//   [label file][image file]
// Any pair gives a clean error or a data set its header describes.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "common/dataset.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

using ps::fuzz::Fail;

// A file in memory the reader opens by name, as it would a real one.
class MemoryFile {
 public:
  MemoryFile(const uint8_t* data, size_t size) : fd_(memfd_create("idx", 0)) {
    if (fd_ < 0) Fail("memfd_create failed");
    for (size_t done = 0; done < size;) {
      const ssize_t n = write(fd_, data + done, size - done);
      if (n <= 0) Fail("cannot write the memory file");
      done += static_cast<size_t>(n);
    }
  }
  ~MemoryFile() { close(fd_); }
  MemoryFile(const MemoryFile&) = delete;
  MemoryFile& operator=(const MemoryFile&) = delete;

  std::string path() const { return "/proc/self/fd/" + std::to_string(fd_); }

 private:
  int fd_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 3) return 0;
  const int num_classes = data[0];
  const size_t label_bytes =
      std::min<size_t>((size_t{data[1]} << 8) | data[2], size - 3);
  MemoryFile labels(data + 3, label_bytes);
  MemoryFile images(data + 3 + label_bytes, size - 3 - label_bytes);
  absl::StatusOr<ps::common::Dataset> read =
      ps::common::ReadIdxDataset(images.path(), labels.path(), num_classes);
  if (!read.ok()) {
    if (read.status().message().empty()) Fail("an error without a message");
    return 0;
  }
  if (read->features.rows() != read->size() || read->size() == 0) {
    Fail("the rows do not match the labels");
  }
  for (int32_t label : read->labels) {
    if (label < 0 || label >= num_classes) Fail("a label out of range");
  }
  for (Eigen::Index i = 0; i < read->features.size(); ++i) {
    const float pixel = read->features.data()[i];
    if (!(pixel >= 0.0f && pixel <= 1.0f)) Fail("a pixel outside [0, 1]");
  }
  return 0;
}
