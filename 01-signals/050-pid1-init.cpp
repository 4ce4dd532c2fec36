// 050-pid1-init: the duties of PID 1, in one small program.
//
// Demonstrates: in a container, the entrypoint runs as PID 1 of a new PID
//   namespace, and the kernel treats PID 1 specially: a signal whose action
//   is "default" is *not delivered* to it (only handled signals are), so
//   010-naive-exit as PID 1 ignores SIGTERM and is SIGKILLed by the kubelet
//   after the whole grace period. Two fixes, both tested in this chapter:
//   1. make the program handle SIGTERM itself (020..040 run fine as PID 1);
//   2. run an init as PID 1 that forwards signals to the real program and
//      reaps zombies: tini, dumb-init, or this program.
//   This init: blocks the signals it forwards before starting the child,
//   takes them on its only thread with sigwaitinfo(), forwards SIGTERM, SIGINT,
//   SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 to the child, reaps *every* child on
//   SIGCHLD (orphans are re-parented to PID 1; nobody else will wait for them)
//   and exits with the child's status (128+N when it died of signal N, like a
//   shell). With --kill-after-ms it sends SIGKILL if the child outlives the
//   first stop signal by that long, as the kubelet does after the grace
//   period.
//   Like tini, it starts the child in a process group of its own and, on a
//   terminal, makes that group the foreground one. Otherwise a signal sent
//   to the whole group (Ctrl+C on a terminal, `kill -- -PGID`, a service
//   manager stopping everything) reaches the child twice: once directly and
//   once forwarded by the init. A program that forces its exit on a second
//   signal (040) would then tear its work on what was a single request.
// Still wrong: it forwards a signal to the child, not to the child's own
//   children; a program that spawns workers must stop them itself (or run
//   under tini -g, which forwards to the child's whole group).
// Reproduces: seed 000's Pod termination sequence (SIGTERM, grace period,
//   SIGKILL) as seen from inside the container, and the reason container
//   images use an exec-form ENTRYPOINT with tini.
//
// usage: 050-pid1-init [--kill-after-ms MS] -- COMMAND [ARGS...]
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "support/flags.hpp"

extern char** environ;

namespace {

constexpr int kForwarded[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};

// Exit status of the child, in the shell's convention.
int shell_status(int wait_status) {
  if (WIFEXITED(wait_status)) return WEXITSTATUS(wait_status);
  return 128 + WTERMSIG(wait_status);
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  support::Flags flags(argc, argv, "usage: 050-pid1-init [--kill-after-ms MS (0 = never)] -- COMMAND [ARGS...]");
  const auto kill_after = flags.millis("--kill-after-ms", 0, 0, 3'600'000);
  flags.done();
  if (flags.rest().empty()) support::Flags::fail("--", "a command to run is required after --");

  // docs:begin block
  // Block what we forward, and SIGCHLD, before the child exists; the child
  // gets an empty mask and default actions back (posix_spawn attributes).
  sigset_t set;
  sigemptyset(&set);
  for (int sig : kForwarded) sigaddset(&set, sig);
  sigaddset(&set, SIGCHLD);
  sigprocmask(SIG_BLOCK, &set, nullptr);

  // Not PID 1 (e.g. started by a shell)? Ask to inherit orphans anyway.
  if (::getpid() != 1) ::prctl(PR_SET_CHILD_SUBREAPER, 1);

  // The terminal will belong to the child's group: an init in the background
  // that writes to it or reads from it must not be stopped for that (tini
  // ignores these two as well).
  std::signal(SIGTTIN, SIG_IGN);
  std::signal(SIGTTOU, SIG_IGN);
  // docs:end block

  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  // docs:begin group
  // The child leads a process group of its own (tini's isolate_child():
  // setpgid(0, 0)), so a signal sent to the init's group reaches the child
  // only once: forwarded by us. On a terminal, the child's group becomes the
  // foreground one (tini: tcsetpgrp(STDIN_FILENO, getpgrp()) in the child),
  // so Ctrl+C goes to the child alone, and only once. Done in the child
  // before exec, by posix_spawn, so the child never runs in the background;
  // and only if we hold the foreground ourselves, so an init started with &
  // does not steal the terminal.
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (::isatty(STDIN_FILENO) && ::tcgetpgrp(STDIN_FILENO) == ::getpgrp())
    posix_spawn_file_actions_addtcsetpgrp_np(&actions, STDIN_FILENO);
  // docs:end group
  std::vector<char*> args;
  for (auto& a : flags.rest()) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t child = 0;
  int rc = ::posix_spawnp(&child, args[0], &actions, &attr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    std::fprintf(stderr, "init: cannot run %s: %s\n", args[0], std::strerror(rc));
    return 127;  // the shell's "command not found"
  }
  std::fprintf(stderr, "init: pid %d, running %s as pid %d\n", ::getpid(), args[0], child);

  // docs:begin loop
  using Clock = std::chrono::steady_clock;
  std::optional<Clock::time_point> kill_at;  // armed by the first stop signal
  while (true) {
    siginfo_t info{};
    int sig;
    if (kill_at) {
      auto left = std::chrono::duration_cast<std::chrono::nanoseconds>(*kill_at - Clock::now());
      if (left.count() < 0) left = std::chrono::nanoseconds(0);
      timespec ts{static_cast<time_t>(left.count() / 1'000'000'000), static_cast<long>(left.count() % 1'000'000'000)};
      sig = sigtimedwait(&set, &info, &ts);
      if (sig < 0 && errno == EAGAIN) {
        std::fprintf(stderr, "init: pid %d still running %lld ms after the stop signal, sending SIGKILL\n", child,
                     static_cast<long long>(kill_after.count()));
        ::kill(child, SIGKILL);
        kill_at.reset();
        continue;
      }
    } else {
      sig = sigwaitinfo(&set, &info);
    }
    if (sig < 0) continue;  // EINTR

    if (sig == SIGCHLD) {
      // Reap everything that has exited: our child, and any orphan that was
      // re-parented to us. An unreaped child stays a zombie forever.
      int status = 0;
      for (pid_t pid; (pid = ::waitpid(-1, &status, WNOHANG)) > 0;) {
        if (pid == child) {
          std::fprintf(stderr, "init: pid %d exited (status %d), exiting\n", pid, shell_status(status));
          return shell_status(status);
        }
        std::fprintf(stderr, "init: reaped orphan pid %d\n", pid);
      }
      continue;
    }
    std::fprintf(stderr, "init: forwarding SIG%s to pid %d\n", sigabbrev_np(sig), child);
    ::kill(child, sig);
    if ((sig == SIGTERM || sig == SIGINT) && kill_after.count() > 0 && !kill_at)
      kill_at = Clock::now() + kill_after;
  }
  // docs:end loop
}
