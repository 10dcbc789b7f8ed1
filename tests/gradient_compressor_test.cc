#include "worker/gradient_compressor.h"

#include <random>
#include <string>
#include <vector>

#include "common/rpc/convert.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ps::worker {
namespace {

using ::testing::HasSubstr;

std::vector<common::TensorSpec> TwoTensors(const std::string& first,
                                           const std::string& second) {
  common::TensorSpec weights{"w", {4, 5}, false};
  weights.compression = first;
  common::TensorSpec bias{"b", {6}, true};
  bias.compression = second;
  return {weights, bias};
}

// Decodes every part the way the server does.
std::vector<float> Decode(
    const google::protobuf::RepeatedPtrField<ps::v1::GradientPart>& parts,
    size_t keys) {
  std::vector<float> out(keys);
  size_t offset = 0;
  for (const ps::v1::GradientPart& part : parts) {
    const common::CompressionKind kind =
        rpc::FromProto(part.encoding()).value();
    EXPECT_TRUE(common::DecodePart(
                    kind, part.values(), part.indices(),
                    absl::MakeSpan(out).subspan(offset, part.num_keys()), "p")
                    .ok());
    offset += part.num_keys();
  }
  EXPECT_EQ(offset, keys);
  return out;
}

TEST(GradientCompressor, ErrorFeedbackDeliversTheWholeGradientOverTheSteps) {
  // Top-k on both tensors (the flag's default), 10%: 2 of w's 20, 1 of b's 6.
  auto compressor = GradientCompressor::Create(
      TwoTensors("", ""), common::ParseCompression("topk:0.1").value());
  ASSERT_TRUE(compressor.ok());
  std::mt19937 random(3);
  // Multiples of 1/64 in [-1, 1]: every sum below is exact in float.
  std::uniform_int_distribution<int> sixty_fourths(-64, 64);
  std::vector<double> pushed(26, 0), true_sum(26, 0);
  for (int step = 0; step < 50; ++step) {
    std::vector<float> gradient(26);
    for (float& g : gradient) g = sixty_fourths(random) / 64.0f;
    compressor->Select(gradient);
    google::protobuf::RepeatedPtrField<ps::v1::GradientPart> parts;
    compressor->Encode({0, 26}, gradient, &parts);
    ASSERT_EQ(parts.size(), 2);
    EXPECT_EQ(parts[0].indices().size(), 2 * sizeof(uint32_t));
    EXPECT_EQ(parts[1].indices().size(), 1 * sizeof(uint32_t));
    const std::vector<float> sent = Decode(parts, 26);
    for (int k = 0; k < 26; ++k) {
      pushed[k] += sent[k];
      true_sum[k] += gradient[k];
      // What was sent plus what is kept is all that was ever given.
      EXPECT_EQ(pushed[k] + compressor->residual()[k], true_sum[k])
          << "step " << step << " key " << k;
    }
  }
}

TEST(GradientCompressor, TopKPicksOverTheWholeTensorWhateverTheShards) {
  auto compressor = GradientCompressor::Create(TwoTensors("topk:0.1", "none"),
                                               common::Compression{});
  ASSERT_TRUE(compressor.ok());
  std::vector<float> gradient(26, 0.01f);
  gradient[3] = 5;   // shard 0's keys [0, 13)
  gradient[17] = 4;  // shard 1's keys [13, 26)
  gradient[12] = 3;  // third largest: not sent
  compressor->Select(gradient);
  google::protobuf::RepeatedPtrField<ps::v1::GradientPart> first, second;
  compressor->Encode({0, 13}, gradient, &first);
  compressor->Encode({13, 26}, gradient, &second);
  ASSERT_EQ(first.size(), 1);   // w's keys 0-12
  ASSERT_EQ(second.size(), 2);  // w's keys 13-19, then b
  const std::vector<float> w_low = Decode(first, 13);
  EXPECT_EQ(w_low[3], 5);
  EXPECT_EQ(w_low[12], 0);
  ASSERT_EQ(second[0].encoding(), ps::v1::ENCODING_TOPK);
  ASSERT_EQ(second[1].encoding(), ps::v1::ENCODING_FLOAT32);
  const std::vector<float> rest = Decode(second, 13);
  EXPECT_EQ(rest[17 - 13], 4);
  for (int k = 20; k < 26; ++k) EXPECT_EQ(rest[k - 13], 0.01f);
  EXPECT_EQ(compressor->residual()[12], 3);
}

TEST(GradientCompressor, ATensorsOwnCompressionBeatsTheFlag) {
  auto compressor = GradientCompressor::Create(
      TwoTensors("", "bf16"), common::ParseCompression("fp16").value());
  ASSERT_TRUE(compressor.ok());
  EXPECT_TRUE(compressor->compresses());
  std::vector<float> gradient(26, 0.1f);
  compressor->Select(gradient);
  google::protobuf::RepeatedPtrField<ps::v1::GradientPart> parts;
  compressor->Encode({0, 26}, gradient, &parts);
  ASSERT_EQ(parts.size(), 2);
  EXPECT_EQ(parts[0].encoding(), ps::v1::ENCODING_FP16);
  EXPECT_EQ(parts[0].values().size(), 40u);
  EXPECT_EQ(parts[1].encoding(), ps::v1::ENCODING_BF16);
  EXPECT_EQ(parts[1].values().size(), 12u);

  auto plain = GradientCompressor::Create(TwoTensors("", ""), {});
  ASSERT_TRUE(plain.ok());
  EXPECT_FALSE(plain->compresses());
  EXPECT_THAT(
      GradientCompressor::Create(TwoTensors("", "int4"), {}).status().message(),
      HasSubstr("tensor 'b': unknown compression 'int4'"));
  // Top-k's offsets are uint32: a larger tensor is refused up front (before
  // its residual would be allocated).
  EXPECT_THAT(GradientCompressor::Create(
                  {common::TensorSpec{"huge", {int64_t{1} << 33}, false}},
                  common::ParseCompression("topk:0.01").value())
                  .status()
                  .message(),
              HasSubstr("topk can compress tensors of at most 2^32 - 1"));
}

}  // namespace
}  // namespace ps::worker
