// PID 1 in a new PID namespace (what a container's entrypoint is).
// Needs permission to create PID namespaces (root here); where that is not
// permitted, each test reports SKIPPED with the reason (CTest shows it as
// skipped, never as passed).
#include <signal.h>

#include <catch2/catch.hpp>

#include "scenarios.hpp"

using namespace ch01;
using namespace std::chrono_literals;

#define REQUIRE_PID_NAMESPACES()                    \
  do {                                              \
    if (auto why = pid_namespaces_unavailable()) {  \
      WARN("SKIPPED: " << *why);                    \
      return;                                       \
    }                                               \
  } while (0)

namespace {

std::vector<std::string> writer(const std::string& name) {
  return {stage(name), "--record-ms", "200", "--flush-ms", "100", "--out", "/dev/null"};
}

std::vector<std::string> behind(std::vector<std::string> init, const std::vector<std::string>& command) {
  init.insert(init.end(), command.begin(), command.end());
  return init;
}

// A shell that leaves an orphan behind, then becomes the stage (exec).
std::vector<std::string> with_orphan(const std::string& name) {
  std::string cmd = "(sleep 1 &); exec";
  for (auto& a : writer(name)) cmd += " '" + a + "'";
  return {"sh", "-c", cmd};
}

}  // namespace

TEST_CASE("010 naive as PID 1: SIGTERM is ignored, it never stops") {
  REQUIRE_PID_NAMESPACES();
  auto o = as_pid1(writer("010-naive-exit"), 3s);
  INFO(o.transcript);
  CHECK_THAT(o.ready_line, Catch::StartsWith("ready pid=1 "));
  CHECK_FALSE(o.stopped_on_its_own);  // still running after 3 s: SIGKILLed
  CHECK(o.status.killed_by(SIGKILL));
}

TEST_CASE("fix 1: a stage that handles SIGTERM stops as PID 1") {
  REQUIRE_PID_NAMESPACES();
  auto name = GENERATE(as<std::string>{}, "020-flag-in-handler", "030-signal-thread", "033-interruptible-flusher",
                       "036-ignore-sighup", "040-second-signal");
  INFO(name);
  auto o = as_pid1(writer(name));
  INFO(o.transcript);
  CHECK_THAT(o.ready_line, Catch::StartsWith("ready pid=1 "));
  CHECK(o.stopped_on_its_own);
  CHECK(o.status.ok());
}

TEST_CASE("fix 2: 010 naive behind an init as PID 1 stops on SIGTERM") {
  REQUIRE_PID_NAMESPACES();
  auto init = GENERATE(as<std::vector<std::string>>{},
                       std::vector<std::string>{stage("050-pid1-init"), "--"},
                       std::vector<std::string>{TINI_PATH, "--"},
                       std::vector<std::string>{DUMB_INIT_PATH, "--single-child"});
  INFO(init.front());
  auto o = as_pid1(behind(init, writer("010-naive-exit")));
  INFO(o.transcript);
  CHECK(o.stopped_on_its_own);
  // The naive stage still dies of SIGTERM; the init reports it as 128+15.
  CHECK(o.status.exited);
  CHECK(o.status.code == 128 + SIGTERM);
}

TEST_CASE("050 init: forwards SIGTERM and exits with the child's status") {
  REQUIRE_PID_NAMESPACES();
  auto o = as_pid1(behind({stage("050-pid1-init"), "--"}, writer("040-second-signal")));
  INFO(o.transcript);
  CHECK(o.status.ok());  // 040 stopped gracefully, so does the init
  CHECK_THAT(o.transcript, Catch::Contains("init: forwarding SIGTERM to pid"));
  CHECK_THAT(o.transcript, Catch::Contains("init: pid 1, running"));
}

TEST_CASE("050 init: --kill-after-ms SIGKILLs a child that outlives the stop signal") {
  REQUIRE_PID_NAMESPACES();
  // sh -c 'trap "" TERM; ...' ignores SIGTERM, like a program stuck in work.
  std::vector<std::string> stubborn = {"sh", "-c", "trap '' TERM; echo ready pid=$$; while :; do sleep 0.05; done"};
  auto o = as_pid1(behind({stage("050-pid1-init"), "--kill-after-ms", "300", "--"}, stubborn), 5s);
  INFO(o.transcript);
  CHECK(o.stopped_on_its_own);
  CHECK(o.status.exited);
  CHECK(o.status.code == 128 + SIGKILL);
  CHECK(o.stop_ms >= 300);
  CHECK_THAT(o.transcript, Catch::Contains("sending SIGKILL"));
}

TEST_CASE("a stage as PID 1 leaves orphans as zombies") {
  REQUIRE_PID_NAMESPACES();
  std::string transcript;
  CHECK(orphan_left_as_zombie(with_orphan("030-signal-thread"), &transcript));
}

TEST_CASE("050 init as PID 1 reaps orphans") {
  REQUIRE_PID_NAMESPACES();
  std::string transcript;
  CHECK_FALSE(orphan_left_as_zombie(behind({stage("050-pid1-init"), "--"}, with_orphan("030-signal-thread")),
                                    &transcript));
  INFO(transcript);
  CHECK_THAT(transcript, Catch::Contains("init: reaped orphan pid"));
}

TEST_CASE("tini as PID 1 reaps orphans too") {
  REQUIRE_PID_NAMESPACES();
  CHECK_FALSE(orphan_left_as_zombie(behind({TINI_PATH, "--"}, with_orphan("030-signal-thread")), nullptr));
}

// --- a signal sent to the whole process group (no PID namespace needed) ---

TEST_CASE("050 init: the child runs in a process group of its own, as under tini") {
  auto o = group_signal_behind_init(stage("050-pid1-init"));
  INFO(o.transcript);
  CHECK(o.child_own_group);
}

TEST_CASE("050 init: a signal to the init's whole group reaches the child once: exit 0, no torn record") {
  // kill -- -PGID (or a service manager stopping the group). Were the child
  // in the init's group, it would get the signal directly *and* forwarded,
  // and 040 would take the forwarded copy for a second signal: exit 1, torn.
  auto o = group_signal_behind_init(stage("050-pid1-init"));
  INFO(o.transcript);
  CHECK(o.stopped_on_its_own);
  CHECK(o.status.ok());
  CHECK(o.file.begun == 1);
  CHECK_FALSE(o.file.torn());
  CHECK_THAT(o.stdout_text, !Catch::Contains("second signal"));
}

TEST_CASE("050 init: Ctrl+C on a terminal reaches the child once: exit 0, no torn record") {
  auto o = ctrl_c_behind_init(stage("050-pid1-init"));
  INFO(o.transcript);
  CHECK(o.child_own_group);
  CHECK(o.child_has_foreground);
  CHECK(o.stopped_on_its_own);
  CHECK(o.status.ok());
  CHECK(o.file.begun == 1);
  CHECK_FALSE(o.file.torn());
  CHECK_THAT(o.stdout_text, !Catch::Contains("second signal"));
}

TEST_CASE("tini: Ctrl+C on a terminal reaches the child once too") {
  auto o = ctrl_c_behind_init(TINI_PATH);
  INFO(o.transcript);
  CHECK(o.child_has_foreground);
  CHECK(o.status.ok());
  CHECK_FALSE(o.file.torn());
}

TEST_CASE("tini: a signal to the init's whole group reaches the child once too") {
  auto o = group_signal_behind_init(TINI_PATH);
  INFO(o.transcript);
  CHECK(o.child_own_group);
  CHECK(o.status.ok());
  CHECK_FALSE(o.file.torn());
}
