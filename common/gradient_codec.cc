#include "common/gradient_codec.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <numeric>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/cpu_clones.h"
#include "common/float_bytes.h"
#include "common/splitmix64.h"

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

// The conversions below are branch-free: every case is computed and the
// right one selected, so loops over them compile to vector code (SSE2 in
// the portable build, AVX2 under -DPS_NATIVE=ON). bf16's NaN stays quiet. A
// branchy scalar form cost 3–4 ns a value, more than sending the bytes it
// saved.

// `if_true` where `condition` holds, else `if_false`, as bit masks: GCC
// keeps a ?: beside a float operation as a branch (the operation might
// trap), which stops the loop from being vectorised.
inline uint32_t Select(bool condition, uint32_t if_true, uint32_t if_false) {
  const uint32_t mask = 0u - static_cast<uint32_t>(condition);
  return (if_true & mask) | (if_false & ~mask);
}

// fp16 bits of the float with `bits`: round to nearest, ties to even.
inline uint16_t HalfOfBits(uint32_t bits) {
  const uint32_t sign = (bits >> 16) & 0x8000;
  const uint32_t magnitude = bits & 0x7FFFFFFF;
  // Normal: the exponent rebiased from 127 to 15 and the 13 bits dropped
  // rounded: adding 0xFFF, and 1 more when the kept part is odd, carries
  // exactly when they are above half, or half with an odd kept part. A
  // carry out of the mantissa moves into the exponent, as it should.
  const uint32_t normal =
      (magnitude - 0x38000000 + 0xFFF + ((magnitude >> 13) & 1)) >> 13;
  // Subnormal (below 2^-14): in 0.5 + x the unit of the last place is
  // 2^-24, fp16's subnormal step, so the addition itself rounds x to
  // nearest even and leaves its count of 2^-24 in the low bits.
  const uint32_t subnormal = BitsOf(FloatOf(magnitude) + 0.5f) - 0x3F000000;
  // A quiet NaN that keeps the payload's top bits.
  const uint32_t nan = 0x7E00 | ((magnitude >> 13) & 0x3FF);
  uint32_t half = Select(magnitude < kSmallestNormalHalf, subnormal, normal);
  half = Select(magnitude >= kFirstHalfOverflow, kLargestHalf, half);
  half = Select(magnitude == kFloatInfinity, 0x7C00, half);
  half = Select(magnitude > kFloatInfinity, nan, half);
  return static_cast<uint16_t>(sign | half);
}

// The float bits of fp16 `half` (exact).
inline uint32_t FloatBitsOfHalf(uint32_t half) {
  const uint32_t sign = (half & 0x8000) << 16;
  const uint32_t exponent = half & 0x7C00;
  const uint32_t rest = (half & 0x7FFF) << 13;  // float's positions
  // Normal: the exponent rebiased from 15 to 127.
  uint32_t bits = rest + 0x38000000;
  // Infinity and NaN: the exponent all ones, NaN's payload kept.
  bits = Select(exponent == 0x7C00, rest + 0x70000000, bits);
  // Zero and subnormal, m · 2^-24: 2^-14 · (1 + m/1024) − 2^-14, exact.
  const uint32_t subnormal = BitsOf(FloatOf(rest + 0x38800000) - 0x1p-14f);
  bits = Select(exponent == 0, subnormal, bits);
  return sign | bits;
}

// bfloat16 bits of the float with `bits`: round to nearest, ties to even.
inline uint16_t Bfloat16OfBits(uint32_t bits) {
  const uint32_t magnitude = bits & 0x7FFFFFFF;
  const uint32_t rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16;
  // A finite value that rounded up to infinity saturates, as fp16's does.
  const uint32_t saturated = (rounded & 0x8000) | kLargestBfloat16;
  const bool overflowed =
      ((rounded & 0x7FFF) == 0x7F80) & (magnitude != kFloatInfinity);
  uint32_t result = Select(overflowed, saturated, rounded);
  result = Select(magnitude > kFloatInfinity, (bits >> 16) | 0x40, result);
  return static_cast<uint16_t>(result);
}

// 2-byte codes of `values` into `out` (values.size() · 2 bytes).
template <uint16_t (*Encode)(uint32_t)>
[[gnu::always_inline]] inline void EncodeHalves(absl::Span<const float> values,
                                                char* out) {
  const float* in = values.data();
  for (size_t i = 0; i < values.size(); ++i) {
    uint32_t bits;
    std::memcpy(&bits, in + i, sizeof bits);
    const uint16_t code = Encode(bits);
    std::memcpy(out + i * sizeof code, &code, sizeof code);
  }
}

inline uint32_t FloatBitsOfBfloat16(uint32_t code) { return code << 16; }

// Floats of the 2-byte codes in `in` (out.size() of them); false when one
// of them is infinite or NaN. The test rides along in the same pass.
template <uint32_t (*Decode)(uint32_t)>
[[gnu::always_inline]] inline bool DecodeHalves(const char* in,
                                                absl::Span<float> out) {
  float* to = out.data();
  uint32_t non_finite = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    uint16_t code;
    std::memcpy(&code, in + i * sizeof code, sizeof code);
    const uint32_t bits = Decode(code);
    non_finite |= (bits & kFloatInfinity) == kFloatInfinity;
    std::memcpy(to + i, &bits, sizeof bits);
  }
  return non_finite == 0;
}

// The codecs' loops, built for each instruction set (common/cpu_clones.h).
PS_CPU_CLONES void EncodeFp16(absl::Span<const float> values, char* out) {
  EncodeHalves<HalfOfBits>(values, out);
}
PS_CPU_CLONES void EncodeBf16(absl::Span<const float> values, char* out) {
  EncodeHalves<Bfloat16OfBits>(values, out);
}
PS_CPU_CLONES bool DecodeFp16(const char* in, absl::Span<float> out) {
  return DecodeHalves<FloatBitsOfHalf>(in, out);
}
PS_CPU_CLONES bool DecodeBf16(const char* in, absl::Span<float> out) {
  return DecodeHalves<FloatBitsOfBfloat16>(in, out);
}

// |v| as an integer that orders as |v| does (a non-negative float's bits
// do), NaN as infinity's: it counts as the largest magnitude.
inline uint32_t MagnitudeKey(float v) {
  return std::min(BitsOf(v) & 0x7FFFFFFF, kFloatInfinity);
}

// A key that somewhat more than k of `values` reach, from a sample of
// them: about 2k/n of the sample reaches it, plus a margin, so fewer than
// k values reach it only by a fluke many standard deviations out (top-k
// is exact either way; see SelectTopK). 0, every value, where a sample
// would not save a pass's worth of work.
uint32_t SampledThreshold(absl::Span<const float> values, size_t k) {
  constexpr size_t kSamples = 1024;
  const size_t n = values.size();
  const size_t rank = static_cast<size_t>(2.0 * static_cast<double>(k) *
                                          kSamples / static_cast<double>(n)) +
                      16;
  if (n < 4 * kSamples || rank >= kSamples / 4) return 0;
  // Positions from a fixed hash, not a stride: a stride could keep in step
  // with a tensor's rows.
  std::vector<uint32_t> sample(kSamples);
  for (size_t i = 0; i < kSamples; ++i) {
    sample[i] = MagnitudeKey(values[SplitMix64(i) % n]);
  }
  std::nth_element(sample.begin(), sample.begin() + (rank - 1), sample.end(),
                   std::greater<uint32_t>());
  return sample[rank - 1];
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

uint16_t FloatToHalf(float value) { return HalfOfBits(BitsOf(value)); }

float HalfToFloat(uint16_t half) { return FloatOf(FloatBitsOfHalf(half)); }

uint16_t FloatToBfloat16(float value) { return Bfloat16OfBits(BitsOf(value)); }

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
  if (k == 0) return {};
  // The candidates: every value whose key reaches the threshold. When at
  // least k do, the top k are among them (a value left out ranks below
  // every candidate), so choosing among the candidates is exact; when the
  // sample misled and fewer do, every value is a candidate.
  std::vector<uint32_t> candidates;
  uint32_t threshold = SampledThreshold(values, k);
  for (;;) {
    candidates.clear();
    for (size_t i = 0; i < values.size(); ++i) {
      if (MagnitudeKey(values[i]) >= threshold) {
        candidates.push_back(static_cast<uint32_t>(i));
      }
    }
    if (candidates.size() >= k || threshold == 0) break;
    threshold = 0;
  }
  std::vector<uint32_t> keys(candidates.size());
  for (size_t j = 0; j < candidates.size(); ++j) {
    keys[j] = MagnitudeKey(values[candidates[j]]);
  }
  // The k-th largest key: every candidate above it is chosen, and of those
  // equal to it the lowest indices, as many as make k (ties in magnitude go
  // to the lower index). Candidates are in index order, so the chosen are.
  std::vector<uint32_t> order = keys;
  std::nth_element(order.begin(), order.begin() + (k - 1), order.end(),
                   std::greater<uint32_t>());
  const uint32_t kth = order[k - 1];
  size_t ties = k - static_cast<size_t>(std::count_if(
                        keys.begin(), keys.end(),
                        [kth](uint32_t key) { return key > kth; }));
  std::vector<uint32_t> chosen;
  chosen.reserve(k);
  for (size_t j = 0; j < candidates.size(); ++j) {
    if (keys[j] > kth || (keys[j] == kth && ties > 0)) {
      if (keys[j] == kth) --ties;
      chosen.push_back(candidates[j]);
    }
  }
  return chosen;
}

void EncodeDense(CompressionKind kind, absl::Span<const float> values,
                 std::string* out) {
  if (kind == CompressionKind::kNone || kind == CompressionKind::kTopK) {
    FloatsToBytes(values, out);
    return;
  }
  out->resize(values.size() * sizeof(uint16_t));
  if (kind == CompressionKind::kFp16) {
    EncodeFp16(values, out->data());
  } else {
    EncodeBf16(values, out->data());
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
    bool finite = true;
    if (kind == CompressionKind::kNone) {
      if (absl::Status s = BytesToFloats(values, out, what); !s.ok()) return s;
      finite = !FindNonFinite(out).has_value();
    } else {
      if (values.size() != out.size() * sizeof(uint16_t)) {
        return invalid("holds ", values.size(), " bytes of values but its ",
                       out.size(), " keys need ", out.size() * sizeof(uint16_t),
                       " (2 bytes each)");
      }
      finite = kind == CompressionKind::kFp16 ? DecodeFp16(values.data(), out)
                                              : DecodeBf16(values.data(), out);
    }
    if (!finite) {
      const size_t bad = *FindNonFinite(out);
      return invalid("the value at offset ", bad, " is ", out[bad],
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
