#include "common/table_spec.h"

#include <cmath>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/lr_schedule.h"
#include "common/optimizer.h"

namespace ps::common {
namespace {

absl::Status BadInitializer(absl::string_view text) {
  return absl::InvalidArgumentError(
      absl::StrCat("bad row initializer '", text,
                   "': the initializers are zeros, uniform(A) and "
                   "normal(SIGMA), with A and SIGMA finite numbers > 0"));
}

absl::Status InTable(const TableSpec& table, const absl::Status& status) {
  return absl::InvalidArgumentError(
      absl::StrCat("table '", table.name, "': ", status.message()));
}

}  // namespace

absl::StatusOr<RowInitializer> ParseRowInitializer(absl::string_view text) {
  RowInitializer initializer;
  if (text == "zeros") return initializer;
  absl::string_view rest = text;
  if (absl::ConsumePrefix(&rest, "uniform(")) {
    initializer.kind = RowInitializer::Kind::kUniform;
  } else if (absl::ConsumePrefix(&rest, "normal(")) {
    initializer.kind = RowInitializer::Kind::kNormal;
  } else {
    return BadInitializer(text);
  }
  if (!absl::ConsumeSuffix(&rest, ")") ||
      !absl::SimpleAtof(rest, &initializer.scale) ||
      !std::isfinite(initializer.scale) || initializer.scale <= 0) {
    return BadInitializer(text);
  }
  return initializer;
}

std::string TableSpec::ToString() const {
  return absl::StrCat(
      name, "{dim=", dim, ", ", initializer, ", ",
      optimizer.empty() ? "the server's optimizer" : optimizer, ", ",
      lr_schedule.empty() ? "the server's schedule" : lr_schedule, "}");
}

absl::Status ValidateModelSpecs(const std::vector<TensorSpec>& tensors,
                                const std::vector<TableSpec>& tables) {
  if (tensors.empty() && tables.empty()) {
    return absl::InvalidArgumentError(
        "the model declares no tensors and no tables");
  }
  if (!tensors.empty()) {
    if (absl::Status s = ValidateTensorSpecs(tensors); !s.ok()) return s;
  }
  absl::flat_hash_set<std::string> names;
  for (const TensorSpec& t : tensors) names.insert(t.name);
  for (size_t i = 0; i < tables.size(); ++i) {
    const TableSpec& table = tables[i];
    if (table.name.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("table #", i, " has an empty name"));
    }
    if (!names.insert(table.name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("table name '", table.name,
                       "' is declared twice (names are unique among tensors "
                       "and tables)"));
    }
    if (table.dim == 0 || table.dim > kMaxTableDim) {
      return absl::InvalidArgumentError(
          absl::StrCat("table '", table.name, "' has dim ", table.dim,
                       "; a row holds 1 to ", kMaxTableDim, " floats"));
    }
    if (auto parsed = ParseRowInitializer(table.initializer); !parsed.ok()) {
      return InTable(table, parsed.status());
    }
    if (!table.optimizer.empty()) {
      if (auto parsed = ParseOptimizerSpec(table.optimizer); !parsed.ok()) {
        return InTable(table, parsed.status());
      }
    }
    if (!table.lr_schedule.empty()) {
      if (auto parsed = ParseLrSchedule(table.lr_schedule); !parsed.ok()) {
        return InTable(table, parsed.status());
      }
    }
  }
  return absl::OkStatus();
}

std::string DescribeTableDifference(const std::vector<TableSpec>& a,
                                    const std::vector<TableSpec>& b) {
  const size_t common = std::min(a.size(), b.size());
  for (size_t i = 0; i < common; ++i) {
    if (!(a[i] == b[i])) {
      return absl::StrCat("table #", i, " is declared as ", a[i].ToString(),
                          " but requested as ", b[i].ToString());
    }
  }
  if (a.size() != b.size()) {
    return absl::StrCat("the model is declared with ", a.size(),
                        " tables but requested with ", b.size());
  }
  return "";
}

}  // namespace ps::common
