// Whole-or-nothing output files (see atomic_file.hpp for the contract).
#include "core/atomic_file.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <vector>

#include "core/error.hpp"

namespace fs = std::filesystem;

namespace ringplan {
namespace {

std::string errno_text(int err) { return std::strerror(err); }

// The folder a file named `path` lives in ("." for a bare name).
std::string folder_of(const std::string& path) {
  const fs::path parent = fs::path(path).parent_path();
  return parent.empty() ? std::string(".") : parent.string();
}

// Creates a hidden temporary file next to `target`; returns its descriptor and sets `tmp`.
// Returns -1 with errno set on failure.
int make_temp(const std::string& target, std::string& tmp) {
  const fs::path p(target);
  // append() rather than `"." + name`: GCC 12 at -O3 reports a false -Wrestrict on the
  // temporary concatenation (GCC bug 105329).
  std::string name_pattern(".");
  name_pattern.append(p.filename().string()).append(".tmpXXXXXX");
  const std::string pattern = (fs::path(folder_of(target)) / name_pattern).string();
  std::vector<char> name(pattern.begin(), pattern.end());
  name.push_back('\0');
  const int fd = mkstemp(name.data());
  if (fd >= 0) tmp = name.data();
  return fd;
}

// Writes all of `text` to `fd`, retrying short writes and EINTR. Returns 0 or the errno.
int write_all(int fd, std::string_view text) {
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (n == 0) return EIO;  // no progress on a non-empty write: never loop forever
    done += static_cast<size_t>(n);
  }
  return 0;
}

// Permission bits for a new file: 0666 minus the umask, as std::ofstream would create it
// (mkstemp creates 0600, which would make plans unreadable to colleagues).
mode_t new_file_mode() {
  const mode_t mask = ::umask(0);
  ::umask(mask);
  return static_cast<mode_t>(0666 & ~mask);
}

[[noreturn]] void fail(ErrorKind kind, const std::string& what, const std::string& path, const std::string& why) {
  throw Error(kind, fmt::format("{} {}: cannot write: {}", what, path, why));
}

// Checks that the folder of `path` exists and is a folder; bad_input otherwise.
void check_folder(const std::string& what, const std::string& path) {
  const std::string dir = folder_of(path);
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0)
    fail(ErrorKind::bad_input, what, path, fmt::format("folder '{}': {}", dir, errno_text(errno)));
  if (!S_ISDIR(st.st_mode)) fail(ErrorKind::bad_input, what, path, fmt::format("'{}' is not a folder", dir));
}

constexpr const char* kLinkLoop =
    "it is a symbolic link loop (too many levels of symbolic links); give another file name or fix the link";

}  // namespace

void check_output_path(const std::string& path, const std::string& what) {
  if (path.empty()) throw bad_input(fmt::format("{}: empty file name; give the file to write", what));
  struct stat st {};
  const bool found = ::stat(path.c_str(), &st) == 0;
  if (!found && errno == ELOOP) fail(ErrorKind::bad_input, what, path, kLinkLoop);
  if (found) {
    if (S_ISDIR(st.st_mode)) fail(ErrorKind::bad_input, what, path, "it is a folder; give a file name");
    if (!S_ISREG(st.st_mode)) {
      // A device or FIFO is written in place: it must open for writing now. O_NONBLOCK so
      // that a FIFO without a reader fails (ENXIO) instead of blocking the probe.
      const int fd = ::open(path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
      if (fd < 0) fail(ErrorKind::bad_input, what, path, errno_text(errno));
      ::close(fd);
      return;
    }
  }
  // A regular or new file: the rename needs a temporary file in the (resolved) folder.
  std::error_code ec;
  const std::string target = fs::exists(path, ec) ? fs::canonical(path, ec).string() : path;
  check_folder(what, target);
  std::string tmp;
  const int fd = make_temp(target, tmp);
  if (fd < 0)
    fail(ErrorKind::bad_input, what, path,
         fmt::format("cannot create a file in folder '{}': {}", folder_of(target), errno_text(errno)));
  ::close(fd);
  ::unlink(tmp.c_str());
}

void write_file_atomic(const std::string& path, std::string_view text, const std::string& what) {
  if (path.empty()) throw bad_input(fmt::format("{}: empty file name; give the file to write", what));
  struct stat st {};
  const bool exists = ::stat(path.c_str(), &st) == 0;
  // Renaming over a looping link would replace the link itself: refuse, as check_output_path does.
  if (!exists && errno == ELOOP) fail(ErrorKind::bad_input, what, path, kLinkLoop);
  if (exists && S_ISDIR(st.st_mode)) fail(ErrorKind::bad_input, what, path, "it is a folder; give a file name");
  if (exists && !S_ISREG(st.st_mode)) {
    // Not replaceable by rename (a rename onto /dev/full would replace the device node):
    // write in place, checking every write and the close.
    const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) fail(ErrorKind::runtime, what, path, fmt::format("open: {}", errno_text(errno)));
    const int werr = write_all(fd, text);
    const int cerr = ::close(fd) == 0 ? 0 : errno;
    if (werr != 0) fail(ErrorKind::runtime, what, path, fmt::format("write: {}", errno_text(werr)));
    if (cerr != 0) fail(ErrorKind::runtime, what, path, fmt::format("close: {}", errno_text(cerr)));
    return;
  }
  // Through a symbolic link the file it points at is replaced, not the link.
  std::error_code ec;
  std::string target = path;
  if (exists) {
    const fs::path resolved = fs::canonical(path, ec);
    if (!ec) target = resolved.string();
  }
  check_folder(what, target);
  std::string tmp;
  const int fd = make_temp(target, tmp);
  if (fd < 0)
    fail(ErrorKind::runtime, what, path,
         fmt::format("cannot create a temporary file in folder '{}': {}", folder_of(target), errno_text(errno)));
  auto give_up = [&](const char* step, int err) {
    ::close(fd);
    ::unlink(tmp.c_str());
    fail(ErrorKind::runtime, what, path, fmt::format("{}: {}", step, errno_text(err)));
  };
  const mode_t mode = exists ? static_cast<mode_t>(st.st_mode & 07777) : new_file_mode();
  if (::fchmod(fd, mode) != 0) give_up("chmod", errno);
  if (const int err = write_all(fd, text); err != 0) give_up("write", err);
  if (::fsync(fd) != 0) give_up("fsync", errno);
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    fail(ErrorKind::runtime, what, path, fmt::format("close: {}", errno_text(err)));
  }
  if (::rename(tmp.c_str(), target.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    fail(ErrorKind::runtime, what, path, fmt::format("rename into place: {}", errno_text(err)));
  }
  // Make the rename itself durable; best effort (some file systems refuse fsync on folders,
  // and the new content is already complete either way).
  const int dfd = ::open(folder_of(target).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace ringplan
