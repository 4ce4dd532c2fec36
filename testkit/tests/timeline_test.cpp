#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "testkit/timeline.hpp"

using namespace testkit;

TEST_CASE("a timeline renders to an SVG with one series per outcome, the lanes and the events") {
  Timeline t;
  t.title = "two stages, one shared axis";
  TimelineLane naive{"010-naive-exit", {}, {{0, "SIGTERM"}, {2, "killed"}}};
  TimelineLane last{"050-drain-first", {}, {{0, "SIGTERM"}, {1, "readiness 503"}, {900, "exit 0"}}};
  for (int i = 0; i < 20; ++i) {
    naive.requests.push_back({i * 10.0 - 150, i * 10.0 - 100, i < 15 ? Outcome::lost : Outcome::refused});
    last.requests.push_back({i * 10.0 - 150, i * 10.0 - 100, i < 18 ? Outcome::answered : Outcome::rejected});
  }
  naive.requests.push_back({-20, 5, Outcome::failed});
  t.lanes = {naive, last};
  const auto dir = std::filesystem::temp_directory_path() / ("timeline-test-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const auto svg = (dir / "t.svg").string();
  render_timeline(t, svg);
  std::ifstream in(svg);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::filesystem::remove_all(dir);
  CHECK(text.find("<svg") != std::string::npos);
  for (const char* s : {"010-naive-exit", "050-drain-first", "readiness 503", "exit 0", "answered", "refused",
                        "reset / failed", "acknowledged but lost", "rejected in order"})
    CHECK(text.find(s) != std::string::npos);
  // Bars are drawn in the outcome's colour (gnuplot writes colours in lower case).
  for (const char* c : {"rgb(  0, 114, 178)", "rgb(204, 121, 167)", "rgb(230, 159,   0)", "rgb(213,  94,   0)"})
    CHECK(text.find(c) != std::string::npos);
}
