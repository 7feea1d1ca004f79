// core/progress.hpp: silent unless stderr is a terminal and the work runs past 2 s; the line
// format, the ETA and the erase on finish. A fake clock and a temporary file stand in for the
// terminal.
#include <doctest/doctest.h>

#include <cstdio>
#include <string>

#include "core/progress.hpp"

using ringplan::Progress;
using ringplan::ProgressOptions;

namespace {

struct Captured {
  std::FILE* file = std::tmpfile();
  double now_s = 100.0;
  ~Captured() {
    if (file) std::fclose(file);
  }
  ProgressOptions options(bool terminal) {
    ProgressOptions o;
    o.stream = file;
    o.is_terminal = terminal;
    o.now_s = [this] { return now_s; };
    return o;
  }
  std::string text() const {
    std::fflush(file);
    std::rewind(file);
    std::string s;
    char buf[256];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, file)) > 0) s.append(buf, n);
    return s;
  }
};

}  // namespace

TEST_CASE("progress: line format with bar, counts, percentage, elapsed and ETA") {
  CHECK(ringplan::format_progress_line("plan", 250, 1000, 3.0, 8) == "plan [##......] 250/1000  25%  3.0 s, ETA 9.0 s");
  CHECK(ringplan::format_progress_line("plan", 1000, 1000, 4.0, 4) == "plan [####] 1000/1000 100%  4.0 s");
  CHECK(ringplan::format_progress_line("plan", 0, 10, 2.5, 4) == "plan [....] 0/10   0%  2.5 s");
  CHECK(ringplan::format_progress_line("sweep", 42, 0, 2.0) == "sweep 42 done, 2.0 s");
  // Clamped: more done than total reads as complete.
  CHECK(ringplan::format_progress_line("x", 12, 10, 1.0, 2) == "x [##] 10/10 100%  1.0 s");
  CHECK(ringplan::format_duration_s(125) == "2 min 05 s");
  CHECK(ringplan::format_duration_s(3720) == "1 h 02 min");
  CHECK(ringplan::format_duration_s(-1) == "?");
}

TEST_CASE("progress: silent when the stream is not a terminal, however long the work") {
  Captured c;
  {
    Progress p("plan", 10, c.options(false));
    CHECK_FALSE(p.enabled());
    for (int i = 0; i < 10; ++i) {
      c.now_s += 5.0;
      p.advance();
    }
    CHECK(p.done() == 10);
  }
  CHECK(c.text().empty());
}

TEST_CASE("progress: silent for work shorter than 2 s, then draws, then erases its line") {
  Captured c;
  Progress p("plan", 4, c.options(true));
  REQUIRE(p.enabled());
  c.now_s += 1.0;
  p.advance();
  c.now_s += 0.9;  // 1.9 s elapsed: still quiet
  p.advance();
  CHECK(c.text().empty());
  CHECK_FALSE(p.drawn());
  c.now_s += 0.1;  // 2.0 s
  p.advance();
  CHECK(p.drawn());
  CHECK(c.text() == "\rplan [##################......] 3/4  75%  2.0 s, ETA 0.7 s\x1b[K");
  c.now_s += 0.05;  // within the redraw interval: no second line
  p.advance();
  CHECK(c.text().find("4/4") == std::string::npos);
  p.finish();
  CHECK(c.text().ends_with("\r\x1b[K"));
  const size_t before = c.text().size();
  p.finish();  // idempotent
  c.now_s += 10;
  p.advance();  // nothing after finish
  CHECK(c.text().size() == before);
}

TEST_CASE("progress: a short job that finishes leaves nothing on a terminal") {
  Captured c;
  {
    Progress p("calibrate", 0, c.options(true));
    for (int i = 0; i < 100; ++i) {
      c.now_s += 0.01;
      p.advance();
    }
  }  // destructor finishes
  CHECK(c.text().empty());
}

TEST_CASE("progress: in a multi-rank job only rank 0 draws, and only when its stream reaches a terminal") {
  Captured c;
  // Rank 1 is silenced even where the stream is (forced to be) a terminal.
  ProgressOptions forced = c.options(true);
  CHECK(ringplan::rank_progress_options(1, forced).is_terminal == false);
  CHECK(ringplan::rank_progress_options(0, forced).is_terminal == true);
  {
    Progress rank1("calibrate", 2, ringplan::rank_progress_options(1, c.options(true)));
    Progress rank0("calibrate", 2, ringplan::rank_progress_options(0, c.options(true)));
    CHECK_FALSE(rank1.enabled());
    CHECK(rank0.enabled());
    c.now_s += 5.0;
    rank1.advance();
    CHECK(c.text().empty());
    rank0.advance();
    CHECK(c.text() == "\rcalibrate [############............] 1/2  50%  5.0 s, ETA 5.0 s\x1b[K");
  }
  // Unforced on rank 0: a regular file is neither a terminal nor a pipe to a launcher.
  ProgressOptions unforced;
  unforced.stream = c.file;
  CHECK(ringplan::rank_progress_options(0, unforced).is_terminal == false);
  CHECK_FALSE(ringplan::stream_reaches_terminal(nullptr));
  // What a launcher's descriptor may point at (targets of /proc/PID/fd/N links).
  CHECK(ringplan::is_terminal_device_path("/dev/pts/3"));
  CHECK(ringplan::is_terminal_device_path("/dev/tty1"));
  CHECK_FALSE(ringplan::is_terminal_device_path("pipe:[48213]"));
  CHECK_FALSE(ringplan::is_terminal_device_path("/dev/null"));
  CHECK_FALSE(ringplan::is_terminal_device_path("/tmp/calibrate.log"));
}
