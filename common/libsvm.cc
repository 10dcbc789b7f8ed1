#include "common/libsvm.h"

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <string>
#include <system_error>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace ps::common {
namespace {

// The file is read this much at a time: big enough that fread's cost
// vanishes, small enough to stay out of the way of the data set itself.
constexpr size_t kReadChunkBytes = size_t{4} << 20;

bool IsBlank(char c) { return c == ' ' || c == '\t' || c == '\r'; }

// Fills `dataset` one line at a time; the first bad line stops it.
class LibsvmParser {
 public:
  explicit LibsvmParser(absl::string_view name) : name_(name) {}

  absl::Status ParseLine(absl::string_view line) {
    ++line_number_;
    const size_t comment = line.find('#');
    if (comment != absl::string_view::npos) line = line.substr(0, comment);
    absl::string_view token = NextToken(line);
    if (token.empty()) return absl::OkStatus();  // blank or comment only

    int32_t label = 0;
    if (token == "1" || token == "+1") {
      label = 1;
    } else if (token == "0" || token == "-1") {
      label = 0;
    } else if (token.find(':') != absl::string_view::npos) {
      return Error(
          absl::StrCat("missing label: the line starts with the "
                       "feature '",
                       token, "'"));
    } else {
      return Error(absl::StrCat("label '", token, "' is not 0, 1, -1 or +1"));
    }

    while (!(token = NextToken(line)).empty()) {
      const size_t colon = token.find(':');
      absl::Status status = AppendId(token.substr(0, colon), token);
      if (!status.ok()) return status;
      if (colon == absl::string_view::npos) {
        if (explicit_values_) data_.values.push_back(1.0f);
        continue;
      }
      status = AppendValue(token.substr(colon + 1), token);
      if (!status.ok()) return status;
    }
    data_.labels.push_back(label);
    data_.offsets.push_back(data_.ids.size());
    return absl::OkStatus();
  }

  SparseDataset Finish() && { return std::move(data_); }

 private:
  // The next blank-separated token of `line`, which it drops from `line`;
  // empty at the end.
  static absl::string_view NextToken(absl::string_view& line) {
    size_t begin = 0;
    while (begin < line.size() && IsBlank(line[begin])) ++begin;
    size_t end = begin;
    while (end < line.size() && !IsBlank(line[end])) ++end;
    absl::string_view token = line.substr(begin, end - begin);
    line.remove_prefix(end);
    return token;
  }

  absl::Status AppendId(absl::string_view digits, absl::string_view token) {
    if (digits.empty()) {
      return Error(absl::StrCat("feature '", token, "' has no id before ':'"));
    }
    constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();
    uint64_t id = 0;
    for (char c : digits) {
      if (c < '0' || c > '9') {
        return Error(absl::StrCat("id '", digits, "' of feature '", token,
                                  "' is not a non-negative integer"));
      }
      const uint64_t digit = static_cast<uint64_t>(c - '0');
      if (id > (kMax - digit) / 10) {
        return Error(absl::StrCat("id '", digits,
                                  "' is out of the uint64 "
                                  "range (at most ",
                                  kMax, ")"));
      }
      id = id * 10 + digit;
    }
    data_.ids.push_back(id);
    return absl::OkStatus();
  }

  absl::Status AppendValue(absl::string_view text, absl::string_view token) {
    float value = 0;
    const char* end = text.data() + text.size();
    const std::from_chars_result parsed =
        std::from_chars(text.data(), end, value);
    if (text.empty() || parsed.ptr != end || parsed.ec != std::errc() ||
        !std::isfinite(value)) {
      return Error(absl::StrCat("value '", text, "' of feature '", token,
                                "' is not a finite float"));
    }
    // Values stay implicit while all are 1; the first other one makes them
    // explicit for every feature so far.
    if (!explicit_values_ && value != 1.0f) {
      data_.values.assign(data_.ids.size() - 1, 1.0f);
      explicit_values_ = true;
    }
    if (explicit_values_) data_.values.push_back(value);
    return absl::OkStatus();
  }

  absl::Status Error(absl::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat("'", name_, "' line ", line_number_, ": ", what));
  }

  std::string name_;
  uint64_t line_number_ = 0;
  bool explicit_values_ = false;  // data_.values holds one per id
  SparseDataset data_;
};

struct FileCloser {
  void operator()(std::FILE* file) const { std::fclose(file); }
};

absl::StatusOr<SparseDataset> ReadFile(const std::string& path) {
  errno = 0;
  std::unique_ptr<std::FILE, FileCloser> file(std::fopen(path.c_str(), "rb"));
  if (file == nullptr) {
    return absl::ErrnoToStatus(errno != 0 ? errno : EIO,
                               absl::StrCat("cannot open '", path, "'"));
  }
  LibsvmParser parser(path);
  // buffer[0, size) holds the unparsed bytes: the start of a line whose end
  // has not been read yet, then what the last fread added.
  std::string buffer(kReadChunkBytes, '\0');
  size_t size = 0;
  while (true) {
    if (buffer.size() - size < kReadChunkBytes / 2) {
      buffer.resize(buffer.size() * 2);  // a line longer than the buffer
    }
    errno = 0;
    const size_t got =
        std::fread(buffer.data() + size, 1, buffer.size() - size, file.get());
    if (got == 0 && std::ferror(file.get())) {
      return absl::ErrnoToStatus(errno != 0 ? errno : EIO,
                                 absl::StrCat("cannot read '", path, "'"));
    }
    size += got;
    const bool at_end = got == 0;
    absl::string_view pending(buffer.data(), size);
    size_t newline;
    while ((newline = pending.find('\n')) != absl::string_view::npos) {
      absl::Status status = parser.ParseLine(pending.substr(0, newline));
      if (!status.ok()) return status;
      pending.remove_prefix(newline + 1);
    }
    if (at_end) {
      // The last line may lack its newline.
      if (!pending.empty()) {
        absl::Status status = parser.ParseLine(pending);
        if (!status.ok()) return status;
      }
      return std::move(parser).Finish();
    }
    std::memmove(buffer.data(), pending.data(), pending.size());
    size = pending.size();
  }
}

}  // namespace

absl::StatusOr<SparseDataset> ParseLibsvm(absl::string_view text,
                                          absl::string_view name) {
  LibsvmParser parser(name);
  while (!text.empty()) {
    const size_t newline = text.find('\n');
    absl::Status status = parser.ParseLine(text.substr(0, newline));
    if (!status.ok()) return status;
    if (newline == absl::string_view::npos) break;
    text.remove_prefix(newline + 1);
  }
  return std::move(parser).Finish();
}

absl::StatusOr<SparseDataset> ReadLibsvm(const std::string& path) {
  // A file that is what it says can still outgrow the memory a process may
  // use: say so, instead of ending in an uncaught std::bad_alloc.
  try {
    return ReadFile(path);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat("not enough memory to load '", path, "'"));
  }
}

}  // namespace ps::common
