#ifndef PS_COMMON_LIBSVM_H_
#define PS_COMMON_LIBSVM_H_

// The LIBSVM / svmlight text format of sparse binary-classification data:
//
//   label id[:value] id[:value] ...   # optional comment
//
// label is 0 or 1 (-1 and +1 are read as 0 and 1); each id is any uint64
// (a hashed feature, not a dense column index), in any order, repeats kept
// as written; a value is a finite float, 1 when omitted. `#` starts a
// comment; blank lines are skipped. Fields are separated by spaces or tabs;
// a line may end in \r\n.
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ps::common {

// Rows of sparse features in compressed sparse row (CSR) form.
struct SparseDataset {
  // Row r's features are ids[k], value(k) for k in [offsets[r],
  // offsets[r+1]); offsets has one entry more than there are rows.
  std::vector<uint64_t> offsets = {0};
  std::vector<uint64_t> ids;
  // Empty when every value is 1 (the usual case for one-hot CTR data,
  // which then costs no float per feature); else one per id.
  std::vector<float> values;
  std::vector<int32_t> labels;  // 0 or 1, one per row

  int64_t size() const { return static_cast<int64_t>(labels.size()); }
  float value(uint64_t k) const { return values.empty() ? 1.0f : values[k]; }
};

// Parses `text`, LIBSVM lines; `name` (a file name) starts every error,
// which names the line and what is wrong with it: a missing label, a label
// that is not 0/1/-1/+1, an id that is not a number or out of uint64 range,
// a value that is not a finite float.
absl::StatusOr<SparseDataset> ParseLibsvm(absl::string_view text,
                                          absl::string_view name);

// Reads the file at `path` (streamed in chunks, not loaded whole) with
// ParseLibsvm's rules; also fails on a file that cannot be read.
absl::StatusOr<SparseDataset> ReadLibsvm(const std::string& path);

}  // namespace ps::common

#endif  // PS_COMMON_LIBSVM_H_
