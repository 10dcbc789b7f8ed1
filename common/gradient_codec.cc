#include "common/gradient_codec.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/float_bytes.h"

namespace ps::common {
namespace {

uint32_t BitsOf(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  return bits;
}

float FloatOf(uint32_t bits) {
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

constexpr uint32_t kFloatInfinity = 0x7F800000;
// The smallest float that fp16 rounds to infinity: 65520, halfway between
// 65504 and 65536, where ties-to-even goes up.
constexpr uint32_t kFirstHalfOverflow = 0x477FF000;
constexpr uint32_t kSmallestNormalHalf = 0x38800000;  // 2^-14
constexpr uint16_t kLargestHalf = 0x7BFF;             // 65504
constexpr uint16_t kLargestBfloat16 = 0x7F7F;

const char* KindName(CompressionKind kind) {
  switch (kind) {
    case CompressionKind::kNone:
      return "none";
    case CompressionKind::kFp16:
      return "fp16";
    case CompressionKind::kBf16:
      return "bf16";
    case CompressionKind::kTopK:
      return "topk";
  }
  return "none";
}

uint16_t Load16(const char* at) {
  uint16_t v;
  std::memcpy(&v, at, sizeof v);
  return v;
}

}  // namespace

std::string Compression::ToString() const {
  if (kind == CompressionKind::kTopK) return absl::StrCat("topk:", ratio);
  return KindName(kind);
}

absl::StatusOr<Compression> ParseCompression(absl::string_view spec) {
  if (spec.empty() || spec == "none") return Compression{};
  if (spec == "fp16") return Compression{CompressionKind::kFp16};
  if (spec == "bf16") return Compression{CompressionKind::kBf16};
  if (absl::ConsumePrefix(&spec, "topk:")) {
    double ratio = 0;
    if (absl::SimpleAtod(spec, &ratio) && ratio > 0 && ratio <= 1) {
      return Compression{CompressionKind::kTopK, ratio};
    }
    return absl::InvalidArgumentError(
        absl::StrCat("topk ratio '", spec,
                     "' is not a number in (0, 1]: topk:0.01 sends 1% of a "
                     "tensor's coordinates per step"));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown compression '", spec,
                   "'; expected none, fp16, bf16 or topk:RATIO"));
}

uint16_t FloatToHalf(float value) {
  const uint32_t bits = BitsOf(value);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000);
  const uint32_t magnitude = bits & 0x7FFFFFFF;
  if (magnitude >= kFloatInfinity) {
    if (magnitude == kFloatInfinity) return sign | 0x7C00;
    // A quiet NaN that keeps the payload's top bits.
    return sign | 0x7E00 | static_cast<uint16_t>((magnitude >> 13) & 0x3FF);
  }
  if (magnitude >= kFirstHalfOverflow) return sign | kLargestHalf;
  if (magnitude >= kSmallestNormalHalf) {
    const uint32_t mantissa = magnitude & 0x7FFFFF;
    uint32_t half = ((magnitude >> 23) - 127 + 15) << 10 | mantissa >> 13;
    const uint32_t rest = mantissa & 0x1FFF;
    // A carry out of the mantissa moves into the exponent, as it should.
    if (rest > 0x1000 || (rest == 0x1000 && (half & 1))) ++half;
    return sign | static_cast<uint16_t>(half);
  }
  // Subnormal fp16: multiples of 2^-24. In those units the float is
  // (1.mantissa) · 2^(exponent - 126).
  const uint32_t exponent = magnitude >> 23;
  if (exponent < 102) return sign;  // below 2^-25: rounds to zero
  const uint32_t significand = (magnitude & 0x7FFFFF) | 0x800000;
  const uint32_t shift = 126 - exponent;  // 14 to 24
  uint32_t half = significand >> shift;
  const uint32_t rest = significand & ((1u << shift) - 1);
  const uint32_t halfway = 1u << (shift - 1);
  if (rest > halfway || (rest == halfway && (half & 1))) ++half;
  return sign | static_cast<uint16_t>(half);
}

float HalfToFloat(uint16_t half) {
  const uint32_t sign = static_cast<uint32_t>(half & 0x8000) << 16;
  const uint32_t exponent = (half >> 10) & 0x1F;
  const uint32_t mantissa = half & 0x3FF;
  if (exponent == 0) {
    // Exact: mantissa < 2^10 and 2^-24 are both floats.
    const float value = static_cast<float>(mantissa) * 0x1p-24f;
    return sign ? -value : value;
  }
  if (exponent == 0x1F) return FloatOf(sign | kFloatInfinity | mantissa << 13);
  return FloatOf(sign | (exponent - 15 + 127) << 23 | mantissa << 13);
}

uint16_t FloatToBfloat16(float value) {
  const uint32_t bits = BitsOf(value);
  const uint32_t magnitude = bits & 0x7FFFFFFF;
  if (magnitude > kFloatInfinity) {
    return static_cast<uint16_t>(bits >> 16) | 0x40;  // quiet NaN
  }
  const uint32_t rounded = bits + 0x7FFF + ((bits >> 16) & 1);
  uint16_t result = static_cast<uint16_t>(rounded >> 16);
  if ((result & 0x7FFF) == 0x7F80 && magnitude != kFloatInfinity) {
    result = (result & 0x8000) | kLargestBfloat16;  // saturate, as fp16
  }
  return result;
}

float Bfloat16ToFloat(uint16_t bits) {
  return FloatOf(static_cast<uint32_t>(bits) << 16);
}

size_t TopKCount(size_t n, double ratio) {
  if (n == 0) return 0;
  const double wanted = std::ceil(ratio * static_cast<double>(n));
  if (wanted <= 1) return 1;
  if (wanted >= static_cast<double>(n)) return n;
  return static_cast<size_t>(wanted);
}

std::vector<uint32_t> SelectTopK(absl::Span<const float> values, size_t k) {
  k = std::min(k, values.size());
  std::vector<uint32_t> order(values.size());
  std::iota(order.begin(), order.end(), 0u);
  auto magnitude = [&](uint32_t i) {
    const float v = values[i];
    return std::isnan(v) ? INFINITY : std::fabs(v);
  };
  // A strict total order (magnitude down, then index up), so the k chosen
  // do not depend on how nth_element happens to partition.
  auto before = [&](uint32_t a, uint32_t b) {
    const float ma = magnitude(a), mb = magnitude(b);
    return ma != mb ? ma > mb : a < b;
  };
  if (k < order.size()) {
    std::nth_element(order.begin(), order.begin() + k, order.end(), before);
    order.resize(k);
  }
  std::sort(order.begin(), order.end());
  return order;
}

void EncodeDense(CompressionKind kind, absl::Span<const float> values,
                 std::string* out) {
  if (kind == CompressionKind::kNone || kind == CompressionKind::kTopK) {
    FloatsToBytes(values, out);
    return;
  }
  out->resize(values.size() * sizeof(uint16_t));
  char* at = out->data();
  const bool fp16 = kind == CompressionKind::kFp16;
  for (float v : values) {
    const uint16_t encoded = fp16 ? FloatToHalf(v) : FloatToBfloat16(v);
    std::memcpy(at, &encoded, sizeof encoded);
    at += sizeof encoded;
  }
}

absl::Status DecodePart(CompressionKind kind, absl::string_view values,
                        absl::string_view indices, absl::Span<float> out,
                        absl::string_view what) {
  auto invalid = [&](auto&&... message) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", message...));
  };
  if (kind != CompressionKind::kTopK) {
    if (!indices.empty()) {
      return invalid("has indices, which only a topk part carries");
    }
    const size_t width =
        kind == CompressionKind::kNone ? sizeof(float) : sizeof(uint16_t);
    if (values.size() != out.size() * width) {
      return invalid("holds ", values.size(), " bytes of values but its ",
                     out.size(), " keys need ", out.size() * width, " (", width,
                     " bytes each)");
    }
    if (kind == CompressionKind::kNone) {
      std::memcpy(out.data(), values.data(), values.size());
    } else {
      const bool fp16 = kind == CompressionKind::kFp16;
      for (size_t i = 0; i < out.size(); ++i) {
        const uint16_t bits = Load16(values.data() + i * sizeof bits);
        out[i] = fp16 ? HalfToFloat(bits) : Bfloat16ToFloat(bits);
      }
    }
    if (std::optional<size_t> bad = FindNonFinite(out)) {
      return invalid("the value at offset ", *bad, " is ", out[*bad],
                     "; gradients must be finite");
    }
    return absl::OkStatus();
  }
  if (indices.size() % sizeof(uint32_t) != 0) {
    return invalid("holds ", indices.size(),
                   " bytes of indices, not a whole number of uint32");
  }
  const size_t kept = indices.size() / sizeof(uint32_t);
  if (values.size() != kept * sizeof(float)) {
    return invalid("has ", kept, " indices but ", values.size(),
                   " bytes of values; a topk part sends one float32 per "
                   "index");
  }
  if (kept > out.size()) {
    return invalid("has ", kept, " indices for its ", out.size(), " keys");
  }
  std::fill(out.begin(), out.end(), 0.0f);
  int64_t previous = -1;
  for (size_t j = 0; j < kept; ++j) {
    uint32_t index;
    std::memcpy(&index, indices.data() + j * sizeof index, sizeof index);
    if (index >= out.size()) {
      return invalid("index ", index, " is outside its ", out.size(), " keys");
    }
    if (static_cast<int64_t>(index) <= previous) {
      return invalid("index ", index, " follows ", previous,
                     "; indices must be strictly increasing (sorted, unique)");
    }
    previous = index;
    float value;
    std::memcpy(&value, values.data() + j * sizeof value, sizeof value);
    if (!std::isfinite(value)) {
      return invalid("the value at index ", index, " is ", value,
                     "; gradients must be finite");
    }
    out[index] = value;
  }
  return absl::OkStatus();
}

}  // namespace ps::common
