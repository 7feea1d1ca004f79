// Unit constants shared by the YAML loader, the cost model and reports, so that a GiB or a
// TFLOP/s means the same everywhere. Config files state units in key names (memory_gib,
// bandwidth_gbps, latency_us, peak_tflops); config.hpp stores SI base units (bytes, bytes/s,
// seconds, FLOP/s). Conversions happen only in core/config_yaml.cpp and in reports.
#pragma once

namespace ringplan::units {

inline constexpr double kib_bytes = 1024.0;
inline constexpr double mib_bytes = 1024.0 * 1024.0;
inline constexpr double gib_bytes = 1024.0 * 1024.0 * 1024.0;  // memory capacities (GiB)
inline constexpr double gb_bytes = 1e9;                        // bandwidths are decimal (GB/s)
inline constexpr double tflop = 1e12;                          // FLOPs in one TFLOP
inline constexpr double us_s = 1e-6;                           // one microsecond in seconds

}  // namespace ringplan::units
