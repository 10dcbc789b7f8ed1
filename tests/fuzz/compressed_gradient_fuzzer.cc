// libFuzzer target: the server's decode of a push's compressed gradient
// (DecodeCompressedGradient over common::DecodePart), through a reused
// buffer as ParameterService runs it. Input: the shard's key count (2
// bytes, little-endian), then a PushRequest whose compressed_gradient is
// decoded. Whatever decodes holds exactly the keys, all finite, and means
// what the parts say (a dense part re-encodes to its own bytes, a top-k
// part puts its values at its indices and +0 elsewhere); a buffer left
// full of NaN by an earlier push decodes to the same bytes; a refusal
// names the part, or says the parts do not cover the keys.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "common/gradient_codec.h"
#include "common/rpc/convert.h"
#include "ps/v1/parameter_server.pb.h"
#include "server/gradient_buffer_pool.h"
#include "server/wire_messages.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

using ps::fuzz::Fail;

// Checks what `decoded` holds against what the parts say.
void CheckMeaning(
    const google::protobuf::RepeatedPtrField<ps::v1::GradientPart>& parts,
    const std::string& decoded) {
  size_t offset = 0;  // in floats
  for (const ps::v1::GradientPart& part : parts) {
    const char* at = decoded.data() + offset * sizeof(float);
    const size_t keys = part.num_keys();
    const ps::common::CompressionKind kind =
        *ps::rpc::FromProto(part.encoding());
    if (kind == ps::common::CompressionKind::kTopK) {
      std::string expected(keys * sizeof(float), '\0');
      for (size_t j = 0; j < part.indices().size() / sizeof(uint32_t); ++j) {
        uint32_t index;
        std::memcpy(&index, part.indices().data() + j * sizeof index,
                    sizeof index);
        std::memcpy(&expected[index * sizeof(float)],
                    part.values().data() + j * sizeof(float), sizeof(float));
      }
      if (std::memcmp(at, expected.data(), expected.size()) != 0) {
        Fail("a top-k part decoded to other values than it carries");
      }
    } else {
      // memcpy from or to the null data() of an empty vector is undefined.
      std::vector<float> floats(keys);
      if (keys > 0) std::memcpy(floats.data(), at, keys * sizeof(float));
      std::string again;
      ps::common::EncodeDense(kind, floats, &again);
      if (again != part.values()) {
        Fail("a dense part does not re-encode to its own bytes");
      }
    }
    offset += keys;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ps::fuzz::QuietLogs();
  if (size < 2) return 0;
  const uint64_t key_count = data[0] | uint64_t{data[1]} << 8;
  ps::v1::PushRequest request;
  if (!request.ParseFromArray(data + 2, static_cast<int>(size - 2))) return 0;
  const ps::common::KeyRange keys{1000, 1000 + key_count};
  ps::server::GradientBufferPool buffers;
  absl::StatusOr<absl::Cord> decoded = ps::server::DecodeCompressedGradient(
      request.compressed_gradient(), keys, buffers);
  if (!decoded.ok()) {
    const absl::string_view message = decoded.status().message();
    if (decoded.status().code() != absl::StatusCode::kInvalidArgument ||
        !(absl::StartsWith(message, "part ") ||
          absl::StartsWith(message, "the compressed gradient's parts"))) {
      Fail("a refusal is not an INVALID_ARGUMENT naming the part or keys");
    }
    return 0;
  }
  const std::string first(*decoded);
  decoded = absl::Cord();
  if (first.size() != key_count * sizeof(float)) {
    Fail("the decoded gradient does not hold the shard's keys");
  }
  for (size_t i = 0; i < key_count; ++i) {
    float value;
    std::memcpy(&value, first.data() + i * sizeof value, sizeof value);
    if (!std::isfinite(value)) Fail("a decoded value is not finite");
  }
  CheckMeaning(request.compressed_gradient(), first);

  // The buffer again, dirtied as an earlier push might leave it.
  {
    std::unique_ptr<std::vector<float>> dirty = buffers.Take(key_count);
    std::fill(dirty->begin(), dirty->end(), std::nanf(""));
    buffers.Wrap(std::move(dirty));
  }
  absl::StatusOr<absl::Cord> again = ps::server::DecodeCompressedGradient(
      request.compressed_gradient(), keys, buffers);
  if (!again.ok() || std::string(*again) != first) {
    Fail("decoding into a reused buffer changed the gradient");
  }
  return 0;
}
