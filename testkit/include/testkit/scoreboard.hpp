// testkit/scoreboard.hpp - the table each chapter's tour prints: one row per
// stage, one column per property, each cell measured live.
#pragma once

#include <string>
#include <vector>

namespace testkit {

struct Cell {
  enum class Verdict { right, wrong, info, skipped };
  Verdict verdict = Verdict::info;
  std::string text;  // what was measured: "exit 0", "torn", "12 ms", ...
};

inline Cell right(std::string text) { return {Cell::Verdict::right, std::move(text)}; }
inline Cell wrong(std::string text) { return {Cell::Verdict::wrong, std::move(text)}; }
inline Cell info(std::string text) { return {Cell::Verdict::info, std::move(text)}; }
inline Cell skipped(std::string why) { return {Cell::Verdict::skipped, std::move(why)}; }
inline Cell verdict(bool ok, std::string text) { return ok ? right(std::move(text)) : wrong(std::move(text)); }

class Scoreboard {
 public:
  Scoreboard(std::string title, std::vector<std::string> columns);
  void add_row(std::string stage, std::vector<Cell> cells);
  void add_note(std::string note);  // printed under the table
  std::string render() const;  // coloured marks only on a terminal without NO_COLOR
  std::string render(bool colour) const;

 private:
  std::string title_;
  std::vector<std::string> columns_;
  std::vector<std::pair<std::string, std::vector<Cell>>> rows_;
  std::vector<std::string> notes_;
};

// Display width of a UTF-8 string (code points; the marks used are narrow).
std::size_t display_width(const std::string& s);

}  // namespace testkit
