#include "common/cli.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "spdlog/spdlog.h"

namespace ps::common {
namespace {
std::string program_name = "ps";
}  // namespace

void InitProgram(int argc, char** argv, absl::string_view usage) {
  if (argc > 0) {
    program_name = argv[0];
    if (size_t slash = program_name.rfind('/'); slash != std::string::npos) {
      program_name = program_name.substr(slash + 1);
    }
  }
  absl::SetProgramUsageMessage(std::string(usage));
  std::vector<char*> rest = absl::ParseCommandLine(argc, argv);
  if (rest.size() > 1) {
    Die(absl::StrCat("unexpected argument '", rest[1],
                     "'; all options are --flags (see --help)"));
  }
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%L%$ " + program_name + " %v");
}

void SetLogLevelOrDie(const std::string& log_level) {
  const spdlog::level::level_enum level = spdlog::level::from_str(log_level);
  // from_str answers "off" for anything it does not know.
  if (level == spdlog::level::off && log_level != "off") {
    Die(absl::StrCat("--log_level='", log_level,
                     "' is not one of trace, debug, info, warn, error, "
                     "critical, off"));
  }
  spdlog::set_level(level);
}

void Die(absl::string_view message) {
  std::fprintf(stderr, "%s: %.*s\n", program_name.c_str(),
               static_cast<int>(message.size()), message.data());
  std::fflush(stderr);
  std::exit(2);
}

void DieIfError(const absl::Status& status, absl::string_view context) {
  if (!status.ok()) {
    Die(absl::StrCat(context, ": ", status.message()));
  }
}

absl::Status WriteFileAtomically(const std::string& path,
                                 absl::string_view contents) {
  const std::string temp = absl::StrCat(path, ".tmp");
  {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    out.write(contents.data(), static_cast<std::streamsize>(contents.size()));
    out.flush();
    if (!out) {
      return absl::UnavailableError(absl::StrCat(
          "cannot write ", temp, ": ", std::strerror(errno)));
    }
  }
  if (std::rename(temp.c_str(), path.c_str()) != 0) {
    return absl::UnavailableError(absl::StrCat("cannot rename ", temp, " to ",
                                               path, ": ",
                                               std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace ps::common
