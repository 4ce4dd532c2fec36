// timeline-check: asserts that a rendered timeline has the series it should.
// A timed run is never byte-identical to the last one, so the tests check
// what the picture shows instead: which lanes have requests of which outcome,
// and which events were marked.
//
//   timeline-check DIR/NAME.svg EXPECTATION...
//     LANE:OUTCOME>N   LANE:OUTCOME=N   LANE:OUTCOME<N   (OUTCOME: answered,
//                      rejected, refused, failed, lost; counts of bars)
//     LANE@TEXT        an event of LANE whose label contains TEXT
//
// Reads the SVG (it must exist and be an SVG naming every lane) and the data
// file that render_timeline() wrote beside it. Exit 0 when every expectation
// holds, 1 with one line per failed expectation otherwise, 2 on bad usage.
#include <cstdio>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "testkit/timeline.hpp"

namespace {

std::string read(const std::string& path) {
  std::ifstream in(path);
  if (!in) return {};
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

const std::map<std::string, testkit::Outcome> kOutcomes = {
    {"answered", testkit::Outcome::answered}, {"rejected", testkit::Outcome::rejected},
    {"refused", testkit::Outcome::refused},   {"failed", testkit::Outcome::failed},
    {"lost", testkit::Outcome::lost}};

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: timeline-check DIR/NAME.svg EXPECTATION...\n");
    return 2;
  }
  const std::string svg_path = argv[1];
  const std::string svg = read(svg_path);
  if (svg.find("<svg") == std::string::npos) {
    std::printf("FAIL %s: missing or not an SVG\n", svg_path.c_str());
    return 1;
  }
  const std::string dat_path = svg_path.substr(0, svg_path.size() - 4) + ".dat";
  const std::string dat = read(dat_path);
  if (dat.empty()) {  // without it every count would read as zero
    std::printf("FAIL %s: no data file %s beside it\n", svg_path.c_str(), dat_path.c_str());
    return 1;
  }
  // Data blocks are separated by two blank lines: bars, markers, labels.
  std::map<std::pair<std::string, std::string>, int> bars;  // (lane, outcome name) -> count
  std::vector<std::pair<std::string, std::string>> labels;  // (lane, label)
  int block = 0, blank = 0;
  std::istringstream lines(dat);
  for (std::string line; std::getline(lines, line);) {
    if (line.empty()) {
      if (++blank == 2) ++block;
      continue;
    }
    blank = 0;
    const auto hash = line.find("  # ");
    if (hash == std::string::npos) continue;
    const std::string tail = line.substr(hash + 4);
    const std::string lane = tail.substr(0, tail.find(' '));
    if (block == 0) ++bars[{lane, tail.substr(lane.size() + 1)}];
    if (block == 2) {
      const auto q1 = line.find('"'), q2 = line.rfind('"', hash);
      if (q1 != std::string::npos && q2 > q1) labels.emplace_back(lane, line.substr(q1 + 1, q2 - q1 - 1));
    }
  }
  int failures = 0;
  for (int i = 2; i < argc; ++i) {
    const std::string e = argv[i];
    bool ok = false;
    std::string seen;
    if (const auto at = e.find('@'); at != std::string::npos) {
      const std::string lane = e.substr(0, at), text = e.substr(at + 1);
      for (const auto& [l, label] : labels)
        if (l == lane) {
          seen += (seen.empty() ? "" : ", ") + label;
          ok = ok || label.find(text) != std::string::npos;
        }
      if (svg.find(lane) == std::string::npos) ok = false;
    } else {
      const auto colon = e.find(':'), op = e.find_first_of("<=>", colon == std::string::npos ? 0 : colon);
      const auto outcome = colon == std::string::npos || op == std::string::npos
                               ? kOutcomes.end()
                               : kOutcomes.find(e.substr(colon + 1, op - colon - 1));
      if (outcome == kOutcomes.end()) {
        std::fprintf(stderr, "timeline-check: bad expectation '%s'\n", e.c_str());
        return 2;
      }
      const std::string lane = e.substr(0, colon);
      const int want = std::stoi(e.substr(op + 1));
      const int n = bars[{lane, testkit::outcome_name(outcome->second)}];
      ok = e[op] == '>' ? n > want : e[op] == '<' ? n < want : n == want;
      if (svg.find(lane) == std::string::npos) ok = false;
      seen = std::to_string(n);
    }
    if (!ok) {
      std::printf("FAIL %s: %s (seen: %s)\n", svg_path.c_str(), e.c_str(), seen.empty() ? "nothing" : seen.c_str());
      ++failures;
    }
  }
  if (failures == 0) std::printf("ok %s: %d expectations\n", svg_path.c_str(), argc - 2);
  return failures == 0 ? 0 : 1;
}
