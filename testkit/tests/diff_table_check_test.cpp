// diff-table-check, the tool behind every chapter's "README: the
// neighbour-diff table" test, must fail on each kind of drift it is for.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <string>
#include <unistd.h>

#include "testkit/process.hpp"

namespace fs = std::filesystem;

namespace {

struct Chapter {
  fs::path dir = fs::temp_directory_path() / ("diff-table-test-" + std::to_string(::getpid()));
  Chapter() {
    fs::remove_all(dir);
    fs::create_directories(dir);
    write("010-first.cpp", "int a;\n");
    write("020-second.cpp", "int a;\nint b;\n");  // diff -u: 5 lines
    write("020a-beside.cpp", "int c;\n");          // vs 020: 6 lines
  }
  ~Chapter() { fs::remove_all(dir); }
  void write(const std::string& name, const std::string& text) { std::ofstream(dir / name) << text; }
  testkit::Finished check(const std::string& readme) {
    write("README.md", readme);
    return testkit::run_to_exit({DIFF_TABLE_CHECK, (dir / "README.md").string(), dir.string()});
  }
};

const std::string kGood =
    "| diff | lines |\n|---|---|\n| `010-first` → `020-second` | 5 |\n| `020-second` → `020a-beside` | 6 |\n";

}  // namespace

TEST_CASE("diff-table-check: a current table passes, in either row shape") {
  Chapter c;
  auto r = c.check(kGood);
  INFO(r.out);
  CHECK(r.status.ok());
  r = c.check("| from | to | lines |\n|---|---|---|\n| 010-first | 020-second | 5 |\n| 020 | 020a | 6 |\n");
  INFO(r.out);
  CHECK(r.status.ok());
}

TEST_CASE("diff-table-check: a wrong figure, a missing row and a stale row each fail") {
  Chapter c;
  auto r = c.check("| `010-first` → `020-second` | 4 |\n| `020-second` → `020a-beside` | 6 |\n");
  CHECK((r.status.exited && r.status.code == 1));
  CHECK(r.out.find("says 4, diff -u | wc -l says 5") != std::string::npos);

  r = c.check("| `010-first` → `020-second` | 5 |\n");
  CHECK((r.status.exited && r.status.code == 1));
  CHECK(r.out.find("no row for 020-second → 020a-beside") != std::string::npos);

  c.write("015-inserted.cpp", "int a;\nint z;\n");  // a stage split in two: 010 → 020 is no longer a step
  r = c.check(kGood);
  CHECK((r.status.exited && r.status.code == 1));
  CHECK(r.out.find("no row for 010-first → 015-inserted") != std::string::npos);
  CHECK(r.out.find("010-first → 020-second are not neighbours") != std::string::npos);
}
