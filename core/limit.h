/* Per-source limits: how many connections one client address holds, how fast it opens
 * connections and starts handshakes, how fast it sends requests, and a temporary ban for
 * a source that keeps breaking them (the role of HAProxy's stick tables and Kamailio's
 * pike). Rates use GCRA (the generic cell rate algorithm): one "theoretical arrival time"
 * per bucket, a burst of one second's worth.
 *
 * Two tables:
 *  - struct slb_limit_table, shared by every worker (connections, connection and
 *    handshake rates, bans): entries are updated with atomics, on accept and handshake
 *    only, never per message. Approximate by design: two sources that collide in a full
 *    probe window share an entry, and an entry reused while another worker still counts
 *    on it may be off by one for a moment. Never blocks, never allocates after _new.
 *  - struct slb_rate_table, one per worker (requests per second): plain memory, no
 *    atomics, so the per-message check writes nothing another worker reads.
 * Time is passed in (ms, monotonic). Keys come from slb_limit_key. */
#ifndef SLB_CORE_LIMIT_H
#define SLB_CORE_LIMIT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/siphash.h"

#define SLB_LIMIT_PROBES        8u     /* entries looked at per key */
#define SLB_LIMIT_BAN_WINDOW_MS 10000u /* refusals are counted over this window */

/* The limits, from the configuration; 0 disables one. */
struct slb_limit_conf {
    uint32_t conns;          /* concurrent connections per source */
    uint32_t conn_rate;      /* new connections per second */
    uint32_t handshake_rate; /* TLS handshakes started per second */
    uint32_t ban_after;      /* refusals within SLB_LIMIT_BAN_WINDOW_MS that ban */
    uint32_t ban_ms;         /* how long a ban lasts; 0: never ban */
};

/* One source in the shared table. */
struct slb_limit_entry {
    _Atomic uint64_t key; /* 0: free */
    _Atomic uint32_t conns;
    _Atomic uint32_t refusals;
    _Atomic uint64_t conn_tat_us;
    _Atomic uint64_t hs_tat_us;
    _Atomic uint64_t ban_until_ms;
    _Atomic uint64_t window_ms; /* start of the refusal window */
    _Atomic uint64_t logged_ms; /* last log line about this source */
};

/* Owned by main; shared read-write (atomically) by the workers. */
struct slb_limit_table {
    struct slb_limit_conf conf;
    struct slb_siphash_key key;
    uint32_t mask; /* entries - 1 */
    struct slb_limit_entry *e;
};

enum slb_limit_verdict {
    SLB_LIMIT_OK = 0,       /* go on */
    SLB_LIMIT_CONNS,        /* too many connections from this source */
    SLB_LIMIT_CONN_RATE,    /* connecting too fast */
    SLB_LIMIT_HANDSHAKE_RATE, /* handshaking too fast */
    SLB_LIMIT_BANNED,       /* banned until its ban expires */
};

/* The source key of an address: its IPv4 address, or the /64 of an IPv6 one (a host
 * usually owns a whole /64), hashed under key. Never 0. */
uint64_t slb_limit_key(const struct slb_siphash_key *key, const struct sockaddr_storage *ss);

/* A table of entries (rounded up to a power of two, at least 64). Returns 0 or -ENOMEM. */
int slb_limit_table_init(struct slb_limit_table *t, const struct slb_limit_conf *conf,
                         const struct slb_siphash_key *key, uint32_t entries);
void slb_limit_table_deinit(struct slb_limit_table *t);

/* A new connection from source src: checks the ban, the connection count and the
 * connection rate. On SLB_LIMIT_OK the connection is counted: call slb_limit_release once
 * when it closes. *newly_banned is set when this refusal started a ban (log it once). */
enum slb_limit_verdict slb_limit_admit(struct slb_limit_table *t, uint64_t src, uint64_t now_ms,
                                       bool *newly_banned);

/* The connection admitted for src closed. */
void slb_limit_release(struct slb_limit_table *t, uint64_t src);

/* A TLS handshake starts for src: SLB_LIMIT_OK, or HANDSHAKE_RATE/BANNED. */
enum slb_limit_verdict slb_limit_handshake(struct slb_limit_table *t, uint64_t src,
                                           uint64_t now_ms, bool *newly_banned);

/* Counts a refusal made elsewhere (say a request over its rate) toward a ban. Returns true
 * when it started one. */
bool slb_limit_offence(struct slb_limit_table *t, uint64_t src, uint64_t now_ms);

/* True at most once per interval_ms per source: whether to log about it now. */
bool slb_limit_should_log(struct slb_limit_table *t, uint64_t src, uint64_t now_ms,
                          uint64_t interval_ms);

/* Short name of a verdict, for logs. */
const char *slb_limit_verdict_name(enum slb_limit_verdict v);

/* ---- per-worker request rate ----------------------------------------------------------- */

struct slb_rate_slot {
    uint64_t key;
    uint64_t tat_us;
};

/* Owned by one worker. Direct-mapped: a source that collides with a busier one takes its
 * slot over, which can only forgive, never punish, a request. */
struct slb_rate_table {
    uint32_t rate; /* per second; 0: no limit */
    uint32_t mask;
    struct slb_rate_slot *s;
};

int slb_rate_table_init(struct slb_rate_table *t, uint32_t rate, uint32_t slots);
void slb_rate_table_deinit(struct slb_rate_table *t);

/* One request from src at now_ms: true when within the rate. */
bool slb_rate_allow(struct slb_rate_table *t, uint64_t src, uint64_t now_ms);

/* GCRA on one bucket: whether an event at now_us conforms to rate per second with a burst
 * of `burst` events, advancing *tat_us when it does. Pure. */
bool slb_gcra(uint64_t *tat_us, uint64_t now_us, uint32_t rate, uint32_t burst);

#endif
