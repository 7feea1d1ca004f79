// End-to-end tests of the planner commands: run the `ringplan` binary as a user would.
// RINGPLAN_BIN and RINGPLAN_SOURCE_DIR come from tests/cli/CMakeLists.txt.
#include <doctest/doctest.h>

#include <algorithm>
#include <sys/wait.h>

#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "tests/fixtures/temp_dir.hpp"

namespace fs = std::filesystem;
using ringplan_test::read_file;
using ringplan_test::TempDir;

namespace {

const std::string kConfigs = std::string(RINGPLAN_SOURCE_DIR) + "/configs/experiments/";

struct Result {
  int rc = -1;
  std::string out, err;
};

// The binary under test: env RINGPLAN_TEST_BIN when set (to run these tests against another
// build, e.g. an older one for before/after evidence), else the one this build made.
std::string ringplan_bin() {
  const char* env = std::getenv("RINGPLAN_TEST_BIN");
  return env != nullptr && *env != '\0' ? env : RINGPLAN_BIN;
}

// Runs `PREFIX 'ringplan' ARGS` in a shell (args are shell words, already quoted where needed;
// prefix e.g. "ulimit -f 1;").
Result ringplan_after(const std::string& prefix, const std::string& args) {
  TempDir tmp;
  const std::string err_file = tmp.file("stderr.txt");
  const std::string cmd = "(" + prefix + " '" + ringplan_bin() + "' " + args + ") 2>'" + err_file + "'";
  Result r;
  FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int status = pclose(p);
  r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.err = read_file(err_file);
  return r;
}

// Runs `ringplan ARGS`.
Result ringplan(const std::string& args) { return ringplan_after("", args); }

bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("--help works for every planner command") {
  for (const char* cmd : {"plan", "simulate", "validate"}) {
    const Result r = ringplan(std::string(cmd) + " --help");
    CHECK_MESSAGE(r.rc == 0, cmd);
    CHECK(has(r.out, "--format"));
  }
  CHECK(has(ringplan("simulate --help").out, "--mesh"));
  CHECK(has(ringplan("plan --help").out, "--top"));
}

TEST_CASE("plan --format json: chosen (= best), fastest, K candidates, rejections, evaluated") {
  const Result r = ringplan("plan '" + kConfigs + "default.yaml' --top 4 --format json");
  REQUIRE_MESSAGE(r.rc == 0, r.err);
  const auto j = nlohmann::json::parse(r.out);
  REQUIRE(j["candidates"].size() == 4);
  CHECK(j["schema_version"] == 2);
  nlohmann::json first = j["candidates"][0];
  first.erase("group");
  CHECK(j["fastest"] == first);
  // best is the recommended layout: the chosen one, which plan -o writes.
  CHECK(j["best"] == j["chosen"]);
  // The choice: within the ranking band of the fastest, with its reason; JSON keeps the full list.
  REQUIRE(!j["chosen"].is_null());
  CHECK(j["ranking"]["band"].get<double>() == doctest::Approx(0.03));
  CHECK(has(j["ranking"]["band_reason"].get<std::string>(), "held out: 1.3 % on Korthikanti"));
  CHECK(!j["ranking"]["reason"].get<std::string>().empty());
  CHECK(j["chosen"]["step_time_s"].get<double>() <= 1.03 * j["fastest"]["step_time_s"].get<double>());
  CHECK(j["chosen"]["step_time_s"].get<double>() >= j["fastest"]["step_time_s"].get<double>());
  CHECK(j["fixed_layout"].is_null());
  for (const auto& c : j["candidates"]) CHECK(c["group"].get<int>() >= 1);
  CHECK(j["evaluated"].get<int64_t>() > 0);
  CHECK(j["enumerated"].get<int64_t>() >= j["evaluated"].get<int64_t>());
  for (const char* k : {"step_time_s", "tokens_per_s", "tflops_per_device", "mfu", "peak_memory_bytes", "memory",
                        "time", "mesh", "options", "fits"})
    CHECK_MESSAGE((j["chosen"].contains(k) && j["fastest"].contains(k)), k);
  double prev = 0;
  for (const auto& c : j["candidates"]) {
    CHECK(c["fits"].get<bool>());
    const auto& m = c["mesh"];
    CHECK(m["dp"].get<int64_t>() * m["tp"].get<int64_t>() * m["cp"].get<int64_t>() * m["pp"].get<int64_t>() == 64);
    CHECK(c["step_time_s"].get<double>() >= prev);
    prev = c["step_time_s"].get<double>();
  }
  for (const auto& x : j["rejected"]) {
    CHECK(x["count"].get<int64_t>() > 0);
    CHECK(!x["example"].get<std::string>().empty());
  }
}

TEST_CASE("plan --format json: best is the layout plan -o writes (chosen), fastest the first candidate") {
  // default.yaml: the fastest layouts lie within the ranking band of simpler ones (README).
  TempDir tmp;
  const std::string plan_path = tmp.file("plan.yaml");
  const Result r = ringplan("plan '" + kConfigs + "default.yaml' --format json -o '" + plan_path + "'");
  REQUIRE_MESSAGE(r.rc == 0, r.err);
  const auto j = nlohmann::json::parse(r.out);
  CHECK(j["best"] == j["chosen"]);
  CHECK(j["fastest"]["mesh"] == j["candidates"][0]["mesh"]);
  CHECK(j["fastest"]["options"] == j["candidates"][0]["options"]);
  // chosen_rank places the chosen layout in the ranked list (0: below the top K).
  const int64_t rank = j["ranking"]["chosen_rank"].get<int64_t>();
  if (rank > 0) {
    CHECK(j["candidates"][rank - 1]["mesh"] == j["chosen"]["mesh"]);
    CHECK(j["candidates"][rank - 1]["options"] == j["chosen"]["options"]);
  }
  const Result s = ringplan("simulate '" + plan_path + "' --format json");
  REQUIRE_MESSAGE(s.rc == 0, s.err);
  const auto written = nlohmann::json::parse(s.out);
  CHECK(written["mesh"] == j["best"]["mesh"]);
  CHECK(written["options"] == j["best"]["options"]);
  CHECK(written["step_time_s"] == j["best"]["step_time_s"]);
}

TEST_CASE("plan and report --top beyond the layouts that fit keep them all, up to the largest int64") {
  // default.yaml has more than 4096 fitting layouts (the first search keeps 4096 at most).
  for (const char* top : {"9223372036854775807", "5000", "4096"}) {
    const Result r = ringplan("plan '" + kConfigs + "default.yaml' --top " + top + " --format json");
    REQUIRE_MESSAGE(r.rc == 0, r.err);
    const auto j = nlohmann::json::parse(r.out);
    const int64_t fitting = j["fitting"].get<int64_t>();
    REQUIRE(fitting > 5000);
    CHECK(static_cast<int64_t>(j["candidates"].size()) == std::min<int64_t>(fitting, std::stoll(top)));
    // fastest is the first candidate (candidates carry their ranking group besides).
    CHECK(j["fastest"]["mesh"] == j["candidates"][0]["mesh"]);
    CHECK(j["fastest"]["options"] == j["candidates"][0]["options"]);
    CHECK(j["fastest"]["step_time_s"] == j["candidates"][0]["step_time_s"]);
    CHECK(j["best"] == j["chosen"]);
  }
  const Result small_json = ringplan("plan '" + kConfigs + "cpu_small.yaml' --format json");
  REQUIRE_MESSAGE(small_json.rc == 0, small_json.err);
  const int64_t small_fitting = nlohmann::json::parse(small_json.out)["fitting"].get<int64_t>();
  REQUIRE(small_fitting >= 2);
  const Result small = ringplan("plan '" + kConfigs + "cpu_small.yaml' --top 9223372036854775807");
  REQUIRE_MESSAGE(small.rc == 0, small.err);
  CHECK(has(small.out, "top " + std::to_string(small_fitting) + " layouts"));
  // report --top charts as many (it was the same vector::reserve, "internal error").
  TempDir tmp;
  const Result rep = ringplan("report '" + kConfigs + "cpu_small.yaml' --top 9223372036854775807 -o '" +
                              tmp.file("r.html") + "'");
  REQUIRE_MESSAGE(rep.rc == 0, rep.err);
  CHECK(has(rep.err, "wrote report of " + std::to_string(small_fitting) + " candidates"));
}

TEST_CASE("plan table output has the top-K table, the chosen plan and the rejections") {
  const Result r = ringplan("plan '" + kConfigs + "default.yaml' --top 3");
  REQUIRE_MESSAGE(r.rc == 0, r.err);
  CHECK(has(r.out, "rank"));
  CHECK(has(r.out, "chosen plan"));
  CHECK(has(r.out, "memory per device"));
  CHECK(has(r.out, "time per step"));
  CHECK(has(r.out, "rejected layouts"));
  CHECK(has(r.out, " GiB"));
}

TEST_CASE("plan -o writes a plan file that simulate reproduces") {
  TempDir tmp;
  const std::string plan_path = tmp.file("plan.yaml");
  const Result p = ringplan("plan '" + kConfigs + "default.yaml' --top 1 --format json -o '" + plan_path + "'");
  REQUIRE_MESSAGE(p.rc == 0, p.err);
  REQUIRE(fs::exists(plan_path));
  // -o writes the chosen layout (the simplest within the ranking band of the fastest).
  const auto best = nlohmann::json::parse(p.out)["chosen"];
  const Result s = ringplan("simulate '" + plan_path + "' --format json");
  REQUIRE_MESSAGE(s.rc == 0, s.err);
  const auto sim = nlohmann::json::parse(s.out);
  CHECK(sim["mesh"] == best["mesh"]);
  CHECK(sim["options"] == best["options"]);
  CHECK(sim["step_time_s"].get<double>() == doctest::Approx(best["step_time_s"].get<double>()).epsilon(1e-9));
  CHECK(sim["peak_memory_bytes"].get<double>() ==
        doctest::Approx(best["peak_memory_bytes"].get<double>()).epsilon(1e-9));
  const std::string text = read_file(plan_path);
  CHECK(has(text, "ringplan_plan: 1"));
  CHECK(has(text, "prediction:"));
}

TEST_CASE("simulate: flags override the file, JSON has every term") {
  const std::string exp = "'" + kConfigs + "default.yaml'";
  const Result a = ringplan("simulate " + exp + " --mesh dp=1,tp=8,cp=8,pp=1 --format json");
  REQUIRE_MESSAGE(a.rc == 0, a.err);
  const auto j = nlohmann::json::parse(a.out);
  CHECK(j["mesh"]["tp"] == 8);
  CHECK(j["mesh"]["cp"] == 8);
  CHECK(j["memory"].size() >= 9);
  CHECK(j["time"].size() >= 11);
  const Result b = ringplan("simulate " + exp +
                            " --mesh dp=1,tp=8,cp=8,pp=1 --recompute full --zero 3 --sequence-parallel on "
                            "--cp-scheme striped --attention flash --micro-batch 1 --format json");
  REQUIRE_MESSAGE(b.rc == 0, b.err);
  const auto k = nlohmann::json::parse(b.out);
  CHECK(k["options"]["recompute"] == "full");
  CHECK(k["options"]["zero_stage"] == 3);
  CHECK(k["options"]["sequence_parallel"] == true);
  CHECK(k["options"]["cp_scheme"] == "striped");
  // Full recompute and ZeRO-3 need less memory than the file's defaults on the same mesh.
  CHECK(k["peak_memory_bytes"].get<double>() < j["peak_memory_bytes"].get<double>());
  const Result t = ringplan("simulate " + exp + " --mesh dp=1,tp=8,cp=8,pp=1");
  CHECK(t.rc == 0);
  CHECK(has(t.out, "memory per device"));
}

TEST_CASE("simulate --tp-overlap: none charges more TP communication than the default, pipelined needs SP") {
  const std::string exp = "'" + kConfigs + "default.yaml'";
  const Result b = ringplan("simulate " + exp + " --mesh dp=1,tp=8,cp=8,pp=1 --format json");
  const Result n = ringplan("simulate " + exp + " --mesh dp=1,tp=8,cp=8,pp=1 --tp-overlap none --format json");
  REQUIRE_MESSAGE(b.rc == 0, b.err);
  REQUIRE_MESSAGE(n.rc == 0, n.err);
  const auto jb = nlohmann::json::parse(b.out), jn = nlohmann::json::parse(n.out);
  CHECK(jb["options"]["tp_overlap"] == "backward");
  CHECK(jn["options"]["tp_overlap"] == "none");
  CHECK(jn["time"]["tp_comm_s"].get<double>() > jb["time"]["tp_comm_s"].get<double>());
  const Result p = ringplan("simulate " + exp + " --mesh dp=1,tp=8,cp=8,pp=1 --tp-overlap pipelined --sequence-parallel off");
  CHECK(p.rc == 2);
  CHECK(has(p.err, "needs sequence_parallel"));
  const Result bad = ringplan("simulate " + exp + " --mesh dp=1,tp=8,cp=8,pp=1 --tp-overlap async");
  CHECK(bad.rc == 2);
  CHECK(has(bad.err, "none, backward, pipelined"));
}

TEST_CASE("simulate --overlap-param-gather: ZeRO-1's parameter all-gather hides behind the next forward") {
  const std::string exp = "'" + kConfigs + "default.yaml'";
  const std::string mesh = " --mesh dp=1,tp=8,cp=8,pp=1 --zero 1 --format json";  // ZeRO-1 over DP x CP = 8
  const Result b = ringplan("simulate " + exp + mesh);
  const Result o = ringplan("simulate " + exp + mesh + " --overlap-param-gather on");
  REQUIRE_MESSAGE(b.rc == 0, b.err);
  REQUIRE_MESSAGE(o.rc == 0, o.err);
  const auto jb = nlohmann::json::parse(b.out), jo = nlohmann::json::parse(o.out);
  CHECK(jb["options"]["overlap_param_gather"] == false);
  CHECK(jo["options"]["overlap_param_gather"] == true);
  CHECK(jb["time"]["zero_comm_exposed_s"].get<double>() > 0);
  CHECK(jo["time"]["zero_comm_exposed_s"].get<double>() < jb["time"]["zero_comm_exposed_s"].get<double>());
  const Result t = ringplan("simulate " + exp + " --mesh dp=1,tp=8,cp=8,pp=1 --zero 1 --overlap-param-gather on");
  CHECK(t.rc == 0);
  CHECK(has(t.out, " opg "));
  const Result bad = ringplan("simulate " + exp + mesh + " --overlap-param-gather yes");
  CHECK(bad.rc == 2);
  CHECK(has(bad.err, "--overlap-param-gather"));
}

TEST_CASE("simulate --dp-replicate: hybrid sharding in the options, the plan file and emit") {
  const std::string exp = "'" + kConfigs + "default.yaml'";
  // default.yaml: 64 GPUs on 8-GPU nodes; DP 2 x CP 4 x TP 8, ZeRO-3 sharded over the 8 DP x CP
  // ranks, or with 2 replicas over each replica's 4 CP ranks.
  const std::string mesh = " --mesh dp=2,tp=8,cp=4,pp=1 --zero 3 --recompute full";
  const Result full = ringplan("simulate " + exp + mesh + " --format json");
  const Result hsdp = ringplan("simulate " + exp + mesh + " --dp-replicate 2 --format json");
  REQUIRE_MESSAGE(full.rc == 0, full.err);
  REQUIRE_MESSAGE(hsdp.rc == 0, hsdp.err);
  const auto jf = nlohmann::json::parse(full.out), jh = nlohmann::json::parse(hsdp.out);
  CHECK(jf["options"]["dp_replicate"] == 1);
  CHECK(jh["options"]["dp_replicate"] == 2);
  // The states sharded over 4 ranks instead of 8: twice the optimizer state per GPU.
  CHECK(jh["memory"]["optimizer_bytes"].get<int64_t>() ==
        doctest::Approx(2.0 * static_cast<double>(jf["memory"]["optimizer_bytes"].get<int64_t>())).epsilon(1e-6));
  const TempDir tmp;
  const std::string plan = (tmp.path / "hsdp.yaml").string();
  const Result w = ringplan("simulate " + exp + mesh + " --dp-replicate 2 -o '" + plan + "'");
  REQUIRE_MESSAGE(w.rc == 0, w.err);
  CHECK(has(w.out, " hsdp=2 "));
  CHECK(has(read_file(plan), "dp_replicate: 2"));
  const Result m = ringplan("emit '" + plan + "' --format megatron");
  REQUIRE_MESSAGE(m.rc == 0, m.err);
  CHECK(has(m.out, "--num-distributed-optimizer-instances 2"));
  // Refused with the reason: not a divisor of DP, ZeRO-0, not a positive count.
  const Result div = ringplan("simulate " + exp + mesh + " --dp-replicate 3");
  CHECK(div.rc == 2);
  CHECK(has(div.err, "dp_replicate 3 does not divide DP 2"));
  const Result z0 = ringplan("simulate " + exp + " --mesh dp=2,tp=8,cp=4,pp=1 --zero 0 --dp-replicate 2");
  CHECK(z0.rc == 2);
  CHECK(has(z0.err, "needs zero_stage >= 1"));
  const Result neg = ringplan("simulate " + exp + mesh + " --dp-replicate 0");
  CHECK(neg.rc == 2);
  CHECK(has(neg.err, "--dp-replicate"));
}

namespace {
// A `simulate --trace` file: the complete events' names per thread (tid 0 compute, 1
// communication) and the ranks (pids) that have events.
struct TraceSummary {
  std::set<std::string> compute, communication;
  std::set<int> ranks;
};
TraceSummary read_trace(const std::string& path) {
  TraceSummary t;
  // Kept in a variable: the range of a range-for does not extend the life of parse()'s result.
  const nlohmann::json doc = nlohmann::json::parse(read_file(path));
  for (const auto& ev : doc.at("traceEvents")) {
    if (ev.value("ph", "") != "X") continue;
    t.ranks.insert(ev["pid"].get<int>());
    (ev["tid"].get<int>() == 1 ? t.communication : t.compute).insert(ev["name"].get<std::string>());
  }
  return t;
}
}  // namespace

TEST_CASE("simulate --cp-comm allgather: named in the options, exposed CP comm and buffers change, --trace replays it") {
  const std::string exp = "'" + kConfigs + "default.yaml'";
  const Result r = ringplan("simulate " + exp + " --mesh dp=1,tp=8,cp=8,pp=1 --format json");
  const Result a = ringplan("simulate " + exp + " --mesh dp=1,tp=8,cp=8,pp=1 --cp-comm allgather --format json");
  REQUIRE_MESSAGE(r.rc == 0, r.err);
  REQUIRE_MESSAGE(a.rc == 0, a.err);
  const auto jr = nlohmann::json::parse(r.out), ja = nlohmann::json::parse(a.out);
  CHECK(jr["options"]["cp_comm"] == "ring");
  CHECK(ja["options"]["cp_comm"] == "allgather");
  CHECK(ja["time"]["ring_comm_exposed_s"].get<double>() != jr["time"]["ring_comm_exposed_s"].get<double>());
  CHECK(ja["memory"]["ring_buffers_bytes"].get<double>() > jr["memory"]["ring_buffers_bytes"].get<double>());
  const Result t = ringplan("simulate " + exp + " --mesh dp=1,tp=8,cp=8,pp=1 --cp-comm allgather");
  CHECK(t.rc == 0);
  CHECK(has(t.out, "allgather"));
  TempDir tmp;
  const Result tr = ringplan("simulate " + exp + " --mesh dp=1,tp=8,cp=8,pp=1 --cp-comm allgather --trace '" +
                             tmp.file("ag.json") + "'");
  REQUIRE_MESSAGE(tr.rc == 0, tr.err);
  CHECK(has(tr.err, "allgather CP trace"));
  const TraceSummary trace = read_trace(tmp.file("ag.json"));
  CHECK(trace.ranks.size() == 8);
  CHECK(trace.communication ==
        std::set<std::string>{"forward all-gather K,V", "backward all-gather K,V", "backward reduce-scatter dK,dV"});
  CHECK(trace.compute == std::set<std::string>{"forward kernel", "backward kernel"});
}

TEST_CASE("simulate --cp-comm alltoall: named in the options, no imbalance, refused where CP cannot split the heads") {
  const std::string exp = "'" + kConfigs + "default.yaml'";  // Llama 3 8B: 32 heads, 8 KV heads, 64 GPUs
  const Result a = ringplan("simulate " + exp + " --mesh dp=2,tp=4,cp=8,pp=1 --cp-comm alltoall --format json");
  REQUIRE_MESSAGE(a.rc == 0, a.err);
  const auto ja = nlohmann::json::parse(a.out);
  CHECK(ja["options"]["cp_comm"] == "alltoall");
  CHECK(ja["time"]["cp_imbalance_s"].get<double>() == 0.0);
  CHECK(ja["time"]["ring_comm_exposed_s"].get<double>() > 0.0);
  TempDir tmp;
  const Result tr = ringplan("simulate " + exp + " --mesh dp=2,tp=4,cp=8,pp=1 --cp-comm alltoall --trace '" +
                             tmp.file("a2a.json") + "'");
  REQUIRE_MESSAGE(tr.rc == 0, tr.err);
  const TraceSummary trace = read_trace(tmp.file("a2a.json"));
  CHECK(trace.ranks.size() == 8);
  CHECK(trace.communication.count("forward all-to-all Q") == 1);
  CHECK(trace.communication.count("backward all-to-all dV") == 1);
  // TP 8 leaves 4 query heads per TP rank: CP 8 cannot split them.
  const Result r = ringplan("simulate " + exp + " --mesh dp=1,tp=8,cp=8,pp=1 --cp-comm alltoall");
  CHECK(r.rc == 2);
  CHECK(has(r.err, "cp_comm alltoall needs CP 8 to divide the query heads per TP rank"));
}

TEST_CASE("simulate --cp-comm hybrid: the default group size resolved and written, --cp-a2a-size checked") {
  const std::string exp = "'" + kConfigs + "default.yaml'";  // Llama 3 8B: 32 heads, 8 KV heads, 8-GPU nodes
  // TP 2 x CP 16: 16 query and 4 KV heads per TP rank; TP 2 x 4 fills a node, so the default is 4.
  const Result a = ringplan("simulate " + exp + " --mesh dp=2,tp=2,cp=16,pp=1 --cp-comm hybrid --recompute full --zero 1 --format json");
  REQUIRE_MESSAGE(a.rc == 0, a.err);
  const auto ja = nlohmann::json::parse(a.out);
  CHECK(ja["options"]["cp_comm"] == "hybrid");
  CHECK(ja["options"]["cp_a2a_size"] == 4);
  CHECK(ja["time"]["ring_comm_exposed_s"].get<double>() > 0.0);
  const Result b = ringplan("simulate " + exp + " --mesh dp=2,tp=2,cp=16,pp=1 --cp-comm hybrid --cp-a2a-size 2 --recompute full --zero 1 --format json");
  REQUIRE_MESSAGE(b.rc == 0, b.err);
  const auto jb = nlohmann::json::parse(b.out);
  CHECK(jb["options"]["cp_a2a_size"] == 2);
  CHECK(jb["step_time_s"].get<double>() != ja["step_time_s"].get<double>());
  const Result bad = ringplan("simulate " + exp + " --mesh dp=2,tp=2,cp=16,pp=1 --cp-comm hybrid --cp-a2a-size 3");
  CHECK(bad.rc == 2);
  CHECK(has(bad.err, "cp_comm hybrid needs cp_a2a_size 3 to divide CP 16"));
  const Result ring = ringplan("simulate " + exp + " --mesh dp=2,tp=2,cp=16,pp=1 --cp-a2a-size 2");
  CHECK(ring.rc == 2);
  CHECK(has(ring.err, "--cp-a2a-size is the all-to-all group size of cp_comm hybrid"));
  // The trace: all-to-alls inside the groups of 4 around the ring of 4 groups.
  TempDir tmp;
  const Result tr = ringplan("simulate " + exp + " --mesh dp=2,tp=2,cp=16,pp=1 --cp-comm hybrid --recompute full "
                             "--zero 1 --trace '" + tmp.file("hybrid.json") + "'");
  REQUIRE_MESSAGE(tr.rc == 0, tr.err);
  const TraceSummary trace = read_trace(tmp.file("hybrid.json"));
  CHECK(trace.ranks.size() == 16);
  CHECK(trace.communication.count("forward all-to-all K") == 1);
  CHECK(trace.communication.count("forward send K,V block 3") == 1);
  CHECK(trace.communication.count("forward send K,V block 4") == 0);  // ring positions 0..3
  CHECK(trace.compute.count("backward merge block 2") == 1);
}

TEST_CASE("packed documents: simulate and plan model training.documents, and the plan file keeps it") {
  // The default experiment with a lognormal document-length distribution (model and cluster by
  // absolute path, as the copy lives in a temporary folder).
  TempDir tmp;
  std::string text = read_file(kConfigs + "default.yaml");
  auto replace = [&](const std::string& from, const std::string& to) {
    const auto at = text.find(from);
    REQUIRE(at != std::string::npos);
    text.replace(at, from.size(), to);
  };
  replace("model: ../models/", "model: " + std::string(RINGPLAN_SOURCE_DIR) + "/configs/models/");
  replace("cluster: ../clusters/", "cluster: " + std::string(RINGPLAN_SOURCE_DIR) + "/configs/clusters/");
  replace("  causal: true\n", "  causal: true\n  documents: {distribution: lognormal, mean_length: 8192, seed: 1}\n");
  const std::string exp = tmp.file("docs.yaml");
  std::ofstream(exp) << text;
  const std::string mesh = " --mesh dp=2,tp=4,cp=8,pp=1 --format json";
  const Result plain = ringplan("simulate '" + kConfigs + "default.yaml'" + mesh + " --cp-scheme zigzag");
  const Result zig = ringplan("simulate '" + exp + "'" + mesh + " --cp-scheme zigzag");
  const Result cont = ringplan("simulate '" + exp + "'" + mesh + " --cp-scheme contiguous");
  REQUIRE_MESSAGE(plain.rc == 0, plain.err);
  REQUIRE_MESSAGE(zig.rc == 0, zig.err);
  REQUIRE_MESSAGE(cont.rc == 0, cont.err);
  const auto jp = nlohmann::json::parse(plain.out), jz = nlohmann::json::parse(zig.out),
             jc = nlohmann::json::parse(cont.out);
  // Documents of ~8K in 128K tokens: far fewer visible pairs, so less attention compute.
  CHECK(jz["time"]["forward_compute_s"].get<double>() < jp["time"]["forward_compute_s"].get<double>());
  // The per-document zigzag is nearly balanced; contiguous shards of 16K tokens are not.
  CHECK(jz["time"]["cp_imbalance_s"].get<double>() < jc["time"]["cp_imbalance_s"].get<double>());
  // plan -o writes the documents into the plan; simulate of the plan reproduces its prediction.
  const std::string plan_path = tmp.file("plan.yaml");
  const Result p = ringplan("plan '" + exp + "' --top 1 --format json -o '" + plan_path + "'");
  REQUIRE_MESSAGE(p.rc == 0, p.err);
  CHECK(has(read_file(plan_path), "distribution: lognormal"));
  const Result s = ringplan("simulate '" + plan_path + "' --format json");
  REQUIRE_MESSAGE(s.rc == 0, s.err);
  CHECK(nlohmann::json::parse(s.out)["step_time_s"].get<double>() ==
        doctest::Approx(nlohmann::json::parse(p.out)["chosen"]["step_time_s"].get<double>()).epsilon(1e-9));
}

TEST_CASE("bad input exits 2 with a message saying what would be valid") {
  const std::string exp = "'" + kConfigs + "default.yaml'";
  struct Case {
    std::string args, expect;
  };
  const Case cases[] = {
      {"simulate " + exp + " --mesh dp=2,tp=2,cp=2,pp=1", "but the experiment has 64"},
      {"simulate " + exp + " --mesh dp=two", "not a positive integer"},
      {"simulate " + exp + " --mesh qq=64", "valid keys: dp, tp, cp, pp"},
      {"simulate " + exp, "no mesh"},
      {"simulate " + exp + " --mesh tp=8,cp=8 --recompute most", "none, selective, full"},
      {"simulate " + exp + " --mesh tp=8,cp=8 --cp-scheme ring", "contiguous, zigzag, striped"},
      {"simulate " + exp + " --mesh tp=8,cp=8 --attention sdpa", "flash, materialized"},
      {"simulate " + exp + " --mesh tp=8,cp=8 --cp-comm p2p", "--cp-comm: unknown value 'p2p'"},
      {"simulate " + exp + " --mesh tp=8,cp=8 --cp-comm p2p", "ring, allgather"},
      {"simulate " + exp + " --mesh tp=8,cp=8 --cp-comm allgather --attention materialized",
       "cp_comm allgather needs attention flash"},
      {"simulate " + exp + " --mesh tp=8,cp=8 --zero 4", "valid: 0, 1, 2, 3"},
      {"simulate " + exp + " --mesh tp=8,cp=8 --sequence-parallel maybe", "valid: on, off"},
      {"simulate " + exp + " --mesh tp=8,cp=8 --format xml", "xml"},
      {"plan " + exp + " --top 0", "--top"},
      {"plan " + exp + " --top -2", "--top"},
      {"plan " + exp + " --gpus -8", "--gpus"},
      // 0 is not "unset"; the limit is named. Without the limit INT64_MAX would loop forever in the
      // mesh enumeration (d * d overflows) and 963761198400 would run for minutes past 3 GB.
      {"plan " + exp + " --gpus 0", "--gpus: must be a GPU count in 1 .. 1048576"},
      {"plan " + exp + " --gpus 9223372036854775807", "--gpus: must be a GPU count in 1 .. 1048576"},
      {"plan " + exp + " --gpus 963761198400", "1 .. 1048576"},
      {"plan " + exp + " --format yaml", "yaml"},
      // A value CLI11 cannot convert: said like any bad input, pointing at the command's --help.
      {"plan " + exp + " --gpus 12abc", "ringplan: error: Could not convert: --gpus = 12abc (`ringplan plan --help`"},
      {"plan /nonexistent/experiment.yaml", "nonexistent"},
      {"validate /nonexistent/folder", "validate: '/nonexistent/folder' does not exist"},
      {"fit /nonexistent/folder", "fit: '/nonexistent/folder' does not exist"},
      // An empty source is not "no holdout" (k-fold): it is refused.
      {"fit '" + std::string(RINGPLAN_SOURCE_DIR) + "/configs/validation/korthikanti2022' --holdout ''",
       "--holdout: must name a source"},
      // The A100 profile of these runs has no FP8 peak: a fitted FP8 curve would be unreadable.
      {"fit '" + std::string(RINGPLAN_SOURCE_DIR) + "/configs/validation/korthikanti2022' --free matmul_fp8",
       "--free matmul_fp8 needs a cluster with an FP8 peak"},
      // Sizes past 2^20 are refused before anything multiplies them.
      {"simulate " + exp + " --mesh dp=4323,tp=2731,cp=409891,pp=7623851", "limit on mesh sizes, 2^20"},
      // Every FP8 run refused on a profile without an FP8 peak: the command names each and why.
      {"fit '" + std::string(RINGPLAN_SOURCE_DIR) + "/configs/validation/torchtitan_h100_fp8' --cluster '" +
           std::string(RINGPLAN_SOURCE_DIR) + "/configs/clusters/dgx_a100_80gb.yaml'",
       "training.fp8 needs a cluster with an FP8 peak"},
      // The Triton flash kernel's runs on a profile without its curve: every case refused, named.
      {"fit '" + std::string(RINGPLAN_SOURCE_DIR) + "/configs/validation/llm_foundry_a100' --cluster '" +
           std::string(RINGPLAN_SOURCE_DIR) + "/configs/clusters/grand_teton_h100.yaml'",
       "training.flash_kernel triton needs a cluster with efficiency.attention_flash_triton"},
      // A trace of CP 16384 would hold 2^28 steps in memory; refused before any output.
      {"simulate " + exp + " --mesh cp=512 --gpus 512 --trace /tmp/ringplan_never_written.json", "valid: cp <= 256"},
      {"validate " + exp, "a validation case needs a fixed mesh"},
      // A device is never read (/dev/zero has no end), as an argument or as a referenced file.
      {"simulate /dev/zero", "is not a regular file"},
      {"report " + exp + " -o /tmp/ringplan_never_written.html --run /dev/zero", "is not a regular file"},
  };
  for (const auto& c : cases) {
    const Result r = ringplan(c.args);
    CHECK_MESSAGE(r.rc == 2, c.args);
    CHECK_MESSAGE(has(r.err + r.out, c.expect), c.args, " -> ", r.err);
  }
}

TEST_CASE("a symbolic link loop as input exits 2 naming the link, in every reading command") {
  TempDir tmp;
  const std::string a = tmp.file("a.yaml"), b = tmp.file("b.yaml");
  fs::create_symlink(b, a);
  fs::create_symlink(a, b);
  for (const std::string& cmd : std::vector<std::string>{"plan", "simulate", "validate", "fit",
                                                         "emit --format megatron", "report -o " + tmp.file("r.html")}) {
    // The positional goes last: `report -o FILE a.yaml`.
    const Result r = ringplan(cmd + " '" + a + "'");
    CHECK_MESSAGE(r.rc == 2, cmd, " -> ", r.err);
    CHECK_MESSAGE(has(r.err, "is a symbolic link loop"), cmd, " -> ", r.err);
    CHECK_MESSAGE(!has(r.err, "internal error"), cmd);
    CHECK_MESSAGE(!has(r.err, "filesystem error"), cmd);
  }
}

TEST_CASE("a name that is not UTF-8 is refused at load with file:line, before any JSON or HTML is written") {
  TempDir tmp;
  std::string text = read_file(kConfigs + "cpu_small.yaml");
  for (const char* rel : {"../models/", "../clusters/"})
    for (size_t at; (at = text.find(rel)) != std::string::npos;)
      text.replace(at, std::string(rel).size(), std::string(RINGPLAN_SOURCE_DIR) + "/configs/" + std::string(rel).substr(3));
  const size_t at = text.find("name: cpu_small");
  REQUIRE(at != std::string::npos);
  const int line = static_cast<int>(std::count(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(at), '\n')) + 1;
  text.replace(at, 15, "name: cpu\xff\xfesmall");
  const std::string exp = tmp.file("bad_name.yaml");
  std::ofstream(exp) << text << "mesh: {cp: 2}\n";
  for (const std::string& cmd :
       std::vector<std::string>{"report -o " + tmp.file("r.html"), "simulate --format json", "plan --format json"}) {
    const Result r = ringplan(cmd + " '" + exp + "'");
    CHECK_MESSAGE(r.rc == 2, cmd, " -> ", r.err);
    CHECK_MESSAGE(has(r.err, exp + ":" + std::to_string(line) + ": name: is not valid UTF-8 text (byte 4 of the value is 0xff)"),
                  cmd, " -> ", r.err);
  }
  CHECK_FALSE(fs::exists(tmp.file("r.html")));
}

TEST_CASE("a fixed mesh that --gpus contradicts is named at its file and line (simulate, report)") {
  TempDir tmp;
  std::string text = read_file(kConfigs + "cpu_small.yaml");
  for (const char* rel : {"../models/", "../clusters/"})
    for (size_t at; (at = text.find(rel)) != std::string::npos;)
      text.replace(at, std::string(rel).size(), std::string(RINGPLAN_SOURCE_DIR) + "/configs/" + std::string(rel).substr(3));
  const std::string exp = tmp.file("fixed.yaml");
  std::ofstream(exp) << text << "mesh: {cp: 2}\n";
  const std::string where = exp + ":" + std::to_string(std::count(text.begin(), text.end(), '\n') + 1) + ": mesh: ";
  for (const std::string& cmd : std::vector<std::string>{"simulate --gpus 4", "report --gpus 4 -o " + tmp.file("r.html")}) {
    const Result r = ringplan(cmd + " '" + exp + "'");
    CHECK_MESSAGE(r.rc == 2, cmd, " -> ", r.err);
    CHECK_MESSAGE(has(r.err, where + "mesh dp=1,tp=1,cp=2,pp=1 uses dp*tp*cp*pp = 2 GPUs but the experiment has 4"), cmd,
                  " -> ", r.err);
  }
}

TEST_CASE("paths that are not UTF-8 go into JSON and HTML as U+FFFD, never an abort (validate, report --run)") {
  TempDir tmp;
  const std::string dir = tmp.file("cases");
  fs::create_directories(dir);
  std::string text = read_file(kConfigs + "../validation/korthikanti2022/175b_full_recompute.yaml");
  for (const char* rel : {"../../models/", "../../clusters/"})
    for (size_t at; (at = text.find(rel)) != std::string::npos;)
      text.replace(at, std::string(rel).size(), std::string(RINGPLAN_SOURCE_DIR) + "/configs/" + std::string(rel).substr(6));
  std::ofstream(dir + "/case_\xff.yaml") << text;
  const Result v = ringplan("validate '" + dir + "' --format json");
  REQUIRE_MESSAGE(v.rc == 0, v.err);
  const auto j = nlohmann::json::parse(v.out);
  REQUIRE(!j["cases"].empty());
  CHECK(j["cases"][0]["path"] == dir + "/case_\xef\xbf\xbd.yaml");  // U+FFFD in UTF-8
  // A run result whose file name is not UTF-8: its path is shown in the report.
  const std::string run = tmp.file("run_\xff.json");
  std::ofstream(run) << read_file(std::string(RINGPLAN_SOURCE_DIR) + "/tests/report/data/run_result.json");
  const Result r = ringplan("report '" + kConfigs + "cpu_small.yaml' --run '" + run + "' -o '" + tmp.file("r.html") + "'");
  CHECK_MESSAGE(r.rc == 0, r.err);
  CHECK_FALSE(has(r.err, "internal error"));
}

TEST_CASE("plan: nothing fits exits 3 with the reason") {
  TempDir tmp;
  // 405B parameters cannot fit on 8 GPUs whatever the layout.
  const std::string path = tmp.file("tiny_cluster.yaml");
  std::ofstream(path) << "name: too_small\nmodel: " << RINGPLAN_SOURCE_DIR << "/configs/models/llama3_405b.yaml\n"
                      << "cluster: " << RINGPLAN_SOURCE_DIR << "/configs/clusters/dgx_h100.yaml\n"
                      << "training: {seq_len: 8192, global_batch: 8, dtype: bf16, optimizer: adam}\ngpus: 8\n";
  const Result r = ringplan("plan '" + path + "' --format json");
  CHECK(r.rc == 3);
  CHECK(has(r.err, "no layout of"));
  const auto none = nlohmann::json::parse(r.out);
  CHECK(none["best"].is_null());
  CHECK(none["chosen"].is_null());
  CHECK(none["fastest"].is_null());
  // simulate of a layout that does not fit: the whole table, then exit 3 (no plan file).
  TempDir out;
  const Result s = ringplan("simulate '" + path + "' --mesh dp=1,tp=8,cp=1,pp=1 -o '" + out.file("p.yaml") + "'");
  CHECK(s.rc == 3);
  CHECK(has(s.out, "DOES NOT FIT"));
  CHECK(has(s.out, "time per step"));
  CHECK(has(s.err, "does not fit"));
  CHECK(has(s.err, "no plan file written"));
  CHECK_FALSE(fs::exists(out.file("p.yaml")));
  const Result j = ringplan("simulate '" + path + "' --mesh dp=1,tp=8,cp=1,pp=1 --format json");
  CHECK(j.rc == 3);
  CHECK(nlohmann::json::parse(j.out)["fits"] == false);
}

TEST_CASE("plan honours a fixed mesh and fixed options, and says where they were fixed") {
  const std::string exp = kConfigs + "cpu_small_cp4.yaml";
  const Result r = ringplan("plan '" + exp + "' --top 50 --format json");
  REQUIRE_MESSAGE(r.rc == 0, r.err);
  const auto j = nlohmann::json::parse(r.out);
  REQUIRE(!j["candidates"].empty());
  for (const auto& c : j["candidates"]) {
    CHECK(c["mesh"] == nlohmann::json({{"dp", 1}, {"tp", 1}, {"cp", 4}, {"pp", 1}}));
    CHECK(c["options"]["cp_scheme"] == "zigzag");
    CHECK(c["options"]["micro_batch"] == 1);
    CHECK(c["options"]["recompute"] == "none");
  }
  CHECK(j["chosen"]["mesh"]["cp"] == 4);
  CHECK(has(j["fixed_layout"].get<std::string>(), "cpu_small_cp4.yaml:16"));
  const Result t = ringplan("plan '" + exp + "' --top 3");
  REQUIRE_MESSAGE(t.rc == 0, t.err);
  CHECK(has(t.out, "mesh fixed by " + exp + ":16 (dp=1 tp=1 cp=4 pp=1)"));
  CHECK(has(t.out, "options fixed by " + exp + ":17"));
  CHECK(has(t.out, "layout: dp=1 tp=1 cp=4 pp=1"));

  // A fixed mesh that cannot run: exit 2 with the reason; one for another GPU count: exit 2.
  TempDir tmp;
  const std::string bad = tmp.file("bad.yaml");
  std::ofstream(bad) << "name: bad\nmodel: " << RINGPLAN_SOURCE_DIR << "/configs/models/tiny_gqa.yaml\n"
                     << "cluster: " << RINGPLAN_SOURCE_DIR << "/configs/clusters/local_cpu.yaml\n"
                     << "training: {seq_len: 2048, global_batch: 4, dtype: fp32, optimizer: adam}\n"
                     << "mesh: {pp: 64}\n";
  const Result b = ringplan("plan '" + bad + "'");
  CHECK(b.rc == 2);
  // Refused when the file is read (the mesh is checked against the model at load).
  CHECK(has(b.err, bad + ":5: mesh.pp: 64 pipeline stages exceed the 2 layers"));
  CHECK(has(b.err, "valid: 1 .. 2"));
  CHECK_FALSE(has(b.err, "#"));
  const Result g = ringplan("plan '" + exp + "' --gpus 8");
  CHECK(g.rc == 2);
  CHECK(has(g.err, "cpu_small_cp4.yaml:16"));
}

TEST_CASE("simulate -o writes the plan file of the simulated layout, plan-file format") {
  TempDir tmp;
  const std::string plan_path = tmp.file("sim_plan.yaml");
  const std::string exp = "'" + kConfigs + "default.yaml'";
  const Result s = ringplan("simulate " + exp + " --mesh dp=1,tp=8,cp=8,pp=1 --zero 1 --cp-scheme striped --format json -o '" +
                            plan_path + "'");
  REQUIRE_MESSAGE(s.rc == 0, s.err);
  CHECK(has(s.err, "wrote plan dp=1 tp=8 cp=8 pp=1"));
  const std::string text = read_file(plan_path);
  CHECK(has(text, "ringplan_plan: 1"));
  CHECK(has(text, "# end of ringplan plan"));
  const auto want = nlohmann::json::parse(s.out);
  CHECK(want["schema_version"] == 2);
  // Read back by simulate (and so by run, which reads the same file): same layout, same figures.
  const Result again = ringplan("simulate '" + plan_path + "' --format json");
  REQUIRE_MESSAGE(again.rc == 0, again.err);
  const auto got = nlohmann::json::parse(again.out);
  CHECK(got["mesh"] == want["mesh"]);
  CHECK(got["options"] == want["options"]);
  CHECK(got["options"]["cp_scheme"] == "striped");
  CHECK(got["options"]["zero_stage"] == 1);
  CHECK(got["step_time_s"].get<double>() == doctest::Approx(want["step_time_s"].get<double>()).epsilon(1e-9));
  // A missing folder is refused before any work (exit 2).
  const Result bad = ringplan("simulate " + exp + " --mesh dp=1,tp=8,cp=8,pp=1 -o /nonexistent/dir/p.yaml");
  CHECK(bad.rc == 2);
}

TEST_CASE("tables: term labels without JSON suffixes, readable rejections, ranking band, exit status in --help") {
  const Result r = ringplan("plan '" + kConfigs + "default.yaml' --top 5");
  REQUIRE_MESSAGE(r.rc == 0, r.err);
  CHECK_FALSE(has(r.out, "_bytes"));
  CHECK_FALSE(has(r.out, "exposed_s"));
  CHECK(has(r.out, "weights "));
  CHECK(has(r.out, "ranking band 3.0%"));
  CHECK(has(r.out, "chosen: "));
  const size_t rej = r.out.find("rejected layouts");
  REQUIRE(rej != std::string::npos);
  CHECK(r.out.find('#', rej) == std::string::npos);
  const Result h = ringplan("--help");
  CHECK(h.rc == 0);
  CHECK(has(h.out, "Exit status"));
  CHECK(has(h.out, "3 no layout fits"));
}

TEST_CASE("validate: predicted vs published with signed error, JSON summary") {
  TempDir tmp;
  // A case: the default experiment with a fixed mesh and made-up published figures. The
  // expected error is computed from simulate's prediction of the same layout.
  const Result s = ringplan("simulate '" + kConfigs + "default.yaml' --mesh tp=8,cp=8 --format json");
  REQUIRE_MESSAGE(s.rc == 0, s.err);
  const double predicted = nlohmann::json::parse(s.out)["step_time_s"].get<double>();
  const double published = predicted * 1.1;
  const std::string case_path = tmp.file("case.yaml");
  std::ofstream(case_path) << read_file(kConfigs + "default.yaml") << "\nmesh: {dp: 1, tp: 8, cp: 8, pp: 1}\n"
                           << "published:\n  step_time_s: " << published << "\n  source: test\n";
  // default.yaml names its model/cluster relative to its own folder: copy them beside.
  std::string fixed = read_file(case_path);
  for (const char* rel : {"../models/", "../clusters/"}) {
    for (size_t at; (at = fixed.find(rel)) != std::string::npos;)
      fixed.replace(at, std::string(rel).size(),
                    std::string(RINGPLAN_SOURCE_DIR) + "/configs/" + std::string(rel).substr(3));
  }
  std::ofstream(case_path) << fixed;
  const Result v = ringplan("validate '" + tmp.path.string() + "' --format json");
  REQUIRE_MESSAGE(v.rc == 0, v.err);
  const auto j = nlohmann::json::parse(v.out);
  REQUIRE(j["cases"].size() == 1);
  const auto& c = j["cases"][0];
  CHECK(c["metric"] == "step_time_s");
  CHECK(c["published"].get<double>() == doctest::Approx(published).epsilon(1e-5));
  CHECK(c["error_pct"].get<double>() == doctest::Approx(100.0 * (1.0 / 1.1 - 1.0)).epsilon(1e-3));
  CHECK(j["max_abs_error_pct"].get<double>() == doctest::Approx(std::abs(c["error_pct"].get<double>())));
  const Result t = ringplan("validate '" + case_path + "'");
  CHECK(t.rc == 0);
  CHECK(has(t.out, "mean |error|"));
}

TEST_CASE("validate: a refused case is listed with its reason, the others still evaluated, exit 0") {
  TempDir tmp;
  // default.yaml names its model/cluster relative to its own folder: make them absolute.
  std::string base = read_file(kConfigs + "default.yaml");
  for (const char* rel : {"../models/", "../clusters/"}) {
    for (size_t at; (at = base.find(rel)) != std::string::npos;)
      base.replace(at, std::string(rel).size(), std::string(RINGPLAN_SOURCE_DIR) + "/configs/" + std::string(rel).substr(3));
  }
  const std::string published = "published:\n  step_time_s: 10\n  source: test\n";
  std::ofstream(tmp.file("a_good.yaml")) << base << "\nmesh: {dp: 1, tp: 8, cp: 8, pp: 1}\n" << published;
  // Llama 3 8B has 32 heads: TP 64 cannot split them (refused at load, at the line of the mesh).
  std::ofstream(tmp.file("b_refused.yaml")) << base << "\nmesh: {dp: 1, tp: 64, cp: 1, pp: 1}\n" << published;
  const std::string mesh_line = std::to_string(std::count(base.begin(), base.end(), '\n') + 2);
  const std::string reason = "line " + mesh_line + ": mesh.tp: 64 does not divide heads 32 of model 'llama3_8b'; "
                             "valid: 1, 2, 4, 8 (the divisors of heads 32, kv_heads 8 and ffn_hidden 14336)";

  const Result v = ringplan("validate '" + tmp.path.string() + "' --format json");
  REQUIRE_MESSAGE(v.rc == 0, v.err);
  const auto j = nlohmann::json::parse(v.out);
  REQUIRE(j["cases"].size() == 1);
  CHECK(j["cases"][0]["mesh"] == nlohmann::json({{"dp", 1}, {"tp", 8}, {"cp", 8}, {"pp", 1}}));
  CHECK(j["cases"][0]["source"] == "test");
  CHECK(j["cases"][0]["metric"] == "step_time_s");
  CHECK(j["case_count"] == 1);
  REQUIRE(j["refused"].size() == 1);
  CHECK(j["refused"][0]["path"] == tmp.file("b_refused.yaml"));
  CHECK(j["refused"][0]["reason"].get<std::string>() == reason);

  const Result t = ringplan("validate '" + tmp.path.string() + "'");
  CHECK(t.rc == 0);
  CHECK(has(t.out, "1 cases evaluated, 1 refused"));
  CHECK(has(t.out, "b_refused.yaml: " + reason));
  CHECK(has(ringplan("validate --help").out, "Exit status"));
}

TEST_CASE("validate: the shipped validation cases all load and predict") {
  const std::string dir = std::string(RINGPLAN_SOURCE_DIR) + "/configs/validation";
  if (!fs::exists(dir)) return;  // no shipped cases: nothing to check
  const Result v = ringplan("validate '" + dir + "' --format json");
  REQUIRE_MESSAGE(v.rc == 0, v.err);
  const auto j = nlohmann::json::parse(v.out);
  REQUIRE(!j["cases"].empty());
  double max_abs = 0;
  for (const auto& c : j["cases"]) {
    const double e = c["error_pct"].get<double>();
    CHECK(std::isfinite(e));
    CHECK(c["predicted"].get<double>() > 0);
    max_abs = std::max(max_abs, std::abs(e));
  }
  CHECK(j["max_abs_error_pct"].get<double>() == doctest::Approx(max_abs));
  // Every row counted once by source folder; every time metric once by TP degree.
  int64_t by_source = 0, by_tp = 0, time_rows = 0;
  for (const auto& src : j["by_source"]) by_source += src["cases"].get<int64_t>();
  for (const auto& tp : j["time_by_tp"]) by_tp += tp["cases"].get<int64_t>();
  int64_t by_gpus = 0;
  for (const auto& band : j["time_by_gpus"]) by_gpus += band["cases"].get<int64_t>();
  for (const auto& c : j["cases"])
    time_rows += c["metric"] != "peak_memory_gib" && c["metric"] != "peak_memory_allocated_gib" ? 1 : 0;
  CHECK(by_source == static_cast<int64_t>(j["cases"].size()));
  CHECK(by_tp == time_rows);
  CHECK(by_gpus == time_rows);
  CHECK(j["by_source"].contains("korthikanti2022"));
  // Korthikanti's pairs (full recompute vs selective + SP on the same mesh) are ranking groups.
  CHECK(j["ranking"]["group_count"].get<int64_t>() >= 4);
  // A group never mixes source folders (measurement campaigns): the same job measured by two
  // sources (torchtitan's 70B FSDP 32 x TP 8 float8 of December 2024 and of June 2025) is two groups.
  std::map<std::string, std::string> folder_of;
  for (const auto& c : j["cases"])
    folder_of[c["name"].get<std::string>()] = fs::path(c["path"].get<std::string>()).parent_path().filename().string();
  for (const auto& g : j["ranking"]["groups"]) {
    std::set<std::string> folders;
    for (const auto& n : g["cases"]) folders.insert(folder_of[n.get<std::string>()]);
    CHECK_MESSAGE(folders.size() == 1, g["key"].get<std::string>());
  }
  for (const auto& g : j["ranking"]["groups"]) {
    CHECK(g["cases"].size() >= 2);
    CHECK(g["pick_regret_pct"].get<double>() >= 0.0);
    CHECK(g["pairs_ordered"].get<int64_t>() <= g["pairs"].get<int64_t>());
  }
  const Result t = ringplan("validate '" + dir + "'");
  CHECK(has(t.out, "by TP degree"));
  CHECK(has(t.out, "mean regret: model"));
}

TEST_CASE("validate --cluster predicts every case on the given profile") {
  const std::string dir = std::string(RINGPLAN_SOURCE_DIR) + "/configs/validation/korthikanti2022";
  if (!fs::exists(dir)) return;
  const Result own = ringplan("validate '" + dir + "' --format json");
  const Result other = ringplan("validate '" + dir + "' --cluster '" + std::string(RINGPLAN_SOURCE_DIR) +
                                "/configs/clusters/dgx_h100.yaml' --format json");
  REQUIRE_MESSAGE(own.rc == 0, own.err);
  REQUIRE_MESSAGE(other.rc == 0, other.err);
  const auto a = nlohmann::json::parse(own.out), b = nlohmann::json::parse(other.out);
  REQUIRE(a["cases"].size() == b["cases"].size());
  // An H100 runs these A100 layouts faster: every predicted step time is shorter.
  for (size_t i = 0; i < a["cases"].size(); ++i)
    CHECK(b["cases"][i]["predicted"].get<double>() < a["cases"][i]["predicted"].get<double>());
  const Result missing = ringplan("validate '" + dir + "' --cluster /nonexistent.yaml");
  CHECK(missing.rc == 2);
  // FP8 runs on a profile without an FP8 peak are refused one by one, with the reason; the other
  // cases are still evaluated.
  const std::string fp8 = std::string(RINGPLAN_SOURCE_DIR) + "/configs/validation/torchtitan_h100_fp8";
  const Result mixed = ringplan("validate '" + dir + "' '" + fp8 + "' --cluster '" + std::string(RINGPLAN_SOURCE_DIR) +
                                "/configs/clusters/dgx_a100_80gb.yaml' --format json");
  REQUIRE_MESSAGE(mixed.rc == 0, mixed.err);
  const auto m = nlohmann::json::parse(mixed.out);
  CHECK(m["case_count"].get<int>() == static_cast<int>(a["case_count"].get<int>()));
  REQUIRE(m["refused"].size() > 0);
  for (const auto& r : m["refused"]) CHECK(has(r["reason"].get<std::string>(), "needs a cluster with an FP8 peak"));
}

TEST_CASE("fit: held-out error by source, by TP degree and by GPU count in JSON") {
  const std::string dir = std::string(RINGPLAN_SOURCE_DIR) + "/configs/validation/korthikanti2022";
  if (!fs::exists(dir)) return;
  const Result f = ringplan("fit '" + dir + "' --folds 2 --format json");
  REQUIRE_MESSAGE(f.rc == 0, f.err);
  const auto j = nlohmann::json::parse(f.out);
  REQUIRE(j["heldout_by_tp"].contains("8"));  // every Table 5 run has TP 8
  CHECK(j["heldout_by_tp"]["8"]["cases"].get<int64_t>() == j["heldout"]["cases"].get<int64_t>());
  // Throughput terms: |bias| <= mean |error| <= max |error|.
  const auto& t8 = j["heldout_by_tp"]["8"];
  CHECK(std::abs(t8["mean_signed_error_pct"].get<double>()) <= t8["mean_abs_error_pct"].get<double>() + 1e-9);
  CHECK(t8["mean_abs_error_pct"].get<double>() <= t8["max_abs_error_pct"].get<double>() + 1e-9);
  CHECK(std::isfinite(j["heldout_by_tp"]["8"]["mean_signed_error_pct"].get<double>()));
  // By GPU count: Table 5's runs are on 8 (22B), 64 (175B), 280 (530B) and 512 (1T) GPUs, two
  // of each: 2 in "1-8", 2 in "9-64", 4 in "65-512".
  const auto& byg = j["heldout_by_gpus"];
  REQUIRE(byg.size() == 3);
  CHECK(byg["1-8"]["cases"].get<int64_t>() == 2);
  CHECK(byg["9-64"]["cases"].get<int64_t>() == 2);
  CHECK(byg["65-512"]["cases"].get<int64_t>() == 4);
  // The default: the weight chosen by cross-validation from the grid, with its scores.
  CHECK(j["prior_weight_mode"] == "cross_validated");
  REQUIRE(j["prior_weight_scores"].size() == 8);
  double best = 1e300;
  for (const auto& sc : j["prior_weight_scores"]) best = std::min(best, sc["heldout_mean_abs_error_pct"].get<double>());
  for (const auto& sc : j["prior_weight_scores"])
    if (sc["weight"].get<double>() == j["prior_weight"].get<double>())
      CHECK(sc["heldout_mean_abs_error_pct"].get<double>() == best);
  CHECK(j["fold_prior_weights"].size() == 2);
  // A rigid prior keeps the base profile: every fitted value equals the base's.
  const Result rigid = ringplan("fit '" + dir + "' --folds 2 --prior-weight 1e6 --format json");
  REQUIRE_MESSAGE(rigid.rc == 0, rigid.err);
  const auto r = nlohmann::json::parse(rigid.out);
  CHECK(r["prior_weight"].get<double>() == 1e6);
  CHECK(r["prior_weight_mode"] == "fixed");
  CHECK(r["prior_weight_scores"].empty());
  CHECK(r["fitted"] != j["fitted"]);
  for (const char* bad : {"-1", "abc", "1x", "nan"}) {
    const Result b = ringplan("fit '" + dir + "' --prior-weight " + bad);
    CHECK(b.rc == 2);
    CHECK(has(b.err, "--prior-weight"));
  }
}

TEST_CASE("fit on a profile with measured backward curves: they move with their family and say so") {
  const std::string dir = std::string(RINGPLAN_SOURCE_DIR) + "/configs/validation/llm_foundry_h100";
  if (!fs::exists(dir)) return;
  const TempDir tmp;
  // The measured kernel curves alone (the shipped training scales removed): the written profile
  // then holds the fitted values as they are.
  std::string shipped = read_file(std::string(RINGPLAN_SOURCE_DIR) + "/configs/clusters/dgx_h100.yaml");
  const size_t scale = shipped.find("\n  training_scale:");
  REQUIRE(scale != std::string::npos);
  shipped.erase(scale, shipped.find('\n', scale + 1) - scale);
  const std::string h100 = tmp.file("kernels.yaml", shipped);
  const std::string out = (tmp.path / "fitted.yaml").string();
  // A fixed weight (no nested search) and 2 folds keep it short; matmul fitted, attention held.
  const std::string cmd = "fit '" + dir + "' --cluster '" + h100 + "' --folds 2 --prior-weight 0.3 --fix attention -o '" + out + "'";
  const Result j = ringplan(cmd + " --format json");
  REQUIRE_MESSAGE(j.rc == 0, j.err);
  const auto r = nlohmann::json::parse(j.out);
  REQUIRE(r["backward_curves_moved"].contains("matmul_backward"));
  CHECK_FALSE(r["backward_curves_moved"].contains("attention_backward"));  // held: not moved
  // The curves' max as the profiles write them ("  matmul: {max: 0.68, half_tflop: ...}").
  auto max_of = [](const std::string& text, const std::string& key) {
    const size_t at = text.find("  " + key + ": {max: ");
    REQUIRE_MESSAGE(at != std::string::npos, key);
    return std::stod(text.substr(at + key.size() + 10));
  };
  const std::string base = read_file(h100), fitted = read_file(out);
  const double ratio = max_of(base, "matmul_backward") / max_of(base, "matmul");
  CHECK(max_of(fitted, "matmul_backward") == doctest::Approx(max_of(fitted, "matmul") * ratio));
  CHECK(max_of(fitted, "matmul") == doctest::Approx(r["fitted"]["matmul.max"].get<double>()).epsilon(1e-6));
  CHECK(r["backward_curves_moved"]["matmul_backward"]["max"].get<double>() ==
        doctest::Approx(max_of(fitted, "matmul_backward")));
  CHECK(max_of(fitted, "attention_backward") == doctest::Approx(max_of(base, "attention_backward")));
  const Result t = ringplan(cmd);
  REQUIRE_MESSAGE(t.rc == 0, t.err);
  CHECK(has(t.out, "matmul_backward"));
  CHECK(has(t.out, "at the base's ratio to the forward"));
  CHECK_FALSE(has(t.out, "attention_backward"));
}

TEST_CASE("simulate --trace writes the event simulator's ring timeline, cp=1 has no CP group") {
  const std::string exp = "'" + kConfigs + "default.yaml'";
  TempDir tmp;
  const std::string trace = tmp.file("ring.json");
  const Result a = ringplan("simulate " + exp + " --mesh dp=4,tp=2,cp=8,pp=1 --cp-scheme contiguous --trace '" + trace + "'");
  // This layout needs more memory than an H100 has: reported in full, trace written, exit 3.
  REQUIRE_MESSAGE(a.rc == 3, a.err);
  CHECK(has(a.out, "DOES NOT FIT"));
  const auto j = nlohmann::json::parse(read_file(trace));
  const auto& events = j.contains("traceEvents") ? j["traceEvents"] : j;
  // Every one of the 8 ranks computes in the forward; causal contiguous work grows with the rank.
  std::vector<double> busy_us(8, 0.0);
  for (const auto& ev : events) {
    // pid = rank, tid 0 = compute lane: the forward's compute of each rank.
    if (ev.value("ph", "") != "X" || ev.value("tid", -1) != 0 || ev.value("cat", "") != "forward") continue;
    const int rank = ev.value("pid", -1);
    if (rank >= 0 && rank < 8) busy_us[rank] += ev["dur"].get<double>();
  }
  for (double b : busy_us) CHECK(b > 0.0);
  CHECK(busy_us[7] > 1.5 * busy_us[0]);
  const Result b = ringplan("simulate " + exp + " --mesh dp=32,tp=2,cp=1,pp=1 --trace '" + tmp.file("none.json") + "'");
  CHECK(b.rc == 2);
  CHECK(has(b.err, "cp=1"));
}

TEST_CASE("plan -o stopped by the file size limit keeps the old plan and exits 1 naming the path") {
  TempDir tmp;
  const std::string plan_path = tmp.file("existing.yaml");
  const std::string exp = "'" + kConfigs + "default.yaml'";
  REQUIRE(ringplan("plan " + exp + " --top 1 -o '" + plan_path + "'").rc == 0);
  const std::string good = read_file(plan_path);
  REQUIRE(good.size() > 1024);
  // Before: SIGXFSZ killed ringplan mid-write and left a 1 KiB fragment that simulate accepted.
  const Result r = ringplan_after("ulimit -f 1;", "plan " + exp + " --top 1 -o '" + plan_path + "'");
  CHECK(r.rc == 1);
  CHECK_MESSAGE(has(r.err, plan_path + ": cannot write: write: File too large"), r.err);
  CHECK(read_file(plan_path) == good);
  CHECK(std::distance(fs::directory_iterator(tmp.path), fs::directory_iterator{}) == 1);  // no temporary left
}

TEST_CASE("a plan file cut short is refused with file:line by simulate and emit") {
  TempDir tmp;
  const std::string plan_path = tmp.file("plan.yaml"), cut_path = tmp.file("cut.yaml");
  REQUIRE(ringplan("plan '" + kConfigs + "default.yaml' --top 1 -o '" + plan_path + "'").rc == 0);
  const std::string text = read_file(plan_path);
  CHECK(has(text, "\n# end of ringplan plan\n"));
  // Cut just before `fits:`: the rest is still a valid plan YAML.
  std::ofstream(cut_path) << text.substr(0, text.find("  fits:"));
  for (const std::string& cmd : {"simulate '" + cut_path + "'", "emit '" + cut_path + "' --format megatron"}) {
    const Result r = ringplan(cmd);
    CHECK_MESSAGE(r.rc == 2, cmd);
    CHECK_MESSAGE(has(r.err, cut_path + ":"), r.err);
    CHECK_MESSAGE(has(r.err, "cut short"), r.err);
  }
}

TEST_CASE("outputs that cannot be written: a missing folder exits 2 before work, /dev/full exits 1") {
  TempDir tmp;
  const std::string exp = "'" + kConfigs + "default.yaml'";
  const std::string plan_path = tmp.file("plan.yaml");
  REQUIRE(ringplan("plan " + exp + " --top 1 -o '" + plan_path + "'").rc == 0);
  const std::string missing = tmp.file("no/such/out");
  for (const std::string& cmd :
       {"plan " + exp + " -o '" + missing + "'", "report " + exp + " -o '" + missing + "'",
        "emit '" + plan_path + "' --format megatron -o '" + missing + "'",
        "simulate '" + plan_path + "' --cp-comm ring --trace '" + missing + "'"}) {
    const Result r = ringplan(cmd);
    CHECK_MESSAGE(r.rc == 2, cmd, r.err);
    CHECK_MESSAGE(has(r.err, missing + ": cannot write: folder"), cmd, r.err);
    CHECK_MESSAGE(r.out.empty(), cmd);  // refused before the search or prediction printed anything
  }
  for (const std::string& cmd :
       {"plan " + exp + " -o /dev/full", "report " + exp + " -o /dev/full",
        "emit '" + plan_path + "' --format megatron -o /dev/full", "simulate '" + plan_path + "' --cp-comm ring --trace /dev/full"}) {
    const Result r = ringplan(cmd);
    CHECK_MESSAGE(r.rc == 1, cmd, r.err);
    CHECK_MESSAGE(has(r.err, "/dev/full: cannot write: write: No space left on device"), cmd, r.err);
  }
  CHECK(fs::is_character_file("/dev/full"));
}

TEST_CASE("the Triton flash kernel: simulate and plan name it, validate on a profile without its curve refuses the case") {
  const std::string c = std::string(RINGPLAN_SOURCE_DIR) +
                        "/configs/validation/llm_foundry_a100/llm_foundry_a100_mpt_7b_s8192_g8_mb8_ga2_ac.yaml";
  const Result sim = ringplan("simulate '" + c + "'");
  CHECK(sim.rc == 0);
  // The case's full recompute is early-stopped (PyTorch 2.1's non-reentrant checkpoint): named too.
  CHECK(has(sim.out, "global batch 128 sequences, Triton flash kernel, full recompute stops before the MLP down projection\n"));
  const Result plan = ringplan("plan '" + c + "'");
  CHECK(plan.rc == 0);
  CHECK(has(plan.out, ", Triton flash kernel, full recompute stops before the MLP down projection\n"));
  // Without full recompute simulate does not name it.
  const Result none = ringplan("simulate '" + c + "' --recompute none");
  CHECK(has(none.out, "global batch 128 sequences, Triton flash kernel\n"));
  const Result v = ringplan("validate '" + c + "' --cluster '" + std::string(RINGPLAN_SOURCE_DIR) +
                            "/configs/clusters/grand_teton_h100.yaml' --format json");
  // Nothing evaluated: the command fails (exit 2) but still lists the case and its reason.
  CHECK(v.rc == 2);
  CHECK(has(v.out + v.err, "training.flash_kernel triton needs a cluster with efficiency.attention_flash_triton"));
}

TEST_CASE("FlashAttention-2: simulate names the kernel of torchtitan's H100 runs, a profile without its curve refuses them") {
  const std::string c = std::string(RINGPLAN_SOURCE_DIR) +
                        "/configs/validation/torchtitan_h100_bf16/torchtitan_h100_llama3_8b_fsdp8_eager.yaml";
  const Result sim = ringplan("simulate '" + c + "'");
  CHECK(sim.rc == 0);
  CHECK(has(sim.out, ", FlashAttention-2 kernel\n"));
  const Result v = ringplan("validate '" + c + "' --cluster '" + std::string(RINGPLAN_SOURCE_DIR) +
                            "/configs/clusters/b200.yaml' --format json");
  CHECK(v.rc == 2);
  CHECK(has(v.out + v.err, "training.flash_kernel fa2 needs a cluster with efficiency.attention_flash_fa2"));
}
