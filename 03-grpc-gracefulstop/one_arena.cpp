// Linked into 070-quick-exit-static only: one malloc arena for the whole
// process, the same as MALLOC_ARENA_MAX=1 in its environment. glibc
// otherwise gives threads that allocate arenas of their own (up to 8 per
// core, each a 64 MB reservation with page tables of its own), and the exit
// unmaps every one of them before the parent learns that the process is
// gone (README, "Benchmarks"). Set before main(), so before gRPC starts any
// thread.
#include <malloc.h>

namespace {
[[maybe_unused]] const int one_arena = mallopt(M_ARENA_MAX, 1);
}  // namespace
