// Whole-or-nothing output files (core/atomic_file.hpp) and the end marker that makes a cut
// ringplan-written file detectable (core/config_yaml.hpp check_not_cut).
#include <doctest/doctest.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <algorithm>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "core/atomic_file.hpp"
#include "core/config_yaml.hpp"
#include "core/error.hpp"
#include "test_helpers.hpp"

namespace fs = std::filesystem;
using namespace ringplan;

namespace {

std::string slurp(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Files in `dir` other than the expected ones: a leftover temporary would show up here.
size_t file_count(const std::string& dir) {
  size_t n = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir)) ++n;
  return n;
}

// The Error thrown by f (or a default with an empty message when none is thrown).
template <class F>
Error error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e;
  }
  FAIL("expected ringplan::Error");
  return Error(ErrorKind::runtime, "");
}

bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("write_file_atomic creates, replaces, keeps the mode and leaves no temporary file") {
  test::TempDir dir;
  const std::string p = dir.file("out.yaml");
  write_file_atomic(p, "first\n", "-o");
  CHECK(slurp(p) == "first\n");
  ::chmod(p.c_str(), 0640);
  write_file_atomic(p, "second, longer\n", "-o");
  CHECK(slurp(p) == "second, longer\n");
  struct stat st {};
  REQUIRE(::stat(p.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0640);
  CHECK(file_count(dir.path.string()) == 1);
}

TEST_CASE("write_file_atomic through a symbolic link replaces the file it points at") {
  test::TempDir dir;
  const std::string target = dir.file("real.yaml"), link = dir.file("link.yaml");
  write_file_atomic(target, "old\n", "-o");
  fs::create_symlink(target, link);
  write_file_atomic(link, "new\n", "-o");
  CHECK(fs::is_symlink(link));
  CHECK(slurp(target) == "new\n");
}

TEST_CASE("write_file_atomic: a write stopped by the file size limit keeps the old content") {
  // With SIGXFSZ ignored (as cli/main.cpp does) a write past RLIMIT_FSIZE fails with EFBIG.
  test::TempDir dir;
  const std::string p = dir.file("plan.yaml");
  write_file_atomic(p, "old content\n", "plan file");
  const auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  rlimit old_limit{};
  REQUIRE(::getrlimit(RLIMIT_FSIZE, &old_limit) == 0);
  rlimit small = old_limit;
  small.rlim_cur = 1024;
  REQUIRE(::setrlimit(RLIMIT_FSIZE, &small) == 0);
  const Error e = error_of([&] { write_file_atomic(p, std::string(4096, 'x'), "plan file"); });
  ::setrlimit(RLIMIT_FSIZE, &old_limit);
  std::signal(SIGXFSZ, old_handler);
  CHECK(e.kind() == ErrorKind::runtime);
  CHECK(has(e.what(), "plan file " + p + ": cannot write: write: File too large"));
  CHECK(slurp(p) == "old content\n");
  CHECK(file_count(dir.path.string()) == 1);  // the temporary was removed
}

TEST_CASE("write_file_atomic writes special files in place and checks every write") {
  const Error e = error_of([] { write_file_atomic("/dev/full", "text\n", "--trace"); });
  CHECK(e.kind() == ErrorKind::runtime);
  CHECK(has(e.what(), "--trace /dev/full: cannot write: write: No space left on device"));
  CHECK(fs::is_character_file("/dev/full"));  // not replaced by a regular file
  write_file_atomic("/dev/null", "text\n", "-o");
  CHECK(fs::is_character_file("/dev/null"));
}

TEST_CASE("a missing folder or a folder as destination is bad input, found by the up-front probe") {
  test::TempDir dir;
  Error e = error_of([&] { check_output_path(dir.file("no/such/x.yaml"), "-o"); });
  CHECK(e.kind() == ErrorKind::bad_input);
  CHECK(has(e.what(), "-o " + dir.file("no/such/x.yaml") + ": cannot write: folder '" + dir.file("no/such") +
                          "': No such file or directory"));
  e = error_of([&] { write_file_atomic(dir.file("no/such/x.yaml"), "x", "-o"); });
  CHECK(e.kind() == ErrorKind::bad_input);
  e = error_of([&] { check_output_path(dir.path.string(), "--trace"); });
  CHECK(has(e.what(), "it is a folder"));
  e = error_of([&] { check_output_path("", "--trace"); });
  CHECK(has(e.what(), "empty file name"));
  check_output_path(dir.file("new.yaml"), "-o");  // a new file in an existing folder is fine
  check_output_path("/dev/full", "-o");           // opens for writing; the write itself fails later
  CHECK(file_count(dir.path.string()) == 0);             // the probe leaves nothing behind
}

TEST_CASE("a symbolic link loop as destination is bad input and the links stay as they were") {
  test::TempDir dir;
  const std::string a = dir.file("a.yaml"), b = dir.file("b.yaml");
  fs::create_symlink(b, a);
  fs::create_symlink(a, b);
  for (int probe = 0; probe < 2; ++probe) {
    Error e = error_of([&] { probe ? check_output_path(a, "-o") : write_file_atomic(a, "x", "-o"); });
    CHECK(e.kind() == ErrorKind::bad_input);
    CHECK(has(e.what(), "-o " + a + ": cannot write: it is a symbolic link loop"));
  }
  CHECK(fs::is_symlink(fs::symlink_status(a)));  // not replaced by a regular file
  CHECK(fs::read_symlink(a) == b);
}

TEST_CASE("a profile written by ringplan and cut short is refused with file:line, hand-written ones load") {
  test::TempDir dir;
  const std::string hand = slurp(std::string(RINGPLAN_SOURCE_DIR) + "/configs/clusters/local_cpu.yaml");
  ClusterConfig c = load_cluster(dir.write("hand.yaml", hand));  // no claim, no marker: accepted
  // What calibrate/fit write: the header claim, the profile, the end marker.
  const std::string written = std::string(kWrittenByPrefix) + " calibrate` with 2 ranks.\n" + hand + kProfileEndMarker + "\n";
  c = load_cluster(dir.write("full.yaml", written));
  CHECK(c.memory_bandwidth_efficiency == doctest::Approx(0.8));
  // Cut before the optional key efficiency.memory_bandwidth: still valid YAML and a valid
  // cluster, which would silently load with the default 0.8 -- refused instead.
  const size_t cut = written.find("  memory_bandwidth: 0.8");
  REQUIRE(cut != std::string::npos);
  const std::string cut_text = written.substr(0, cut);
  const int last_line = static_cast<int>(std::count(cut_text.begin(), cut_text.end(), '\n'));
  const std::string cut_path = dir.write("cut.yaml", cut_text);
  test::check_config_error([&] { load_cluster(cut_path); },
                           {cut_path, last_line, "", "file ends without its final line `# end of ringplan profile`"});
  // A marker cut in the middle of its own line does not count; the cut line is named.
  const std::string cut2 = written.substr(0, written.size() - 5);
  const std::string cut2_path = dir.write("cut2.yaml", cut2);
  test::check_config_error([&] { load_cluster(cut2_path); },
                           {cut2_path, static_cast<int>(std::count(cut2.begin(), cut2.end(), '\n')) + 1, "",
                            "cut short"});
}

TEST_CASE("a plan text claiming ringplan_plan needs its end marker") {
  test::TempDir dir;
  const std::string body = "ringplan_plan: 1\nexperiment: {}\n";
  try {
    check_not_cut(body, "p.yaml");
    FAIL("a cut plan was accepted");
  } catch (const ConfigError& e) {
    CHECK(e.line() == 2);
    CHECK(has(e.what(), "`# end of ringplan plan`"));
  }
  check_not_cut(body + kPlanEndMarker + "\n", "p.yaml");
  check_not_cut(body + kPlanEndMarker, "p.yaml");            // cut after the marker: nothing lost
  check_not_cut(body + kPlanEndMarker + "\r\n", "p.yaml");   // copied through Windows
  check_not_cut("name: x\nlayers: 2\n", "model.yaml");       // no claim
}
