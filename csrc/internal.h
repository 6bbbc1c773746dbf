/* Helpers shared by the kernel files; not part of the public C API. */
#ifndef MINIGRAD_INTERNAL_H
#define MINIGRAD_INTERNAL_H
#include <stdint.h>

/* Parallelise a loop only when it has enough work to pay for waking threads:
 * a region with fewer than this many elements runs on the calling thread. */
#define MG_PAR_MIN_ELEMS 32768

#ifdef _OPENMP
#define MG_THREADS(work) ((work) >= MG_PAR_MIN_ELEMS ? mg_get_num_threads() : 1)
#endif

#endif
