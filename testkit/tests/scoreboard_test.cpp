#include <catch2/catch.hpp>

#include "testkit/scoreboard.hpp"

using namespace testkit;

TEST_CASE("the scoreboard aligns columns and marks verdicts") {
  Scoreboard s("title", {"handles SIGTERM", "exit"});
  s.add_row("010-naive", {wrong("killed"), info("SIGTERM")});
  s.add_row("020-flag", {right("yes"), info("exit 0")});
  s.add_note("note");
  CHECK(s.render() ==
        "title\n"
        "stage      handles SIGTERM  exit\n"
        "010-naive  ✗ killed         SIGTERM\n"
        "020-flag   ✓ yes            exit 0\n"
        "  note\n");
}

TEST_CASE("a row with the wrong number of cells is refused") {
  Scoreboard s("t", {"a", "b"});
  CHECK_THROWS(s.add_row("x", {right("1")}));
}
