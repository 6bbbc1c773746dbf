/* Helpers shared by the kernel files; not part of the public C API. */
#ifndef MINIGRAD_INTERNAL_H
#define MINIGRAD_INTERNAL_H
#include <stddef.h>
#include <stdint.h>

/* Parallelise a loop only when it has enough work to pay for waking threads:
 * a region with fewer than this many elements runs on the calling thread. */
#define MG_PAR_MIN_ELEMS 32768
#define MG_THREADS(work) ((work) >= MG_PAR_MIN_ELEMS ? mg_get_num_threads() : 1)

/* OpenMP pragmas that vanish in a serial build. */
#ifdef _OPENMP
#define MG_OMP(directive) _Pragma(#directive)
#else
#define MG_OMP(directive)
#endif

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
           ? mg_get_num_threads() : 1;
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
