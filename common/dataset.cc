#include "common/dataset.h"

#include <sys/stat.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace ps::common {
namespace {

constexpr uint32_t kImagesMagic = 0x00000803;  // uint8 data, 3 dimensions
constexpr uint32_t kLabelsMagic = 0x00000801;  // uint8 data, 1 dimension

// Caps what a header may make us allocate, so a corrupt or hostile header
// fails cleanly instead of exhausting memory: 2^31 pixels is 8 GiB of floats.
constexpr uint64_t kMaxPixels = uint64_t{1} << 31;

std::string HexString(uint32_t value) {
  return absl::StrCat("0x", absl::Hex(value, absl::kZeroPad8));
}

// Input is read in chunks of this size; the payloads are tens of MB.
constexpr size_t kInputChunkBytes = size_t{1} << 20;

// Pixels are inflated and converted this many at a time; small enough to
// stay in cache.
constexpr size_t kConvertChunkBytes = size_t{1} << 16;

// The content of a gzip or plain file, read sequentially. We drive inflate()
// ourselves instead of using gzread() because gzread() returns a clean end of
// file when the input stops right after the compressed data, so a file cut
// inside its 8-byte gzip trailer (CRC and length) would pass unnoticed.
class ContentReader {
 public:
  ContentReader() = default;
  ContentReader(const ContentReader&) = delete;
  ContentReader& operator=(const ContentReader&) = delete;
  ~ContentReader() {
    if (inflating_) inflateEnd(&stream_);
    if (file_ != nullptr) std::fclose(file_);
  }

  absl::Status Open(const std::string& path) {
    path_ = path;
    errno = 0;
    file_ = std::fopen(path.c_str(), "rb");
    if (file_ == nullptr) {
      return absl::ErrnoToStatus(errno != 0 ? errno : EIO,
                                 absl::StrCat("cannot open '", path, "'"));
    }
    struct stat info;
    if (::fstat(::fileno(file_), &info) != 0) {
      return absl::ErrnoToStatus(errno,
                                 absl::StrCat("cannot stat '", path, "'"));
    }
    file_bytes_ = static_cast<uint64_t>(info.st_size);
    input_.resize(kInputChunkBytes);
    absl::Status status = Refill();
    if (!status.ok()) return status;
    // Like gzip -d, treat anything without the gzip magic as plain.
    if (stream_.avail_in >= 2 && stream_.next_in[0] == 0x1f &&
        stream_.next_in[1] == 0x8b) {
      if (inflateInit2(&stream_, 16 + MAX_WBITS) != Z_OK) {
        return absl::ResourceExhaustedError(
            absl::StrCat("cannot start decompressing '", path, "'"));
      }
      inflating_ = true;
    }
    return absl::OkStatus();
  }

  const std::string& path() const { return path_; }

  // The most content bytes the file can hold: its size when plain; for
  // gzip, deflate's best ratio (1032:1) times its size. Sizes declared by a
  // header are held to it before anything of their size is allocated.
  uint64_t MaxContentBytes() const {
    return inflating_ ? file_bytes_ * kMaxDeflateRatio : file_bytes_;
  }

  // Fails unless `bytes` more content bytes can follow what was read.
  absl::Status CheckCanHold(uint64_t bytes, absl::string_view what) const {
    const uint64_t most = MaxContentBytes();
    if (bytes <= most && position_ <= most - bytes) return absl::OkStatus();
    return absl::DataLossError(absl::StrCat(
        "'", path_, "' declares ", what, " (", bytes, " bytes) but the file, ",
        file_bytes_, " bytes", inflating_ ? " of gzip" : "",
        ", cannot hold that much: it is truncated or its header is corrupt"));
  }

  // Reads exactly `size` bytes; `what` names them for error messages.
  absl::Status ReadExactly(void* data, uint64_t size, absl::string_view what) {
    absl::StatusOr<uint64_t> got = ReadUpTo(data, size, what);
    if (!got.ok()) return got.status();
    if (*got < size) {
      return absl::DataLossError(
          absl::StrCat("'", path_, "' is truncated: it ends after ", position_,
                       " bytes, in the ", what));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<uint32_t> ReadBigEndianU32(absl::string_view what) {
    std::array<unsigned char, 4> b;
    absl::Status status = ReadExactly(b.data(), b.size(), what);
    if (!status.ok()) return status;
    return (uint32_t{b[0]} << 24) | (uint32_t{b[1]} << 16) |
           (uint32_t{b[2]} << 8) | uint32_t{b[3]};
  }

  // Fails if the content goes on past what has been read. For gzip this also
  // finishes the stream, which verifies the trailer's CRC and length.
  absl::Status ExpectEnd() {
    const uint64_t expected_size = position_;
    unsigned char extra;
    absl::StatusOr<uint64_t> got = ReadUpTo(&extra, 1, "gzip trailer");
    if (!got.ok()) return got.status();
    if (*got > 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("'", path_, "' has trailing bytes after the ",
                       expected_size, " bytes its header accounts for"));
    }
    return absl::OkStatus();
  }

 private:
  // Loads the next chunk of the file into the input buffer; at end of file
  // it leaves the buffer empty.
  absl::Status Refill() {
    errno = 0;
    const size_t n = std::fread(input_.data(), 1, input_.size(), file_);
    if (n == 0 && std::ferror(file_)) {
      return absl::ErrnoToStatus(errno != 0 ? errno : EIO,
                                 absl::StrCat("cannot read '", path_, "'"));
    }
    stream_.next_in = input_.data();
    stream_.avail_in = static_cast<uInt>(n);
    return absl::OkStatus();
  }

  // Reads up to `size` bytes; fewer only at a clean end of the content.
  absl::StatusOr<uint64_t> ReadUpTo(void* data, uint64_t size,
                                    absl::string_view what) {
    auto* out = static_cast<unsigned char*>(data);
    uint64_t done = 0;
    while (done < size) {
      if (stream_.avail_in == 0) {
        absl::Status status = Refill();
        if (!status.ok()) return status;
      }
      const uint64_t want = std::min<uint64_t>(size - done, UINT_MAX);
      if (!inflating_) {
        if (stream_.avail_in == 0) break;
        const uInt n =
            static_cast<uInt>(std::min<uint64_t>(want, stream_.avail_in));
        std::memcpy(out + done, stream_.next_in, n);
        stream_.next_in += n;
        stream_.avail_in -= n;
        done += n;
        position_ += n;
        continue;
      }
      if (stream_ended_) {
        if (stream_.avail_in == 0) break;
        // Concatenated gzip members make one content, as for gzip -d; any
        // other bytes after a member are not ours to ignore.
        if (stream_.next_in[0] != 0x1f) {
          return absl::InvalidArgumentError(absl::StrCat(
              "'", path_, "' has trailing bytes after its gzip ", "stream"));
        }
        inflateReset(&stream_);
        stream_ended_ = false;
      }
      if (stream_.avail_in == 0) {
        return absl::DataLossError(absl::StrCat(
            "'", path_, "' is truncated: its gzip stream ends early, after ",
            position_, " bytes of content, in the ", what));
      }
      stream_.next_out = out + done;
      stream_.avail_out = static_cast<uInt>(want);
      const int ret = inflate(&stream_, Z_NO_FLUSH);
      done += want - stream_.avail_out;
      position_ += want - stream_.avail_out;
      if (ret == Z_STREAM_END) {
        stream_ended_ = true;
      } else if (ret != Z_OK) {
        return absl::DataLossError(absl::StrCat(
            "'", path_, "' is corrupt: gzip error in the ", what, ": ",
            stream_.msg != nullptr ? stream_.msg : zError(ret)));
      }
    }
    return done;
  }

  std::string path_;
  // Deflate emits at least one bit per 258-byte match: 1032 content bytes
  // per compressed byte at best.
  static constexpr uint64_t kMaxDeflateRatio = 1032;
  uint64_t file_bytes_ = 0;  // on disk
  uint64_t position_ = 0;    // content bytes read so far
  std::FILE* file_ = nullptr;
  std::vector<unsigned char> input_;
  z_stream stream_{};          // its next_in/avail_in also track plain input
  bool inflating_ = false;     // the file is gzip and inflateInit2 succeeded
  bool stream_ended_ = false;  // inflate finished the current gzip member
};

absl::Status CheckMagic(const ContentReader& reader, uint32_t expected,
                        uint32_t got, const char* kind) {
  if (got == expected) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "'", reader.path(), "' is not an IDX ", kind, " file: magic number is ",
      HexString(got), ", expected ", HexString(expected)));
}

// Reads one header dimension and rejects zero and anything beyond the cap.
absl::StatusOr<uint64_t> ReadDimension(ContentReader& reader,
                                       const char* name) {
  absl::StatusOr<uint32_t> dim = reader.ReadBigEndianU32("IDX header");
  if (!dim.ok()) return dim.status();
  if (*dim == 0 || *dim > kMaxPixels) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", reader.path(), "' declares ", *dim, " ", name,
                     "; expected between 1 and ", kMaxPixels));
  }
  return uint64_t{*dim};
}

absl::StatusOr<Dataset> ReadIdx(const std::string& images_path,
                                const std::string& labels_path,
                                int num_classes) {
  if (num_classes <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_classes must be positive, got ", num_classes));
  }

  // Both headers and the labels first, so their faults show before the long
  // pixel read.
  ContentReader images;
  absl::Status status = images.Open(images_path);
  if (!status.ok()) return status;
  absl::StatusOr<uint32_t> magic = images.ReadBigEndianU32("IDX header");
  if (!magic.ok()) return magic.status();
  status = CheckMagic(images, kImagesMagic, *magic, "image");
  if (!status.ok()) return status;
  absl::StatusOr<uint64_t> count = ReadDimension(images, "images");
  if (!count.ok()) return count.status();
  absl::StatusOr<uint64_t> rows = ReadDimension(images, "rows per image");
  if (!rows.ok()) return rows.status();
  absl::StatusOr<uint64_t> cols = ReadDimension(images, "columns per image");
  if (!cols.ok()) return cols.status();
  // Each factor is <= 2^31, so each product below fits in 64 bits.
  const uint64_t pixels_per_image = *rows * *cols;
  if (pixels_per_image > kMaxPixels || *count * pixels_per_image > kMaxPixels) {
    return absl::InvalidArgumentError(absl::StrCat(
        "'", images_path, "' declares ", *count, " images of ", *rows, "x",
        *cols, " pixels, more than the limit of ", kMaxPixels, " pixels"));
  }

  ContentReader labels;
  status = labels.Open(labels_path);
  if (!status.ok()) return status;
  magic = labels.ReadBigEndianU32("IDX header");
  if (!magic.ok()) return magic.status();
  status = CheckMagic(labels, kLabelsMagic, *magic, "label");
  if (!status.ok()) return status;
  absl::StatusOr<uint64_t> label_count = ReadDimension(labels, "labels");
  if (!label_count.ok()) return label_count.status();
  if (*label_count != *count) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", images_path, "' holds ", *count, " images but '",
                     labels_path, "' holds ", *label_count, " labels"));
  }

  // Counts within the caps can still ask for gigabytes: hold them to what
  // the files can contain before allocating anything of their size.
  status = labels.CheckCanHold(*count, absl::StrCat(*count, " labels"));
  if (!status.ok()) return status;
  status = images.CheckCanHold(
      *count * pixels_per_image,
      absl::StrCat(*count, " images of ", *rows, "x", *cols, " pixels"));
  if (!status.ok()) return status;

  Dataset data;
  data.num_classes = num_classes;
  std::vector<unsigned char> raw_labels(*count);
  status = labels.ReadExactly(raw_labels.data(), *count, "label data");
  if (!status.ok()) return status;
  status = labels.ExpectEnd();
  if (!status.ok()) return status;
  data.labels.resize(*count);
  for (uint64_t i = 0; i < *count; ++i) {
    if (raw_labels[i] >= num_classes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "'", labels_path, "': label ", int{raw_labels[i]}, " of example ", i,
          " is outside [0, ", num_classes, ")"));
    }
    data.labels[i] = raw_labels[i];
  }

  // Pixels go through a cache-sized buffer straight into the matrix: no
  // second copy of the whole payload. A table keeps each value bit-identical
  // to pixel / 255.0f.
  std::array<float, 256> scale;
  for (int v = 0; v < 256; ++v) scale[v] = static_cast<float>(v) / 255.0f;
  const uint64_t num_pixels = *count * pixels_per_image;
  data.features.resize(static_cast<Eigen::Index>(*count),
                       static_cast<Eigen::Index>(pixels_per_image));
  float* out = data.features.data();
  const std::string what =
      absl::StrCat("pixel data of ", *count, " images of ", *rows, "x", *cols);
  std::vector<unsigned char> chunk(
      std::min<uint64_t>(num_pixels, kConvertChunkBytes));
  for (uint64_t done = 0; done < num_pixels;) {
    const uint64_t n = std::min<uint64_t>(chunk.size(), num_pixels - done);
    status = images.ReadExactly(chunk.data(), n, what);
    if (!status.ok()) return status;
    for (uint64_t i = 0; i < n; ++i) out[done + i] = scale[chunk[i]];
    done += n;
  }
  status = images.ExpectEnd();
  if (!status.ok()) return status;
  return data;
}

}  // namespace

absl::StatusOr<Dataset> ReadIdxDataset(const std::string& images_path,
                                       const std::string& labels_path,
                                       int num_classes) {
  // The sizes are checked against the files first, but a data set that is
  // what it says can still outgrow the memory a process may use (ulimit -v):
  // say so, instead of ending in an uncaught std::bad_alloc.
  try {
    return ReadIdx(images_path, labels_path, num_classes);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat("not enough memory to load '", images_path, "' and '",
                     labels_path, "'"));
  }
}

absl::StatusOr<TrainTestData> LoadFashionMnist(const std::string& dir) {
  TrainTestData result;
  absl::StatusOr<Dataset> train =
      ReadIdxDataset(absl::StrCat(dir, "/train-images-idx3-ubyte.gz"),
                     absl::StrCat(dir, "/train-labels-idx1-ubyte.gz"), 10);
  if (!train.ok()) return train.status();
  absl::StatusOr<Dataset> test =
      ReadIdxDataset(absl::StrCat(dir, "/t10k-images-idx3-ubyte.gz"),
                     absl::StrCat(dir, "/t10k-labels-idx1-ubyte.gz"), 10);
  if (!test.ok()) return test.status();
  if (train->features.cols() != test->features.cols()) {
    return absl::InvalidArgumentError(
        absl::StrCat("Fashion-MNIST in '", dir, "': training images have ",
                     train->features.cols(), " pixels but test images have ",
                     test->features.cols()));
  }
  result.train = *std::move(train);
  result.test = *std::move(test);
  return result;
}

Dataset SelectExamples(const Dataset& from, absl::Span<const KeyRange> ranges) {
  Dataset selected;
  selected.num_classes = from.num_classes;
  uint64_t rows = 0;
  for (const KeyRange& r : ranges) rows += r.size();
  selected.features.resize(static_cast<Eigen::Index>(rows),
                           from.features.cols());
  selected.labels.reserve(rows);
  Eigen::Index at = 0;
  for (const KeyRange& r : ranges) {
    const auto n = static_cast<Eigen::Index>(r.size());
    selected.features.middleRows(at, n) =
        from.features.middleRows(static_cast<Eigen::Index>(r.begin), n);
    selected.labels.insert(selected.labels.end(),
                           from.labels.begin() + static_cast<int64_t>(r.begin),
                           from.labels.begin() + static_cast<int64_t>(r.end));
    at += n;
  }
  return selected;
}

}  // namespace ps::common
