/* Certificate rotation: a reload hands each worker a new server TLS context; new clients
 * get it, and the old one lives on until the last session made from it closes, however
 * many reloads come meanwhile.
 *
 * Thread: the worker's, except slb_worker_set_server_ctx and slb_worker_set_keys (any
 * thread: an atomic swap) and
 * the after-stop accessors. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "balancer/worker-priv.h"

void take_new_sctx(struct slb_worker *w)
{
    if (!atomic_load_explicit(&w->new_sctx, memory_order_relaxed))
        return;
    struct retired_sctx *r = NULL;
    if (w->sctx_sessions && !(r = malloc(sizeof(*r))))
        return; /* out of memory: keep the current context, try at the next refresh */
    struct slb_tls_ctx *n = atomic_exchange(&w->new_sctx, NULL);
    if (!r) {
        slb_tls_ctx_free(w->sctx);
    } else {
        *r = (struct retired_sctx){w->sctx, w->sctx_sessions, w->retired};
        w->retired = r;
    }
    w->sctx = n;
    w->sctx_sessions = 0;
}

void release_sctx(struct slb_worker *w, struct slb_tls_ctx *ctx)
{
    if (ctx == w->sctx) {
        w->sctx_sessions--;
        return;
    }
    for (struct retired_sctx **rp = &w->retired; *rp; rp = &(*rp)->next) {
        struct retired_sctx *r = *rp;
        if (r->ctx != ctx)
            continue;
        if (--r->sessions == 0) {
            slb_tls_ctx_free(ctx);
            *rp = r->next;
            free(r);
        }
        return;
    }
}

void slb_worker_set_server_ctx(struct slb_worker *w, struct slb_tls_ctx *ctx)
{
    slb_tls_ctx_free(atomic_exchange(&w->new_sctx, ctx));
}

struct slb_tls_ctx *slb_worker_server_ctx_leftover(struct slb_worker *w)
{
    /* After the worker stopped: whatever was never taken, and every retired context. */
    while (w->retired) {
        struct retired_sctx *r = w->retired;
        w->retired = r->next;
        slb_tls_ctx_free(r->ctx);
        free(r);
    }
    return atomic_exchange(&w->new_sctx, NULL);
}

struct slb_tls_ctx *slb_worker_server_ctx(const struct slb_worker *w)
{
    return w->sctx;
}

/* Key rotation (--secret-file re-read on SIGHUP) rides on the same hand-over: an atomic
 * pointer the worker takes at its next refresh, so its copy of self changes on its own
 * thread only. */
void take_new_keys(struct slb_worker *w)
{
    if (!atomic_load_explicit(&w->new_keys, memory_order_relaxed))
        return;
    struct slb_worker_keys *k = atomic_exchange(&w->new_keys, NULL);
    slb_proxy_self_set_keys(&w->self, k->k, k->n, w->self.boot_id);
    free(k);
}

int slb_worker_set_keys(struct slb_worker *w, const struct slb_siphash_key *keys, unsigned n)
{
    struct slb_worker_keys *k = calloc(1, sizeof(*k));
    if (!k)
        return -ENOMEM;
    k->n = n < SLB_PROXY_KEYS_MAX ? n : SLB_PROXY_KEYS_MAX;
    memcpy(k->k, keys, k->n * sizeof(*keys));
    free(atomic_exchange(&w->new_keys, k));
    return 0;
}
