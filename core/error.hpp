// Errors of the project. Library code throws ringplan::Error (or a subclass); only main()
// and tests turn them into exit codes (README "Exit status"):
//   0 ok, 1 runtime failure, 2 bad input, 3 no layout fits (the input is valid, but the
//   layout asked for, or every layout searched, needs more memory than the GPUs have).
#pragma once
#include <stdexcept>
#include <string>

namespace ringplan {

enum class ErrorKind {
  bad_input,  // config, CLI, plan file, mesh or world size that cannot be valid: exit 2
  runtime,    // a failure while running (peer died, timeout, transport error): exit 1
  no_fit,     // valid input, but no layout fits in memory (plan), or the given one does not (simulate): exit 3
};

// The process exit status of each kind (main() and the MPI commands use it).
inline constexpr int kExitOk = 0, kExitRuntime = 1, kExitBadInput = 2, kExitNoFit = 3;
inline int exit_status(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::bad_input: return kExitBadInput;
    case ErrorKind::no_fit: return kExitNoFit;
    case ErrorKind::runtime: break;
  }
  return kExitRuntime;
}

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const { return kind_; }

 private:
  ErrorKind kind_;
};

// A config error always names where: "configs/models/x.yaml:12: model.heads: must be > 0, got -4".
// line is 1-based; 0 when the position is unknown (e.g. a missing key: the mapping's line is used).
class ConfigError : public Error {
 public:
  ConfigError(std::string file, int line, std::string field, std::string what_is_wrong)
      : Error(ErrorKind::bad_input, format(file, line, field, what_is_wrong)),
        file_(std::move(file)), line_(line), field_(std::move(field)) {}
  const std::string& file() const { return file_; }
  int line() const { return line_; }
  const std::string& field() const { return field_; }

 private:
  static std::string format(const std::string& file, int line, const std::string& field,
                            const std::string& what) {
    std::string s = file;
    // append() rather than `":" + std::to_string(line)`: GCC 12 at -O3 reports a false
    // -Wrestrict on the temporary concatenation (GCC bug 105329).
    if (line > 0) s.append(":").append(std::to_string(line));
    s += ": ";
    if (!field.empty()) s += field + ": ";
    return s + what;
  }
  std::string file_;
  int line_;
  std::string field_;
};

inline Error bad_input(const std::string& message) { return Error(ErrorKind::bad_input, message); }
inline Error no_fit(const std::string& message) { return Error(ErrorKind::no_fit, message); }

}  // namespace ringplan
