#include "testkit/stage.hpp"

#include <cstdlib>
#include <string_view>

namespace testkit {

std::string stage_binary(const std::string& dir, const std::string& name) {
  if (const char* env = std::getenv("GS_STAGE_OVERRIDE")) {
    std::string_view rest(env);
    while (!rest.empty()) {
      const auto end = rest.find(';');
      const std::string_view entry = rest.substr(0, end);
      const auto eq = entry.find('=');
      if (eq != std::string_view::npos && entry.substr(0, eq) == name) return std::string(entry.substr(eq + 1));
      if (end == std::string_view::npos) break;
      rest.remove_prefix(end + 1);
    }
  }
  return dir + "/" + name;
}

}  // namespace testkit
