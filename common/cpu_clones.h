#ifndef PS_COMMON_CPU_CLONES_H_
#define PS_COMMON_CPU_CLONES_H_

// PS_CPU_CLONES before a function whose loop the compiler vectorises
// builds it also for AVX2 and AVX-512, and the program runs the best
// version the CPU has, chosen once when it loads (GCC's and Clang's
// target_clones: an ifunc). One portable binary so gets the CPU's own
// vector width: SSE2 lacks even a 32-bit integer max, which the finite
// check is made of. For loops over many values only: a call goes through
// a pointer and is never inlined; and not on templates (Clang 14 refuses
// them), so a template loop is inlined into a plain function that carries
// the attribute. The build turns floating-point contraction off
// (-ffp-contract=off), so the AVX versions give the portable one's bits:
// sync training stays reproducible across CPUs.
//
// Not under ThreadSanitizer: it instruments the loader's resolver, which
// runs before TSan is set up, and the program dies at load.
#if defined(__SANITIZE_THREAD__)
#define PS_CPU_CLONES_UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define PS_CPU_CLONES_UNDER_TSAN 1
#endif
#endif

#if defined(__x86_64__) && !defined(PS_NATIVE_BUILD) && \
    !defined(PS_CPU_CLONES_UNDER_TSAN)
#define PS_CPU_CLONES \
  __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define PS_CPU_CLONES
#endif

#endif  // PS_COMMON_CPU_CLONES_H_
