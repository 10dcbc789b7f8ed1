#ifndef PS_COMMON_FLOAT_BYTES_H_
#define PS_COMMON_FLOAT_BYTES_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/cord.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

// The wire format of values is little-endian float32, which on the hosts we
// build for is the memory layout itself: encoding is one memcpy.
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "ps.v1 values are little-endian float32; this host is not little-endian"
#endif

namespace ps::common {

// Replaces `out` with the bytes of `values`.
void FloatsToBytes(absl::Span<const float> values, std::string* out);

// Copies `bytes` into `out`; fails unless it holds exactly out.size() floats.
// `what` names the payload in the error ("gradient", "initial values").
absl::Status BytesToFloats(absl::string_view bytes, absl::Span<float> out,
                           absl::string_view what);
// The same for bytes that arrived in pieces (a message's slices).
absl::Status BytesToFloats(const absl::Cord& bytes, absl::Span<float> out,
                           absl::string_view what);

// Fails unless `bytes` bytes hold exactly `expected` floats; the error
// names `what` as BytesToFloats does.
absl::Status CheckFloatBytes(size_t bytes, size_t expected,
                             absl::string_view what);

// Copies the next out.size() floats from float32 bytes that arrived in
// pieces (a request's slices), advancing `from` past them.
void ReadFloats(absl::Cord::CharIterator& from, absl::Span<float> out);

// Index of the first NaN or infinity, if any.
std::optional<size_t> FindNonFinite(absl::Span<const float> values);

}  // namespace ps::common

#endif  // PS_COMMON_FLOAT_BYTES_H_
