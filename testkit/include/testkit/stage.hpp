// testkit/stage.hpp - where a chapter's tests find a stage binary.
#pragma once

#include <string>

namespace testkit {

// The binary <dir>/<name>, unless the environment variable GS_STAGE_OVERRIDE
// names another file for <name>: "030-signal-thread=/path/to/binary", several
// separated by ';'. The workshop (scripts/workshop) runs a chapter's property
// tests against an exercise this way: the tests do not change, only the
// binary they start.
std::string stage_binary(const std::string& dir, const std::string& name);

}  // namespace testkit
