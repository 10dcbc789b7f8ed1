#ifndef PS_COMMON_FLOAT_BYTES_H_
#define PS_COMMON_FLOAT_BYTES_H_

#include <cstdint>
#include <optional>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/status.h"
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

// Fails unless `bytes` holds exactly `expected` floats; the error names
// `what` as BytesToFloats does.
absl::Status CheckFloatBytes(absl::string_view bytes, size_t expected,
                             absl::string_view what);

// Index of the first NaN or infinity, if any.
std::optional<size_t> FindNonFinite(absl::Span<const float> values);

// The same over float32 bytes (a whole number of floats), read in place: a
// server validates a push without copying it first.
std::optional<size_t> FindNonFiniteBytes(absl::string_view bytes);

}  // namespace ps::common

#endif  // PS_COMMON_FLOAT_BYTES_H_
