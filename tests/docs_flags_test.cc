// The documentation cannot drift from the binaries: every flag a binary
// defines (in its own main file; not absl's or gRPC's) is in its table or
// flag paragraph of the READMEs and every flag there exists, and every
// field of rank 0's metrics line is in README's metrics table and back.
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/job.h"

namespace ps {
namespace {

using test_support::BinDir;
using test_support::ReadFile;

std::string Source(const std::string& path) {
  return ReadFile(absl::StrCat(PS_SOURCE_DIR, "/", path));
}

// Files that define flags once for several binaries (a binary has them
// when it links the file), documented with each binary's own flags.
const char* const kSharedFlagFiles[] = {
    "common/rpc/client_security_flags.cc",
    "deploy/local/launcher_security_flags.cc"};

// The flags `binary --helpfull` lists under its own main file or a shared
// flag file.
std::set<std::string> OwnFlags(const std::string& binary,
                               const std::string& main_file) {
  const std::string dir = test_support::FreshDir("docs_flags");
  test_support::Outcome outcome =
      test_support::RunBinary({binary, "--helpfull"}, dir + "/" + binary);
  std::set<std::string> flags;
  bool ours = false;
  const std::regex flag_line(R"(^    --([a-z0-9_]+) )");
  for (absl::string_view line : absl::StrSplit(outcome.output, '\n')) {
    if (absl::StartsWith(line, "  Flags from ")) {
      ours = absl::EndsWith(line, absl::StrCat("/", main_file, ":"));
      for (const char* shared : kSharedFlagFiles) {
        ours = ours || absl::EndsWith(line, absl::StrCat("/", shared, ":"));
      }
      continue;
    }
    std::smatch match;
    const std::string text(line);
    if (ours && std::regex_search(text, match, flag_line)) {
      flags.insert(match[1]);
    }
  }
  return flags;
}

// The block a doc gives a binary's flags in: from the line holding
// `marker` (blank lines right after it skipped) to the next blank line.
std::string Section(const std::string& doc, const std::string& marker) {
  std::istringstream in(Source(doc));
  std::string line;
  while (std::getline(in, line) && line.find(marker) == std::string::npos) {
  }
  EXPECT_FALSE(in.eof()) << doc << " has no line with " << marker;
  std::string section = line + "\n";
  bool started = false;
  while (std::getline(in, line)) {
    if (line.empty()) {
      if (started) break;
      continue;
    }
    started = true;
    absl::StrAppend(&section, line, "\n");
  }
  return section;
}

// Every flag named at the start of a code span: `--name`, `--name=…`.
std::set<std::string> DocumentedFlags(const std::string& section) {
  std::set<std::string> flags;
  const std::regex span("`--([a-z0-9_]+)");
  for (std::sregex_iterator it(section.begin(), section.end(), span), end;
       it != end; ++it) {
    flags.insert((*it)[1]);
  }
  // absl's own, which every binary has.
  flags.erase("flagfile");
  return flags;
}

std::vector<std::string> Minus(const std::set<std::string>& a,
                               const std::set<std::string>& b) {
  std::vector<std::string> out;
  for (const std::string& x : a) {
    if (!b.count(x)) out.push_back(x);
  }
  return out;
}

struct FlagDoc {
  std::string binary;
  std::string main_file;
  std::string doc;
  std::string marker;
};

void PrintTo(const FlagDoc& d, std::ostream* os) { *os << d.binary; }

class FlagDocs : public ::testing::TestWithParam<FlagDoc> {};

TEST_P(FlagDocs, EveryFlagOfTheBinaryIsDocumentedAndEveryDocumentedFlagExists) {
  const FlagDoc& d = GetParam();
  const std::set<std::string> defined = OwnFlags(d.binary, d.main_file);
  ASSERT_FALSE(defined.empty()) << d.binary << " --helpfull showed no flags "
                                << "from " << d.main_file;
  const std::set<std::string> documented =
      DocumentedFlags(Section(d.doc, d.marker));
  EXPECT_THAT(Minus(defined, documented), ::testing::IsEmpty())
      << d.binary << " flags missing from " << d.doc << " (" << d.marker << ")";
  EXPECT_THAT(Minus(documented, defined), ::testing::IsEmpty())
      << d.doc << " (" << d.marker << ") documents flags " << d.binary
      << " does not have";
}

INSTANTIATE_TEST_SUITE_P(
    Binaries, FlagDocs,
    ::testing::Values(FlagDoc{"ps_local", "deploy/local/ps_local.cc",
                              "README.md", "`ps_local` (the launcher):"},
                      FlagDoc{"ps_server", "server/main.cc", "README.md",
                              "`ps_server`: `--listen`"},
                      FlagDoc{"ps_worker", "worker/main.cc", "README.md",
                              "`ps_worker`: `--servers"},
                      FlagDoc{"psctl", "tools/psctl.cc", "README.md",
                              "`psctl` flags:"},
                      FlagDoc{"ps_chaos", "tools/chaos/ps_chaos.cc",
                              "README.md", "`ps_chaos` flags:"},
                      FlagDoc{"ps_bench", "bench/ps_bench.cc",
                              "bench/README.md", "`ps_bench` flags"},
                      FlagDoc{"ps_datagen", "tools/datagen/ps_datagen.cc",
                              "README.md", "`ps_datagen` flags:"}),
    [](const ::testing::TestParamInfo<FlagDoc>& info) {
      return info.param.binary;
    });

// deploy/README's tables show the flags the flagfiles set: a part of each
// daemon's flags, each of which must exist.
TEST(DeployDocs, EveryFlagInTheFlagfileTablesExists) {
  struct Table {
    std::string binary, main_file, marker;
  };
  for (const Table& t : {Table{"ps_server", "server/main.cc",
                               "`server.flags`, read by every `ps_server`:"},
                         Table{"ps_worker", "worker/main.cc",
                               "`worker.flags`, read by every `ps_worker`:"}}) {
    const std::set<std::string> documented =
        DocumentedFlags(Section("deploy/README.md", t.marker));
    EXPECT_FALSE(documented.empty()) << t.marker;
    EXPECT_THAT(Minus(documented, OwnFlags(t.binary, t.main_file)),
                ::testing::IsEmpty())
        << "deploy/README.md (" << t.marker << ") documents flags " << t.binary
        << " does not have";
  }
}

// The keys `pattern` (one capture) finds in `text`.
std::set<std::string> KeysIn(const std::string& text,
                             const std::regex& pattern) {
  std::set<std::string> keys;
  for (std::sregex_iterator it(text.begin(), text.end(), pattern), last;
       it != last; ++it) {
    keys.insert((*it)[1]);
  }
  return keys;
}

// The fields of the metrics line, as worker/trainer.cc writes it, with the
// test (and k-fold validation) scores of each model's task
// (worker/dense_task.cc, sparse_task.cc).
std::set<std::string> MetricsFieldsWritten() {
  const std::string trainer = Source("worker/trainer.cc");
  const size_t begin = trainer.find("common::Json fields = {{\"time_s\"");
  EXPECT_NE(begin, std::string::npos)
      << "the metrics line's format is not where this test looks for it";
  if (begin == std::string::npos) return {};
  const size_t end = trainer.find(".dump()", begin);
  const std::string format = trainer.substr(begin, end - begin);
  std::set<std::string> fields =
      KeysIn(format, std::regex(R"re(\{"([a-z_]+)",)re"));
  for (const std::string& key :
       KeysIn(format, std::regex(R"re(fields\["([a-z_]+)"\])re"))) {
    fields.insert(key);
  }
  for (const char* task : {"worker/dense_task.cc", "worker/sparse_task.cc"}) {
    for (const std::string& key : KeysIn(
             Source(task), std::regex(R"re(\{"((?:test|val)_[a-z_]+)",)re"))) {
      fields.insert(key);
    }
  }
  return fields;
}

TEST(MetricsDocs, EveryFieldWrittenIsInTheReadmeTableAndBack) {
  const std::set<std::string> written = MetricsFieldsWritten();
  ASSERT_GE(written.size(), 10u) << absl::StrJoin(written, ",");
  const std::string table = Section("README.md", "| field | meaning |");
  std::set<std::string> documented;
  for (absl::string_view row : absl::StrSplit(table, '\n')) {
    std::vector<absl::string_view> cells = absl::StrSplit(row, '|');
    if (cells.size() < 3) continue;
    const std::string first(cells[1]);
    const std::regex span("`([a-z_]+)`");
    for (std::sregex_iterator it(first.begin(), first.end(), span), end;
         it != end; ++it) {
      documented.insert((*it)[1]);
    }
  }
  EXPECT_THAT(Minus(written, documented), ::testing::IsEmpty())
      << "metrics fields missing from README.md's table";
  EXPECT_THAT(Minus(documented, written), ::testing::IsEmpty())
      << "README.md's metrics table lists fields the worker does not write";
}

}  // namespace
}  // namespace ps
