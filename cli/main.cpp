// ringplan: plan, predict and validate context-parallel training layouts.
// Sub-commands live in cli/cmd_*.cpp and register themselves (cli/command.hpp).
#include <algorithm>
#include <csignal>
#include <cstdio>
#include <exception>
#include <functional>
#include <system_error>

#include "cli/command.hpp"
#include "core/error.hpp"

namespace ringplan::cli {
std::vector<Command>& command_registry() {
  static std::vector<Command> commands;
  return commands;
}
}  // namespace ringplan::cli

int main(int argc, char** argv) {
  using namespace ringplan;
  // A write past `ulimit -f` raises SIGXFSZ, whose default action kills the process mid-file
  // with no message. Ignored, the write fails with EFBIG and is reported like any other
  // failed write (core/atomic_file.hpp: the destination keeps its old content).
  std::signal(SIGXFSZ, SIG_IGN);
  CLI::App app{"ringplan: plan, predict and validate context-parallel (ring attention) training layouts"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "ringplan 0.1.0");
  app.footer(
      "Exit status (every command): 0 ok; 1 runtime failure (a write, a peer, a timeout); 2 bad input (a file,\n"
      "flag or layout that cannot be valid); 3 no layout fits (plan: nothing searched fits in memory; simulate:\n"
      "the layout does not fit; the report is still printed).");

  auto& commands = cli::command_registry();
  std::sort(commands.begin(), commands.end(),
            [](const cli::Command& a, const cli::Command& b) { return a.order < b.order; });
  std::function<int()> action;
  for (auto& c : commands) {
    CLI::App* sub = app.add_subcommand(c.name, c.help);
    auto run = std::make_shared<std::function<int()>>(c.setup(*sub));
    sub->callback([run, &action] { action = *run; });
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // CLI11 reports help and version with exit code 0: let it print them.
    if (e.get_exit_code() == 0) return app.exit(e) == 0 ? kExitOk : kExitBadInput;
    // A usage error (a value that does not convert, a missing or unknown option): said like every
    // other bad input, with where to find what is accepted, and the bad-input status 2.
    std::string where = "ringplan";
    for (const CLI::App* sub : app.get_subcommands()) where += " " + sub->get_name();
    std::fprintf(stderr, "ringplan: error: %s (`%s --help` lists the accepted options and values)\n", e.what(),
                 where.c_str());
    return kExitBadInput;
  }
  try {
    return action ? action() : kExitBadInput;
  } catch (const Error& e) {
    std::fprintf(stderr, "ringplan: error: %s\n", e.what());
    return exit_status(e.kind());
  } catch (const std::system_error& e) {
    // The system refused a resource (threads, memory maps): a runtime failure, not a bug.
    std::fprintf(stderr, "ringplan: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ringplan: internal error: %s\n", e.what());
    return 1;
  }
}
