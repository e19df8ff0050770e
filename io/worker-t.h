/* Worker thread set types. */
#ifndef SLB_IO_WORKER_T_H
#define SLB_IO_WORKER_T_H

#include <pthread.h>

#define SLB_WORKERS_MAX 256 /* loop ids are 8 bits */

/* Owned by the caller of slb_workers_start (usually main); joined by it. */
struct slb_workers {
    unsigned n; /* threads started */
    pthread_t threads[SLB_WORKERS_MAX];
};

#endif
