/* Unframed input buffers (see core/inbuf.h).
 *
 * Invariants: in->len <= pool->buf_bytes always; in->pending is NULL exactly when
 * in->len == 0 outside a call; a buffer is in the free pool or owned by exactly one
 * connection. The owning worker's thread only. */
#include "core/inbuf.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "core/pool.h"

int slb_inbuf_pool_init(struct slb_inbuf_pool *pool, uint32_t n, size_t buf_bytes)
{
    memset(pool, 0, sizeof(*pool));
    pool->buf_bytes = buf_bytes;
    pool->n = n;
    pool->scratch = malloc(buf_bytes);
    int prc = slb_pool_init(&pool->free, n);
    /* Reserved, not touched: only the buffers ever used cost memory. */
    void *mem = mmap(NULL, (size_t)n * buf_bytes, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    pool->mem = mem == MAP_FAILED ? NULL : mem;
    if (!pool->scratch || prc < 0 || !pool->mem) {
        slb_inbuf_pool_deinit(pool);
        return -ENOMEM;
    }
    return 0;
}

void slb_inbuf_pool_deinit(struct slb_inbuf_pool *pool)
{
    free(pool->scratch);
    slb_pool_deinit(&pool->free);
    if (pool->mem)
        munmap(pool->mem, (size_t)pool->n * pool->buf_bytes);
    memset(pool, 0, sizeof(*pool));
}

static char *take(struct slb_inbuf_pool *pool)
{
    int64_t i = slb_pool_get(&pool->free);
    if (i < 0)
        return NULL;
    return pool->mem + (size_t)i * pool->buf_bytes;
}

void slb_inbuf_release(struct slb_inbuf_pool *pool, struct slb_inbuf *in)
{
    if (in->pending)
        slb_pool_put(&pool->free, (uint32_t)((size_t)(in->pending - pool->mem) / pool->buf_bytes));
    in->pending = NULL;
    in->len = 0;
}

char *slb_inbuf_dst(struct slb_inbuf_pool *pool, const struct slb_inbuf *in, size_t *cap)
{
    if (in->pending) {
        *cap = pool->buf_bytes - in->len;
        return in->pending + in->len;
    }
    *cap = pool->buf_bytes;
    return pool->scratch;
}

const char *slb_inbuf_filled(struct slb_inbuf_pool *pool, struct slb_inbuf *in, size_t got,
                             size_t *len)
{
    if (in->pending) {
        in->len += (uint32_t)got;
        *len = in->len;
        return in->pending;
    }
    *len = got;
    return pool->scratch;
}

int slb_inbuf_keep(struct slb_inbuf_pool *pool, struct slb_inbuf *in, const char *buf, size_t used,
                   size_t len)
{
    size_t rest = len - used;
    if (in->pending && buf == in->pending) {
        if (used)
            memmove(in->pending, in->pending + used, rest);
        in->len = (uint32_t)rest;
    } else if (rest) {
        /* From the scratch or the caller's own buffer: behind what already waits. */
        if (rest > pool->buf_bytes - in->len)
            return -EMSGSIZE;
        if (!in->pending && !(in->pending = take(pool)))
            return -ENOBUFS;
        memcpy(in->pending + in->len, buf + used, rest);
        in->len += (uint32_t)rest;
    }
    if (in->pending && in->len == 0)
        slb_inbuf_release(pool, in);
    return 0;
}

int slb_inbuf_append(struct slb_inbuf_pool *pool, struct slb_inbuf *in, const void *data, size_t n)
{
    if (n > pool->buf_bytes - in->len)
        return -EMSGSIZE;
    if (n == 0)
        return 0;
    if (!in->pending && !(in->pending = take(pool)))
        return -ENOBUFS;
    memcpy(in->pending + in->len, data, n);
    in->len += (uint32_t)n;
    return 0;
}
