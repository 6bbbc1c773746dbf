/* Thread count shared by every kernel's parallel regions.
 * A global (not omp_set_num_threads) so that the setting made from one Python
 * thread applies to kernels launched from any other. */
#include <stdlib.h>
#include "minigrad.h"
#include "internal.h"
#ifdef _OPENMP
#include <omp.h>
#endif

static int g_num_threads = 0; /* 0: not chosen yet, use the default */

int mg_has_openmp(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

int mg_default_num_threads(void)
{
#ifdef _OPENMP
    /* omp_get_max_threads honours OMP_NUM_THREADS and the CPU affinity mask. */
    int n = omp_get_max_threads();
    return n > 0 ? n : 1;
#else
    return 1;
#endif
}

void mg_set_num_threads(int n)
{
    g_num_threads = n > 0 ? n : 1;
}

int mg_get_num_threads(void)
{
    if (g_num_threads <= 0)
        g_num_threads = mg_default_num_threads();
    return g_num_threads;
}
