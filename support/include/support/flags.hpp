// support/flags.hpp - the command-line parser every stage uses.
//
// Not part of any lesson: it lives here so that stage files show shutdown
// handling and nothing else. Its contract is the course's contract for bad
// input: any invalid flag prints ONE line naming the flag to stderr and exits
// with status 2, before the program does anything else.
//
//   support::Flags flags(argc, argv, "usage: 010-naive-exit [--records N] ...");
//   auto records = flags.integer("--records", 5, 0, 1'000'000);
//   auto out     = flags.writable_path("--out", "records.txt");
//   flags.done();  // rejects unknown flags and stray arguments
#pragma once

#include <arpa/inet.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace support {

class Flags {
 public:
  Flags(int argc, char** argv, std::string usage) : usage_(std::move(usage)) {
    for (int i = 1; i < argc; ++i) {
      std::string_view a = argv[i];
      if (a == "--") {
        for (++i; i < argc; ++i) rest_.emplace_back(argv[i]);
        break;
      }
      if (a == "-h" || a == "--help") {
        std::printf("%s\n", usage_.c_str());
        std::exit(0);
      }
      if (a.substr(0, 2) != "--") fail(std::string(a), "unexpected argument");
      auto eq = a.find('=');
      if (eq != std::string_view::npos) {
        values_[std::string(a.substr(0, eq))] = std::string(a.substr(eq + 1));
      } else if (i + 1 < argc && std::string_view(argv[i + 1]).substr(0, 2) != "--") {
        values_[std::string(a)] = argv[++i];
      } else {
        values_[std::string(a)] = std::nullopt;  // a switch, or a value that is missing
      }
    }
  }

  // An integer flag within [min, max].
  long long integer(const std::string& name, long long fallback, long long min, long long max) {
    auto v = take(name);
    if (!v) return fallback;
    long long n = 0;
    auto [end, ec] = std::from_chars(v->data(), v->data() + v->size(), n);
    if (v->empty() || ec == std::errc::invalid_argument || end != v->data() + v->size())
      fail(name, "not a number: '" + *v + "'");
    if (ec == std::errc::result_out_of_range || n < min || n > max)
      fail(name, "out of range: " + *v + " (allowed " + std::to_string(min) + ".." + std::to_string(max) + ")");
    return n;
  }

  // A duration in milliseconds within [min, max].
  std::chrono::milliseconds millis(const std::string& name, long long fallback, long long min, long long max) {
    return std::chrono::milliseconds(integer(name, fallback, min, max));
  }

  // A TCP port; 0 means "pick a free one" when allow_zero.
  int port(const std::string& name, int fallback, bool allow_zero = true) {
    return static_cast<int>(integer(name, fallback, allow_zero ? 0 : 1, 65535));
  }

  // HOST:PORT, port 1..65535.
  std::pair<std::string, int> host_port(const std::string& name, const std::string& fallback) {
    std::string v = take(name).value_or(fallback);
    auto colon = v.rfind(':');
    if (colon == std::string::npos || colon == 0) fail(name, "expected HOST:PORT, got '" + v + "'");
    std::string host = v.substr(0, colon), port = v.substr(colon + 1);
    int p = 0;
    auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
    if (port.empty() || ec != std::errc() || end != port.data() + port.size() || p < 1 || p > 65535)
      fail(name, "expected HOST:PORT with a port in 1..65535, got '" + v + "'");
    return {host, p};
  }

  // A numeric IPv4 address to listen on (default: loopback only). Names are
  // not resolved: a listen address is a decision, not a lookup.
  std::string ipv4(const std::string& name, const std::string& fallback = "127.0.0.1") {
    std::string v = take(name).value_or(fallback);
    in_addr addr{};
    if (::inet_pton(AF_INET, v.c_str(), &addr) != 1) fail(name, "expected an IPv4 address such as 127.0.0.1, got '" + v + "'");
    return v;
  }

  // A non-empty string of at most max_len printable characters.
  std::string text(const std::string& name, const std::string& fallback, std::size_t max_len = 200) {
    std::string v = take(name).value_or(fallback);
    if (v.empty()) fail(name, "must not be empty");
    if (v.size() > max_len) fail(name, "longer than " + std::to_string(max_len) + " characters");
    for (unsigned char c : v)
      if (c < 0x21 || c > 0x7e) fail(name, "must be printable ASCII without spaces");
    return v;
  }

  // A file path this process can create or append to ("-" = stdout).
  // Checked without creating anything: an invalid command line leaves no
  // trace on disk.
  std::string writable_path(const std::string& name, const std::string& fallback) {
    std::string v = take(name).value_or(fallback);
    if (v.empty()) fail(name, "must not be empty");
    if (v == "-") return v;
    struct stat st {};
    if (::stat(v.c_str(), &st) == 0) {
      if (S_ISDIR(st.st_mode)) fail(name, "cannot write '" + v + "': Is a directory");
      if (::access(v.c_str(), W_OK) != 0) fail(name, "cannot write '" + v + "': " + std::strerror(errno));
      return v;
    }
    auto slash = v.rfind('/');
    std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : v.substr(0, slash);
    if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
      fail(name, "cannot write '" + v + "': No such file or directory");
    if (::access(dir.c_str(), W_OK | X_OK) != 0) fail(name, "cannot write '" + v + "': " + std::strerror(errno));
    return v;
  }

  // A switch: present or not (no value).
  bool present(const std::string& name) {
    auto it = values_.find(name);
    if (it == values_.end()) return false;
    if (it->second) fail(name, "takes no value");
    values_.erase(it);
    return true;
  }

  // Arguments after "--".
  const std::vector<std::string>& rest() const { return rest_; }

  // Call after reading every flag: anything left over is an error.
  void done() {
    if (!values_.empty()) fail(values_.begin()->first, "unknown flag (see --help)");
  }

  [[noreturn]] static void fail(const std::string& name, const std::string& why) {
    std::fprintf(stderr, "error: %s: %s\n", name.c_str(), why.c_str());
    std::exit(2);
  }

 private:
  std::optional<std::string> take(const std::string& name) {
    auto it = values_.find(name);
    if (it == values_.end()) return std::nullopt;
    if (!it->second) fail(name, "missing value");
    std::string v = *it->second;
    values_.erase(it);
    return v;
  }

  std::string usage_;
  std::map<std::string, std::optional<std::string>> values_;
  std::vector<std::string> rest_;
};

}  // namespace support
