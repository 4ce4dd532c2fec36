// testkit/timeline.hpp - draws what happened during a stop, from a real run:
// every request as a bar on a time axis coloured by its outcome, and the
// program's events (signal taken, readiness 503, listener closed, exit, ...)
// as vertical markers; one lane per stage, all lanes on one shared axis, so
// that the reader sees at a glance why one stage loses work and another does
// not. Rendered with gnuplot to SVG.
#pragma once

#include <string>
#include <vector>

#include "testkit/process.hpp"

namespace testkit {

// How a request ended, as the client (and the ledger) saw it. Colours are
// the Okabe-Ito palette, which stays distinct under the common colour-vision
// deficiencies; the SVG has a white background so it reads on a dark page.
enum class Outcome {
  answered,  // a response, and its work persisted
  refused,   // connection refused: nobody listening
  failed,    // reset, EOF, UNAVAILABLE: the program went away mid-request
  lost,      // acknowledged, but its work never landed
  rejected,  // an orderly "no": 503, NOT_SERVING, a job handed back
};
const char* outcome_name(Outcome o);

struct TimelineRequest {
  double start_ms = 0, end_ms = 0;  // relative to the lane's time zero (e.g. the signal)
  Outcome outcome = Outcome::answered;
};

struct TimelineEvent {
  double at_ms = 0;
  std::string label;  // "SIGTERM", "503", "listener closed", "exit 0", ...
};

struct TimelineLane {
  std::string name;  // a stage, "010-naive-exit"
  std::vector<TimelineRequest> requests;
  std::vector<TimelineEvent> events;
};

struct Timeline {
  std::string title;
  std::string x_label = "ms after SIGTERM";
  std::vector<TimelineLane> lanes;  // drawn top to bottom
};

// Milliseconds from `zero` to `t` (negative before it).
double ms_since(Clock::time_point zero, Clock::time_point t);

// Events taken from what a program already prints: the first stdout line
// containing `needle` (after any earlier match of the same pattern) becomes an
// event called `label`, at the moment the test kit read the line.
struct LinePattern {
  std::string needle, label;
  bool every = false;  // every matching line, not only the first
};
std::vector<TimelineEvent> events_from_output(const Process& process, Clock::time_point zero,
                                              const std::vector<LinePattern>& patterns);

// The generators' command line: `timelines --out-dir DIR` (required; the
// directory is created). Exits 2 with one line on anything else.
std::string timeline_out_dir(int argc, char** argv);

// Writes <svg_path without .svg>.dat and .gp beside the SVG and runs gnuplot
// on them. Throws std::runtime_error if gnuplot is missing or fails.
void render_timeline(const Timeline& timeline, const std::string& svg_path);

// The gnuplot script alone (for tests and for readers who want to restyle).
std::string timeline_script(const Timeline& timeline, const std::string& data_path, const std::string& svg_path);

}  // namespace testkit
