// libFuzzer target: checkpoint and export files (common/theta_file), as a
// server reads them at start-up. A file that decodes must encode back to
// the same bytes' meaning, and restoring it into a shard of its own layout
// either fails cleanly or gives a shard that holds exactly its θ and its
// tables' rows.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/theta_file.h"
#include "server/parameter_shard.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

using ps::fuzz::Fail;

void Restore(const ps::common::ThetaFile& file) {
  ps::server::ShardOptions options;
  options.shard_index = file.shard_index;
  options.num_shards = file.num_shards;
  options.mode = file.mode.value_or(ps::common::ConsistencyMode::kSync);
  options.max_workers = 8;
  options.max_keys_per_shard = 1 << 16;
  // Small, so that a restore stays cheap (a table reserves its index for
  // the rows its share holds).
  options.table_memory_limit = 1 << 20;
  if (!ps::server::ValidateShardOptions(options).ok()) return;
  ps::server::ParameterShard shard(options);
  if (!shard.Restore(file).ok()) {
    if (shard.Snapshot().ok()) Fail("a rejected restore declared a model");
    return;
  }
  absl::StatusOr<ps::common::ThetaFile> held = shard.Snapshot();
  if (!held.ok()) Fail("a restored shard has no model");
  if (held->values != file.values || held->version != file.version) {
    Fail("a restored shard holds another θ or version");
  }
  for (float v : held->values) {
    if (!std::isfinite(v)) Fail("a restored θ is not finite");
  }
  // Every row of every table, with its θ (its state vectors follow the
  // server's optimizer, which may keep others than the file's).
  if (held->tables.size() != file.tables.size()) {
    Fail("a restored shard holds other tables");
  }
  for (size_t t = 0; t < file.tables.size(); ++t) {
    const ps::common::SavedTable& want = file.tables[t];
    const ps::common::SavedTable& got = held->tables[t];
    if (got.ids != want.ids) Fail("a restored table holds other rows");
    const size_t dim = want.spec.dim;
    for (size_t i = 0; i < want.ids.size(); ++i) {
      if (!std::equal(want.rows.begin() + i * want.stride(),
                      want.rows.begin() + i * want.stride() + dim,
                      got.rows.begin() + i * got.stride())) {
        Fail("a restored row holds another θ");
      }
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ps::fuzz::QuietLogs();
  const absl::string_view bytes(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<ps::common::ThetaFile> file =
      ps::common::DecodeThetaFile(bytes, "fuzz.theta");
  if (!file.ok()) {
    if (file.status().message().empty()) Fail("an error without a message");
    return 0;
  }
  // Encoding is always the newest format: decoding that gives the same file.
  const std::string again = ps::common::EncodeThetaFile(*file);
  absl::StatusOr<ps::common::ThetaFile> reread =
      ps::common::DecodeThetaFile(again, "re-encoded");
  if (!reread.ok())
    Fail("a decoded file does not re-encode: " + reread.status().ToString());
  if (ps::common::EncodeThetaFile(*reread) != again) {
    Fail("encode(decode(encode(file))) differs from encode(file)");
  }
  Restore(*file);
  return 0;
}
