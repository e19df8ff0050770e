/* Per-source limits (see core/limit.h): GCRA rate buckets, connection counts and bans in a
 * shared open-addressed table updated with atomics, and a per-worker request-rate table.
 *
 * Invariants: a key is never 0; an entry is reused for another source only when nothing
 * counts on it (no connection, rate buckets drained, no ban); every loop is bounded by
 * SLB_LIMIT_PROBES or a CAS retry count. Any thread (shared table), the owning worker
 * (rate table). */
#include "core/limit.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#define CAS_TRIES 16 /* contention past this is treated as success: never spin */

bool slb_gcra(uint64_t *tat_us, uint64_t now_us, uint32_t rate, uint32_t burst)
{
    if (rate == 0)
        return true;
    uint64_t interval = 1000000u / rate ? 1000000u / rate : 1;
    uint64_t tolerance = interval * (burst ? burst - 1 : 0);
    uint64_t tat = *tat_us > now_us ? *tat_us : now_us;
    if (tat - now_us > tolerance)
        return false;
    *tat_us = tat + interval;
    return true;
}

static bool gcra_atomic(_Atomic uint64_t *tat_us, uint64_t now_us, uint32_t rate)
{
    if (rate == 0)
        return true;
    uint64_t old = atomic_load_explicit(tat_us, memory_order_relaxed);
    for (int i = 0; i < CAS_TRIES; i++) {
        uint64_t tat = old;
        if (!slb_gcra(&tat, now_us, rate, rate))
            return false;
        if (atomic_compare_exchange_weak_explicit(tat_us, &old, tat, memory_order_relaxed,
                                                  memory_order_relaxed))
            return true;
    }
    return true;
}

uint64_t slb_limit_key(const struct slb_siphash_key *key, const struct sockaddr_storage *ss)
{
    uint8_t buf[9] = {0};
    size_t n = 1;
    buf[0] = (uint8_t)ss->ss_family;
    if (ss->ss_family == AF_INET) {
        memcpy(buf + 1, &((const struct sockaddr_in *)(const void *)ss)->sin_addr, 4);
        n = 5;
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const void *)ss;
        const uint8_t *b = a->sin6_addr.s6_addr;
        /* An IPv4-mapped address is that IPv4 source. */
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (!memcmp(b, mapped, 12)) {
            buf[0] = AF_INET;
            memcpy(buf + 1, b + 12, 4);
            n = 5;
        } else {
            memcpy(buf + 1, b, 8); /* the /64 */
            n = 9;
        }
    }
    uint64_t k = slb_siphash(key, buf, n);
    return k ? k : 1;
}

int slb_limit_table_init(struct slb_limit_table *t, const struct slb_limit_conf *conf,
                         const struct slb_siphash_key *key, uint32_t entries)
{
    uint32_t n = 64;
    while (n < entries && n < (1u << 24))
        n <<= 1;
    t->conf = *conf;
    t->key = *key;
    t->mask = n - 1;
    t->e = calloc(n, sizeof(*t->e));
    return t->e ? 0 : -ENOMEM;
}

void slb_limit_table_deinit(struct slb_limit_table *t)
{
    free(t->e);
    t->e = NULL;
}

/* Nothing counts on e at now: it may serve another source. */
static bool entry_idle(struct slb_limit_entry *e, uint64_t now_ms)
{
    uint64_t now_us = now_ms * 1000u;
    return atomic_load_explicit(&e->conns, memory_order_relaxed) == 0 &&
           atomic_load_explicit(&e->conn_tat_us, memory_order_relaxed) <= now_us &&
           atomic_load_explicit(&e->hs_tat_us, memory_order_relaxed) <= now_us &&
           atomic_load_explicit(&e->ban_until_ms, memory_order_relaxed) <= now_ms &&
           atomic_load_explicit(&e->window_ms, memory_order_relaxed) + SLB_LIMIT_BAN_WINDOW_MS <=
               now_ms;
}

/* The entry of src: its own, else a free or idle one claimed for it, else NULL (the
 * window is full of busy sources: the caller lets this one through uncounted). */
static struct slb_limit_entry *entry_of(struct slb_limit_table *t, uint64_t src, uint64_t now_ms,
                                        bool create)
{
    struct slb_limit_entry *spare = NULL;
    for (uint32_t i = 0; i < SLB_LIMIT_PROBES; i++) {
        struct slb_limit_entry *e = &t->e[(src + i) & t->mask];
        uint64_t k = atomic_load_explicit(&e->key, memory_order_acquire);
        if (k == src)
            return e;
        if (!spare && (k == 0 || entry_idle(e, now_ms)))
            spare = e;
    }
    if (!create || !spare)
        return NULL;
    uint64_t k = atomic_load_explicit(&spare->key, memory_order_relaxed);
    if (!atomic_compare_exchange_strong_explicit(&spare->key, &k, src, memory_order_acq_rel,
                                                 memory_order_relaxed))
        return k == src ? spare : NULL; /* another worker took it, maybe for src */
    atomic_store_explicit(&spare->conns, 0, memory_order_relaxed);
    atomic_store_explicit(&spare->refusals, 0, memory_order_relaxed);
    atomic_store_explicit(&spare->conn_tat_us, 0, memory_order_relaxed);
    atomic_store_explicit(&spare->hs_tat_us, 0, memory_order_relaxed);
    atomic_store_explicit(&spare->ban_until_ms, 0, memory_order_relaxed);
    atomic_store_explicit(&spare->window_ms, now_ms, memory_order_relaxed);
    return spare;
}

static bool refuse(struct slb_limit_table *t, struct slb_limit_entry *e, uint64_t now_ms)
{
    if (!t->conf.ban_ms)
        return false;
    uint64_t start = atomic_load_explicit(&e->window_ms, memory_order_relaxed);
    if (start + SLB_LIMIT_BAN_WINDOW_MS <= now_ms) {
        /* A new window; a race here only loses a count or two. */
        atomic_store_explicit(&e->window_ms, now_ms, memory_order_relaxed);
        atomic_store_explicit(&e->refusals, 0, memory_order_relaxed);
    }
    uint32_t n = atomic_fetch_add_explicit(&e->refusals, 1, memory_order_relaxed) + 1;
    if (n != t->conf.ban_after)
        return false;
    atomic_store_explicit(&e->ban_until_ms, now_ms + t->conf.ban_ms, memory_order_relaxed);
    return true;
}

static bool banned(struct slb_limit_entry *e, uint64_t now_ms)
{
    return atomic_load_explicit(&e->ban_until_ms, memory_order_relaxed) > now_ms;
}

enum slb_limit_verdict slb_limit_admit(struct slb_limit_table *t, uint64_t src, uint64_t now_ms,
                                       bool *newly_banned)
{
    *newly_banned = false;
    struct slb_limit_entry *e = entry_of(t, src, now_ms, true);
    if (!e)
        return SLB_LIMIT_OK;
    if (banned(e, now_ms))
        return SLB_LIMIT_BANNED;
    if (!gcra_atomic(&e->conn_tat_us, now_ms * 1000u, t->conf.conn_rate)) {
        *newly_banned = refuse(t, e, now_ms);
        return SLB_LIMIT_CONN_RATE;
    }
    uint32_t n = atomic_fetch_add_explicit(&e->conns, 1, memory_order_relaxed);
    if (t->conf.conns && n >= t->conf.conns) {
        atomic_fetch_sub_explicit(&e->conns, 1, memory_order_relaxed);
        *newly_banned = refuse(t, e, now_ms);
        return SLB_LIMIT_CONNS;
    }
    return SLB_LIMIT_OK;
}

void slb_limit_release(struct slb_limit_table *t, uint64_t src)
{
    struct slb_limit_entry *e = entry_of(t, src, 0, false);
    if (!e)
        return;
    uint32_t n = atomic_load_explicit(&e->conns, memory_order_relaxed);
    for (int i = 0; i < CAS_TRIES && n > 0; i++)
        if (atomic_compare_exchange_weak_explicit(&e->conns, &n, n - 1, memory_order_relaxed,
                                                  memory_order_relaxed))
            return;
}

enum slb_limit_verdict slb_limit_handshake(struct slb_limit_table *t, uint64_t src,
                                           uint64_t now_ms, bool *newly_banned)
{
    *newly_banned = false;
    struct slb_limit_entry *e = entry_of(t, src, now_ms, true);
    if (!e)
        return SLB_LIMIT_OK;
    if (banned(e, now_ms))
        return SLB_LIMIT_BANNED;
    if (!gcra_atomic(&e->hs_tat_us, now_ms * 1000u, t->conf.handshake_rate)) {
        *newly_banned = refuse(t, e, now_ms);
        return SLB_LIMIT_HANDSHAKE_RATE;
    }
    return SLB_LIMIT_OK;
}

bool slb_limit_offence(struct slb_limit_table *t, uint64_t src, uint64_t now_ms)
{
    struct slb_limit_entry *e = entry_of(t, src, now_ms, true);
    return e ? refuse(t, e, now_ms) : false;
}

bool slb_limit_should_log(struct slb_limit_table *t, uint64_t src, uint64_t now_ms,
                          uint64_t interval_ms)
{
    struct slb_limit_entry *e = entry_of(t, src, now_ms, false);
    if (!e)
        return false;
    uint64_t last = atomic_load_explicit(&e->logged_ms, memory_order_relaxed);
    if (last && last + interval_ms > now_ms)
        return false;
    return atomic_compare_exchange_strong_explicit(&e->logged_ms, &last, now_ms,
                                                   memory_order_relaxed, memory_order_relaxed);
}

const char *slb_limit_verdict_name(enum slb_limit_verdict v)
{
    switch (v) {
    case SLB_LIMIT_OK:
        return "ok";
    case SLB_LIMIT_CONNS:
        return "too many connections";
    case SLB_LIMIT_CONN_RATE:
        return "connecting too fast";
    case SLB_LIMIT_HANDSHAKE_RATE:
        return "handshaking too fast";
    case SLB_LIMIT_BANNED:
        return "banned";
    }
    return "?";
}

int slb_rate_table_init(struct slb_rate_table *t, uint32_t rate, uint32_t slots)
{
    uint32_t n = 64;
    while (n < slots && n < (1u << 22))
        n <<= 1;
    t->rate = rate;
    t->mask = n - 1;
    t->s = rate ? calloc(n, sizeof(*t->s)) : NULL;
    return !rate || t->s ? 0 : -ENOMEM;
}

void slb_rate_table_deinit(struct slb_rate_table *t)
{
    free(t->s);
    t->s = NULL;
}

bool slb_rate_allow(struct slb_rate_table *t, uint64_t src, uint64_t now_ms)
{
    if (!t->rate)
        return true;
    struct slb_rate_slot *s = &t->s[src & t->mask];
    uint64_t now_us = now_ms * 1000u;
    if (s->key != src) {
        /* Take the slot over when its owner is quiet (its bucket drained), else share it:
         * sharing only lets requests through that the rate would have refused. */
        if (s->tat_us > now_us)
            return true;
        s->key = src;
        s->tat_us = 0;
    }
    return slb_gcra(&s->tat_us, now_us, t->rate, t->rate);
}
