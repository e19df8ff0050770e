/* Loop threads (the relay's workers, the health checker): one per core, optionally pinned. */
#ifndef SLB_IO_THREADS_H
#define SLB_IO_THREADS_H

#include <stdbool.h>

#include "io/threads-t.h"

/* Starts n threads running fn(args[i]) (args may be NULL: fn(NULL)), named "slb-w<i>".
 * With pin, thread i is bound to the i-th CPU of the process's affinity mask (wrapping).
 * Returns 0, -EINVAL (n is 0 or above SLB_THREADS_MAX), or pthread_create's error; on
 * error workers->n threads are running and must still be joined. */
int slb_threads_start(struct slb_threads *workers, unsigned n, bool pin, void *(*fn)(void *),
                      void *args[]);

/* Joins every started thread; results[i] (if results is not NULL) gets thread i's return.
 * Returns 0 or the first pthread_join error. */
int slb_threads_join(struct slb_threads *workers, void *results[]);

/* The CPU that slb_threads_start pins worker i to, or a negative errno. */
int slb_thread_cpu(unsigned i);

#endif
