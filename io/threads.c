/*
 * Loop threads: one per core, each running one loop (the consumer's fn). Pinning keeps
 * a worker's ring, connections and caches on one core (shared-nothing shards).
 *
 * Thread: start and join run on the caller's thread (main); fn runs on each worker.
 */
#include "io/threads.h"

#include <errno.h>
#include <sched.h>
#include <stdio.h>

int slb_thread_cpu(unsigned i)
{
    cpu_set_t allowed;
    CPU_ZERO(&allowed);
    if (sched_getaffinity(0, sizeof(allowed), &allowed) < 0)
        return -errno;
    int count = CPU_COUNT(&allowed);
    if (count <= 0)
        return -EINVAL;
    unsigned want = i % (unsigned)count;
    for (int cpu = 0, seen = 0; cpu < CPU_SETSIZE; cpu++) {
        if (!CPU_ISSET(cpu, &allowed))
            continue;
        if ((unsigned)seen++ == want)
            return cpu;
    }
    return -EINVAL;
}

int slb_threads_start(struct slb_threads *w, unsigned n, bool pin, void *(*fn)(void *),
                      void *args[])
{
    w->n = 0;
    if (n == 0 || n > SLB_THREADS_MAX || !fn)
        return -EINVAL;
    for (unsigned i = 0; i < n; i++) {
        pthread_attr_t attr;
        int rc = pthread_attr_init(&attr);
        if (rc)
            return -rc;
        if (pin) {
            int cpu = slb_thread_cpu(i);
            if (cpu < 0) {
                pthread_attr_destroy(&attr);
                return cpu;
            }
            cpu_set_t one;
            CPU_ZERO(&one);
            CPU_SET(cpu, &one);
            /* Set before the thread exists, so it never runs anywhere else. */
            rc = pthread_attr_setaffinity_np(&attr, sizeof(one), &one);
        }
        if (!rc)
            rc = pthread_create(&w->threads[i], &attr, fn, args ? args[i] : NULL);
        pthread_attr_destroy(&attr);
        if (rc)
            return -rc;
        char name[16];
        snprintf(name, sizeof(name), "slb-w%u", i);
        (void)pthread_setname_np(w->threads[i], name);
        w->n = i + 1;
    }
    return 0;
}

int slb_threads_join(struct slb_threads *w, void *results[])
{
    int ret = 0;
    for (unsigned i = 0; i < w->n; i++) {
        int rc = pthread_join(w->threads[i], results ? &results[i] : NULL);
        if (rc && !ret)
            ret = -rc;
    }
    w->n = 0;
    return ret;
}
