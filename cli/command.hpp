// Sub-command registry of the `ringplan` program. Each cli/cmd_*.cpp registers itself with
// RINGPLAN_COMMAND, so commands are added without editing main.cpp.
//
// Contract: a command's run function returns the process exit code (0 success, 1 runtime
// failure, 2 bad input, 3 no layout fits; core/error.hpp). It may throw ringplan::Error; main
// maps its kind with exit_status(): bad_input to 2, no_fit to 3, runtime to 1.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>
#include <string>
#include <vector>

namespace ringplan::cli {

struct Command {
  std::string name;
  std::string help;
  int order;  // position in --help
  // Adds options to `app` and returns the action to run once parsing succeeded.
  std::function<std::function<int()>(CLI::App& app)> setup;
};

std::vector<Command>& command_registry();

struct CommandRegistrar {
  explicit CommandRegistrar(Command c) { command_registry().push_back(std::move(c)); }
};

}  // namespace ringplan::cli

#define RINGPLAN_COMMAND_CAT2(a, b) a##b
#define RINGPLAN_COMMAND_CAT(a, b) RINGPLAN_COMMAND_CAT2(a, b)
// Usage: RINGPLAN_COMMAND("plan", "Search and rank layouts", 10, [](CLI::App& app) { ...; return [=]{ return 0; }; });
#define RINGPLAN_COMMAND(name, help, order, setup) \
  static ::ringplan::cli::CommandRegistrar RINGPLAN_COMMAND_CAT(ringplan_cmd_, __LINE__)({name, help, order, setup})
