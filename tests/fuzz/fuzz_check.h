#ifndef PS_TESTS_FUZZ_FUZZ_CHECK_H_
#define PS_TESTS_FUZZ_FUZZ_CHECK_H_

// What every fuzz target shares: how a broken invariant ends the run, and
// logs kept quiet so the run's output is libFuzzer's own.
#include <errno.h>  // program_invocation_short_name (glibc)

#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/string_view.h"
#include "spdlog/spdlog.h"

namespace ps::fuzz {

// Ends the run as a crash, which libFuzzer reports and saves the input of,
// saying which invariant broke (prefixed by the target's name).
[[noreturn]] inline void Fail(absl::string_view what) {
  std::fprintf(stderr, "%s: %s\n", program_invocation_short_name,
               std::string(what).c_str());
  std::abort();
}

// Turns spdlog off, once per process: the code under test logs every
// rejected request, millions of lines a run.
inline void QuietLogs() {
  static const bool quiet = [] {
    spdlog::set_level(spdlog::level::off);
    return true;
  }();
  (void)quiet;
}

}  // namespace ps::fuzz

#endif  // PS_TESTS_FUZZ_FUZZ_CHECK_H_
