// testkit/tour.hpp - what makes a chapter's tour stop like the programs it
// teaches, and show where it is.
//
//   int main() {
//     testkit::TourRuntime tour("02-http-shutdown");  // first, before any thread
//     for (stage : stages) { tour.stage(stage); tour.scenario("SIGTERM while writes pend"); ... }
//   }
//
// On SIGINT or SIGTERM the runtime's signal thread ends every process the
// tour started through testkit::Process (SIGTERM to each process group, then
// SIGKILL to what is left after a short grace), runs the cleanups registered
// with on_stop() (network namespaces, temporary files), and exits with
// 128 + the signal number (130 for Ctrl-C, 143 for SIGTERM), within a second.
//
// Progress: on a terminal, one line on stderr that updates in place
// (chapter, stage, scenario, elapsed). Piped, nothing is added to the output,
// unless TOUR_PROGRESS=lines asks for one plain line per change on stdout
// (for logs, and for the test that signals a tour mid-scenario).
#pragma once

#include <functional>
#include <string>

namespace testkit {

class TourRuntime {
 public:
  explicit TourRuntime(std::string chapter);
  ~TourRuntime();  // clears the progress line
  TourRuntime(const TourRuntime&) = delete;
  TourRuntime& operator=(const TourRuntime&) = delete;

  void stage(const std::string& name);        // a new row of the scoreboard
  void scenario(const std::string& what);     // what the current stage is being put through
  // Before printing the scoreboard: clears the progress line so the table
  // is not interleaved with it.
  void clear();
};

// Runs `cleanup` from the signal thread if the tour is stopped by a signal
// (after the processes were ended). Returns an id for remove_on_stop().
int on_stop(std::function<void()> cleanup);
void remove_on_stop(int id);

// Colour for ✓/✗ marks: only when stdout is a terminal and NO_COLOR is unset
// (https://no-color.org).
bool colour_wanted();

}  // namespace testkit
