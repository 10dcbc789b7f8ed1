#include "tools/chaos/cpu_throttle.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"
#include "tools/chaos/leftovers.h"

namespace ps::chaos {
namespace {

constexpr int64_t kPeriodMicros = 100'000;

absl::Status WriteValue(const std::string& path, const std::string& value) {
  std::ofstream out(path);
  out << value << std::endl;
  if (!out) {
    return absl::UnavailableError(
        absl::StrCat("cannot write ", value, " to ", path));
  }
  return absl::OkStatus();
}

absl::Status MakeDir(const std::string& path) {
  if (mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) {
    return absl::UnavailableError(
        absl::StrCat("cannot create ", path, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace

CpuThrottle::CpuThrottle(std::string root)
    : root_(std::move(root)),
      dir_(absl::StrCat(root_, "/ps_chaos-", getpid())) {}

CpuThrottle::~CpuThrottle() {
  for (const std::string& line : Teardown()) {
    spdlog::error("ps_chaos: left behind: {}", line);
  }
}

absl::Status CpuThrottle::Limit(const std::string& name, pid_t pid,
                                double share) {
  if (absl::Status made = MakeDir(dir_); !made.ok()) return made;
  created_ = true;
  const std::string group = absl::StrCat(dir_, "/", name);
  if (absl::Status made = MakeDir(group); !made.ok()) return made;
  if (absl::Status s =
          WriteValue(group + "/cpu.cfs_period_us", absl::StrCat(kPeriodMicros));
      !s.ok()) {
    return s;
  }
  const std::string quota =
      share >= 1 ? "-1"
                 : absl::StrCat(static_cast<int64_t>(share * kPeriodMicros));
  if (absl::Status s = WriteValue(group + "/cpu.cfs_quota_us", quota);
      !s.ok()) {
    return s;
  }
  return WriteValue(group + "/cgroup.procs", absl::StrCat(pid));
}

std::vector<std::string> CpuThrottle::Teardown() {
  if (!created_) return {};
  created_ = false;
  RemoveCgroupTree(dir_, root_);
  struct stat info;
  if (stat(dir_.c_str(), &info) == 0) return {absl::StrCat("cgroup ", dir_)};
  return {};
}

}  // namespace ps::chaos
