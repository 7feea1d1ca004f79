// Output files of ringplan: written whole or not at all.
//
// Every file ringplan writes (plan files, profiles, traces, reports, launch settings) goes
// through write_file_atomic(). Invariant: after it returns, the destination holds exactly the
// new text; after it throws, a regular destination still holds its old content (or does not
// exist) and no temporary file is left behind. This holds even when the disk fills up, a
// quota or `ulimit -f` stops the write, or the process is killed mid-write (then only a
// hidden temporary `.NAME.tmpXXXXXX` may remain; the destination is untouched).
//
// Method: the text goes to a temporary file in the destination's folder (same file system,
// so rename() is atomic), every write() is checked, the file is fsync()ed and closed (close()
// checked too), and then renamed over the destination. A destination that exists and is not
// a regular file (/dev/full, /dev/stdout, a FIFO) cannot be replaced by a rename: the text is
// written to it directly, still checking every write() and the close().
//
// check_output_path() is the up-front probe: commands call it before expensive work (a plan
// search, a measurement under mpirun), so a path that can never be written fails at once with
// exit 2 instead of after minutes of work.
#pragma once
#include <string>
#include <string_view>

namespace ringplan {

// Throws Error(bad_input) "WHAT PATH: cannot write: <why>" when `path` cannot be written:
// an empty path, a folder, a missing folder, a folder where no file can be created (read-only,
// permissions: probed by creating and removing a temporary file), or a special file that
// cannot be opened for writing. `what` names the option for messages ("--trace", "-o").
void check_output_path(const std::string& path, const std::string& what);

// Writes `text` to `path` as described above. Throws Error(runtime) "WHAT PATH: cannot write:
// <step>: <errno text>" on any failure (exit 1), and Error(bad_input) for a path that is a
// folder or whose folder does not exist.
void write_file_atomic(const std::string& path, std::string_view text, const std::string& what);

}  // namespace ringplan
