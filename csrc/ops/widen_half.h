// float16 -> float32 widening of host arrays, for the numpy side of the array bridge.
//
// Why: numpy converts half floats one element at a time (4.2 ns an element measured on the 2-core
// CI machine, 2026-12-04), and float16 features (the CLI's --float16, LUPerson-NL's 5.4 GB) are
// widened on every pass of denoising and of every op that computes in float32. F16C converts
// eight per instruction; both give numpy's values, subnormals and infinities included (a NaN stays
// a NaN: F16C sets the quiet bit of a signalling one, the scalar path keeps its bits).
//
// Device contract: CPU only (torch and cupy convert on their own devices).
#pragma once
#include <cstdint>

namespace cion {

struct WidenHalfParams {
  const uint16_t* src = nullptr;  // [count] IEEE 754 binary16 bit patterns
  float* dst = nullptr;           // [count] output: every entry is written
  int64_t count = 0;
};

void widen_half_cpu(const WidenHalfParams& p);

}  // namespace cion
