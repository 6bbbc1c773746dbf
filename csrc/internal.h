/* Helpers shared by the kernel files; not part of the public C API. */
#ifndef MINIGRAD_INTERNAL_H
#define MINIGRAD_INTERNAL_H
#include <math.h>
#include <stddef.h>
#include <stdint.h>

/* Parallelise a loop only when it has enough work to pay for waking threads:
 * a region with fewer than this many elements runs on the calling thread. */
#define MG_PAR_MIN_ELEMS 32768
#define MG_THREADS(work) ((work) >= MG_PAR_MIN_ELEMS ? mg_team_threads() : 1)

/* Threads for one parallel region: mg_get_num_threads(), or fewer while other
 * processes keep the CPUs busy (threads.c). Results never depend on it. */
int mg_team_threads(void);

/* OpenMP pragmas that vanish in a serial build; the caller's place in its team
 * (0 of 1 outside a parallel region, and in a serial build). */
#ifdef _OPENMP
#include <omp.h>
#define MG_OMP(directive) _Pragma(#directive)
static inline int mg_thread_num(void) { return omp_get_thread_num(); }
static inline int mg_team_size(void) { return omp_get_num_threads(); }
static inline int mg_in_parallel(void) { return omp_in_parallel(); }
#else
#define MG_OMP(directive)
static inline int mg_thread_num(void) { return 0; }
static inline int mg_team_size(void) { return 1; }
static inline int mg_in_parallel(void) { return 0; }
#endif

/* A parallel region costs about 0.3 us even on one thread (libgomp still sets
 * up a team), as much as a small kernel's whole work. MG_PARALLEL(threads,
 * clauses, block) runs block on a team of `threads`, or, when that is 1 and
 * no parallel region is active around the call, inline on the calling thread:
 * its `omp for` loops then bind to the caller's implicit team of one and run
 * every iteration, and its reductions write the variable directly. Inside an
 * active region (a kernel called from another kernel's threads) it always opens
 * its own region, so that its work-sharing never binds to the outer team. */
#define MG_PARALLEL(threads, clauses, ...)                                       \
    do {                                                                          \
        const int mg_team_ = (threads);                                           \
        if (mg_team_ > 1 || mg_in_parallel()) {                                   \
            MG_OMP(omp parallel num_threads(mg_team_) clauses)                    \
            __VA_ARGS__                                                           \
        } else {                                                                  \
            __VA_ARGS__                                                           \
        }                                                                         \
    } while (0)

/* Element-wise loops are compiled twice, for AVX2 and for baseline x86-64, and
 * the loader picks one per CPU (GCC function multi-versioning). Without it the
 * wheel's baseline build would use 4-wide SSE only. The two versions compute
 * the same bits: -ffp-contract=off keeps FMA out of both. Outlined OpenMP
 * bodies are not cloned, so the cloned function is the per-thread chunk. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define MG_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define MG_CLONES
#endif
/* Element-wise kernels hand chunks of this many elements to threads. */
#define MG_CHUNK 8192

/* Subnormal floats. Late in training, softmax outputs and gradients underflow
 * into float32 subnormals, and x86 arithmetic on subnormals is many times
 * slower. Every kernel therefore runs with flush-to-zero and
 * denormals-are-zero set on each thread doing its work, and restores the
 * caller's mode afterwards (NumPy on the same thread keeps IEEE behaviour).
 * Results can differ from strict IEEE only where a value is below 1.2e-38,
 * far under anything that changes a float32 training run. On non-x86 CPUs
 * this is a no-op (IEEE subnormals). Usage, inside each parallel region:
 *     MG_FTZ_BEGIN; ...work...; MG_FTZ_END;  */
#if defined(__x86_64__) || defined(__SSE2__) || defined(_M_X64)
#include <xmmintrin.h>
#define MG_FTZ_DAZ_BITS 0x8040u /* FTZ (bit 15) | DAZ (bit 6) of MXCSR */
#define MG_FTZ_BEGIN                                       \
    const unsigned int mg_saved_csr_ = _mm_getcsr();       \
    _mm_setcsr(mg_saved_csr_ | MG_FTZ_DAZ_BITS)
#define MG_FTZ_END _mm_setcsr(mg_saved_csr_)
#else
#define MG_FTZ_BEGIN ((void)0)
#define MG_FTZ_END ((void)0)
#endif

/* Run body(offset, length) over [0, n) in MG_CHUNK pieces spread over the threads,
 * flush-to-zero on each. A chunk's bounds depend on n only, never on the thread count. */
#define MG_FOR_CHUNKS(n, body)                                                    \
    do {                                                                          \
        const int64_t n_ = (n), chunks_ = (n_ + MG_CHUNK - 1) / MG_CHUNK;         \
        MG_PARALLEL(MG_THREADS(n_), , {                                           \
            MG_FTZ_BEGIN;                                                         \
            MG_OMP(omp for schedule(static))                                      \
            for (int64_t c_ = 0; c_ < chunks_; c_++) {                            \
                const int64_t off = c_ * MG_CHUNK;                                \
                const int64_t len = n_ - off < MG_CHUNK ? n_ - off : MG_CHUNK;    \
                body;                                                             \
            }                                                                     \
            MG_FTZ_END;                                                           \
        });                                                                       \
    } while (0)

/* c ? a : b for floats, as bit operations. GCC keeps IEEE exceptions
 * observable (-ftrapping-math, the default), so it will not evaluate both arms
 * of a ?: when one is float arithmetic that could raise one, and a loop with
 * such a ?: stays scalar; computing both values and blending their bits lets it
 * vectorise, with exactly the bits the ?: would give. */
static inline float mg_select(int c, float a, float b)
{
    union { float f; uint32_t u; } ua = {.f = a}, ub = {.f = b}, r;
    const uint32_t m = 0u - (uint32_t)(c != 0);
    r.u = (ua.u & m) | (ub.u & ~m);
    return r.f;
}

/* exp(t) for t <= 0 (or NaN), from float arithmetic only, so that the loops
 * using it vectorise and every build (AVX2 clone, baseline clone, NumPy twin)
 * rounds it alike: libm's expf is a call per element, and its vector forms
 * need -ffast-math and differ from it in the last bit. Cephes' expf scheme:
 * t = n*ln2 + r with n = rint(t/ln2) (by the 1.5*2^23 rounding trick, which
 * needs no SSE4.1) and |r| <= ln2/2, ln2 split in two so n*C1 is exact, a
 * degree-7 polynomial for exp(r), then an exact scaling by 2^n built in the
 * exponent bits. About 1 ulp from the true value. Results below FLT_MIN
 * (t < -87.3365) are returned as 0, never as subnormals, so flush-to-zero cannot
 * change them; NaN is returned as it came. */
static inline float mg_exp_nonpos(float t)
{
    /* -87.33654f: the smallest float whose exp is at least FLT_MIN */
    const float tc = mg_select(t >= -87.33654f, t, -87.33654f); /* NaN too: replaced below */
    const float shifter = 12582912.0f;            /* 1.5 * 2^23 */
    const float n = (tc * 1.44269504088896341f + shifter) - shifter;
    const float r = (tc - n * 0.693359375f) - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    union { uint32_t u; float f; } scale;
    scale.u = (uint32_t)((int32_t)n + 127) << 23; /* n in [-126, 0]: a normal power of 2 */
    const float e = p * scale.f;
    return mg_select(t >= -87.33654f, e, mg_select(t != t, t, 0.0f));
}

/* sigmoid(x) without overflow: 1/(1+e) for x >= 0, e/(1+e) below, where
 * e = exp(-|x|) <= 1. One division: the numerator is chosen, not the quotient.
 * NaN in, NaN out. Also writes e for callers that reuse it (the BCE loss). */
static inline float mg_sigmoid_e(float x, float *e_out)
{
    const float e = mg_exp_nonpos(-fabsf(x));
    *e_out = e;
    return (x >= 0.0f ? 1.0f : e) / (1.0f + e);
}

/* Column sums shared by the bias gradient and the fused relu backward (bias.c):
 * db[j] = sum_i g[i, j] with rows in increasing order, g = dY, or, when y is
 * given, g = dX = dY where Y > 0 else 0 (written to dx). db may be NULL. */
int mg_column_sums(const float *y, const float *dy, float *dx, float *db,
                   int64_t rows, int64_t cols);

/* ------------------------------------------------------------ GEMM internals
 * shared by gemm.c (the dense driver) and gemm_sparse.c (zero-skipping). */
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define MG_X86_AVX2 1 /* AVX2 code can be compiled (it runs only if the CPU has it) */
#endif

/* What a KC slice's epilogue adds to alpha*AB before storing it in C. */
enum { MG_PREV_ZERO, MG_PREV_C, MG_PREV_BETA_C };

/* The slice starting at p0: the first one adds beta*C (nothing when beta is
 * 0, so C is never read; C itself when beta is 1), later ones add C. */
static inline int mg_prev_for_slice(int64_t p0, float beta)
{
    return p0 > 0 ? MG_PREV_C : beta == 0.0f ? MG_PREV_ZERO
           : beta == 1.0f ? MG_PREV_C : MG_PREV_BETA_C;
}

static inline int64_t mg_min64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t mg_ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

#ifdef MG_X86_AVX2
#include <immintrin.h>
/* The AVX2 GEMM epilogue, one piece for the dense micro-kernel and the
 * zero-skipping kernel so that both round every C element alike: for one KC
 * slice, v = alpha*AB (when alpha != 1), plus C or beta*C (prev), then on the
 * last slice plus bias and max(0, v) for relu (which keeps NaN); stored to 8
 * columns of C, masked by m unless full. bias: the 8 bias values, preloaded. */
struct mg_epi8 { __m256 alpha, beta; int scale, prev, last, relu; };

__attribute__((target("avx2,fma"), always_inline))
static inline void mg_epilogue8(float *c, __m256 v, __m256i m, int full, const __m256 *bias,
                                const struct mg_epi8 *e)
{
#define MG_LD_C (full ? _mm256_loadu_ps(c) : _mm256_maskload_ps(c, m))
    if (e->scale) v = _mm256_mul_ps(e->alpha, v);
    if (e->prev == MG_PREV_C) v = _mm256_add_ps(v, MG_LD_C);
    else if (e->prev == MG_PREV_BETA_C) v = _mm256_add_ps(v, _mm256_mul_ps(e->beta, MG_LD_C));
#undef MG_LD_C
    if (e->last) {
        if (bias) v = _mm256_add_ps(v, *bias);
        if (e->relu) v = _mm256_max_ps(_mm256_setzero_ps(), v);
    }
    if (full) _mm256_storeu_ps(c, v);
    else _mm256_maskstore_ps(c, m, v);
}
#endif

/* One mg_gemm call, as validated by mg_gemm. */
struct mg_gemm_args {
    int trans_a, trans_b;
    int64_t m, n, k;
    float alpha, beta;
    const float *a, *b;
    int64_t lda, ldb;
    float *c;
    int64_t ldc;
    const float *bias;
    int relu;
};


/* The calling thread's grow-only GEMM workspace (NULL when out of memory). */
float *mg_gemm_ws_get(size_t nfloats);

/* Threads for an m x n x k GEMM product: one below MG_GEMM_PAR_MIN_FLOPS,
 * where waking a thread team costs more than it saves. */
#define MG_GEMM_PAR_MIN_FLOPS 400000.0
static inline int mg_gemm_threads(int64_t m, int64_t n, int64_t k)
{
    return 2.0 * (double)m * (double)n * (double)k >= MG_GEMM_PAR_MIN_FLOPS
           ? mg_team_threads() : 1;
}

/* What a special GEMM path returns when it does not apply (C untouched). */
#define MG_GEMM_DECLINED 1

/* Zero-skipping GEMM (gemm_sparse.c) for an AVX2 mg_gemm whose KC slices are
 * kc deep: MG_OK or MG_ENOMEM when it did the product, MG_GEMM_DECLINED
 * when op(A) is not sparse enough or the shape does not suit. */
int mg_gemm_sparse(const struct mg_gemm_args *g, int64_t kc);

/* Narrow-output GEMM (gemm_narrow.c), n <= 10, for an AVX2 mg_gemm: MG_OK or
 * MG_ENOMEM when it did the product, MG_GEMM_DECLINED otherwise. */
#define MG_NARROW_MAX_BT (1 << 20) /* floats of packed op(B), bounds the workspace */
int mg_gemm_narrow(const struct mg_gemm_args *g);

#endif
