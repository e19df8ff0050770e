/* Worker threads: started, pinned where asked, joined with their results. */
#include <criterion/criterion.h>
#include <errno.h>
#include <sched.h>
#include <stdint.h>

#include "io/threads.h"

struct wk {
    unsigned index;
    int cpu;
};

static void *worker_fn(void *arg)
{
    struct wk *w = arg;
    w->cpu = sched_getcpu();
    return (void *)(uintptr_t)(w->index + 100);
}

Test(worker, pinned_workers_run_on_their_cpus_and_join_with_results, .timeout = 10)
{
    enum { N = 3 };
    static struct slb_threads ws;
    struct wk wk[N];
    void *args[N], *results[N];
    for (unsigned i = 0; i < N; i++) {
        wk[i].index = i;
        wk[i].cpu = -1;
        args[i] = &wk[i];
    }
    cr_assert_eq(slb_threads_start(&ws, N, true, worker_fn, args), 0);
    cr_assert_eq(ws.n, N);
    cr_assert_eq(slb_threads_join(&ws, results), 0);
    for (unsigned i = 0; i < N; i++) {
        cr_assert_eq((uintptr_t)results[i], i + 100);
        cr_assert_eq(wk[i].cpu, slb_thread_cpu(i), "worker %u on cpu %d", i, wk[i].cpu);
    }
}

Test(worker, start_rejects_zero_and_too_many)
{
    static struct slb_threads ws;
    cr_assert_eq(slb_threads_start(&ws, 0, false, worker_fn, NULL), -EINVAL);
    cr_assert_eq(slb_threads_start(&ws, SLB_THREADS_MAX + 1, false, worker_fn, NULL), -EINVAL);
    cr_assert_eq(ws.n, 0);
}
