// diff-table-check: a chapter README's table of neighbour diffs must say what
// `diff -u A B | wc -l` says today, for every pair of neighbouring stages, and
// name no pair that is not one. Every chapter's "README: the neighbour-diff
// table" test runs it (cmake/stages.cmake, add_chapter_diff_table).
//
//   diff-table-check README.md DIR [--dirs FILE...] [--compare B=A]...
//
// Stages are DIR's entries named NNN-*.cpp (the main line, in order) and
// NNNx-*.cpp (side stages: 025a follows 025, 025b follows 025a). With
// --dirs, stages are DIR's subdirectories NNN-*, and each pair is measured
// once per FILE, in the table's column headed by that file name.
// --compare B=A measures stage B against stage A instead of its predecessor
// (a stage that is an alternative to an earlier one, not the next step).
//
// A row names its pair in either shape the chapters use:
//   | `010-a` → `020-b` | 116 | ... |        (names may carry `.cpp`, links)
//   | 010-a | 020-b | 95 | ... |
// and its figure is the first cell that is a number (or, with --dirs, the
// cell under each file's column). Exit 0 when every pair has its row with the
// right figure and no row names a pair of non-neighbours, 1 with one line per
// problem otherwise, 2 on bad usage.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <sys/wait.h>

namespace fs = std::filesystem;

namespace {

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t");
  if (b == std::string::npos) return {};
  return s.substr(b, s.find_last_not_of(" \t") - b + 1);
}

// Splits a Markdown table row on the pipes that are not escaped (`\|`).
std::vector<std::string> cells_of(const std::string& line) {
  std::vector<std::string> cells;
  std::string cur;
  for (std::size_t i = 0; i < line.size(); ++i) {
    if (line[i] == '\\' && i + 1 < line.size() && line[i + 1] == '|') {
      cur += '|';
      ++i;
    } else if (line[i] == '|') {
      cells.push_back(trim(cur));
      cur.clear();
    } else {
      cur += line[i];
    }
  }
  // "| a | b |" gives an empty first and no last cell after the final pipe.
  if (!cells.empty()) cells.erase(cells.begin());
  return cells;
}

// "[`010-naive.cpp`](010-naive.cpp)" -> "010-naive"; anything that does not
// look like a stage name gives "".
std::string stage_name(std::string cell) {
  static const std::regex link(R"(^\[(.*)\]\(.*\)$)");
  std::smatch m;
  if (std::regex_match(cell, m, link)) cell = m[1].str();
  cell.erase(std::remove(cell.begin(), cell.end(), '`'), cell.end());
  cell = trim(cell);
  if (cell.size() > 4 && cell.compare(cell.size() - 4, 4, ".cpp") == 0) cell.resize(cell.size() - 4);
  static const std::regex name(R"(^[0-9]{3}[a-z]?(-[A-Za-z0-9._-]*)?$)");
  return std::regex_match(cell, name) ? cell : std::string();
}

bool is_number(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

std::optional<long> diff_lines(const fs::path& a, const fs::path& b) {
  const std::string cmd = "diff -u '" + a.string() + "' '" + b.string() + "'";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return std::nullopt;
  long lines = 0;
  for (int c; (c = std::fgetc(p)) != EOF;)
    if (c == '\n') ++lines;
  const int status = ::pclose(p);
  // diff exits 0 (same) or 1 (different); 2 means it could not compare.
  if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) > 1) return std::nullopt;
  return lines;
}

struct Row {
  std::string a, b;
  std::vector<std::string> cells;                // after the two names; with --dirs, every cell
  std::map<std::string, std::size_t> columns;  // --dirs: the cell of each file, from the header above
  int line;
};

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: diff-table-check README.md DIR [--dirs FILE...] [--compare B=A]...\n");
    return 2;
  }
  const fs::path readme_path = argv[1];
  const fs::path dir = argv[2];
  std::vector<std::string> files;  // --dirs
  std::map<std::string, std::string> compare;
  bool dirs = false;
  for (int i = 3; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--dirs") {
      dirs = true;
      while (i + 1 < argc && std::string(argv[i + 1]).rfind("--", 0) != 0) files.emplace_back(argv[++i]);
    } else if (arg == "--compare" && i + 1 < argc) {
      const std::string spec = argv[++i];
      const auto eq = spec.find('=');
      if (eq == std::string::npos) {
        std::fprintf(stderr, "diff-table-check: --compare wants B=A, got '%s'\n", spec.c_str());
        return 2;
      }
      compare[spec.substr(0, eq)] = spec.substr(eq + 1);
    } else {
      std::fprintf(stderr, "diff-table-check: unknown argument '%s'\n", arg.c_str());
      return 2;
    }
  }
  if (dirs && files.empty()) {
    std::fprintf(stderr, "diff-table-check: --dirs wants the file names to compare\n");
    return 2;
  }

  // The stages, by name without ".cpp".
  std::vector<std::string> main_line, side;
  std::error_code ec;
  for (auto& e : fs::directory_iterator(dir, ec)) {
    const std::string file = e.path().filename().string();
    if (dirs != e.is_directory()) continue;
    static const std::regex main_re(R"(^([0-9]{3})-.*\.cpp$)"), side_re(R"(^([0-9]{3}[a-z])-.*\.cpp$)");
    static const std::regex main_dir(R"(^[0-9]{3}-.*$)");
    if (dirs) {
      if (std::regex_match(file, main_dir)) main_line.push_back(file);
    } else if (std::regex_match(file, main_re)) {
      main_line.push_back(file.substr(0, file.size() - 4));
    } else if (std::regex_match(file, side_re)) {
      side.push_back(file.substr(0, file.size() - 4));
    }
  }
  if (ec) {
    std::printf("FAIL cannot list %s: %s\n", dir.c_str(), ec.message().c_str());
    return 1;
  }
  std::sort(main_line.begin(), main_line.end());
  std::sort(side.begin(), side.end());
  if (main_line.size() < 2) {
    std::printf("FAIL %s: fewer than two stages\n", dir.c_str());
    return 1;
  }
  auto by_number = [&](const std::string& number) -> std::optional<std::string> {
    for (const auto* list : {&main_line, &side})
      for (const auto& s : *list)
        if (s.rfind(number + "-", 0) == 0) return s;
    return std::nullopt;
  };

  int problems = 0;
  std::vector<std::pair<std::string, std::string>> pairs;
  auto add_pair = [&](const std::string& before_number, const std::string& stage) {
    const std::string number = stage.substr(0, stage.find('-'));
    const std::string from = compare.count(number) ? compare.at(number) : before_number;
    if (auto a = by_number(from)) {
      pairs.emplace_back(*a, stage);
    } else {
      std::printf("FAIL %s: no stage %s to compare it with\n", stage.c_str(), from.c_str());
      ++problems;
    }
  };
  for (std::size_t i = 1; i < main_line.size(); ++i)
    add_pair(main_line[i - 1].substr(0, main_line[i - 1].find('-')), main_line[i]);
  for (const auto& s : side) {
    const std::string number = s.substr(0, 3);
    const char letter = s[3];
    add_pair(letter == 'a' ? number : number + static_cast<char>(letter - 1), s);
  }

  std::ifstream in(readme_path);
  if (!in) {
    std::printf("FAIL cannot read %s\n", readme_path.c_str());
    return 1;
  }
  // Every table row that names two stages.
  std::vector<Row> rows;
  std::map<std::string, std::size_t> columns;  // --dirs: of the current table's header
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    if (trim(line).rfind('|', 0) != 0) {
      columns.clear();
      continue;
    }
    auto cells = cells_of(trim(line));
    if (cells.empty()) continue;
    if (dirs) {
      bool header = false;
      for (std::size_t c = 0; c < cells.size(); ++c)
        if (std::find(files.begin(), files.end(), cells[c]) != files.end()) {
          if (!header) columns.clear();
          header = true;
          columns[cells[c]] = c;
        }
      if (header) continue;
    }
    Row row{{}, {}, {}, {}, n};
    std::size_t rest = 0;
    const auto arrow = cells[0].find("→");
    if (arrow != std::string::npos) {
      row.a = stage_name(cells[0].substr(0, arrow));
      row.b = stage_name(cells[0].substr(arrow + std::string("→").size()));
      rest = 1;
    } else if (cells.size() >= 2) {
      row.a = stage_name(cells[0]);
      row.b = stage_name(cells[1]);
      rest = 2;
    }
    if (row.a.empty() || row.b.empty()) continue;
    // With --dirs the cell indexes count from the row's first cell.
    if (dirs) {
      row.cells = cells;
      row.columns = columns;
    } else {
      row.cells.assign(cells.begin() + static_cast<long>(rest), cells.end());
    }
    rows.push_back(row);
  }

  // A row may name a stage by its number alone, or by number and name.
  auto names = [](const std::string& row_name, const std::string& stage) {
    return row_name == stage || row_name == stage.substr(0, stage.find('-'));
  };
  std::set<std::size_t> used;
  for (const auto& [a, b] : pairs) {
    std::optional<std::size_t> found;
    for (std::size_t r = 0; r < rows.size(); ++r)
      if (names(rows[r].a, a) && names(rows[r].b, b)) {
        found = r;
        break;
      }
    if (!found) {
      std::printf("FAIL no row for %s → %s in %s\n", a.c_str(), b.c_str(), readme_path.c_str());
      ++problems;
      continue;
    }
    used.insert(*found);
    const Row& row = rows[*found];
    const std::vector<std::string> measured = dirs ? files : std::vector<std::string>{""};
    for (const auto& file : measured) {
      std::string figure;
      if (dirs) {
        const auto& cols = row.columns;
        if (!cols.count(file) || cols.at(file) >= row.cells.size()) {
          std::printf("FAIL %s:%d: no column for %s\n", readme_path.c_str(), row.line, file.c_str());
          ++problems;
          continue;
        }
        figure = row.cells[cols.at(file)];
      } else {
        for (const auto& c : row.cells)
          if (is_number(c)) {
            figure = c;
            break;
          }
      }
      const auto lines = dirs ? diff_lines(dir / a / file, dir / b / file) : diff_lines(dir / (a + ".cpp"), dir / (b + ".cpp"));
      const std::string what = a + " → " + b + (dirs ? " (" + file + ")" : "");
      if (!lines) {
        std::printf("FAIL %s: diff could not compare them\n", what.c_str());
        ++problems;
      } else if (figure != std::to_string(*lines)) {
        std::printf("FAIL %s:%d: %s says %s, diff -u | wc -l says %ld\n", readme_path.c_str(), row.line, what.c_str(),
                    figure.empty() ? "nothing" : figure.c_str(), *lines);
        ++problems;
      } else {
        std::printf("ok   %s: %ld\n", what.c_str(), *lines);
      }
    }
  }
  for (std::size_t r = 0; r < rows.size(); ++r)
    if (!used.count(r)) {
      std::printf("FAIL %s:%d: %s → %s are not neighbours (a stage was added or renamed?)\n", readme_path.c_str(),
                  rows[r].line, rows[r].a.c_str(), rows[r].b.c_str());
      ++problems;
    }
  return problems == 0 ? 0 : 1;
}
