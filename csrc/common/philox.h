// Philox4x32-10 counter-based random number generator (Salmon, Moraes, Dror, Shaw:
// "Parallel random numbers: as easy as 1, 2, 3", SC'11). Header-only, usable from host
// and CUDA device code. A block of 4 x 32-bit words is a pure function of a 128-bit
// counter and a 2 x 32-bit key (initkit's seeds are 63-bit: see init.new_seed), which is what
// lets every element's random numbers depend only on (seed, stream, logical index).
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define INITKIT_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define INITKIT_HOST_DEVICE inline __attribute__((always_inline))
#endif

namespace initkit {

struct PhiloxWords {
  uint32_t w[4];
};

constexpr uint32_t kPhiloxM0 = 0xD2511F53u;
constexpr uint32_t kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u;
constexpr uint32_t kPhiloxW1 = 0xBB67AE85u;

INITKIT_HOST_DEVICE void philox_round(uint32_t& c0, uint32_t& c1, uint32_t& c2, uint32_t& c3,
                                      uint32_t k0, uint32_t k1) {
  const uint64_t p0 = static_cast<uint64_t>(kPhiloxM0) * c0;
  const uint64_t p1 = static_cast<uint64_t>(kPhiloxM1) * c2;
  const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
  const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
  c0 = hi1 ^ c1 ^ k0;
  c1 = lo1;
  c2 = hi0 ^ c3 ^ k1;
  c3 = lo0;
}

// Ten rounds; the key is bumped by the Weyl constants before every round after the first.
INITKIT_HOST_DEVICE PhiloxWords philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3,
                                              uint32_t k0, uint32_t k1) {
#if defined(__CUDACC__)
#pragma unroll
#endif
  for (int round = 0; round < 10; ++round) {
    philox_round(c0, c1, c2, c3, k0, k1);
    k0 += kPhiloxW0;
    k1 += kPhiloxW1;
  }
  return PhiloxWords{{c0, c1, c2, c3}};
}

}  // namespace initkit
