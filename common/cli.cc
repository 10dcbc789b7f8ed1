#include "common/cli.h"

#include <fcntl.h>
#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "spdlog/spdlog.h"

namespace ps::common {
namespace {
std::string program_name = "ps";
}  // namespace

void TuneMallocForLargeBuffers() {
  // One arena: a thread arena's heaps hold at most 64 MiB, so a 16M-float
  // message there would be mapped afresh on every call.
  mallopt(M_ARENA_MAX, 1);
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
}

void DisableMutexDeadlockDetection() {
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
}

namespace {

// What FlagValues answers; written once, by InitProgram.
std::map<std::string, std::vector<std::string>>& FlagValuesSeen() {
  static auto* seen = new std::map<std::string, std::vector<std::string>>();
  return *seen;
}

// absl's parser exits with status 1 on an unknown flag or a bad value (and
// says only "Illegal value '5'" for a duration without its unit), where
// every other start-up error exits 2. So the command line, and the
// flagfiles it names, are checked here first with absl's own parsers.
void CheckFlags(const std::vector<std::string>& args, int depth) {
  for (size_t i = 0; i < args.size(); ++i) {
    absl::string_view arg = args[i];
    if (arg == "--") return;  // the rest are positional
    if (!absl::ConsumePrefix(&arg, "--") && !absl::ConsumePrefix(&arg, "-")) {
      continue;
    }
    const size_t equals = arg.find('=');
    const std::string name(arg.substr(0, equals));
    if (name.empty()) continue;  // "-" alone is an argument
    // Not std::optional<std::string>: GCC 12 calls it maybe-uninitialized
    // under -fsanitize=thread, which -Werror turns into a failed build.
    bool has_value = equals != absl::string_view::npos;
    std::string value(has_value ? arg.substr(equals + 1) : "");
    // absl's parser handles these itself (some are no registered flags).
    if (absl::StartsWith(name, "help") || name == "version" ||
        name == "only_check_args" || name == "undefok" || name == "fromenv" ||
        name == "tryfromenv") {
      continue;
    }
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag == nullptr && absl::StartsWith(name, "no") && !has_value) {
      // --noflag sets a bool flag to false.
      absl::CommandLineFlag* negated =
          absl::FindCommandLineFlag(name.substr(2));
      if (negated != nullptr && negated->IsOfType<bool>()) continue;
    }
    if (flag == nullptr) {
      Die(absl::StrCat("Unknown command line flag '", name, "' (see --help)"));
    }
    if (!has_value) {
      if (flag->IsOfType<bool>()) continue;
      if (i + 1 == args.size()) {
        Die(absl::StrCat("--", name, " needs a value"));
      }
      value = args[++i];
    }
    if (name == "flagfile") {
      for (absl::string_view path : absl::StrSplit(value, ',')) {
        std::ifstream in{std::string(path)};
        if (!in) Die(absl::StrCat("cannot read --flagfile=", path));
        std::vector<std::string> lines;
        for (std::string line; std::getline(in, line);) {
          absl::string_view text = absl::StripAsciiWhitespace(line);
          if (!text.empty() && text[0] != '#') lines.emplace_back(text);
        }
        if (depth < 4) CheckFlags(lines, depth + 1);
      }
      continue;
    }
    std::string error;
    // Sets the value too; absl's parser sets every flag again, in order.
    if (!flag->ParseFrom(value, &error)) {
      double number = 0;
      if (flag->IsOfType<absl::Duration>() &&
          absl::SimpleAtod(value, &number)) {
        Die(absl::StrCat("--", name, "=", value,
                         " needs a unit, as in 500ms, 30s or 2m"));
      }
      Die(absl::StrCat("--", name, "=", value, ": ", error));
    }
    FlagValuesSeen()[name].push_back(value);
  }
}

}  // namespace

std::vector<std::string> FlagValues(absl::string_view name) {
  auto found = FlagValuesSeen().find(std::string(name));
  return found == FlagValuesSeen().end() ? std::vector<std::string>()
                                         : found->second;
}

std::vector<std::string> InitProgram(int argc, char** argv,
                                     absl::string_view usage,
                                     size_t max_arguments) {
  TuneMallocForLargeBuffers();
  DisableMutexDeadlockDetection();
  if (argc > 0) {
    program_name = argv[0];
    if (size_t slash = program_name.rfind('/'); slash != std::string::npos) {
      program_name = program_name.substr(slash + 1);
    }
  }
  absl::SetProgramUsageMessage(std::string(usage));
  absl::FlagsUsageConfig usage_config;
  usage_config.version_string = [] {
    return absl::StrCat(program_name, " ", PS_VERSION, " (commit ",
                        PS_GIT_COMMIT, ")\n");
  };
  absl::SetFlagsUsageConfig(usage_config);
  CheckFlags(std::vector<std::string>(argv + std::min(argc, 1), argv + argc),
             /*depth=*/0);
  std::vector<char*> rest = absl::ParseCommandLine(argc, argv);
  // rest[0] is the program itself.
  if (rest.size() > max_arguments + 1) {
    Die(absl::StrCat("unexpected argument '", rest[max_arguments + 1],
                     "'; all options are --flags (see --help)"));
  }
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%L%$ " + program_name + " %v");
  return std::vector<std::string>(rest.begin() + 1, rest.end());
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

namespace {

absl::Status ErrnoError(absl::string_view what, const std::string& path) {
  return absl::UnavailableError(
      absl::StrCat("cannot ", what, " ", path, ": ", std::strerror(errno)));
}

std::string DirectoryOf(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

}  // namespace

std::optional<std::string> ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::ostringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

absl::Status WriteFileAtomically(const std::string& path,
                                 absl::string_view contents) {
  const std::string temp = absl::StrCat(path, ".tmp");
  const int fd =
      ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoError("create", temp);
  size_t written = 0;
  while (written < contents.size()) {
    const ssize_t n =
        ::write(fd, contents.data() + written, contents.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      absl::Status error = ErrnoError("write", temp);
      ::close(fd);
      ::unlink(temp.c_str());
      return error;
    }
    written += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    absl::Status error = ErrnoError("fsync", temp);
    ::close(fd);
    ::unlink(temp.c_str());
    return error;
  }
  if (::close(fd) != 0) return ErrnoError("close", temp);
  if (std::rename(temp.c_str(), path.c_str()) != 0) {
    absl::Status error = ErrnoError("rename into place", temp);
    ::unlink(temp.c_str());
    return error;
  }
  // The rename is durable only once the directory entry is.
  const std::string directory = DirectoryOf(path);
  const int dir_fd =
      ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0) return ErrnoError("open directory", directory);
  const int synced = ::fsync(dir_fd);
  ::close(dir_fd);
  if (synced != 0) return ErrnoError("fsync directory", directory);
  return absl::OkStatus();
}

absl::StatusOr<uint32_t> OrdinalFromHostname(absl::string_view hostname) {
  const size_t dash = hostname.rfind('-');
  uint32_t ordinal = 0;
  if (dash == absl::string_view::npos || dash + 1 == hostname.size() ||
      !absl::SimpleAtoi(hostname.substr(dash + 1), &ordinal) ||
      !absl::ascii_isdigit(static_cast<unsigned char>(hostname[dash + 1]))) {
    return absl::InvalidArgumentError(
        absl::StrCat("hostname '", hostname,
                     "' does not end in -<ordinal> (like ps-server-2)"));
  }
  return ordinal;
}

std::string Hostname() {
  char name[256] = {};
  if (::gethostname(name, sizeof(name) - 1) != 0) return "";
  return name;
}

absl::StatusOr<uint32_t> ResolveIndex(int64_t flag_value,
                                      absl::string_view flag_name,
                                      uint32_t count,
                                      absl::string_view env_name,
                                      bool use_hostname) {
  int64_t index = flag_value;
  std::string source;
  const char* env =
      env_name.empty() ? nullptr : std::getenv(std::string(env_name).c_str());
  if (index >= 0) {
    source = absl::StrCat("--", flag_name, "=", index);
  } else if (env != nullptr && *env != '\0') {
    source = absl::StrCat("$", env_name, "='", env, "'");
    if (!absl::SimpleAtoi(env, &index) || index < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, " is not a non-negative integer"));
    }
  } else if (count == 1) {
    index = 0;
  } else if (use_hostname) {
    const std::string hostname = Hostname();
    absl::StatusOr<uint32_t> ordinal = OrdinalFromHostname(hostname);
    if (!ordinal.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--", flag_name, " is not set and ", ordinal.status().message()));
    }
    index = *ordinal;
    source = absl::StrCat("hostname '", hostname, "'");
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "--", flag_name, " is not set",
        env_name.empty() ? "" : absl::StrCat(" (nor $", env_name, ")"),
        " and there are ", count, " to choose from"));
  }
  if (index >= count) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": ", flag_name, " ", index, " is outside [0, ", count, ")"));
  }
  return static_cast<uint32_t>(index);
}

}  // namespace ps::common
