/* Thread set types: the threads that each run one loop (workers, the health checker). */
#ifndef SLB_IO_THREADS_T_H
#define SLB_IO_THREADS_T_H

#include <pthread.h>

#define SLB_THREADS_MAX 256u /* one loop each, and loop ids are 8 bits */

/* Owned by the caller of slb_threads_start (usually main); joined by it. */
struct slb_threads {
    unsigned n; /* threads started */
    pthread_t threads[SLB_THREADS_MAX];
};

#endif
