// The README's neighbour-diff table must say what `diff -u A B | wc -l` says
// today, for every pair of neighbouring stages, so it cannot silently drift.
// 110 (Streams) is an alternative to 100, not the next step after 105: its
// row compares it with 100.
#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <string>
#include <vector>

#include "testkit/process.hpp"

TEST_CASE("README: the neighbour-diff table matches diff -u | wc -l") {
  const std::string dir = CHAPTER_SOURCE_DIR;
  const std::map<std::string, std::string> compared_with = {{"110", "100"}};
  std::vector<std::string> stages;
  for (auto& e : std::filesystem::directory_iterator(dir)) {
    auto name = e.path().filename().string();
    if (std::regex_match(name, std::regex("[0-9]{3}-.*\\.cpp"))) stages.push_back(name);
  }
  std::sort(stages.begin(), stages.end());
  REQUIRE(stages.size() >= 2);
  auto file_of = [&](const std::string& number) {
    for (auto& s : stages)
      if (s.substr(0, 3) == number) return s;
    throw std::runtime_error("no stage " + number);
  };

  std::ifstream in(dir + "/README.md");
  std::string readme((std::istreambuf_iterator<char>(in)), {});
  for (std::size_t i = 1; i < stages.size(); ++i) {
    std::string b = stages[i].substr(0, 3);
    std::string a = compared_with.count(b) ? compared_with.at(b) : stages[i - 1].substr(0, 3);
    INFO(a << " -> " << b);
    auto r = testkit::run_to_exit(
        {"sh", "-c", "diff -u \"$1\" \"$2\" | wc -l", "sh", dir + "/" + file_of(a), dir + "/" + file_of(b)},
        testkit::milliseconds(10000));
    REQUIRE(r.status.ok());
    const std::string lines = std::to_string(std::stoi(r.out));
    std::smatch m;
    REQUIRE(std::regex_search(readme, m, std::regex("\\| `" + a + "` → `" + b + "` \\| ([0-9]+) \\|")));
    CHECK(m[1].str() == lines);
  }
}
