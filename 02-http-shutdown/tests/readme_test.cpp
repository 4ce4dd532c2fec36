// The README's neighbour-diff table must say what `diff -u A B | wc -l` says
// today, for every pair of neighbouring stages, so it cannot silently drift.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "testkit/process.hpp"

using testkit::run_to_exit;

TEST_CASE("README: the neighbour-diff table matches diff -u | wc -l") {
  const std::string dir = CHAPTER_SOURCE_DIR;
  std::vector<std::string> stages;
  for (auto& e : std::filesystem::directory_iterator(dir)) {
    auto name = e.path().filename().string();
    if (std::regex_match(name, std::regex("[0-9]{3}-.*\\.cpp"))) stages.push_back(name);
  }
  std::sort(stages.begin(), stages.end());
  REQUIRE(stages.size() >= 2);

  std::ifstream in(dir + "/README.md");
  std::string readme((std::istreambuf_iterator<char>(in)), {});
  for (std::size_t i = 1; i < stages.size(); ++i) {
    const std::string& a = stages[i - 1];
    const std::string& b = stages[i];
    INFO(a << " -> " << b);
    auto r = run_to_exit({"sh", "-c", "diff -u \"$1\" \"$2\" | wc -l", "sh", dir + "/" + a, dir + "/" + b});
    REQUIRE(r.status.ok());
    const std::string lines = std::to_string(std::stoi(r.out));
    std::smatch m;
    // This README names the stages without ".cpp": | `030-...` → `033-...` | N |
    const std::regex row("\\| `" + a.substr(0, a.size() - 4) + "` → `" + b.substr(0, b.size() - 4) +
                         "` \\| ([0-9]+) \\|");
    REQUIRE(std::regex_search(readme, m, row));  // the row exists
    CHECK(m[1].str() == lines);
  }
}
