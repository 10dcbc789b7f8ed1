// The network sandbox checks that packets cross its bridge: a namespace can
// be made on a host whose firewall drops every bridged packet (Docker's
// FORWARD policy), and a run must then fail at once with the reason, not
// after minutes of worker retries. Needs root (network namespaces).
#include "tools/chaos/network_sandbox.h"

#include <unistd.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tools/chaos/capabilities.h"
#include "tools/chaos/shell.h"

namespace ps::chaos {
namespace {

using ::testing::HasSubstr;

TEST(NetworkSandbox, TrafficThatDoesNotCrossTheBridgeIsReportedAtOnce) {
  if (geteuid() != 0) GTEST_SKIP() << "network namespaces need root";
  const absl::Time created = absl::Now();
  absl::StatusOr<std::unique_ptr<NetworkSandbox>> sandbox =
      NetworkSandbox::Create({"s0", "w0"}, /*use_nft=*/true);
  if (!sandbox.ok()) {
    // This host drops bridged packets already (Docker's FORWARD policy, as
    // on a machine running dockerd): Create must say so, and at once.
    EXPECT_LT(absl::Now() - created, absl::Seconds(6));
    EXPECT_EQ(sandbox.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(sandbox.status().message(),
                HasSubstr("packets do not cross the sandbox's bridge"));
    return;
  }
  ASSERT_TRUE((*sandbox)->CheckTraffic("w0", "s0").ok());

  // Everything arriving at s0 dropped, inside s0's own namespace (the
  // machine's firewall is not touched): as a host that filters bridged
  // packets would.
  ASSERT_TRUE(
      RunCommand((*sandbox)->Wrap("s0", {"nft", "add table inet block"})).ok());
  ASSERT_TRUE(
      RunCommand((*sandbox)->Wrap("s0", {"nft",
                                         "add chain inet block input { type "
                                         "filter hook input priority 0 ; "
                                         "policy drop ; }"}))
          .ok());
  const absl::Time start = absl::Now();
  const absl::Status crossed = (*sandbox)->CheckTraffic("w0", "s0");
  EXPECT_LT(absl::Now() - start, absl::Seconds(4));
  EXPECT_EQ(crossed.code(), absl::StatusCode::kFailedPrecondition) << crossed;
  EXPECT_THAT(crossed.message(),
              HasSubstr(absl::StrCat("packets do not cross the sandbox's "
                                     "bridge pcb",
                                     getpid())));
  EXPECT_THAT(crossed.message(), HasSubstr((*sandbox)->Address("s0")));
  EXPECT_THAT((*sandbox)->Teardown(), ::testing::IsEmpty());
}

// ps_chaos's replicas (cluster key replicas): sNrK, an address of its own
// above the workers', and traffic to the other hosts.
TEST(NetworkSandbox, ServerReplicasGetAddressesOfTheirOwn) {
  if (geteuid() != 0) GTEST_SKIP() << "network namespaces need root";
  absl::StatusOr<std::unique_ptr<NetworkSandbox>> sandbox =
      NetworkSandbox::Create({"s0", "s1", "s1r1", "s0r2", "w0"},
                             /*use_nft=*/true);
  ASSERT_TRUE(sandbox.ok()) << sandbox.status();
  const std::string subnet = (*sandbox)->subnet();
  EXPECT_EQ((*sandbox)->Address("s1"), subnet + ".11");
  EXPECT_EQ((*sandbox)->Address("w0"), subnet + ".100");
  EXPECT_EQ((*sandbox)->Address("s1r1"), subnet + ".165");
  EXPECT_EQ((*sandbox)->Address("s0r2"), subnet + ".180");
  EXPECT_TRUE((*sandbox)->CheckTraffic("s1r1", "s1").ok());
  EXPECT_THAT((*sandbox)->Teardown(), ::testing::IsEmpty());

  for (const char* bad : {"s16r1", "s0r0", "w0r1", "s0r1r1", "s15r7x"}) {
    absl::StatusOr<std::unique_ptr<NetworkSandbox>> refused =
        NetworkSandbox::Create({"s0", bad}, /*use_nft=*/true);
    ASSERT_FALSE(refused.ok()) << bad;
    EXPECT_THAT(refused.status().message(),
                HasSubstr(absl::StrCat("bad host name ", bad)));
  }
}

TEST(NetworkSandbox,
     TheProbeSaysWhetherTrafficCrossesAndANamespacedRunStopsAtOnce) {
  if (geteuid() != 0) GTEST_SKIP() << "network namespaces need root";
  const Capabilities caps = ProbeCapabilities();
  ASSERT_TRUE(caps.netns) << "no network namespaces here";
  // The probe's verdict is the sandbox's: built and checked the same way.
  absl::StatusOr<std::unique_ptr<NetworkSandbox>> sandbox =
      NetworkSandbox::Create({"s0", "w0"}, caps.nft);
  EXPECT_EQ(caps.bridge_traffic, sandbox.ok())
      << (sandbox.ok() ? "" : sandbox.status().ToString());
  bool reported = false;
  for (const std::string& line : caps.missing) {
    reported = reported || line.find(
                               "bridged traffic: packets do not cross "
                               "the sandbox's bridge") == 0;
  }
  EXPECT_EQ(reported, !caps.bridge_traffic)
      << "missing: " << absl::StrJoin(caps.missing, " | ");
  EXPECT_EQ(caps.network(), caps.bridge_traffic && (caps.nft || caps.iptables));
}

}  // namespace
}  // namespace ps::chaos
