// The README's table of neighbour diffs must say what `diff -u A B | wc -l`
// says today, so it cannot silently drift. Neighbours: the main line
// (NNN-name.cpp, in order), and each side stage (NNNa-, NNNb-...) against the
// one before it (025a against 025, 025b against 025a).
#include <algorithm>
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <utility>
#include <vector>

#include "testkit/process.hpp"

namespace {

std::string stem(const std::string& file) { return file.substr(0, file.size() - 4); }

std::string escaped(const std::string& s) { return std::regex_replace(s, std::regex(R"([.^$|()\[\]{}*+?\\])"), R"(\$&)"); }

}  // namespace

TEST_CASE("README: the neighbour-diff table matches diff -u | wc -l") {
  const std::string dir = CHAPTER_SOURCE_DIR;
  std::vector<std::string> main_line, side;
  for (auto& e : std::filesystem::directory_iterator(dir)) {
    auto name = e.path().filename().string();
    if (std::regex_match(name, std::regex("[0-9]{3}-.*\\.cpp"))) main_line.push_back(name);
    if (std::regex_match(name, std::regex("[0-9]{3}[a-z]-.*\\.cpp"))) side.push_back(name);
  }
  std::sort(main_line.begin(), main_line.end());
  std::sort(side.begin(), side.end());
  REQUIRE(main_line.size() >= 2);

  std::vector<std::pair<std::string, std::string>> pairs;
  for (std::size_t i = 1; i < main_line.size(); ++i) pairs.emplace_back(main_line[i - 1], main_line[i]);
  for (const std::string& s : side) {
    // 025a follows 025-...; 025b follows 025a-...
    const std::string number = s.substr(0, 3);
    const char letter = s[3];
    const std::string before = letter == 'a' ? number + "-" : number + std::string(1, static_cast<char>(letter - 1)) + "-";
    auto it = std::find_if(main_line.begin(), main_line.end(), [&](auto& m) { return m.rfind(before, 0) == 0; });
    if (it == main_line.end())
      it = std::find_if(side.begin(), side.end(), [&](auto& m) { return m.rfind(before, 0) == 0; });
    INFO(s);
    REQUIRE((it != main_line.end() && it != side.end()));
    pairs.emplace_back(*it, s);
  }

  std::ifstream in(dir + "/README.md");
  std::string readme((std::istreambuf_iterator<char>(in)), {});
  for (auto& [a, b] : pairs) {
    INFO(a << " -> " << b);
    auto r = testkit::run_to_exit({"sh", "-c", "diff -u \"$1\" \"$2\" | wc -l", "sh", dir + "/" + a, dir + "/" + b},
                                  std::chrono::milliseconds(10'000));
    REQUIRE(r.status.ok());
    const std::string lines = std::to_string(std::stoi(r.out));
    std::smatch m;
    const std::regex row("\\| " + escaped(stem(a)) + " \\| " + escaped(stem(b)) + " \\| ([0-9]+) \\|");
    REQUIRE(std::regex_search(readme, m, row));  // the row exists
    CHECK(m[1].str() == lines);
  }
}
