#include "testkit/scoreboard.hpp"

#include "testkit/tour.hpp"

#include <algorithm>
#include <sstream>
#include <stdexcept>

namespace testkit {
namespace {

std::string mark(const Cell& c) {
  switch (c.verdict) {
    case Cell::Verdict::right:
      return "✓ " + c.text;
    case Cell::Verdict::wrong:
      return "✗ " + c.text;
    case Cell::Verdict::skipped:
      return "- " + c.text;
    case Cell::Verdict::info:
      break;
  }
  return c.text;
}

// Green ✓, red ✗ on a terminal (bold, so that the mark and not only the hue
// tells them apart); plain text everywhere else.
std::string coloured(const Cell& c, bool colour) {
  if (!colour || (c.verdict != Cell::Verdict::right && c.verdict != Cell::Verdict::wrong)) return mark(c);
  return (c.verdict == Cell::Verdict::right ? "\033[1;32m" : "\033[1;31m") + mark(c) + "\033[0m";
}

void pad(std::ostringstream& out, const std::string& s, std::size_t width, const std::string& shown = {}) {
  out << (shown.empty() ? s : shown);
  for (std::size_t w = display_width(s); w < width; ++w) out << ' ';
}

}  // namespace

std::size_t display_width(const std::string& s) {
  return static_cast<std::size_t>(
      std::count_if(s.begin(), s.end(), [](char ch) { return (static_cast<unsigned char>(ch) & 0xC0) != 0x80; }));
}

Scoreboard::Scoreboard(std::string title, std::vector<std::string> columns)
    : title_(std::move(title)), columns_(std::move(columns)) {}

void Scoreboard::add_row(std::string stage, std::vector<Cell> cells) {
  if (cells.size() != columns_.size())
    throw std::invalid_argument("scoreboard row '" + stage + "' has " + std::to_string(cells.size()) +
                                " cells for " + std::to_string(columns_.size()) + " columns");
  rows_.emplace_back(std::move(stage), std::move(cells));
}

void Scoreboard::add_note(std::string note) { notes_.push_back(std::move(note)); }

std::string Scoreboard::render() const { return render(colour_wanted()); }

std::string Scoreboard::render(bool colour) const {
  std::vector<std::size_t> width(columns_.size() + 1, 0);
  width[0] = std::string("stage").size();
  for (std::size_t c = 0; c < columns_.size(); ++c) width[c + 1] = display_width(columns_[c]);
  for (auto& [stage, cells] : rows_) {
    width[0] = std::max(width[0], display_width(stage));
    for (std::size_t c = 0; c < cells.size(); ++c) width[c + 1] = std::max(width[c + 1], display_width(mark(cells[c])));
  }
  std::ostringstream out;
  out << title_ << '\n';
  pad(out, "stage", width[0]);
  for (std::size_t c = 0; c < columns_.size(); ++c) {
    out << "  ";
    pad(out, columns_[c], c + 1 == columns_.size() ? 0 : width[c + 1]);
  }
  out << '\n';
  for (auto& [stage, cells] : rows_) {
    pad(out, stage, width[0]);
    for (std::size_t c = 0; c < cells.size(); ++c) {
      out << "  ";
      pad(out, mark(cells[c]), c + 1 == cells.size() ? 0 : width[c + 1], coloured(cells[c], colour));
    }
    out << '\n';
  }
  for (auto& n : notes_) out << "  " << n << '\n';
  return out.str();
}

}  // namespace testkit
