/* sipslb-bench-maglev: the routing table's costs and its disruption on removal. Prints
 * build time for 10, 100 and 1000 backends, the lookup cost per message (Call-ID hash +
 * table read), and the fraction of a Call-ID sample that moves when one of N backends is
 * removed (ideal: 1/N). A benchmark: it asserts nothing. Single-threaded. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "balancer/maglev.h"

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static struct slb_maglev_backend be[1000];
static char names[1000][32];
static uint16_t slots_a[SLB_MAGLEV_SIZE_DEFAULT], slots_b[SLB_MAGLEV_SIZE_DEFAULT];
static char scratch[1 << 17];

static void backends(int n)
{
    for (int i = 0; i < n; i++) {
        snprintf(names[i], sizeof(names[i]), "10.%d.%d.1:5061", i / 250, i % 250);
        be[i] = (struct slb_maglev_backend){names[i], true, 1};
    }
}

int main(void)
{
    struct slb_maglev a = {SLB_MAGLEV_SIZE_DEFAULT, 0, slots_a};
    struct slb_maglev b = {SLB_MAGLEV_SIZE_DEFAULT, 0, slots_b};
    printf("Maglev, table size %u\n", SLB_MAGLEV_SIZE_DEFAULT);
    int sizes[] = {10, 100, 1000};
    for (int k = 0; k < 3; k++) {
        backends(sizes[k]);
        double t0 = now_ns();
        int reps = 20;
        for (int r = 0; r < reps; r++)
            slb_maglev_build(&a, be, (size_t)sizes[k], scratch);
        printf("  build, %4d backends: %8.2f ms\n", sizes[k], (now_ns() - t0) / reps / 1e6);
    }
    /* Lookup: hash of a realistic Call-ID plus the table read. */
    enum { KEYS = 200000 };
    static char cids[KEYS][48];
    static uint8_t lens[KEYS];
    for (int i = 0; i < KEYS; i++)
        lens[i] = (uint8_t)snprintf(cids[i], sizeof(cids[i]), "%08x%08x@client%d.example.com",
                                    (unsigned)rand(), (unsigned)rand(), i % 97);
    backends(10);
    slb_maglev_build(&a, be, 10, scratch);
    volatile unsigned sink = 0;
    double t0 = now_ns();
    for (int r = 0; r < 10; r++)
        for (int i = 0; i < KEYS; i++)
            sink += slb_maglev_lookup(&a, slb_route_hash((struct slb_slice){cids[i], lens[i]}));
    printf("  lookup (SipHash of the Call-ID + table): %.1f ns/message\n",
           (now_ns() - t0) / (10.0 * KEYS));
    int ns[] = {3, 10, 100};
    for (int k = 0; k < 3; k++) {
        backends(ns[k]);
        slb_maglev_build(&a, be, (size_t)ns[k], scratch);
        be[ns[k] / 2].up = false;
        slb_maglev_build(&b, be, (size_t)ns[k], scratch);
        int moved = 0;
        for (int i = 0; i < KEYS; i++) {
            uint64_t h = slb_route_hash((struct slb_slice){cids[i], lens[i]});
            moved += slb_maglev_lookup(&a, h) != slb_maglev_lookup(&b, h);
        }
        printf("  remove 1 of %3d: %.2f%% of Call-IDs move (ideal %.2f%%)\n", ns[k],
               100.0 * moved / KEYS, 100.0 / ns[k]);
    }
    return (int)(sink & 0);
}
