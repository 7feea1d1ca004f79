// A tiny progress reporter for long loops (planner sweeps, calibration, long runs).
//
// It draws one line on stderr -- a bar, done/total, percentage, elapsed time and ETA -- but
// only when stderr is a terminal (isatty) AND the work has already run longer than
// `show_after_s` (2 s by default). Otherwise it prints nothing at all, so pipes, CI logs,
// tests and `--format json` output stay clean. The line is erased when the work finishes.
//
// Usage:
//   ringplan::Progress progress("plan", candidates.size());   // total 0 = unknown
//   for (...) { ...; progress.advance(); }
//   progress.finish();   // optional: the destructor finishes too
//
// advance() is thread-safe and cheap (one atomic add and, at most every
// `redraw_interval_s`, a clock read); only one thread draws at a time, the others skip.
//
// Invariants: nothing is ever written to the stream unless `enabled()`; once finish() ran,
// nothing more is written. The ETA assumes a constant rate: eta = elapsed * (total - done) / done.
//
// Commands that run as ranks of an MPI job (calibrate, run) build their reporter with
// rank_progress_options(rank): one line for the whole job, drawn by rank 0 only, and shown when
// the LAUNCHER's stream is a terminal (a rank itself writes into mpirun's pipe, never a tty).
#pragma once
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

namespace ringplan {

struct ProgressOptions {
  std::FILE* stream = stderr;        // where the line goes
  std::optional<bool> is_terminal;   // unset: isatty(fileno(stream)); tests force true/false
  double show_after_s = 2.0;         // stay silent for work shorter than this
  double redraw_interval_s = 0.1;    // at most ~10 redraws per second
  int bar_width_chars = 24;
  std::function<double()> now_s;     // unset: steady clock; tests inject a fake clock
};

// "1.5 s", "2 min 05 s", "1 h 02 min"; "?" for a negative or non-finite duration.
inline std::string format_duration_s(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  char buf[48];
  if (seconds < 60) {
    std::snprintf(buf, sizeof buf, "%.1f s", seconds);
  } else if (seconds < 3600) {
    const auto total = static_cast<int64_t>(seconds + 0.5);
    std::snprintf(buf, sizeof buf, "%lld min %02lld s", static_cast<long long>(total / 60),
                  static_cast<long long>(total % 60));
  } else {
    const auto total_min = static_cast<int64_t>(seconds / 60 + 0.5);
    std::snprintf(buf, sizeof buf, "%lld h %02lld min", static_cast<long long>(total_min / 60),
                  static_cast<long long>(total_min % 60));
  }
  return buf;
}

// The text of one progress line, without the leading "\r" and the erase-to-end escape.
//   known total:   "plan [##########..............] 410/1000  41%  3.2 s, ETA 4.6 s"
//   unknown total: "plan 410 done, 3.2 s"
// `done` is clamped to [0, total] when total > 0.
inline std::string format_progress_line(const std::string& label, int64_t done, int64_t total,
                                        double elapsed_s, int bar_width_chars = 24) {
  std::string line = label;
  if (total <= 0) {
    // Appended piece by piece: GCC 12 reports a false -Wrestrict on `" " + std::string&&`.
    line += ' ';
    line += std::to_string(std::max<int64_t>(done, 0));
    line += " done, ";
    line += format_duration_s(elapsed_s);
    return line;
  }
  done = std::clamp<int64_t>(done, 0, total);
  const double fraction = static_cast<double>(done) / static_cast<double>(total);
  const int width = std::max(bar_width_chars, 1);
  const int filled = std::min(width, static_cast<int>(fraction * width));
  line += " [" + std::string(static_cast<size_t>(filled), '#') +
          std::string(static_cast<size_t>(width - filled), '.') + "] ";
  char buf[96];
  std::snprintf(buf, sizeof buf, "%lld/%lld %3d%%  ", static_cast<long long>(done),
                static_cast<long long>(total), static_cast<int>(fraction * 100));
  line += buf;
  line += format_duration_s(elapsed_s);
  if (done > 0 && done < total) {
    line += ", ETA " + format_duration_s(elapsed_s * static_cast<double>(total - done) / static_cast<double>(done));
  }
  return line;
}

// True when `path` (the target of a /proc/PID/fd/N link) is a terminal device: a
// pseudo-terminal (/dev/pts/N), a virtual or serial terminal (/dev/ttyN, /dev/ttySN) or the
// console. Pipes ("pipe:[123]"), sockets, /dev/null and regular files are not.
inline bool is_terminal_device_path(std::string_view path) {
  return path.starts_with("/dev/pts/") || path.starts_with("/dev/tty") || path == "/dev/console";
}

// Whether what is written to `stream` ends up on a terminal. Either the stream is a terminal
// itself, or this process is an Open MPI rank (OMPI_COMM_WORLD_RANK is set) whose stream is a
// pipe to the launcher and the launcher -- the rank's parent, for ranks on mpirun's own host --
// has a terminal on the same descriptor: mpirun copies the pipe there unchanged. Anything else
// (another launcher, a rank on a remote host whose parent is a daemon writing into a pipe, no
// /proc) reads as "not a terminal", so the fallback is silence, never escape codes in a log.
inline bool stream_reaches_terminal(std::FILE* stream) {
  if (stream == nullptr) return false;
  const int fd = ::fileno(stream);
  if (fd < 0) return false;
  if (::isatty(fd) == 1) return true;
  if (std::getenv("OMPI_COMM_WORLD_RANK") == nullptr) return false;
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISFIFO(st.st_mode)) return false;  // a file or /dev/null: not forwarded
  const std::string link = "/proc/" + std::to_string(::getppid()) + "/fd/" + std::to_string(fd);
  char target[256];
  const ssize_t n = ::readlink(link.c_str(), target, sizeof target);
  return n > 0 && is_terminal_device_path(std::string_view(target, static_cast<size_t>(n)));
}

// Options for a reporter in one rank of a multi-rank job. Only rank 0 may draw: every rank
// runs the same loop, and P lines racing for one terminal would be garbage. On rank 0 an unset
// is_terminal becomes stream_reaches_terminal(stream); a forced value (tests) is kept.
inline ProgressOptions rank_progress_options(int rank, ProgressOptions options = {}) {
  if (rank != 0) {
    options.is_terminal = false;
  } else if (!options.is_terminal.has_value()) {
    options.is_terminal = stream_reaches_terminal(options.stream);
  }
  return options;
}

class Progress {
 public:
  // label: what is counted ("plan", "calibrate kernels"); total: units of work, 0 if unknown.
  explicit Progress(std::string label, int64_t total = 0, ProgressOptions options = {})
      : label_(std::move(label)), total_(total), options_(std::move(options)) {
    if (!options_.now_s) {
      options_.now_s = [] {
        return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
      };
    }
    enabled_ = options_.stream != nullptr &&
               options_.is_terminal.value_or(::isatty(::fileno(options_.stream)) == 1);
    if (enabled_) start_s_ = next_draw_s_ = options_.now_s();
  }
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;
  ~Progress() { finish(); }

  // True when this reporter may draw at all (stream is a terminal). Work shorter than
  // show_after_s still draws nothing.
  bool enabled() const { return enabled_; }
  int64_t done() const { return done_.load(std::memory_order_relaxed); }
  int64_t total() const { return total_; }
  // True once a line has been drawn (and not yet erased).
  bool drawn() const { return drawn_; }

  void advance(int64_t n = 1) {
    done_.fetch_add(n, std::memory_order_relaxed);
    maybe_draw();
  }
  void set_done(int64_t done) {
    done_.store(done, std::memory_order_relaxed);
    maybe_draw();
  }
  // Erases the line if one was drawn. Idempotent; called by the destructor.
  void finish() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (finished_) return;
    finished_ = true;
    if (drawn_) {
      std::fputs("\r\x1b[K", options_.stream);
      std::fflush(options_.stream);
      drawn_ = false;
    }
  }

 private:
  void maybe_draw() {
    if (!enabled_) return;
    std::unique_lock<std::mutex> lock(mutex_, std::try_to_lock);
    if (!lock.owns_lock() || finished_) return;  // another thread is drawing
    const double now = options_.now_s();
    if (now < next_draw_s_) return;
    const double elapsed_s = now - start_s_;
    if (elapsed_s < options_.show_after_s) {
      next_draw_s_ = start_s_ + options_.show_after_s;
      return;
    }
    next_draw_s_ = now + options_.redraw_interval_s;
    const std::string line = format_progress_line(label_, done(), total_, elapsed_s, options_.bar_width_chars);
    std::fprintf(options_.stream, "\r%s\x1b[K", line.c_str());
    std::fflush(options_.stream);
    drawn_ = true;
  }

  std::string label_;
  int64_t total_;
  ProgressOptions options_;
  bool enabled_ = false;
  std::atomic<int64_t> done_{0};
  std::mutex mutex_;
  double start_s_ = 0, next_draw_s_ = 0;
  bool drawn_ = false, finished_ = false;
};

}  // namespace ringplan
