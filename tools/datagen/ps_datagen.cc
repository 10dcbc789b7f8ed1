// ps_datagen: synthetic data sets with a known ground truth.
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/cli.h"
#include "common/json.h"
#include "tools/datagen/ctr_dataset.h"

ABSL_FLAG(std::string, rows, "1M",
          "Training rows (k, M, G suffixes); the test set has rows/10.");
ABSL_FLAG(uint32_t, fields, 26, "Categorical fields per row.");
ABSL_FLAG(std::string, ids, "10M",
          "Distinct feature values over all fields (k, M, G suffixes), "
          "ids/fields per field.");
ABSL_FLAG(uint64_t, seed, 1, "Seeds the ground truth and every row.");
ABSL_FLAG(double, interaction_strength, 0.18,
          "The pairwise interactions' logit standard deviation over the "
          "linear part's (0 to 10; 0: none).");
ABSL_FLAG(std::string, out, "", "The directory to write to (created).");

namespace {

constexpr char kUsage[] =
    "ps_datagen ctr --out=DIR [--rows=1M --fields=26 --ids=10M --seed=1\n"
    "                          --interaction_strength=0.18]\n"
    "  ctr  a click-through-rate data set with a known Bayes AUC:\n"
    "       DIR/train.libsvm, test.libsvm, test.prob, summary.json\n";

using ps::common::Die;

uint64_t CountOrDie(const char* flag, const std::string& text) {
  absl::StatusOr<uint64_t> count = ps::datagen::ParseCount(flag, text);
  if (!count.ok()) Die(count.status().message());
  return *count;
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> args =
      ps::common::InitProgram(argc, argv, kUsage, 1);
  if (args.empty()) Die("name the data set: ps_datagen ctr --out=DIR");
  if (args[0] != "ctr") {
    Die(absl::StrCat("unknown data set '", args[0], "': the one kind is ctr"));
  }
  ps::datagen::CtrOptions options;
  options.rows = CountOrDie("rows", absl::GetFlag(FLAGS_rows));
  options.fields = absl::GetFlag(FLAGS_fields);
  options.ids = CountOrDie("ids", absl::GetFlag(FLAGS_ids));
  options.seed = absl::GetFlag(FLAGS_seed);
  options.interaction_strength = absl::GetFlag(FLAGS_interaction_strength);
  options.out_dir = absl::GetFlag(FLAGS_out);
  const absl::Status valid = ps::datagen::CheckCtrOptions(options);
  if (!valid.ok()) Die(valid.message());

  const absl::Time start = absl::Now();
  absl::StatusOr<ps::datagen::CtrSummary> summary =
      ps::datagen::WriteCtrDataset(options);
  if (!summary.ok()) {
    std::fprintf(stderr, "ps_datagen: %s\n",
                 std::string(summary.status().message()).c_str());
    return 1;
  }
  ps::common::Json line = summary->ToJson(options);
  line["seconds"] =
      ps::common::RoundTo(absl::ToDoubleSeconds(absl::Now() - start), 2);
  std::printf("%s\n", line.dump().c_str());
  return 0;
}
