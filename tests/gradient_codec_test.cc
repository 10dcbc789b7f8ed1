#include "common/gradient_codec.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "common/splitmix64.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ps::common {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// The reference: every non-negative finite fp16 from its definition
// (m · 2^-24 below 2^-14, (1 + m/1024) · 2^(e-15) above), in bit order,
// which is also value order.
std::vector<double> AllNonNegativeHalves() {
  std::vector<double> values;
  for (int e = 0; e < 31; ++e) {
    for (int m = 0; m < 1024; ++m) {
      values.push_back(e == 0 ? std::ldexp(m, -24)
                              : std::ldexp(1.0 + m / 1024.0, e - 15));
    }
  }
  return values;
}

// Nearest fp16 bits to a non-negative finite x up to 65504 by search,
// ties to the even bit pattern.
uint16_t NearestHalf(const std::vector<double>& halves, double x) {
  size_t above =
      std::lower_bound(halves.begin(), halves.end(), x) - halves.begin();
  if (above == halves.size()) return static_cast<uint16_t>(above - 1);
  if (above == 0 || halves[above] == x) return static_cast<uint16_t>(above);
  const double up = halves[above] - x, down = x - halves[above - 1];
  if (up < down) return static_cast<uint16_t>(above);
  if (down < up) return static_cast<uint16_t>(above - 1);
  return static_cast<uint16_t>(above % 2 == 0 ? above : above - 1);
}

float FloatFromBits(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

TEST(GradientCodec, Fp16RoundsToNearestEvenLikeAnExhaustiveSearch) {
  const std::vector<double> halves = AllNonNegativeHalves();
  std::mt19937 random(7);
  // Random float bit patterns over fp16's range (normal and subnormal),
  // plus every exact midpoint between neighbouring halves (ties), and the
  // points just either side of them.
  std::vector<float> inputs;
  std::uniform_int_distribution<uint32_t> bits(0x30000000, 0x477FE000);
  for (int i = 0; i < 200000; ++i)
    inputs.push_back(FloatFromBits(bits(random)));
  for (size_t i = 0; i + 1 < halves.size(); ++i) {
    const float mid = static_cast<float>((halves[i] + halves[i + 1]) / 2);
    inputs.push_back(mid);
    inputs.push_back(std::nextafter(mid, 0.0f));
    inputs.push_back(std::nextafter(mid, 1e9f));
  }
  for (float x : inputs) {
    const uint16_t expected = NearestHalf(halves, x);
    ASSERT_EQ(FloatToHalf(x), expected) << "x = " << x;
    ASSERT_EQ(FloatToHalf(-x), expected | 0x8000) << "x = " << -x;
    ASSERT_EQ(HalfToFloat(expected), static_cast<float>(halves[expected]));
  }
}

TEST(GradientCodec, Fp16TiesGoToTheEvenNeighbour) {
  // 1 + 2^-11 lies halfway between 1 (0x3C00, even) and 1 + 2^-10 (odd).
  EXPECT_EQ(FloatToHalf(1.0f + 0x1p-11f), 0x3C00);
  // 1 + 3·2^-11 lies halfway between 0x3C01 (odd) and 0x3C02 (even).
  EXPECT_EQ(FloatToHalf(1.0f + 3 * 0x1p-11f), 0x3C02);
  // Subnormal tie: 2^-25 between 0 and 2^-24 goes to 0; 3·2^-25 to 2·2^-24.
  EXPECT_EQ(FloatToHalf(0x1p-25f), 0x0000);
  EXPECT_EQ(FloatToHalf(3 * 0x1p-25f), 0x0002);
}

TEST(GradientCodec, Fp16SubnormalsAreExact) {
  for (uint16_t m = 1; m < 1024; ++m) {
    const float value = static_cast<float>(m) * 0x1p-24f;
    EXPECT_EQ(FloatToHalf(value), m);
    EXPECT_EQ(HalfToFloat(m), value);
  }
  // The largest subnormal rounds up into the smallest normal.
  EXPECT_EQ(FloatToHalf(1023.75f * 0x1p-24f), 0x0400);
  EXPECT_EQ(HalfToFloat(0x0400), 0x1p-14f);
  EXPECT_EQ(FloatToHalf(1e-30f), 0x0000);
  EXPECT_EQ(FloatToHalf(-1e-30f), 0x8000);
}

TEST(GradientCodec, Fp16SaturatesFiniteOverflowAndKeepsInfinityAndNaN) {
  EXPECT_EQ(FloatToHalf(65504.0f), 0x7BFF);
  EXPECT_EQ(FloatToHalf(65519.0f), 0x7BFF);  // rounds down to 65504
  EXPECT_EQ(FloatToHalf(65520.0f), 0x7BFF);  // would round to infinity
  EXPECT_EQ(FloatToHalf(1e30f), 0x7BFF);
  EXPECT_EQ(FloatToHalf(-3e38f), 0xFBFF);
  EXPECT_EQ(HalfToFloat(0x7BFF), kMaxHalf);
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(FloatToHalf(inf), 0x7C00);
  EXPECT_EQ(FloatToHalf(-inf), 0xFC00);
  EXPECT_TRUE(std::isinf(HalfToFloat(0x7C00)));
  EXPECT_TRUE(std::isnan(HalfToFloat(FloatToHalf(std::nanf("")))));
}

// bf16 reference: the two neighbours by truncation, the nearer chosen in
// double, ties to the even one.
uint16_t NearestBfloat16(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  const uint16_t down = static_cast<uint16_t>(bits >> 16);
  const uint16_t up = down + 1;
  const double d = std::fabs(x - static_cast<double>(Bfloat16ToFloat(down)));
  const double u = std::fabs(static_cast<double>(Bfloat16ToFloat(up)) - x);
  if (d < u) return down;
  if (u < d) return up;
  return down % 2 == 0 ? down : up;
}

TEST(GradientCodec, Bf16RoundsToNearestEven) {
  std::mt19937 random(11);
  std::uniform_int_distribution<uint32_t> bits(0, 0x7F7EFFFF);
  for (int i = 0; i < 200000; ++i) {
    const uint32_t b = bits(random);
    const float x = FloatFromBits(b);
    ASSERT_EQ(FloatToBfloat16(x), NearestBfloat16(x)) << "bits " << b;
    ASSERT_EQ(FloatToBfloat16(-x), NearestBfloat16(x) | 0x8000);
  }
  EXPECT_EQ(FloatToBfloat16(FloatFromBits(0x3F808000)), 0x3F80);  // tie, even
  EXPECT_EQ(FloatToBfloat16(FloatFromBits(0x3F818000)), 0x3F82);  // tie, even
  EXPECT_EQ(Bfloat16ToFloat(0x3F80), 1.0f);
}

TEST(GradientCodec, Bf16SaturatesFiniteOverflowAndKeepsInfinityAndNaN) {
  const float largest = std::numeric_limits<float>::max();
  EXPECT_EQ(FloatToBfloat16(largest), 0x7F7F);
  EXPECT_EQ(FloatToBfloat16(-largest), 0xFF7F);
  EXPECT_EQ(FloatToBfloat16(std::numeric_limits<float>::infinity()), 0x7F80);
  EXPECT_TRUE(std::isnan(Bfloat16ToFloat(FloatToBfloat16(std::nanf("")))));
  // Subnormal floats keep their top bits.
  EXPECT_EQ(Bfloat16ToFloat(FloatToBfloat16(0x1p-130f)), 0x1p-130f);
}

// The scalar conversions as first written (branchy, one case at a time),
// kept as the reference the branch-free ones must match bit for bit.
namespace reference {

uint32_t BitsOf(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  return bits;
}

uint16_t FloatToHalf(float value) {
  const uint32_t bits = BitsOf(value);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000);
  const uint32_t magnitude = bits & 0x7FFFFFFF;
  if (magnitude >= 0x7F800000) {
    if (magnitude == 0x7F800000) return sign | 0x7C00;
    return sign | 0x7E00 | static_cast<uint16_t>((magnitude >> 13) & 0x3FF);
  }
  if (magnitude >= 0x477FF000) return sign | 0x7BFF;
  if (magnitude >= 0x38800000) {
    const uint32_t mantissa = magnitude & 0x7FFFFF;
    uint32_t half = ((magnitude >> 23) - 127 + 15) << 10 | mantissa >> 13;
    const uint32_t rest = mantissa & 0x1FFF;
    if (rest > 0x1000 || (rest == 0x1000 && (half & 1))) ++half;
    return sign | static_cast<uint16_t>(half);
  }
  const uint32_t exponent = magnitude >> 23;
  if (exponent < 102) return sign;
  const uint32_t significand = (magnitude & 0x7FFFFF) | 0x800000;
  const uint32_t shift = 126 - exponent;
  uint32_t half = significand >> shift;
  const uint32_t rest = significand & ((1u << shift) - 1);
  const uint32_t halfway = 1u << (shift - 1);
  if (rest > halfway || (rest == halfway && (half & 1))) ++half;
  return sign | static_cast<uint16_t>(half);
}

uint32_t HalfToFloatBits(uint16_t half) {
  const uint32_t sign = static_cast<uint32_t>(half & 0x8000) << 16;
  const uint32_t exponent = (half >> 10) & 0x1F;
  const uint32_t mantissa = half & 0x3FF;
  if (exponent == 0) {
    const float value = static_cast<float>(mantissa) * 0x1p-24f;
    return BitsOf(sign ? -value : value);
  }
  if (exponent == 0x1F) return sign | 0x7F800000 | mantissa << 13;
  return sign | (exponent - 15 + 127) << 23 | mantissa << 13;
}

uint16_t FloatToBfloat16(float value) {
  const uint32_t bits = BitsOf(value);
  const uint32_t magnitude = bits & 0x7FFFFFFF;
  if (magnitude > 0x7F800000) return static_cast<uint16_t>(bits >> 16) | 0x40;
  const uint32_t rounded = bits + 0x7FFF + ((bits >> 16) & 1);
  uint16_t result = static_cast<uint16_t>(rounded >> 16);
  if ((result & 0x7FFF) == 0x7F80 && magnitude != 0x7F800000) {
    result = (result & 0x8000) | 0x7F7F;
  }
  return result;
}

}  // namespace reference

// Every float whose top 16 bits are any pattern and whose low 16 bits are
// one of those where rounding changes: 0 and ±1 around every tie position
// of fp16 (bit 12 for normal halves, bits 13–15 for subnormal ones; higher
// ties lie in the top bits) and of bf16 (bit 15), and all ones. Then the
// edge floats: ±0, NaNs (quiet, signalling, with payloads), ±infinity, the
// largest float, fp16's largest and its overflow point, subnormal floats.
std::vector<float> EdgeAndTieFloats() {
  std::vector<uint32_t> low = {0x0000, 0x0001, 0xFFFF};
  for (uint32_t tie : {0x1000u, 0x2000u, 0x4000u, 0x8000u}) {
    for (uint32_t kept : {0x0000u, 0x2000u, 0x6000u}) {
      for (uint32_t near : {tie - 1, tie, tie + 1}) low.push_back(near | kept);
    }
  }
  std::vector<float> floats;
  for (uint32_t high = 0; high <= 0xFFFF; ++high) {
    for (uint32_t l : low) floats.push_back(FloatFromBits(high << 16 | l));
  }
  for (uint32_t bits :
       {0x00000000u, 0x80000000u, 0x7F800001u, 0x7FC00000u, 0x7FC00001u,
        0x7FFFFFFFu, 0xFFC00000u, 0xFF800001u, 0x7FA00000u, 0x7F800000u,
        0xFF800000u, 0x7F7FFFFFu, 0xFF7FFFFFu, 0x477FE000u, 0x477FEFFFu,
        0x477FF000u, 0xC77FF000u, 0x00000001u, 0x807FFFFFu, 0x33000000u,
        0x33000001u, 0x33800000u, 0x387FE000u, 0x387FF000u, 0x38800000u}) {
    floats.push_back(FloatFromBits(bits));
  }
  return floats;
}

uint32_t BitsOfFloat(float f) { return reference::BitsOf(f); }

TEST(GradientCodec, BranchFreeConversionsMatchTheScalarReferenceBitForBit) {
  const std::vector<float> floats = EdgeAndTieFloats();
  // One value at a time and a whole array at once (the array loop is the
  // one compiled to vector code).
  std::string fp16, bf16;
  EncodeDense(CompressionKind::kFp16, floats, &fp16);
  EncodeDense(CompressionKind::kBf16, floats, &bf16);
  ASSERT_EQ(fp16.size(), 2 * floats.size());
  ASSERT_EQ(bf16.size(), 2 * floats.size());
  for (size_t i = 0; i < floats.size(); ++i) {
    const float x = floats[i];
    const uint16_t half = reference::FloatToHalf(x);
    const uint16_t brain = reference::FloatToBfloat16(x);
    uint16_t in_array;
    ASSERT_EQ(FloatToHalf(x), half) << "bits " << std::hex << BitsOfFloat(x);
    std::memcpy(&in_array, fp16.data() + 2 * i, 2);
    ASSERT_EQ(in_array, half) << "bits " << std::hex << BitsOfFloat(x);
    ASSERT_EQ(FloatToBfloat16(x), brain)
        << "bits " << std::hex << BitsOfFloat(x);
    std::memcpy(&in_array, bf16.data() + 2 * i, 2);
    ASSERT_EQ(in_array, brain) << "bits " << std::hex << BitsOfFloat(x);
  }
}

TEST(GradientCodec, EveryHalfAndBfloat16DecodesAsTheReferenceDoes) {
  // All 65536 codes one at a time, then the finite ones as one part (the
  // array loop), and each non-finite one refused at its offset.
  std::vector<uint16_t> finite_halves, finite_brains;
  for (uint32_t code = 0; code <= 0xFFFF; ++code) {
    const uint16_t c = static_cast<uint16_t>(code);
    ASSERT_EQ(BitsOfFloat(HalfToFloat(c)), reference::HalfToFloatBits(c))
        << std::hex << code;
    ASSERT_EQ(BitsOfFloat(Bfloat16ToFloat(c)), code << 16) << std::hex << code;
    if ((c & 0x7C00) != 0x7C00) finite_halves.push_back(c);
    if ((c & 0x7F80) != 0x7F80) finite_brains.push_back(c);
  }
  EXPECT_EQ(finite_halves.size(), 65536u - 2 * 1024);
  EXPECT_EQ(finite_brains.size(), 65536u - 2 * 128);
  auto bytes = [](const std::vector<uint16_t>& codes) {
    return std::string(reinterpret_cast<const char*>(codes.data()),
                       codes.size() * sizeof(uint16_t));
  };
  std::vector<float> out(finite_halves.size());
  ASSERT_TRUE(DecodePart(CompressionKind::kFp16, bytes(finite_halves), "",
                         absl::MakeSpan(out), "p")
                  .ok());
  for (size_t i = 0; i < out.size(); ++i) {
    ASSERT_EQ(BitsOfFloat(out[i]),
              reference::HalfToFloatBits(finite_halves[i]));
  }
  out.resize(finite_brains.size());
  ASSERT_TRUE(DecodePart(CompressionKind::kBf16, bytes(finite_brains), "",
                         absl::MakeSpan(out), "p")
                  .ok());
  for (size_t i = 0; i < out.size(); ++i) {
    ASSERT_EQ(BitsOfFloat(out[i]), uint32_t{finite_brains[i]} << 16);
  }
  // A NaN or infinity anywhere, even among thousands (1.0 each), is found
  // and named by its offset.
  auto refused_at = [&](CompressionKind kind, uint16_t one, uint16_t bad,
                        size_t offset) {
    std::vector<uint16_t> codes(3000, one);
    codes[offset] = bad;
    std::vector<float> decoded(codes.size());
    return std::string(
        DecodePart(kind, bytes(codes), "", absl::MakeSpan(decoded), "p")
            .message());
  };
  for (uint16_t bad : {0x7C00, 0xFC00, 0x7C01, 0x7E00, 0xFFFF}) {
    EXPECT_THAT(refused_at(CompressionKind::kFp16, 0x3C00, bad, 2049),
                HasSubstr("the value at offset 2049 is "))
        << std::hex << bad;
  }
  for (uint16_t bad : {0x7F80, 0xFF80, 0x7FC0, 0x7F81}) {
    EXPECT_THAT(refused_at(CompressionKind::kBf16, 0x3F80, bad, 7),
                HasSubstr("the value at offset 7 is "))
        << std::hex << bad;
  }
}

// The selection by its definition: sort every index by magnitude down
// (NaN as infinity), index up, and keep the first k in index order.
std::vector<uint32_t> TopKBySorting(const std::vector<float>& values,
                                    size_t k) {
  std::vector<uint32_t> order(values.size());
  for (uint32_t i = 0; i < order.size(); ++i) order[i] = i;
  auto magnitude = [&](uint32_t i) {
    return std::isnan(values[i]) ? INFINITY : std::fabs(values[i]);
  };
  std::stable_sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) {
    return magnitude(a) > magnitude(b);
  });
  order.resize(std::min(k, order.size()));
  std::sort(order.begin(), order.end());
  return order;
}

TEST(GradientCodec, TopKOfLargeTensorsIsExactlyTheSortedChoice) {
  std::mt19937 random(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> level(-3, 3);
  for (size_t n : {5000, 100352, 250000}) {
    // Spread values, values in a few levels (ties everywhere), mostly
    // zeros, and a few NaNs and infinities among spread values.
    std::vector<std::vector<float>> inputs(4, std::vector<float>(n));
    for (size_t i = 0; i < n; ++i) {
      inputs[0][i] = normal(random);
      inputs[1][i] = static_cast<float>(level(random));
      inputs[2][i] = i % 50 == 0 ? normal(random) : 0.0f;
      inputs[3][i] = normal(random);
    }
    inputs[3][n / 3] = std::nanf("");
    inputs[3][n / 2] = -INFINITY;
    inputs[3][n - 1] = INFINITY;
    for (const std::vector<float>& values : inputs) {
      for (double ratio : {0.001, 0.01, 0.1, 0.5}) {
        const size_t k = TopKCount(n, ratio);
        ASSERT_EQ(SelectTopK(values, k), TopKBySorting(values, k))
            << "n " << n << " ratio " << ratio;
      }
    }
  }
}

TEST(GradientCodec, TopKIsExactWhenItsSampleMisleads) {
  // The largest values placed exactly where the threshold's sample looks
  // (positions SplitMix64(i) % n, as SelectTopK takes them): the sample
  // sees only them, its threshold lets through fewer than k, and the
  // choice must fall back to every value.
  const size_t n = 20000, k = 1500;
  std::vector<float> values(n);
  for (size_t i = 0; i < n; ++i) values[i] = 1e-3f * static_cast<float>(i % 7);
  for (uint64_t i = 0; i < 1024; ++i) {
    values[SplitMix64(i) % n] = 100.0f + static_cast<float>(i);
  }
  EXPECT_EQ(SelectTopK(values, k), TopKBySorting(values, k));
}

TEST(GradientCodec, TopKKeepsTheLargestMagnitudesInIndexOrder) {
  const std::vector<float> values = {0.1f, -5.0f, 3.0f, 0.0f, -0.2f, 4.0f};
  EXPECT_THAT(SelectTopK(values, 3), ElementsAre(1, 2, 5));
  EXPECT_THAT(SelectTopK(values, 1), ElementsAre(1));
  EXPECT_THAT(SelectTopK(values, 10), ElementsAre(0, 1, 2, 3, 4, 5));
}

TEST(GradientCodec, TopKBreaksTiesTowardTheLowerIndex) {
  const std::vector<float> values = {1.0f, -2.0f, 2.0f, -1.0f, 2.0f, 1.0f};
  EXPECT_THAT(SelectTopK(values, 2), ElementsAre(1, 2));
  EXPECT_THAT(SelectTopK(values, 4), ElementsAre(0, 1, 2, 4));
  // Many equal magnitudes: always the first k, whatever the partition does.
  std::vector<float> flat(1000, 0.5f);
  for (size_t i = 0; i < flat.size(); i += 2) flat[i] = -0.5f;
  const std::vector<uint32_t> chosen = SelectTopK(flat, 17);
  ASSERT_EQ(chosen.size(), 17u);
  for (uint32_t i = 0; i < 17; ++i) EXPECT_EQ(chosen[i], i);
}

TEST(GradientCodec, TopKCountRoundsUpAndKeepsAtLeastOne) {
  EXPECT_EQ(TopKCount(1000, 0.01), 10u);
  EXPECT_EQ(TopKCount(1001, 0.01), 11u);
  EXPECT_EQ(TopKCount(10, 0.01), 1u);
  EXPECT_EQ(TopKCount(10, 1.0), 10u);
  EXPECT_EQ(TopKCount(0, 0.5), 0u);
}

TEST(GradientCodec, ParsesCompressionSpecs) {
  EXPECT_EQ(ParseCompression("")->kind, CompressionKind::kNone);
  EXPECT_EQ(ParseCompression("none")->kind, CompressionKind::kNone);
  EXPECT_EQ(ParseCompression("fp16")->kind, CompressionKind::kFp16);
  EXPECT_EQ(ParseCompression("bf16")->kind, CompressionKind::kBf16);
  absl::StatusOr<Compression> topk = ParseCompression("topk:0.01");
  ASSERT_TRUE(topk.ok());
  EXPECT_EQ(topk->kind, CompressionKind::kTopK);
  EXPECT_EQ(topk->ratio, 0.01);
  EXPECT_EQ(topk->ToString(), "topk:0.01");
  EXPECT_THAT(ParseCompression("topk:0").status().message(),
              HasSubstr("(0, 1]"));
  EXPECT_THAT(ParseCompression("topk:2").status().message(),
              HasSubstr("(0, 1]"));
  EXPECT_THAT(ParseCompression("int8").status().message(),
              HasSubstr("expected none, fp16, bf16 or topk:RATIO"));
}

std::string Bytes(const std::vector<uint32_t>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4);
}
std::string Bytes(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4);
}

TEST(GradientCodec, DecodesEachKind) {
  std::vector<float> out(4);
  std::string fp16;
  EncodeDense(CompressionKind::kFp16, {1.0f, -2.5f, 0.1f, 0.0f}, &fp16);
  EXPECT_EQ(fp16.size(), 8u);
  ASSERT_TRUE(
      DecodePart(CompressionKind::kFp16, fp16, "", absl::MakeSpan(out), "p")
          .ok());
  EXPECT_THAT(out,
              ElementsAre(1.0f, -2.5f, HalfToFloat(FloatToHalf(0.1f)), 0.0f));
  ASSERT_TRUE(
      DecodePart(CompressionKind::kTopK, Bytes(std::vector<float>{7.0f, -1.0f}),
                 Bytes(std::vector<uint32_t>{1, 3}), absl::MakeSpan(out), "p")
          .ok());
  EXPECT_THAT(out, ElementsAre(0.0f, 7.0f, 0.0f, -1.0f));
}

TEST(GradientCodec, RefusesMalformedParts) {
  std::vector<float> out(4);
  auto topk = [&](std::vector<uint32_t> indices, std::vector<float> values) {
    return DecodePart(CompressionKind::kTopK, Bytes(values), Bytes(indices),
                      absl::MakeSpan(out), "part 0 (topk)");
  };
  EXPECT_THAT(topk({1, 4}, {1, 1}).message(),
              HasSubstr("part 0 (topk): index 4 is outside its 4 keys"));
  EXPECT_THAT(topk({2, 1}, {1, 1}).message(), HasSubstr("strictly increasing"));
  EXPECT_THAT(topk({1, 1}, {1, 1}).message(), HasSubstr("strictly increasing"));
  EXPECT_THAT(topk({1, 2}, {1}).message(), HasSubstr("one float32 per index"));
  EXPECT_THAT(topk({0, 1, 2, 3, 0}, {1, 1, 1, 1, 1}).message(),
              HasSubstr("5 indices for its 4 keys"));
  EXPECT_THAT(topk({1}, {std::nanf("")}).message(),
              HasSubstr("must be finite"));
  EXPECT_EQ(topk({1}, {std::nanf("")}).code(),
            absl::StatusCode::kInvalidArgument);
  // A float32 part's length is checked by BytesToFloats, which says so.
  EXPECT_THAT(
      DecodePart(CompressionKind::kNone, Bytes(std::vector<float>{1, 2}), "",
                 absl::MakeSpan(out), "part 0 (float32)")
          .message(),
      HasSubstr("part 0 (float32) carries 2 floats but 4 are expected"));
  std::string fp16;
  EncodeDense(CompressionKind::kFp16, {1, 2, 3}, &fp16);
  EXPECT_THAT(
      DecodePart(CompressionKind::kFp16, fp16, "", absl::MakeSpan(out), "p")
          .message(),
      HasSubstr("holds 6 bytes of values but its 4 keys need 8"));
  EncodeDense(CompressionKind::kFp16,
              {1, std::numeric_limits<float>::infinity(), 3, 4}, &fp16);
  EXPECT_THAT(
      DecodePart(CompressionKind::kFp16, fp16, "", absl::MakeSpan(out), "p")
          .message(),
      HasSubstr("the value at offset 1 is inf"));
}

}  // namespace
}  // namespace ps::common
