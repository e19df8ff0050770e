/* Guard-page placement and corpus reading for the unit tests. Single-threaded. */
#include "tests/support/guard.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static void *region;
static size_t region_len;

void guard_release(void)
{
    if (region)
        munmap(region, region_len);
    region = NULL;
}

const char *guard_place(const void *data, size_t len)
{
    guard_release();
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t data_pages = (len + page - 1) / page;
    region_len = (data_pages + 1) * page;
    region = mmap(NULL, region_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (region == MAP_FAILED)
        abort();
    char *guard = (char *)region + data_pages * page;
    if (mprotect(guard, page, PROT_NONE) != 0)
        abort();
    char *at = guard - len;
    if (len)
        memcpy(at, data, len);
    return at;
}

char *corpus_read(const char *rel_path, size_t *len)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", SLB_CORPUS_DIR, rel_path);
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", path);
        abort();
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n)
        abort();
    fclose(f);
    *len = (size_t)n;
    return buf;
}
