// docsync - keeps the Markdown docs identical to the code and to real output.
//
// Two kinds of generated block, each introduced by an HTML comment:
//
//   <!-- include: 01-signals/020-flag-in-handler.cpp#handler -->
//   ```cpp
//   ...the lines between "docs:begin handler" and "docs:end handler"...
//   ```
//
//   <!-- output: build/default/01-signals/010-naive-exit --records 2 -->
//   ```console
//   $ build/default/01-signals/010-naive-exit --records 2
//   ...what the command printed (stdout and stderr)...
//   ```
//
//   docsync --check  ROOT BUILD FILE.md...   fails when a block has drifted
//   docsync --update ROOT BUILD FILE.md...   rewrites the blocks
//
// Code must match to the byte. Output is compared after normalising numbers
// and runs of spaces (timings and ports differ between runs; a verdict, a
// message or a line that appears or disappears does not). Commands run from
// ROOT with "build/default/" replaced by BUILD, so the check exercises the
// binaries of the preset being tested.
#include <sys/wait.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<std::string> split_lines(const std::string& s) {
  std::vector<std::string> lines;
  std::istringstream in(s);
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  return lines;
}

// Lines strictly between "docs:begin NAME" and "docs:end NAME", with the
// common indentation removed.
std::string region(const std::string& root, const std::string& spec) {
  auto hash = spec.find('#');
  if (hash == std::string::npos) throw std::runtime_error("include needs FILE#REGION: " + spec);
  std::string file = spec.substr(0, hash), name = spec.substr(hash + 1);
  auto lines = split_lines(read_file(root + "/" + file));
  std::vector<std::string> body;
  bool in = false, found = false;
  for (auto& l : lines) {
    if (l.find("docs:begin " + name) != std::string::npos && l.find("docs:begin " + name) + 11 + name.size() == l.size()) {
      in = found = true;
      continue;
    }
    if (in && l.find("docs:end " + name) != std::string::npos) {
      in = false;
      break;
    }
    if (in && l.find("docs:begin ") == std::string::npos && l.find("docs:end ") == std::string::npos) body.push_back(l);
  }
  if (!found || in) throw std::runtime_error("region '" + name + "' not found (or not closed) in " + file);
  std::size_t indent = std::string::npos;
  for (auto& l : body)
    if (l.find_first_not_of(' ') != std::string::npos) indent = std::min(indent, l.find_first_not_of(' '));
  std::string out;
  for (auto& l : body) out += (l.size() >= indent && indent != std::string::npos ? l.substr(indent) : l) + "\n";
  return out;
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (std::size_t at = 0; (at = s.find(from, at)) != std::string::npos; at += to.size()) s.replace(at, from.size(), to);
  return s;
}

std::string run(const std::string& root, const std::string& build, std::string cmd) {
  std::string shown = cmd;
  cmd = replace_all(cmd, "build/default/", build + "/");
  std::string full = "cd '" + root + "' && (" + cmd + ") 2>&1";
  FILE* p = ::popen(full.c_str(), "r");
  if (!p) throw std::runtime_error("cannot run " + cmd);
  std::string out;
  char buf[4096];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  ::pclose(p);
  out = replace_all(out, build + "/", "build/default/");
  return "$ " + shown + "\n" + out;
}

std::string normalise(const std::string& s) {
  static const std::regex digits("[0-9]+"), spaces(" +"), trailing(" +\n");
  std::string t = std::regex_replace(s, digits, "N");
  t = std::regex_replace(t, spaces, " ");
  return std::regex_replace(t, trailing, "\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4 || (std::string(argv[1]) != "--check" && std::string(argv[1]) != "--update")) {
    std::cerr << "usage: docsync --check|--update ROOT BUILD FILE.md...\n";
    return 2;
  }
  bool update = std::string(argv[1]) == "--update";
  std::string root = argv[2], build = argv[3];
  static const std::regex marker(R"(^<!-- (include|output): (.*) -->$)");
  int drift = 0, blocks = 0;
  for (int i = 4; i < argc; ++i) {
    std::string path = argv[i];
    auto lines = split_lines(read_file(root + "/" + path));
    std::vector<std::string> result;
    for (std::size_t n = 0; n < lines.size(); ++n) {
      result.push_back(lines[n]);
      std::smatch m;
      if (!std::regex_match(lines[n], m, marker)) continue;
      ++blocks;
      if (n + 1 >= lines.size() || lines[n + 1].rfind("```", 0) != 0) {
        std::cerr << path << ":" << n + 1 << ": marker not followed by a ``` block\n";
        return 2;
      }
      result.push_back(lines[++n]);  // the opening fence
      std::string current;
      while (++n < lines.size() && lines[n] != "```") current += lines[n] + "\n";
      if (n >= lines.size()) {
        std::cerr << path << ": unclosed ``` block after line " << n << "\n";
        return 2;
      }
      std::string kind = m[1], arg = m[2];
      std::string fresh = kind == "include" ? region(root, arg) : run(root, build, arg);
      bool same = kind == "include" ? fresh == current : normalise(fresh) == normalise(current);
      if (!same) {
        ++drift;
        std::cerr << path << ":" << n << ": " << kind << " '" << arg << "' has drifted\n--- docs ---\n"
                  << current << "--- now ---\n" << fresh << "---\n";
      }
      auto fresh_lines = split_lines(update ? fresh : current);
      result.insert(result.end(), fresh_lines.begin(), fresh_lines.end());
      result.push_back("```");
    }
    if (update) {
      std::ofstream out(root + "/" + path, std::ios::binary | std::ios::trunc);
      for (auto& l : result) out << l << "\n";
    }
  }
  if (update) {
    std::cout << "docsync: " << blocks << " blocks refreshed (" << drift << " had drifted)\n";
    return 0;
  }
  std::cout << "docsync: " << blocks << " blocks checked, " << drift << " drifted\n";
  if (drift) std::cerr << "run scripts/update-docs to regenerate them from the code and real runs\n";
  return drift ? 1 : 0;
}
