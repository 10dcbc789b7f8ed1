#ifndef PS_COMMON_SPLITMIX64_H_
#define PS_COMMON_SPLITMIX64_H_

#include <cstdint>

namespace ps::common {

// SplitMix64 (Steele, Lea and Flood, 2014): the output of the generator
// whose state is `x`. A fixed bijection of 64 bits, the same in every
// process, build and machine, unlike absl::Hash or std::hash: what files
// hold (hashed feature ids, data generated from a seed) may depend on it.
// SplitMix64(0) == 0xe220a8397b1dcdaf, the reference sequence's first value.
constexpr uint64_t SplitMix64(uint64_t x) {
  uint64_t z = x + 0x9e3779b97f4a7c15;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
  z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
  return z ^ (z >> 31);
}

// The SplitMix64 generator: a stream of 64-bit values from a seed. Cheap
// to seed, so each row of a generated data set can have its own stream.
class SplitMix64Stream {
 public:
  explicit SplitMix64Stream(uint64_t seed) : state_(seed) {}

  uint64_t Next() {
    const uint64_t value = SplitMix64(state_);
    state_ += 0x9e3779b97f4a7c15;
    return value;
  }

  // Uniform in [0, 1), from the top 53 bits.
  double NextUnit() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }

 private:
  uint64_t state_;
};

}  // namespace ps::common

#endif  // PS_COMMON_SPLITMIX64_H_
