#ifndef PS_COMMON_STOP_SIGNAL_H_
#define PS_COMMON_STOP_SIGNAL_H_

#include "absl/time/time.h"

// How a daemon learns that it should stop (SIGTERM from Docker, Kubernetes
// or kill; SIGINT from Ctrl-C) and stops in its own time: the handlers only
// record the request, and the program acts on it where stopping is safe.
namespace ps::common {

// Installs the handlers; call once, early in main(). With a finite `grace`,
// a process that has not exited `grace` after the first signal exits with
// status 128+signal, saying so on stderr (a second signal does that at
// once), so a daemon stuck in a call still stops before an orchestrator's
// SIGKILL. Without one, later signals are ignored: a process that must
// clean up (stop its children, checkpoint) is never cut short.
void CatchStopSignals(absl::Duration grace = absl::InfiniteDuration());

// The stop signal received (SIGTERM or SIGINT), or 0. Cheap; any thread.
int StopSignalReceived();

// Blocks until a stop signal arrives; returns it.
int WaitForStopSignal();

}  // namespace ps::common

#endif  // PS_COMMON_STOP_SIGNAL_H_
