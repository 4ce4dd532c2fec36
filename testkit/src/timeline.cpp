#include "testkit/timeline.hpp"

#include <algorithm>
#include <iterator>
#include <utility>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace testkit {
namespace {

constexpr double kLaneHeight = 1.0, kLaneGap = 0.45;

// Okabe-Ito: blue, orange, vermillion, reddish purple, bluish green.
const char* colour(Outcome o) {
  switch (o) {
    case Outcome::answered: return "0x0072B2";
    case Outcome::refused: return "0xE69F00";
    case Outcome::failed: return "0xD55E00";
    case Outcome::lost: return "0xCC79A7";
    case Outcome::rejected: return "0x009E73";
  }
  return "0x000000";
}

double lane_base(std::size_t i, std::size_t lanes) { return static_cast<double>(lanes - 1 - i) * (kLaneHeight + kLaneGap); }

std::string quoted(const std::string& s) {
  std::string q = "\"";
  for (char c : s) q += (c == '"' || c == '\\') ? std::string("\\") + c : std::string(1, c);
  return q + "\"";
}

constexpr double kPlotWidthPx = 780, kLabelCharPx = 6.6;  // at 1000 px wide, sans 11

// The x range: every bar and marker, with room on the right for the labels
// of the last events.
std::pair<double, double> x_range(const Timeline& t) {
  double lo = 0, hi = 0;
  bool any = false;
  auto take = [&](double a, double b) {
    lo = any ? std::min(lo, a) : a;
    hi = any ? std::max(hi, b) : b;
    any = true;
  };
  for (const auto& lane : t.lanes) {
    for (const auto& r : lane.requests) take(r.start_ms, r.end_ms);
    for (const auto& e : lane.events) take(e.at_ms, e.at_ms);
  }
  const double span = std::max(hi - lo, 1.0);
  const double from = lo - 0.02 * span;
  double to = hi + 0.18 * span;
  // Wider still if a late event's label would run past the right edge: a
  // label of width w (a fraction of the plot) at x ends at x + w * (to - from).
  for (const auto& lane : t.lanes)
    for (const auto& e : lane.events) {
      const double w = (static_cast<double>(e.label.size()) * kLabelCharPx + 12) / kPlotWidthPx;
      if (w < 0.8) to = std::max(to, (e.at_ms - w * from) / (1 - w));
    }
  return {from, to};
}

// Bars use the lower part of a lane, event labels the rows above them.
constexpr double kBarsFrom = 0.04, kBarsTo = 0.44;
constexpr double kLabelRows[] = {0.93, 0.81, 0.69, 0.57};

}  // namespace

const char* outcome_name(Outcome o) {
  switch (o) {
    case Outcome::answered: return "answered";
    case Outcome::refused: return "refused";
    case Outcome::failed: return "reset / failed";
    case Outcome::lost: return "acknowledged but lost";
    case Outcome::rejected: return "rejected in order";
  }
  return "?";
}

double ms_since(Clock::time_point zero, Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(t - zero).count();
}

std::vector<TimelineEvent> events_from_output(const Process& process, Clock::time_point zero,
                                              const std::vector<LinePattern>& patterns) {
  std::vector<TimelineEvent> events;
  std::vector<bool> seen(patterns.size(), false);
  for (const auto& line : process.timed_lines())
    for (std::size_t i = 0; i < patterns.size(); ++i)
      if ((patterns[i].every || !seen[i]) && line.text.find(patterns[i].needle) != std::string::npos) {
        seen[i] = true;
        events.push_back({ms_since(zero, line.at), patterns[i].label});
        break;
      }
  return events;
}

std::string timeline_out_dir(int argc, char** argv) {
  if (argc != 3 || std::string(argv[1]) != "--out-dir" || argv[2][0] == '\0') {
    std::fprintf(stderr, "error: usage: %s --out-dir DIR\n", argc > 0 ? argv[0] : "timelines");
    std::exit(2);
  }
  std::error_code ec;
  std::filesystem::create_directories(argv[2], ec);
  if (ec) {
    std::fprintf(stderr, "error: --out-dir: cannot create %s: %s\n", argv[2], ec.message().c_str());
    std::exit(2);
  }
  return argv[2];
}

std::string timeline_script(const Timeline& t, const std::string& data_path, const std::string& svg_path) {
  const std::size_t lanes = std::max<std::size_t>(t.lanes.size(), 1);
  const int height = 150 + static_cast<int>(lanes) * 170;
  std::ostringstream gp;
  gp << "set terminal svg size 1000," << height << " dynamic noenhanced font 'sans,13' background rgb 'white'\n"
     << "set output " << quoted(svg_path) << "\n"
     << "set title " << quoted(t.title) << "\n"
     << "set xlabel " << quoted(t.x_label) << "\n"
     << "set border 3\nset xtics nomirror\nset ytics nomirror scale 0\nset grid xtics lc rgb '#dddddd'\n"
     << "set yrange [-0.2:" << lane_base(0, lanes) + kLaneHeight + 0.35 << "]\n"
     << "set style textbox opaque noborder margins 1,1\n"
     << "set bmargin 7\nset key at screen 0.5,0.02 center bottom horizontal maxrows 1 width 1\n"
     << "set ytics (";
  for (std::size_t i = 0; i < t.lanes.size(); ++i)
    gp << (i ? ", " : "") << quoted(t.lanes[i].name) << " " << lane_base(i, lanes) + kLaneHeight / 2;
  gp << ")\n";
  const auto [lo, hi] = x_range(t);
  gp << "set xrange [" << lo << ":" << hi << "]\n";
  gp << "plot " << quoted(data_path) << " index 0 using 1:2:3:(0):4 with vectors nohead lw 3 lc rgb variable notitle, \\\n"
     << "  " << quoted(data_path) << " index 1 using 1:2:(0):3 with vectors nohead dt 2 lw 1.5 lc rgb '#222222' notitle, \\\n"
     << "  " << quoted(data_path) << " index 2 using 1:2:3 with labels boxed left offset 0.3,0 font 'sans,11' tc rgb '#222222' notitle";
  for (Outcome o : {Outcome::answered, Outcome::rejected, Outcome::refused, Outcome::failed, Outcome::lost})
    gp << ", \\\n  NaN with lines lw 8 lc rgb '#" << std::string(colour(o)).substr(2) << "' title " << quoted(outcome_name(o));
  gp << "\n";
  return gp.str();
}

void render_timeline(const Timeline& t, const std::string& svg_path) {
  std::string stem = svg_path;
  if (stem.size() > 4 && stem.substr(stem.size() - 4) == ".svg") stem.resize(stem.size() - 4);
  const std::string data_path = stem + ".dat", script_path = stem + ".gp";
  const std::size_t lanes = std::max<std::size_t>(t.lanes.size(), 1);
  {
    std::ofstream data(data_path);
    // index 0: one bar per request (x, y, length, colour), stacked in start
    // order; an instant request still shows as a short bar
    const auto [lo, hi] = x_range(t);
    const double ms_per_px = (hi - lo) / kPlotWidthPx;
    const double min_bar = std::max(4 * ms_per_px, 1.0);
    for (std::size_t i = 0; i < t.lanes.size(); ++i) {
      auto reqs = t.lanes[i].requests;
      std::sort(reqs.begin(), reqs.end(), [](auto& a, auto& b) { return a.start_ms < b.start_ms; });
      const double base = lane_base(i, lanes);
      for (std::size_t k = 0; k < reqs.size(); ++k) {
        const double y = base + kBarsFrom + (kBarsTo - kBarsFrom) * (reqs.size() > 1 ? double(k) / double(reqs.size() - 1) : 0.5);
        data << reqs[k].start_ms << ' ' << y << ' ' << std::max(reqs[k].end_ms - reqs[k].start_ms, min_bar) << ' '
             << colour(reqs[k].outcome) << "  # " << t.lanes[i].name << ' ' << outcome_name(reqs[k].outcome) << '\n';
      }
    }
    data << "\n\n";
    // index 1: event markers across the lane; index 2: their labels, staggered
    std::ostringstream labels;
    for (std::size_t i = 0; i < t.lanes.size(); ++i) {
      const double base = lane_base(i, lanes);
      auto events = t.lanes[i].events;
      std::sort(events.begin(), events.end(), [](auto& a, auto& b) { return a.at_ms < b.at_ms; });
      // Each label goes to the first row where it does not run into the
      // previous label (estimated width), or the row that frees up first.
      double row_end[std::size(kLabelRows)];
      std::fill(std::begin(row_end), std::end(row_end), lo - (hi - lo));
      for (const auto& e : events) {
        data << e.at_ms << ' ' << base << ' ' << kLaneHeight + 0.05 << "  # " << t.lanes[i].name << '\n';
        std::size_t row = 0;
        while (row < std::size(kLabelRows) && row_end[row] > e.at_ms) ++row;
        if (row == std::size(kLabelRows)) row = std::min_element(std::begin(row_end), std::end(row_end)) - std::begin(row_end);
        row_end[row] = e.at_ms + (static_cast<double>(e.label.size()) * kLabelCharPx + 12) * ms_per_px;
        labels << e.at_ms << ' ' << base + kLabelRows[row] << ' ' << quoted(e.label) << "  # " << t.lanes[i].name
               << '\n';
      }
    }
    data << "\n\n" << labels.str();
    if (!data) throw std::runtime_error("cannot write " + data_path);
  }
  {
    std::ofstream gp(script_path);
    gp << timeline_script(t, data_path, svg_path);
    if (!gp) throw std::runtime_error("cannot write " + script_path);
  }
  const std::string cmd = "gnuplot " + quoted(script_path) + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) throw std::runtime_error("cannot run gnuplot");
  std::string out;
  char buf[512];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  const int rc = ::pclose(p);
  if (rc != 0) throw std::runtime_error("gnuplot failed on " + script_path + ":\n" + out);
}

}  // namespace testkit
