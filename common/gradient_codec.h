#ifndef PS_COMMON_GRADIENT_CODEC_H_
#define PS_COMMON_GRADIENT_CODEC_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

// How a pushed dense gradient may travel (ps.v1.GradientPart): as float32,
// as IEEE fp16 or bfloat16 (round to nearest, ties to even), or as the
// top-k coordinates by magnitude. Pure functions: the worker encodes with
// them, the server decodes and validates with them.
namespace ps::common {

enum class CompressionKind { kNone, kFp16, kBf16, kTopK };

struct Compression {
  CompressionKind kind = CompressionKind::kNone;
  // kTopK: the fraction of a tensor's coordinates sent each step, in
  // (0, 1]. Default: 0 (unused by the other kinds)
  double ratio = 0;

  // "none", "fp16", "bf16", "topk:0.01": what ParseCompression reads.
  std::string ToString() const;
};

// "" and "none", "fp16", "bf16", "topk:RATIO" (0 < RATIO <= 1); anything
// else is INVALID_ARGUMENT naming the accepted forms.
absl::StatusOr<Compression> ParseCompression(absl::string_view spec);

// The largest finite fp16, 65504: where FloatToHalf saturates.
inline constexpr float kMaxHalf = 65504.0f;

// Round to nearest, ties to even. A finite value beyond the format's range
// saturates to its largest finite value of that sign (a finite gradient
// must not turn into an infinity the server refuses, losing the whole
// push); infinities stay infinite and NaN stays NaN, so the server refuses
// them as it refuses them in float32.
uint16_t FloatToHalf(float value);
float HalfToFloat(uint16_t half);
uint16_t FloatToBfloat16(float value);
float Bfloat16ToFloat(uint16_t bits);

// Coordinates top-k keeps of `n`: ceil(ratio · n), at least 1, at most n.
size_t TopKCount(size_t n, double ratio);

// The `k` coordinates of largest magnitude, in increasing index order. Ties
// in magnitude go to the lower index, so the choice is deterministic; NaN
// counts as the largest magnitude (it is sent, and the server refuses it).
std::vector<uint32_t> SelectTopK(absl::Span<const float> values, size_t k);

// Encodes `values` as `kind` (not kTopK) into `out`: float32, or 2 bytes
// per value, little-endian.
void EncodeDense(CompressionKind kind, absl::Span<const float> values,
                 std::string* out);

// Decodes one part of a compressed gradient into `out` (the part's keys;
// out.size() is its key count). kNone/kFp16/kBf16: `values` holds
// out.size() values of the kind's width and `indices` is empty. kTopK:
// `indices` holds little-endian uint32 offsets into `out`, strictly
// increasing, `values` one float32 per index; the other coordinates are 0.
// Every decoded value must be finite. INVALID_ARGUMENT names the problem,
// with `what` ("part 2 (topk) of the gradient") in front; `out` is
// unspecified then.
absl::Status DecodePart(CompressionKind kind, absl::string_view values,
                        absl::string_view indices, absl::Span<float> out,
                        absl::string_view what);

}  // namespace ps::common

#endif  // PS_COMMON_GRADIENT_CODEC_H_
