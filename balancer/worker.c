/* A sipslb worker: the relay itself. Clients' TLS bytes arrive through io/, are decrypted
 * by tls/ into a scratch buffer (or the connection's pending buffer when a message is split
 * across records), framed and scanned in place by core/, edited as slices by the proxy
 * rules, and encrypted straight onto the chosen backend connection's output queue.
 * Responses come back the same way, routed by the client connection named in our Via.
 *
 * Invariants: everything here runs on the worker's own thread; the per-message path makes
 * no allocation, no lock and no log line; a connection's peer record lives in the slot of
 * the same index as its io/ connection and is valid from accept/connect until on_close;
 * a client's receive is paused exactly while it is parked on a backend link (backpressure)
 * or its own output is backed up (it does not read what we send it), and its unread bytes
 * wait in its pending buffer (core/inbuf: as large as one decryption, so whatever a parked
 * client leaves unconsumed fits).
 *
 * Every client is bounded: connections per worker (--max-conns) and per source, TLS
 * handshakes in progress per worker, pending input (one buffer), TLS stash, output queue
 * (--client-out-max), and time (handshake, message completion, stall, idle). */
#include "balancer/worker.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <unistd.h>

#include "balancer/health.h"
#include "balancer/maglev.h"
#include "balancer/router.h"
#include "balancer/token.h"
#include "core/inbuf.h"
#include "core/limit.h"
#include "core/log.h"
#include "core/sip.h"
#include "core/sip_edit.h"
#include "io/conn.h"
#include "io/loop.h"
#include "io/timer.h"
#include "tls/tls.h"

/* Peer kinds, which are also the io/ tags: a listener's tag says TLS or plain; a backend
 * link's tag is TAG_BACKEND + its index. */
enum { TAG_CLIENT = 1, TAG_BACKEND = 2 };
#define TAG_PLAIN_LISTENER 0x40000000u
enum peer_state { PEER_FREE, PEER_HANDSHAKE, PEER_OPEN, PEER_CLOSING };
enum link_state { LINK_DOWN, LINK_CONNECTING, LINK_READY, LINK_REMOVED };

#define REDIAL_MS_MIN 100u
#define REDIAL_MS_MAX 10000u
#define TLS_OVERHEAD  64u /* per record, generous: header, tag, content type */
#define OUTBOX_SLOTS  64u /* hand-over slots per worker (messages in flight to others) */
#define HANDOVER_HDR  8u  /* a hand-over slot: the destination connection id, then bytes */
#define EOF_LINGER_MS 5000u /* a half-closed client may still be owed responses this long */
#define CLIENT_RCVBUF (128u * 1024u) /* SO_RCVBUF of clients: what the kernel queues for one */
/* What a client may still deliver after its receive was paused: CQEs the kernel already
 * posted can carry up to the whole receive ring (io/'s default 256 x 16 KiB), plus its
 * socket queue. Its TLS stash may hold that much; a client that goes past it is failed. */
#define CLIENT_STASH_MAX ((256u * 16384u) + 4u * CLIENT_RCVBUF)
/* All clients' stashes of one worker together: past this, a client that keeps sending
 * while paused is closed rather than buffered. */
#define WORKER_STASH_BUDGET (64u << 20)
#define LIMIT_LOG_MS  10000u /* a log line about one source at most this often */
#define RATE_SLOTS    4096u  /* per-worker request-rate buckets */

struct link;

/* One TLS connection, a client's or one of ours to a backend. Lives in the worker's peer
 * table at its io/ slot; owned by the worker. */
struct peer {
    struct slb_conn *conn;
    struct slb_conn_id id;
    struct slb_tls_conn tls;
    uint8_t kind; /* TAG_CLIENT or TAG_BACKEND */
    uint8_t state;
    struct link *link;   /* TAG_BACKEND: the link it serves */
    int16_t backend_peer; /* TAG_CLIENT: the backend whose address it comes from, or -1 */
    bool plain;           /* TAG_CLIENT from a tcp:// listener: no TLS */
    struct slb_tls_ctx *ctx; /* TAG_CLIENT: the server context its session came from */
    struct link *parked; /* TAG_CLIENT: the link it waits on */
    struct peer *next_parked;
    struct peer *hs_prev, *hs_next; /* TAG_CLIENT: the handshakes in progress, oldest first */
    bool in_hs_list;
    bool out_blocked;  /* TAG_CLIENT: its output is backed up (receive paused) */
    bool tls_more;     /* TAG_CLIENT: TLS holds input not yet decrypted (receive paused) */
    uint32_t stash_seen; /* TAG_CLIENT: its TLS stash size as counted in w->stash_bytes */
    uint32_t awaiting;   /* TAG_CLIENT: requests forwarded, final responses not yet back (a
                          * hint for a half-closed client; retransmissions blur it) */
    bool eof;          /* TAG_CLIENT: it shut its write side */
    bool exempt;       /* TAG_CLIENT: --limit-allow or a backend's address */
    bool unauth_backend; /* TAG_CLIENT: from a backend's address, certificate not verified */
    bool src_counted;  /* TAG_CLIENT: counted in the per-source table */
    bool hs_counted;   /* TAG_CLIENT: its handshake was counted against its source */
    uint64_t src;      /* TAG_CLIENT: its per-source key */
    uint64_t frames;   /* frames handled on it */
    uint64_t partial_since_ms; /* when its unfinished message started (0: none) */
    struct slb_inbuf in; /* unframed plaintext waiting (a pool buffer while any) */
    struct slb_sip_frame fr;
    uint16_t port;
    uint8_t ip_len;
    char ip[INET6_ADDRSTRLEN];
};

/* One of the K persistent connections of this worker to one backend. */
struct link {
    struct slb_worker *w;
    uint16_t backend;
    uint8_t state;
    struct peer *peer; /* when connected */
    uint32_t backoff_ms;
    struct slb_timer redial;
    struct slb_tls_session *session; /* for resumption on the next dial */
    struct peer *parked_head;        /* clients waiting for room on this link */
};

#define PENDING_SLOTS 8192u /* pending-INVITE map entries, a power of two */

/* A server context replaced by a reload while sessions made from it still live; freed
 * with the last of them. Allocated at a reload (rare), never on the message path. */
struct retired_sctx {
    struct slb_tls_ctx *ctx;
    uint32_t sessions;
    struct retired_sctx *next;
};

struct slb_worker {
    struct slb_loop loop;
    const struct slb_shared *sh;
    const struct slb_config *cfg;
    unsigned index;
    struct slb_tls_ctx *sctx, *cctx;
    uint32_t sctx_sessions;                 /* client sessions made from sctx */
    _Atomic(struct slb_tls_ctx *) new_sctx; /* from a reload, not yet taken */
    struct retired_sctx *retired;           /* replaced server contexts still in use */
    atomic_int stop_requested;
    atomic_int running;
    struct peer *peers;
    uint32_t n_peers;
    uint32_t n_clients;          /* client connections open (bounded by --max-conns) */
    uint32_t n_handshaking;      /* client TLS handshakes in progress */
    struct peer *hs_head, *hs_tail; /* those, oldest first */
    uint64_t seen_no_fds;        /* io's accept_no_fds when last reported */
    struct slb_rate_table rates; /* requests per second per source */
    size_t stash_bytes;          /* clients' TLS stashes, summed (WORKER_STASH_BUDGET) */
    struct link *links; /* SLB_MAX_BACKENDS * backend_conns, slot-major */
    uint32_t n_known;   /* backend slots whose links were started */
    uint32_t n_links;
    struct slb_router *router;
    struct slb_health_signals *signals;
    struct slb_drain_clock *drain_clock;
    struct slb_timer refresh; /* keeps this worker's router generation moving when idle */
    uint64_t seen_gen;        /* the table generation last reconciled with our links */
    uint8_t seen_state[SLB_MAX_BACKENDS];
    struct slb_inbuf_pool inbufs; /* decryption scratch and pending buffers */
    struct slb_sip_limits lim;
    struct slb_sip_msg msg;
    struct slb_sip_header hdrs[SLB_SIP_MAX_HEADERS_DEFAULT];
    struct slb_sip_edit edit;
    struct slb_route_info route; /* of the request being handled */
    bool strict;                 /* ... found in its Request-URI (a strict router before us) */
    /* Pending INVITE transactions: client branch + Call-ID -> backend, so CANCEL and the
     * ACK for a non-2xx follow their INVITE even if the table changed (RFC 3261 16.11,
     * RFC 3263 4.4). Open addressing, bounded probes; stale entries are overwritten. */
    struct pending_invite {
        uint64_t key;
        uint64_t expires_ms;
        uint16_t backend;
    } pending_inv[PENDING_SLOTS];
    char *reply; /* our own responses: as large as the request they copy Vias from */
    size_t reply_cap;
    /* Cross-worker hand-over of requests for clients on another worker: slots of this
     * worker's outbox, each owned by us until the receiver posts it back. */
    char *outbox;
    size_t outbox_slot_bytes;
    uint16_t outbox_free[OUTBOX_SLOTS];
    unsigned outbox_top;
    struct slot_return {
        uint8_t worker;
        uint16_t slot;
    } *returns; /* other workers' slots whose return post failed: retried; room for all */
    unsigned n_returns, returns_cap;
    struct slb_ratelimit rl_tls, rl_input, rl_backend, rl_limit, rl_fds, rl_auth;
    struct slb_worker_counters c;
};

/* ---- routing ---------------------------------------------------------------------------- */

#define REFRESH_MS 100u

static void dial(struct slb_worker *w, struct link *l);

static void close_links(struct slb_worker *w, unsigned b);
static void wake_parked(struct slb_worker *w, struct link *l);

/* A new table: links for backends a reload added, closed links for those it removed, and a
 * backend that came back up gets its links dialled now rather than at the end of their
 * backoff. */
static void reconcile(struct slb_worker *w, const struct slb_route_table *t)
{
    unsigned k = (unsigned)w->cfg->backend_conns;
    for (unsigned b = 0; b < t->n_backends; b++) {
        bool fresh = b >= w->n_known;
        if (t->state[b] == SLB_BACKEND_REMOVED) {
            if (!fresh && w->seen_state[b] != SLB_BACKEND_REMOVED)
                close_links(w, b);
        } else if (fresh || w->seen_state[b] == SLB_BACKEND_DOWN ||
                   w->seen_state[b] == SLB_BACKEND_REMOVED) {
            for (unsigned i = 0; i < k; i++) {
                struct link *l = &w->links[b * k + i];
                if (fresh || l->state == LINK_DOWN || l->state == LINK_REMOVED) {
                    slb_timer_cancel(&l->redial);
                    l->state = LINK_DOWN;
                    l->backoff_ms = 0;
                    dial(w, l);
                }
            }
        }
        w->seen_state[b] = t->state[b];
    }
    if (t->n_backends > w->n_known)
        w->n_known = t->n_backends;
    w->seen_gen = t->gen;
}

static inline const struct slb_route_table *route_table(struct slb_worker *w)
{
    const struct slb_route_table *t = slb_router_acquire(w->router, w->index);
    if (t->gen != w->seen_gen)
        reconcile(w, t);
    return t;
}

/* A reloaded certificate: new clients get the new context; the old one lives on until
 * the last session made from it closes, however many reloads come meanwhile. */
static void take_new_sctx(struct slb_worker *w)
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

static void release_sctx(struct slb_worker *w, struct slb_tls_ctx *ctx)
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

static void retry_returns(struct slb_worker *w);

/* Clients parked on links that will not drain: the backend was marked down (it may hang
 * without closing its connections) or removed. They retry now, and re-route. Here, on the
 * timer, never from inside the handling of a message (that would re-enter it). */
static void wake_stuck_parked(struct slb_worker *w, const struct slb_route_table *t)
{
    unsigned k = (unsigned)w->cfg->backend_conns;
    for (unsigned b = 0; b < w->n_known && b < t->n_backends; b++) {
        if (t->state[b] != SLB_BACKEND_DOWN && t->state[b] != SLB_BACKEND_REMOVED)
            continue;
        for (unsigned i = 0; i < k; i++)
            if (w->links[b * k + i].parked_head)
                wake_parked(w, &w->links[b * k + i]);
    }
}

/* Descriptor exhaustion is the operator's to fix (RLIMIT_NOFILE): said plainly, not
 * passed off as a backend failure. */
static void report_no_fds(struct slb_worker *w)
{
    uint64_t n = slb_loop_counters(&w->loop)->accept_no_fds;
    if (n == w->seen_no_fds)
        return;
    w->c.fd_exhausted += n - w->seen_no_fds;
    w->seen_no_fds = n;
    slb_log_limited(&w->rl_fds, slb_loop_now_ms(&w->loop), SLB_LOG_ERROR,
                    "worker %u: out of file descriptors (EMFILE): clients cannot be accepted; "
                    "raise RLIMIT_NOFILE or lower --max-conns", w->index);
}

/* An idle worker still announces the newest table it has seen, so old tables get freed. */
static void on_refresh(struct slb_timer *t)
{
    struct slb_worker *w = (struct slb_worker *)((char *)t - offsetof(struct slb_worker, refresh));
    wake_stuck_parked(w, route_table(w));
    take_new_sctx(w);
    if (w->n_returns)
        retry_returns(w);
    report_no_fds(w);
    slb_timer_arm(slb_loop_wheel(&w->loop), &w->refresh, REFRESH_MS);
}

/* ---- output ---------------------------------------------------------------------------- */

static int tls_out(void *arg, const void *data, size_t len)
{
    struct peer *p = arg;
    return slb_conn_write(p->conn, data, len);
}

static void client_block(struct slb_worker *w, struct peer *p);

/* Writes a whole message to a peer, or nothing. A refusal always leads to on_drained for
 * that peer later (io/ is told what was missing). A client whose queue passes half its
 * bound, or that had to be refused, stops being read until it drains. */
static int send_iov(struct slb_worker *w, struct peer *p, const struct iovec *iov, int n,
                    size_t total)
{
    int rc = 0;
    if (p->state != PEER_OPEN) {
        rc = -ENOBUFS;
    } else if (slb_conn_out_space(p->conn) <
               total + TLS_OVERHEAD * (total / SLB_TLS_RECORD_PLAIN_MAX + 2)) {
        slb_conn_notify_space(p->conn);
        rc = -ENOBUFS;
    } else if (p->plain) {
        for (int i = 0; i < n && rc == 0; i++)
            if (slb_conn_write(p->conn, iov[i].iov_base, iov[i].iov_len) < 0)
                rc = -ENOBUFS; /* cannot happen: the room was checked */
    } else {
        int r = slb_tls_write(&p->tls, iov, n);
        rc = r < 0 ? r : 0;
        if (r >= 0 && (size_t)r < total) {
            /* Part of a message went out and the rest cannot follow in order: the stream
             * is broken for whoever shares it. Cannot happen with the room checked above
             * (one record's overhead per 16 KiB); if it does, the connection goes. */
            p->state = PEER_CLOSING;
            slb_conn_close(p->conn, false);
            rc = -EPIPE;
        }
    }
    if (p->kind == TAG_CLIENT && p->state == PEER_OPEN && !p->out_blocked &&
        (rc < 0 || slb_conn_out_queued(p->conn) > (size_t)w->cfg->client_out_max / 2))
        client_block(w, p);
    return rc;
}

/* Answers the request in w->msg ourselves (the caller checked slb_proxy_can_reply, or
 * knows the message is a valid request). */
static void reply(struct slb_worker *w, struct peer *p, const char *base, int status,
                  const char *reason, const char *extra)
{
    const struct slb_sip_msg *m = &w->msg;
    if (!slb_proxy_can_reply(m))
        return;
    char tag[16];
    snprintf(tag, sizeof(tag), "slb%08x", (unsigned)slb_route_hash(m->call_id));
    int n = slb_proxy_reply(w->reply, w->reply_cap, m, base, status, reason, extra, tag);
    if (n < 0)
        return;
    struct iovec iov = {w->reply, (size_t)n};
    if (send_iov(w, p, &iov, 1, (size_t)n) < 0)
        return;
    switch (status) {
    case 400:
        w->c.replied_400++;
        break;
    case 483:
        w->c.replied_483++;
        break;
    case 503:
        w->c.replied_503++;
        break;
    case 505:
        w->c.replied_505++;
        break;
    case 513:
        w->c.replied_513++;
        break;
    default:
        w->c.replied_other++;
    }
}

/* ---- backpressure ---------------------------------------------------------------------- */

/* A client is read while it is neither parked on a link nor backed up itself, and TLS
 * holds nothing more of it: what it sent meanwhile waits in the kernel, bounded by the
 * socket's receive buffer, never in our memory. */
static void client_recv_update(struct peer *p)
{
    if (p->parked || p->out_blocked || p->tls_more)
        slb_conn_pause_recv(p->conn);
    else
        slb_conn_resume_recv(p->conn);
}

/* The client's one timer: a stall bound while it does not read, a deadline while a
 * message of its is unfinished (not while it waits on us, parked), else the idle time. */
static void client_timer(struct slb_worker *w, struct peer *p)
{
    uint64_t ms = w->cfg->idle_timeout_ms;
    if (p->out_blocked) {
        ms = w->cfg->stall_timeout_ms;
    } else if (p->eof) {
        ms = EOF_LINGER_MS;
    } else if (p->partial_since_ms && !p->parked) {
        uint64_t due = p->partial_since_ms + w->cfg->message_timeout_ms;
        uint64_t now = slb_loop_now_ms(&w->loop);
        ms = due > now ? due - now : 1;
    }
    slb_conn_set_timeout(p->conn, (uint32_t)ms);
}

static void client_block(struct slb_worker *w, struct peer *p)
{
    p->out_blocked = true;
    w->c.client_out_blocked++;
    client_recv_update(p);
    client_timer(w, p);
}

static void park(struct slb_worker *w, struct peer *client, struct link *l)
{
    if (client->parked)
        return;
    client->parked = l;
    client->next_parked = l->parked_head;
    l->parked_head = client;
    client->partial_since_ms = 0; /* waiting on us: no deadline of its own */
    client_recv_update(client);
    client_timer(w, client);
    w->c.backpressure_parks++;
}

static void unpark(struct peer *client)
{
    struct link *l = client->parked;
    if (!l)
        return;
    for (struct peer **pp = &l->parked_head; *pp; pp = &(*pp)->next_parked) {
        if (*pp == client) {
            *pp = client->next_parked;
            break;
        }
    }
    client->parked = NULL;
    client->next_parked = NULL;
}

static void resume_client(struct slb_worker *w, struct peer *c);

/* Wakes every client waiting on l: they retry (and re-route if l is gone). */
static void wake_parked(struct slb_worker *w, struct link *l)
{
    struct peer *c = l->parked_head;
    l->parked_head = NULL;
    while (c) {
        struct peer *next = c->next_parked;
        c->parked = NULL;
        c->next_parked = NULL;
        resume_client(w, c);
        c = next;
    }
}

/* ---- the proxy --------------------------------------------------------------------------- */

/* Result of handling one framed message: go on with the next, or stop (parked/closing). */
enum step { STEP_NEXT, STEP_STOP };

static int backend_by_token(const struct slb_config *cfg, const struct slb_route_table *t,
                            uint32_t token)
{
    for (unsigned i = 0; i < t->n_backends; i++)
        if (t->state[i] != SLB_BACKEND_REMOVED && cfg->backends[i].token == token)
            return (int)i;
    return -1;
}

/* A ready link of the backend (spread by the key hash), else one still connecting (the
 * caller parks on it until its handshake ends), else NULL. */
static struct link *pick_link(struct slb_worker *w, unsigned backend, uint64_t hash)
{
    unsigned k = (unsigned)w->cfg->backend_conns;
    struct link *first = &w->links[backend * k], *connecting = NULL;
    for (unsigned i = 0; i < k; i++) {
        struct link *l = &first[(hash + i) % k];
        if (l->state == LINK_READY)
            return l;
        if (l->state == LINK_CONNECTING && !connecting)
            connecting = l;
    }
    return connecting;
}

#define PENDING_MASK     (PENDING_SLOTS - 1u)
#define PENDING_PROBES   8u
#define PENDING_RING_MS  180000u /* RFC 3261 Timer C: an INVITE may ring this long */
#define PENDING_AFTER_MS 32000u  /* after its final response: Timer B/H */

/* The client transaction a request belongs to: its top Via branch and Call-ID, under a
 * per-process random key (clients choose both: a public key would let them aim at one
 * probe window and evict others' entries). */
static uint64_t pending_key_of(const struct slb_worker *w, const struct slb_slice branch,
                               const struct slb_slice call_id)
{
    const struct slb_siphash_key *key = &w->sh->pending_key;
    uint64_t k = slb_siphash(key, branch.ptr, branch.len) ^
                 slb_siphash(key, call_id.ptr, call_id.len) * 31;
    return k ? k : 1;
}

static struct pending_invite *pending_find(struct slb_worker *w, uint64_t key, uint64_t now)
{
    for (unsigned i = 0; i < PENDING_PROBES; i++) {
        struct pending_invite *e = &w->pending_inv[(key + i) & PENDING_MASK];
        if (e->key == key && e->expires_ms > now)
            return e;
    }
    return NULL;
}

static void pending_put(struct slb_worker *w, uint64_t key, uint16_t backend, uint64_t now)
{
    struct pending_invite *victim = NULL;
    for (unsigned i = 0; i < PENDING_PROBES; i++) {
        struct pending_invite *e = &w->pending_inv[(key + i) & PENDING_MASK];
        if (e->key == key || e->expires_ms <= now) {
            victim = e;
            break;
        }
        if (!victim || e->expires_ms < victim->expires_ms)
            victim = e; /* full: the one that would expire first makes room */
    }
    *victim = (struct pending_invite){key, now + PENDING_RING_MS, backend};
}

/* RFC 3261 16.4: our own Route value goes; after a strict router, the last Route becomes
 * the Request-URI instead. */
static int drop_our_route(struct slb_worker *w, struct slb_sip_edit *e)
{
    const struct slb_sip_msg *m = &w->msg;
    if (w->strict) {
        int rc = slb_sip_edit_strict_route(e, m);
        return rc == -ENOENT ? 0 : rc;
    }
    return slb_sip_edit_pop_list_values(e, m, SLB_HDR_ROUTE, w->route.count);
}

/* RFC 3261 16.3: scheme, SIPS policy, Proxy-Require, loops. True when answered. */
static bool reject_request(struct slb_worker *w, struct peer *p, const char *base)
{
    /* RFC 5630: a sips: request travels over TLS only; on a tcp:// listener it is refused
     * (no RFC sets the code: 403, with the reason in the phrase). */
    if (p->plain && w->msg.ruri.len >= 5 && !strncasecmp(w->msg.ruri.ptr, "sips:", 5)) {
        reply(w, p, base, 403, "Forbidden - SIPS Requires TLS", NULL);
        return true;
    }
    const char *reason;
    char extra[SLB_SIP_MAX_LINE_BYTES_DEFAULT + 64]; /* a whole Unsupported line */
    int status = slb_proxy_check_request(&w->msg, &w->sh->self, w->cfg->sips_only, &reason, extra,
                                         sizeof(extra));
    if (status == 0)
        return false;
    if (status == 482)
        w->c.loops++;
    reply(w, p, base, status, reason, extra[0] ? extra : NULL);
    return true;
}

static void limit_log(struct slb_worker *w, const struct peer *p, const char *what,
                      bool banned_now);

/* --limit-request-rate: true when the request was answered (503) or the client closed. */
static bool over_request_rate(struct slb_worker *w, struct peer *p, const char *base, bool ack)
{
    uint64_t now = slb_loop_now_ms(&w->loop);
    if (p->exempt || slb_rate_allow(&w->rates, p->src, now))
        return false;
    bool banned_now = slb_limit_offence(w->sh->limits, p->src, now);
    limit_log(w, p, "sending requests too fast", banned_now);
    if (banned_now) {
        p->state = PEER_CLOSING;
        slb_conn_close(p->conn, true);
        return true;
    }
    if (!ack) {
        w->c.limit_request_rate_503++;
        char extra[48];
        snprintf(extra, sizeof(extra), "Retry-After: %u\r\n", (unsigned)w->cfg->retry_after_s);
        reply(w, p, base, 503, "Service Unavailable - Rate Limited", extra);
    }
    return true;
}

static enum step client_request(struct slb_worker *w, struct peer *p, const char *base)
{
    const struct slb_sip_msg *m = &w->msg;
    w->c.requests_in++;
    bool ack = m->method_id == SLB_METHOD_ACK;
    if (w->rates.rate && over_request_rate(w, p, base, ack))
        return p->state == PEER_OPEN ? STEP_NEXT : STEP_STOP;
    /* RFC 3261 16.3 step 2 (Max-Forwards 0); also a request already carrying as many Via
     * values as we keep, whose responses could not come back through us. An ACK gets no
     * response. */
    if (m->max_forwards == 0 || m->via_count >= SLB_SIP_MAX_VIAS) {
        if (!ack)
            reply(w, p, base, 483, "Too Many Hops", NULL);
        else
            w->c.drop_ack_unroutable++;
        return STEP_NEXT;
    }
    if (!ack && reject_request(w, p, base))
        return STEP_NEXT;
    uint64_t h = slb_route_hash(m->call_id);
    const struct slb_route_table *t = route_table(w);
    uint16_t b = SLB_MAGLEV_NONE;
    /* In-dialog requests carry our Route: they go to the backend it names while that one
     * is up or draining, whatever the table says now; otherwise by the table. */
    const struct slb_route_info *ri = &w->route;
    bool our_route = ri->ours;
    if (ri->has_backend) {
        int idx = backend_by_token(w->cfg, t, ri->backend);
        if (idx >= 0 && t->state[idx] != SLB_BACKEND_DOWN) {
            b = (uint16_t)idx;
            w->c.sticky_routed++;
            if (t->state[idx] == SLB_BACKEND_DRAINING)
                atomic_store_explicit(&w->drain_clock->last_ms[idx], slb_loop_now_ms(&w->loop),
                                      memory_order_relaxed);
        } else {
            w->c.sticky_fallback++;
        }
    }
    uint64_t now = slb_loop_now_ms(&w->loop);
    uint64_t pkey = 0;
    bool invite = m->method_id == SLB_METHOD_INVITE;
    if (b == SLB_MAGLEV_NONE && (invite || ack || m->method_id == SLB_METHOD_CANCEL))
        pkey = pending_key_of(w, m->top_via.branch, m->call_id);
    if (b == SLB_MAGLEV_NONE && !invite && pkey) {
        /* CANCEL, or ACK for a non-2xx: where their INVITE went, if still known. */
        struct pending_invite *pi = pending_find(w, pkey, now);
        if (pi && pi->backend < t->n_backends && t->state[pi->backend] != SLB_BACKEND_DOWN &&
            t->state[pi->backend] != SLB_BACKEND_REMOVED) {
            b = pi->backend;
            w->c.pending_routed++;
        }
    }
    if (b == SLB_MAGLEV_NONE)
        b = slb_maglev_lookup(&t->maglev, h);
    struct link *l = b == SLB_MAGLEV_NONE ? NULL : pick_link(w, b, h);
    if (!l) {
        if (ack) {
            w->c.drop_ack_unroutable++;
        } else {
            char extra[48];
            snprintf(extra, sizeof(extra), "Retry-After: %u\r\n",
                     (unsigned)w->cfg->retry_after_s);
            reply(w, p, base, 503, "Service Unavailable", extra);
        }
        return STEP_NEXT;
    }
    if (l->state != LINK_READY) {
        park(w, p, l);
        w->c.requests_in--; /* counted again when it is retried */
        return STEP_STOP;
    }
    struct slb_sip_edit *e = &w->edit;
    slb_sip_edit_init(e, base, m->msg_len);
    int erc = slb_proxy_request_edits(e, m, &w->sh->self, p->ip, p->ip_len, p->port, p->id.v,
                                      false);
    if (erc == 0 && our_route)
        erc = drop_our_route(w, e);
    if (erc == 0 && slb_proxy_dialog_forming(m))
        erc = slb_proxy_record_route(e, m, &w->sh->self, w->cfg->backends[b].token, p->id.v,
                                     p->plain ? SLB_FLOW_PLAIN : 0, false);
    if (erc == 0 && m->method_id == SLB_METHOD_REGISTER && !w->cfg->no_path)
        erc = slb_proxy_path(e, m, &w->sh->self, p->id.v, p->plain ? SLB_FLOW_PLAIN : 0);
    if (erc < 0) {
        reply(w, p, base, 513, "Message Too Large", NULL);
        return STEP_NEXT;
    }
    struct iovec iov[SLB_SIP_EDIT_MAX_IOV];
    int n = slb_sip_edit_iov(e, iov, (int)SLB_SIP_EDIT_MAX_IOV);
    int rc = send_iov(w, l->peer, iov, n, slb_sip_edit_len(e));
    if (rc == -ENOBUFS) {
        park(w, p, l);
        w->c.requests_in--; /* counted again when it is retried */
        return STEP_STOP;
    }
    if (rc < 0)
        return STEP_NEXT;
    if (invite && pkey)
        pending_put(w, pkey, b, now);
    if (!ack)
        p->awaiting++;
    w->c.requests_forwarded++;
    return STEP_NEXT;
}

static void count_response(struct slb_worker *w, unsigned status)
{
    switch (status / 100) {
    case 1:
        w->c.responses_1xx++;
        break;
    case 2:
        w->c.responses_2xx++;
        break;
    case 3:
        w->c.responses_3xx++;
        break;
    case 4:
        w->c.responses_4xx++;
        break;
    case 5:
        w->c.responses_5xx++;
        break;
    default:
        w->c.responses_6xx++;
    }
}

/* A final response reached client c: one request fewer awaited. A client that shut its
 * write side and awaits nothing more is closed now (after what is queued). */
static void final_delivered(struct slb_worker *w, struct peer *c)
{
    (void)w;
    if (c->kind != TAG_CLIENT)
        return;
    if (c->awaiting)
        c->awaiting--;
    if (c->eof && c->awaiting == 0 && c->state == PEER_OPEN) {
        c->state = PEER_CLOSING;
        slb_conn_close(c->conn, true);
    }
}

/* ---- requests from backends toward clients (RFC 5626, RFC 3327) --------------------------- */

static int backend_of_peer(const struct peer *p)
{
    return p->kind == TAG_BACKEND ? (int)p->link->backend : p->backend_peer;
}

/* Hands a finished message to the worker that owns the connection `dst`. */
static int hand_over(struct slb_worker *w, unsigned dst_worker, uint64_t dst,
                     const struct iovec *iov, int n, size_t len)
{
    if (w->outbox_top == 0 || len + HANDOVER_HDR > w->outbox_slot_bytes)
        return -ENOBUFS;
    unsigned slot = w->outbox_free[--w->outbox_top];
    char *buf = w->outbox + slot * w->outbox_slot_bytes;
    memcpy(buf, &dst, HANDOVER_HDR);
    size_t at = HANDOVER_HDR;
    for (int i = 0; i < n; i++) {
        memcpy(buf + at, iov[i].iov_base, iov[i].iov_len);
        at += iov[i].iov_len;
    }
    uint64_t a = (uint64_t)1 << 48 | (uint64_t)w->index << 16 | slot;
    int rc = slb_loop_post(slb_worker_loop(w->sh->workers[dst_worker]), a, len);
    if (rc < 0) {
        w->outbox_free[w->outbox_top++] = (uint16_t)slot;
        return rc;
    }
    w->c.handoffs_sent++;
    return 0;
}

static enum step toward_client(struct slb_worker *w, struct peer *p, const char *base)
{
    const struct slb_sip_msg *m = &w->msg;
    const struct slb_route_info *ri = &w->route;
    w->c.requests_to_clients++;
    if (!ri->flow_ok) {
        w->c.flow_bad_mac++;
        reply(w, p, base, 403, "Forbidden - Bad Flow Token", NULL);
        return STEP_NEXT;
    }
    if (m->max_forwards == 0 || m->via_count >= SLB_SIP_MAX_VIAS) {
        reply(w, p, base, 483, "Too Many Hops", NULL);
        return STEP_NEXT;
    }
    if (m->method_id != SLB_METHOD_ACK && reject_request(w, p, base))
        return STEP_NEXT;
    unsigned dst_worker = slb_conn_id_loop((struct slb_conn_id){ri->flow});
    struct peer *c = NULL;
    if (dst_worker == w->index) {
        struct slb_conn *conn = slb_conn_get(&w->loop, (struct slb_conn_id){ri->flow});
        c = conn ? conn->owner : NULL;
        /* A client that shut its write side can answer nothing: its flow is gone for
         * requests, though responses still reach it. */
        if (!c || c->kind != TAG_CLIENT || c->state != PEER_OPEN || c->eof)
            c = NULL;
    }
    if ((dst_worker == w->index && !c) || dst_worker >= w->cfg->n_workers) {
        /* RFC 5626 5.3: the flow is gone. */
        w->c.flow_failed++;
        reply(w, p, base, 430, "Flow Failed", NULL);
        return STEP_NEXT;
    }
    struct slb_sip_edit *e = &w->edit;
    slb_sip_edit_init(e, base, m->msg_len);
    int erc = slb_proxy_request_edits(e, m, &w->sh->self, p->ip, p->ip_len, p->port, p->id.v,
                                      true);
    if (erc == 0)
        erc = drop_our_route(w, e);
    int b = backend_of_peer(p);
    if (erc == 0 && slb_proxy_dialog_forming(m) && b >= 0)
        erc = slb_proxy_record_route(e, m, &w->sh->self, w->cfg->backends[b].token, ri->flow,
                                     ri->flow_flags, true);
    if (erc < 0) {
        reply(w, p, base, 513, "Message Too Large", NULL);
        return STEP_NEXT;
    }
    struct iovec iov[SLB_SIP_EDIT_MAX_IOV];
    int n = slb_sip_edit_iov(e, iov, (int)SLB_SIP_EDIT_MAX_IOV);
    size_t len = slb_sip_edit_len(e);
    int rc = c ? send_iov(w, c, iov, n, len) : hand_over(w, dst_worker, ri->flow, iov, n, len);
    if (rc < 0) {
        /* One slow client must not stall the backend's connection: it is told to retry. */
        w->c.to_client_busy++;
        reply(w, p, base, 503, "Service Unavailable - Flow Busy", "Retry-After: 1\r\n");
        return STEP_NEXT;
    }
    w->c.requests_to_clients_forwarded++;
    return STEP_NEXT;
}

/* The backend a response must go back to when the connection it came from is gone: the
 * backend whose host:port is the sent-by of the Via below ours. */
static struct peer *backend_for_via(struct slb_worker *w, const struct slb_sip_msg *m)
{
    if (m->via_count < 2)
        return NULL;
    struct slb_sip_via v;
    if (slb_sip_via_parse(m->vias[1].value, &v) < 0)
        return NULL;
    const struct slb_route_table *t = route_table(w);
    for (unsigned b = 0; b < t->n_backends; b++) {
        const struct slb_backend_spec *s = &w->cfg->backends[b];
        if (t->state[b] == SLB_BACKEND_REMOVED || v.port != s->port ||
            v.host.len != strlen(s->host) || memcmp(v.host.ptr, s->host, v.host.len))
            continue;
        struct link *l = pick_link(w, b, 0);
        return l && l->state == LINK_READY ? l->peer : NULL;
    }
    return NULL;
}

/* Any response: our top Via names the connection its request came from (RFC 3261 16.7:
 * a response whose top Via is not ours is not for us). That connection may be a client's,
 * one of our links, or a backend's connection to us, on this worker or another. When it is
 * gone, a client's answer to a backend's request goes back on one of our links to that
 * backend; anything else is dropped and counted. */
static void relay_response(struct slb_worker *w, struct peer *from, const char *base)
{
    const struct slb_sip_msg *m = &w->msg;
    w->c.responses_in++;
    uint64_t id;
    bool to_backend_side;
    if (!slb_proxy_response_target(m, &w->sh->self, &id, &to_backend_side)) {
        w->c.drop_response_not_ours++;
        return;
    }
    /* A response crosses from one side to the other: a client answers a backend's request,
     * a backend a client's. A client's response naming another client's connection (or a
     * backend's naming a backend's) is forged, whatever its MAC. */
    bool from_client = from->kind == TAG_CLIENT && from->backend_peer < 0;
    if (from_client == !to_backend_side) {
        w->c.drop_response_forged++;
        return;
    }
    struct slb_sip_edit *e = &w->edit;
    slb_sip_edit_init(e, base, m->msg_len);
    if (slb_sip_edit_pop_via(e, m) < 0)
        return;
    struct iovec iov[SLB_SIP_EDIT_MAX_IOV];
    int n = slb_sip_edit_iov(e, iov, (int)SLB_SIP_EDIT_MAX_IOV);
    size_t len = slb_sip_edit_len(e);
    unsigned dst_worker = slb_conn_id_loop((struct slb_conn_id){id});
    if (m->status >= 200 && m->cseq_method_id == SLB_METHOD_INVITE && m->via_count > 1 &&
        dst_worker == w->index) {
        /* The INVITE is answered: keep its entry only for the ACK and retransmissions. */
        struct slb_sip_via cv;
        if (slb_sip_via_parse(m->vias[1].value, &cv) == 0) {
            uint64_t now = slb_loop_now_ms(&w->loop);
            struct pending_invite *pi =
                pending_find(w, pending_key_of(w, cv.branch, m->call_id), now);
            if (pi)
                pi->expires_ms = now + PENDING_AFTER_MS;
        }
    }
    if (dst_worker != w->index && dst_worker < w->cfg->n_workers) {
        if (hand_over(w, dst_worker, id, iov, n, len) == 0) {
            w->c.responses_forwarded++;
            count_response(w, m->status);
            return;
        }
    }
    struct slb_conn *conn = dst_worker == w->index ? slb_conn_get(&w->loop, (struct slb_conn_id){id})
                                                   : NULL;
    struct peer *to = conn ? conn->owner : NULL;
    if (!to || to->state != PEER_OPEN)
        to = from_client ? backend_for_via(w, m) : NULL;
    if (!to) {
        w->c.drop_response_stale_client++;
        return;
    }
    /* A client that does not read its responses loses them rather than stalling the
     * connection that others share. */
    if (send_iov(w, to, iov, n, len) < 0) {
        w->c.drop_response_client_full++;
        return;
    }
    w->c.responses_forwarded++;
    if (from_client)
        w->c.responses_to_backends++;
    else if (m->status >= 200)
        final_delivered(w, to);
    count_response(w, m->status);
}

static void on_msg(struct slb_loop *loop, uint64_t a, uint64_t b)
{
    struct slb_worker *w = slb_loop_user(loop);
    unsigned kind = (unsigned)(a >> 48), from = (unsigned)(a >> 16) & 0xff;
    unsigned slot = (unsigned)a & 0xffff;
    if (from >= w->cfg->n_workers)
        return;
    struct slb_worker *src = w->sh->workers[from];
    if (kind == 2) { /* our slot is back */
        if (slot < OUTBOX_SLOTS && w->outbox_top < OUTBOX_SLOTS)
            w->outbox_free[w->outbox_top++] = (uint16_t)slot;
        return;
    }
    if (slot >= OUTBOX_SLOTS || (size_t)b + HANDOVER_HDR > src->outbox_slot_bytes)
        return;
    const char *buf = src->outbox + slot * src->outbox_slot_bytes;
    uint64_t dst;
    memcpy(&dst, buf, HANDOVER_HDR);
    struct slb_conn *conn = slb_conn_get(&w->loop, (struct slb_conn_id){dst});
    struct peer *c = conn ? conn->owner : NULL;
    struct iovec iov = {(void *)(buf + HANDOVER_HDR), (size_t)b};
    /* A half-closed client still gets responses, but no more requests (see toward_client). */
    bool response = b >= 8 && !memcmp(iov.iov_base, "SIP/2.0 ", 8);
    if (c && (response || !c->eof) && send_iov(w, c, &iov, 1, (size_t)b) == 0) {
        w->c.handoffs_delivered++;
        if (response && b >= 9 && ((const char *)iov.iov_base)[8] >= '2')
            final_delivered(w, c);
    } else {
        /* The flow went away meanwhile (or is full): a request gets 430 Flow Failed (RFC
         * 5626 5.3), sent back like any response, by our Via on top of it. */
        w->c.handoffs_lost++;
        const char *msg = buf + HANDOVER_HDR;
        if (slb_sip_scan(msg, (size_t)b, &w->lim, &w->msg, w->hdrs, SLB_SIP_MAX_HEADERS_DEFAULT) == 0 &&
            slb_proxy_can_reply(&w->msg)) {
            w->c.flow_failed++;
            int n = slb_proxy_reply(w->reply, w->reply_cap, &w->msg, msg, 430, "Flow Failed",
                                    NULL, "slbflow");
            /* We answer for the client that is gone: the 430 travels as its response. */
            static const struct peer for_client = {.kind = TAG_CLIENT, .backend_peer = -1};
            if (n > 0 && slb_sip_scan(w->reply, (size_t)n, &w->lim, &w->msg, w->hdrs,
                                      SLB_SIP_MAX_HEADERS_DEFAULT) == 0)
                relay_response(w, (struct peer *)&for_client, w->reply);
        }
    }
    /* Give the slot back (a return names the slot's owner); if the post cannot go now,
     * the refresh timer retries it. */
    uint64_t back = (uint64_t)2 << 48 | (uint64_t)from << 16 | slot;
    if (slb_loop_post(slb_worker_loop(src), back, 0) < 0 && w->n_returns < w->returns_cap)
        w->returns[w->n_returns++] = (struct slot_return){(uint8_t)from, (uint16_t)slot};
}

/* A hand-over (kind 1) whose MSG_RING never arrived: the slot is still ours. A slot
 * return (kind 2) that never arrived: retried like one whose post failed at once. */
static void on_msg_failed(struct slb_loop *loop, uint64_t a, int res)
{
    struct slb_worker *w = slb_loop_user(loop);
    (void)res;
    unsigned kind = (unsigned)(a >> 48), owner = (unsigned)(a >> 16) & 0xff;
    unsigned slot = (unsigned)a & 0xffff;
    if (slot >= OUTBOX_SLOTS)
        return;
    w->c.handoff_slots_reclaimed++;
    if (kind == 1 && owner == w->index && w->outbox_top < OUTBOX_SLOTS) {
        w->c.handoffs_lost++;
        w->outbox_free[w->outbox_top++] = (uint16_t)slot;
    } else if (kind == 2 && owner < w->cfg->n_workers && w->n_returns < w->returns_cap) {
        w->returns[w->n_returns++] = (struct slot_return){(uint8_t)owner, (uint16_t)slot};
    }
}

/* Slot returns that could not be posted at once. */
static void retry_returns(struct slb_worker *w)
{
    unsigned keep = 0;
    for (unsigned i = 0; i < w->n_returns; i++) {
        struct slot_return r = w->returns[i];
        uint64_t back = (uint64_t)2 << 48 | (uint64_t)r.worker << 16 | r.slot;
        if (slb_loop_post(slb_worker_loop(w->sh->workers[r.worker]), back, 0) < 0)
            w->returns[keep++] = r;
    }
    w->n_returns = keep;
}

/* A keepalive's answer; one that cannot be queued is dropped (the client is backed up
 * and will be told by the stall bound, not by a pong). */
static void pong(struct slb_worker *w, struct peer *p)
{
    static const char crlf[2] = {'\r', '\n'};
    struct iovec iov = {(void *)crlf, 2};
    (void)send_iov(w, p, &iov, 1, 2);
}

/* Handles one frame; returns whether to go on. */
static enum step handle_frame(struct slb_worker *w, struct peer *p, const char *base,
                              const struct slb_sip_frame *fr)
{
    const struct slb_sip_msg *m = &w->msg;
    p->frames++;
    switch (fr->kind) {
    case SLB_FRAME_PING:
        w->c.keepalives++;
        pong(w, p); /* RFC 5626 3.5.1 */
        return STEP_NEXT;
    case SLB_FRAME_SKIP:
    case SLB_FRAME_NEED_MORE:
        return STEP_NEXT;
    case SLB_FRAME_BAD:
    case SLB_FRAME_FATAL: {
        /* A request gets its 400/505/513 when a response can be built (it needs Via, From,
         * To, Call-ID and CSeq); a client request that cannot be answered closes the
         * connection, as does anything that breaks framing. */
        bool answerable = m->is_request && slb_proxy_can_reply(m);
        if (answerable)
            reply(w, p, base, slb_sip_err_status(m->err), slb_sip_err_reason(m->err), NULL);
        bool close = fr->kind == SLB_FRAME_FATAL ||
                     (p->kind == TAG_CLIENT && m->is_request && !answerable);
        slb_log_limited(&w->rl_input, slb_loop_now_ms(&w->loop), SLB_LOG_WARN,
                        "worker %u: %s %s:%u sent a bad message: %s%s", w->index,
                        p->kind == TAG_CLIENT ? "client" : "backend", p->ip, p->port,
                        slb_sip_err_reason(m->err), close ? " (closing)" : "");
        if (close) {
            w->c.closed_bad_input++;
            p->state = PEER_CLOSING;
            slb_conn_close(p->conn, true);
            return STEP_STOP;
        }
        return STEP_NEXT;
    }
    case SLB_FRAME_MESSAGE:
        break;
    }
    if (!m->is_request) {
        relay_response(w, p, base);
        return STEP_NEXT;
    }
    slb_proxy_route_info(m, &w->sh->self, &w->route);
    w->strict = !w->route.ours && slb_proxy_strict_routed(m, &w->sh->self, &w->route);
    /* Only a backend (one of our links, or an authenticated connection from a backend's
     * address) may send toward a client, and only with a flow token naming someone else
     * than itself. */
    bool from_backend = p->kind == TAG_BACKEND || p->backend_peer >= 0;
    bool toward = w->route.has_flow && !(w->route.flow_ok && w->route.flow == p->id.v);
    if (from_backend && toward)
        return toward_client(w, p, base);
    if (p->unauth_backend && toward) {
        /* A backend's address without a verified certificate, sending toward a phone:
         * told plainly (a registrar missing its client certificate), never relayed. */
        w->c.drop_backend_request++;
        reply(w, p, base, 403, "Forbidden - Backend Not Authenticated", NULL);
        return STEP_NEXT;
    }
    if (p->kind == TAG_CLIENT)
        return client_request(w, p, base);
    w->c.drop_backend_request++;
    reply(w, p, base, 403, "Forbidden - No Flow Token", NULL);
    return STEP_NEXT;
}

/* Frames and handles messages in buf[0, len). Returns the bytes consumed; *stop is set when
 * processing must pause (parked or closing). */
static size_t consume(struct slb_worker *w, struct peer *p, const char *buf, size_t len,
                      bool *stop)
{
    size_t at = 0;
    *stop = false;
    while (at < len && p->state == PEER_OPEN) {
        slb_sip_frame(buf + at, len - at, &w->lim, &w->msg, w->hdrs, SLB_SIP_MAX_HEADERS_DEFAULT,
                      &p->fr);
        if (p->fr.kind == SLB_FRAME_NEED_MORE)
            break;
        if (handle_frame(w, p, buf + at, &p->fr) == STEP_STOP) {
            *stop = true;
            /* A parked message stays unconsumed; after a close nothing more is read. */
            if (p->state == PEER_CLOSING)
                at = len;
            break;
        }
        at += p->fr.frame_len;
        p->fr = (struct slb_sip_frame){0};
    }
    if (p->state != PEER_OPEN)
        *stop = true;
    return at;
}

/* Keeps buf[used, len) as the peer's pending bytes. Returns false when that failed (no
 * pending buffer free, or more than one holds): the connection is then closed. */
static bool keep_rest(struct slb_worker *w, struct peer *p, const char *buf, size_t used,
                      size_t len)
{
    int rc = slb_inbuf_keep(&w->inbufs, &p->in, buf, used, len);
    if (rc == 0)
        return true;
    if (rc == -ENOBUFS)
        w->c.pending_pool_empty++;
    else
        w->c.closed_bad_input++;
    p->state = PEER_CLOSING;
    slb_conn_close(p->conn, false);
    return false;
}

static void hs_unlink(struct slb_worker *w, struct peer *p);

static void on_handshake(struct slb_worker *w, struct peer *p)
{
    p->state = PEER_OPEN;
    if (p->kind == TAG_CLIENT) {
        w->c.handshakes_ok++;
        hs_unlink(w, p);
        /* Requests toward clients are taken only from authenticated backends: our own
         * links, or a connection from a backend's address whose certificate verified. */
        if (p->backend_peer >= 0 && !slb_tls_peer_verified(&p->tls)) {
            p->backend_peer = -1;
            p->unauth_backend = true;
            w->c.backend_unauthenticated++;
            slb_log_limited(&w->rl_auth, slb_loop_now_ms(&w->loop), SLB_LOG_WARN,
                            "worker %u: %s:%u comes from a backend's address without a "
                            "verified client certificate: treated as a client", w->index, p->ip,
                            p->port);
        }
        slb_conn_set_timeout(p->conn, (uint32_t)w->cfg->idle_timeout_ms);
        return;
    }
    w->c.backend_handshakes_ok++;
    slb_conn_set_timeout(p->conn, 0);
    struct link *l = p->link;
    l->state = LINK_READY;
    l->backoff_ms = 0;
    wake_parked(w, l);
}

static void tls_failed(struct slb_worker *w, struct peer *p, int rc)
{
    enum slb_tls_fail why = slb_tls_fail_reason(&p->tls);
    if (p->state == PEER_HANDSHAKE && p->kind == TAG_CLIENT) {
        w->c.handshakes_failed++;
        switch (why) {
        case SLB_TLS_FAIL_PROTOCOL:
            w->c.handshake_fail_protocol++;
            break;
        case SLB_TLS_FAIL_BAD_CERT:
            w->c.handshake_fail_bad_cert++;
            break;
        case SLB_TLS_FAIL_NO_SHARED_CIPHER:
            w->c.handshake_fail_no_shared_cipher++;
            break;
        case SLB_TLS_FAIL_PEER_CLOSED:
            w->c.handshake_fail_peer_closed++;
            break;
        default:
            w->c.handshake_fail_other++;
        }
    }
    char err[128];
    slb_log_limited(p->kind == TAG_CLIENT ? &w->rl_tls : &w->rl_backend,
                    slb_loop_now_ms(&w->loop), SLB_LOG_WARN,
                    "worker %u: TLS with %s %s:%u failed (%s): %s", w->index,
                    p->kind == TAG_CLIENT ? "client" : "backend", p->ip, p->port,
                    slb_tls_fail_name(why), slb_tls_error_string(&p->tls, err, sizeof(err)));
    (void)rc;
    p->state = PEER_CLOSING;
    slb_conn_close(p->conn, true); /* lets a TLS alert out */
}

/* Decrypts cipher (may be empty: continue reading what TLS holds) and handles the
 * plaintext until TLS has no more or the peer is parked or closing. */
static void plain_input(struct slb_worker *w, struct peer *p, const void *data, size_t len);

/* Keeps w->stash_bytes in step with a client's TLS stash; returns the new sum. */
static size_t stash_account(struct slb_worker *w, struct peer *p)
{
    size_t now = p->plain ? 0 : slb_tls_stash_bytes(&p->tls);
    w->stash_bytes = w->stash_bytes - p->stash_seen + now;
    p->stash_seen = (uint32_t)now;
    return w->stash_bytes;
}

static void peer_input(struct slb_worker *w, struct peer *p, const void *cipher, size_t len)
{
    if (p->plain) {
        plain_input(w, p, cipher, len);
        return;
    }
    for (int rounds = 0; rounds < 64; rounds++) {
        /* Never more than a pending buffer can hold: a client parked by this very batch
         * leaves what it did not consume there. */
        size_t cap, got = 0;
        char *dst = slb_inbuf_dst(&w->inbufs, &p->in, &cap);
        int ev = slb_tls_feed(&p->tls, cipher, len, dst, cap, &got);
        cipher = NULL;
        len = 0;
        if (ev < 0) {
            tls_failed(w, p, ev);
            return;
        }
        /* Our answer to the peer (a KeyUpdate, a ticket) could not be queued: stop reading
         * it until its output drains (on_drained flushes and resumes). A client is paused
         * so that what it keeps sending meanwhile waits in the kernel, not in memory. */
        if (p->kind == TAG_CLIENT) {
            p->tls_more = (ev & SLB_TLS_EV_MORE) != 0;
            stash_account(w, p);
            if ((ev & SLB_TLS_EV_WANT_WRITE) && !p->out_blocked)
                client_block(w, p);
        }
        if (ev & SLB_TLS_EV_HANDSHAKE_DONE)
            on_handshake(w, p);
        if (ev & SLB_TLS_EV_NEW_SESSION && p->kind == TAG_BACKEND) {
            struct link *l = p->link;
            if (l->session)
                slb_tls_session_free(l->session);
            l->session = slb_tls_session_get(&p->tls);
        }
        bool stop = false;
        if (got) {
            size_t total;
            const char *buf = slb_inbuf_filled(&w->inbufs, &p->in, got, &total);
            size_t used = consume(w, p, buf, total, &stop);
            if (p->state == PEER_CLOSING || !keep_rest(w, p, buf, used, total))
                return;
        }
        if (ev & SLB_TLS_EV_PEER_CLOSED) {
            p->state = PEER_CLOSING;
            slb_tls_close(&p->tls);
            slb_conn_close(p->conn, true);
            return;
        }
        if (stop || p->out_blocked || (ev & SLB_TLS_EV_WANT_WRITE) || !(ev & SLB_TLS_EV_MORE))
            return;
    }
}

/* Bytes from a plain TCP client: framed straight from the receive buffer when nothing is
 * pending (no copy at all), else behind the pending bytes. What framing leaves of one
 * receive buffer (16 KiB) always fits a pending buffer (at least a message and two TLS
 * records: over 33 KiB). */
static void plain_input(struct slb_worker *w, struct peer *p, const void *data, size_t len)
{
    if (!len)
        return;
    const char *buf = data;
    size_t total = len;
    bool paused = p->parked || p->out_blocked;
    if (p->in.pending || paused) {
        int rc = slb_inbuf_append(&w->inbufs, &p->in, data, len);
        if (rc < 0) {
            /* More than a whole message behind what is pending (the framer refuses
             * anything larger): this client is flooding while paused. */
            if (rc == -ENOBUFS)
                w->c.pending_pool_empty++;
            else
                w->c.closed_input_flood++;
            p->state = PEER_CLOSING;
            slb_conn_close(p->conn, false);
            return;
        }
        if (paused)
            return;
        buf = p->in.pending;
        total = p->in.len;
    }
    bool stop;
    size_t used = consume(w, p, buf, total, &stop);
    if (p->state == PEER_CLOSING)
        return;
    keep_rest(w, p, buf, used, total);
}

/* A parked client whose link can take more (or went away): handle its pending bytes, then
 * anything TLS still holds for it. */
static void drain_client(struct slb_worker *w, struct peer *c)
{
    if (c->parked || c->out_blocked)
        return;
    if (c->in.pending) {
        bool stop;
        const char *buf = c->in.pending;
        size_t len = c->in.len;
        size_t used = consume(w, c, buf, len, &stop);
        if (c->state != PEER_OPEN || !keep_rest(w, c, buf, used, len) || stop)
            return;
    }
    if (!c->plain)
        peer_input(w, c, NULL, 0);
}

static void resume_client(struct slb_worker *w, struct peer *c)
{
    if (c->state != PEER_OPEN)
        return;
    drain_client(w, c);
    if (c->state == PEER_OPEN) {
        client_recv_update(c);
        client_timer(w, c);
    }
}

/* ---- io/ callbacks ------------------------------------------------------------------------ */

static struct peer *peer_of(struct slb_worker *w, struct slb_conn *conn)
{
    return &w->peers[slb_conn_id_slot(conn->id)];
}

static void peer_address(struct peer *p, const struct slb_conn *conn)
{
    const struct sockaddr_storage *ss = &conn->peer;
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const void *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, p->ip, sizeof(p->ip));
        p->port = ntohs(a->sin6_port);
    } else if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const void *)ss;
        inet_ntop(AF_INET, &a->sin_addr, p->ip, sizeof(p->ip));
        p->port = ntohs(a->sin_port);
    } else {
        strcpy(p->ip, "0.0.0.0");
        p->port = 0;
    }
    p->ip_len = (uint8_t)strlen(p->ip);
}

static int peer_open(struct slb_worker *w, struct slb_conn *conn, uint8_t kind,
                     struct slb_tls_ctx *ctx, const char *host)
{
    struct peer *p = peer_of(w, conn);
    memset(p, 0, offsetof(struct peer, ip));
    p->conn = conn;
    p->id = conn->id;
    p->kind = kind;
    p->state = PEER_HANDSHAKE;
    p->backend_peer = -1;
    conn->owner = p;
    peer_address(p, conn);
    if (slb_tls_conn_init(&p->tls, ctx, host, tls_out, p) < 0) {
        p->state = PEER_FREE;
        return -ENOMEM;
    }
    slb_conn_set_timeout(conn, (uint32_t)w->cfg->handshake_timeout_ms);
    return 0;
}

/* The backend whose address a connection comes from (the allow-list for requests toward
 * clients), or -1. */
static int16_t backend_by_address(struct slb_worker *w, const struct sockaddr_storage *ss)
{
    const struct slb_route_table *t = route_table(w);
    for (unsigned b = 0; b < t->n_backends; b++) {
        const struct sockaddr_storage *a = &w->cfg->backends[b].addr.sa;
        if (t->state[b] == SLB_BACKEND_REMOVED || a->ss_family != ss->ss_family)
            continue;
        if (ss->ss_family == AF_INET &&
            ((const struct sockaddr_in *)(const void *)a)->sin_addr.s_addr ==
                ((const struct sockaddr_in *)(const void *)ss)->sin_addr.s_addr)
            return (int16_t)b;
        if (ss->ss_family == AF_INET6 &&
            !memcmp(&((const struct sockaddr_in6 *)(const void *)a)->sin6_addr,
                    &((const struct sockaddr_in6 *)(const void *)ss)->sin6_addr, 16))
            return (int16_t)b;
    }
    return -1;
}

/* ---- admission: per-worker and per-source limits ---------------------------------------- */

static void hs_unlink(struct slb_worker *w, struct peer *p)
{
    if (!p->in_hs_list)
        return;
    if (p->hs_prev)
        p->hs_prev->hs_next = p->hs_next;
    else
        w->hs_head = p->hs_next;
    if (p->hs_next)
        p->hs_next->hs_prev = p->hs_prev;
    else
        w->hs_tail = p->hs_prev;
    p->hs_prev = p->hs_next = NULL;
    p->in_hs_list = false;
    w->n_handshaking--;
}

/* A new TLS client joins the handshakes in progress; at --max-handshakes the oldest one
 * goes. A real handshake takes milliseconds, so whoever is evicted has been sitting on
 * its slot (silent or trickling connections) while newcomers keep getting in. */
static void hs_link(struct slb_worker *w, struct peer *p)
{
    if (w->n_handshaking >= (uint32_t)w->cfg->max_handshakes && w->hs_head) {
        struct peer *old = w->hs_head;
        w->c.handshakes_evicted++;
        hs_unlink(w, old);
        old->state = PEER_CLOSING;
        slb_conn_close(old->conn, false);
    }
    p->hs_next = NULL;
    p->hs_prev = w->hs_tail;
    if (w->hs_tail)
        w->hs_tail->hs_next = p;
    else
        w->hs_head = p;
    w->hs_tail = p;
    p->in_hs_list = true;
    w->n_handshaking++;
}

/* One line per source per LIMIT_LOG_MS (and a process-wide rate bound), naming the
 * address so that fail2ban and the like can act on it. */
static void limit_log(struct slb_worker *w, const struct peer *p, const char *what,
                      bool banned_now)
{
    uint64_t now = slb_loop_now_ms(&w->loop);
    if (banned_now) {
        w->c.bans++;
        slb_log_limited(&w->rl_limit, now, SLB_LOG_WARN,
                        "limit: source %s banned for %llu ms (%s)", p->ip,
                        (unsigned long long)w->cfg->ban_time_ms, what);
        return;
    }
    if (slb_limit_should_log(w->sh->limits, p->src, now, LIMIT_LOG_MS))
        slb_log_limited(&w->rl_limit, now, SLB_LOG_WARN, "limit: source %s refused: %s", p->ip,
                        what);
}

static void count_refusal(struct slb_worker *w, enum slb_limit_verdict v)
{
    switch (v) {
    case SLB_LIMIT_CONNS:
        w->c.limit_conns_refused++;
        break;
    case SLB_LIMIT_CONN_RATE:
        w->c.limit_conn_rate_refused++;
        break;
    case SLB_LIMIT_HANDSHAKE_RATE:
        w->c.limit_handshake_rate_refused++;
        break;
    case SLB_LIMIT_BANNED:
        w->c.banned_refused++;
        break;
    case SLB_LIMIT_OK:
        break;
    }
}

/* A client connection: within --max-conns and its source's limits, or refused (closed at
 * once; no on_close follows). */
static int admit_client(struct slb_worker *w, struct peer *p, const struct slb_conn *conn)
{
    if (w->n_clients >= (uint32_t)w->cfg->max_conns) {
        w->c.refused_max_conns++;
        return -ECONNREFUSED;
    }
    p->backend_peer = backend_by_address(w, &conn->peer);
    p->exempt = p->backend_peer >= 0 ||
                slb_cidr_match(w->cfg->allow, w->cfg->n_allow, &conn->peer);
    p->src = slb_limit_key(&w->sh->limits->key, &conn->peer);
    if (!p->exempt) {
        bool banned_now;
        enum slb_limit_verdict v =
            slb_limit_admit(w->sh->limits, p->src, slb_loop_now_ms(&w->loop), &banned_now);
        if (v != SLB_LIMIT_OK) {
            count_refusal(w, v);
            limit_log(w, p, slb_limit_verdict_name(v), banned_now);
            return -ECONNREFUSED;
        }
        p->src_counted = true;
    }
    w->n_clients++;
    w->c.client_accepted++;
    return 0;
}

static int on_accept(struct slb_loop *loop, struct slb_conn *conn)
{
    struct slb_worker *w = slb_loop_user(loop);
    struct peer *p = peer_of(w, conn);
    memset(p, 0, offsetof(struct peer, ip));
    peer_address(p, conn);
    if (admit_client(w, p, conn) < 0)
        return -ECONNREFUSED;
    slb_conn_set_out_limits(conn, (uint32_t)w->cfg->client_out_max, false);
    if (conn->tag == TAG_PLAIN_LISTENER) {
        /* A tcp:// listener (lab interop, legacy clients): no TLS, open at once, and never
         * a backend (nothing authenticates it). */
        p->conn = conn;
        p->id = conn->id;
        p->kind = TAG_CLIENT;
        p->state = PEER_OPEN;
        p->plain = true;
        p->backend_peer = -1;
        conn->owner = p;
        slb_conn_set_timeout(conn, (uint32_t)w->cfg->idle_timeout_ms);
        return 0;
    }
    struct peer admitted = *p; /* peer_open starts the record afresh */
    if (peer_open(w, conn, TAG_CLIENT, w->sctx, NULL) < 0) {
        if (admitted.src_counted)
            slb_limit_release(w->sh->limits, admitted.src);
        w->n_clients--;
        w->c.client_accepted--;
        return -ENOMEM;
    }
    p->backend_peer = admitted.backend_peer;
    p->exempt = admitted.exempt;
    p->src = admitted.src;
    p->src_counted = admitted.src_counted;
    p->ctx = w->sctx;
    w->sctx_sessions++;
    slb_tls_conn_set_stash_max(&p->tls, CLIENT_STASH_MAX);
    hs_link(w, p);
    return 0;
}

/* After a link failed: redial after a backoff, tell the health checker, and (wake) let
 * its parked clients retry now. dial() passes wake = false: it runs inside the routing of
 * a message (route_table -> reconcile), which must not be re-entered; those clients are
 * woken when the link comes up, or by the refresh timer once the backend is down. */
static void schedule_redial(struct slb_worker *w, struct link *l, bool wake)
{
    l->peer = NULL;
    if (l->state == LINK_REMOVED) {
        if (wake)
            wake_parked(w, l);
        return; /* its backend was removed by a reload */
    }
    l->state = LINK_DOWN;
    if (atomic_load(&w->stop_requested))
        return; /* tearing down: no redial, no table change */
    l->backoff_ms = l->backoff_ms ? l->backoff_ms * 2 : REDIAL_MS_MIN;
    if (l->backoff_ms > REDIAL_MS_MAX)
        l->backoff_ms = REDIAL_MS_MAX;
    slb_timer_arm(slb_loop_wheel(&w->loop), &l->redial, l->backoff_ms);
    /* A passive health signal: the control thread counts it and probes at once. */
    atomic_fetch_add_explicit(&w->signals->failures[l->backend], 1, memory_order_relaxed);
    if (wake)
        wake_parked(w, l);
}

static int on_connect(struct slb_loop *loop, struct slb_conn *conn, int res)
{
    struct slb_worker *w = slb_loop_user(loop);
    struct link *l = &w->links[conn->tag - TAG_BACKEND];
    if (res < 0) {
        w->c.backend_connect_failed++;
        slb_log_limited(&w->rl_backend, slb_loop_now_ms(loop), SLB_LOG_WARN,
                        "worker %u: cannot connect to backend %s: %s", w->index,
                        w->cfg->backends[l->backend].name, strerror(-res));
        schedule_redial(w, l, true);
        return 0;
    }
    const struct slb_backend_spec *b = &w->cfg->backends[l->backend];
    if (peer_open(w, conn, TAG_BACKEND, w->cctx, b->host) < 0) {
        schedule_redial(w, l, true);
        return -ENOMEM;
    }
    struct peer *p = conn->owner;
    p->link = l;
    l->peer = p;
    w->c.backend_connects++;
    if (l->session)
        slb_tls_conn_set_session(&p->tls, l->session);
    int ev = slb_tls_start(&p->tls);
    if (ev < 0) {
        tls_failed(w, p, ev);
        return 0;
    }
    return 0;
}

static void dial(struct slb_worker *w, struct link *l)
{
    const struct slb_backend_spec *b = &w->cfg->backends[l->backend];
    struct slb_conn_id id;
    uint32_t tag = TAG_BACKEND + (uint32_t)(l - w->links);
    l->state = LINK_CONNECTING;
    int rc = slb_loop_connect(&w->loop, (const struct sockaddr *)&b->addr.sa, b->addr.len, tag,
                              &id);
    if (rc == -EMFILE || rc == -ENFILE) {
        /* Our limit, not the backend's failure: said so, and no health signal. */
        w->c.fd_exhausted++;
        slb_log_limited(&w->rl_fds, slb_loop_now_ms(&w->loop), SLB_LOG_ERROR,
                        "worker %u: out of file descriptors (%s) dialling backend %s; raise "
                        "RLIMIT_NOFILE or lower --max-conns", w->index, strerror(-rc), b->name);
        l->state = LINK_DOWN;
        l->backoff_ms = REDIAL_MS_MAX / 10;
        slb_timer_arm(slb_loop_wheel(&w->loop), &l->redial, l->backoff_ms);
        return;
    }
    if (rc < 0) {
        schedule_redial(w, l, false);
        return;
    }
    struct slb_conn *conn = slb_conn_get(&w->loop, id);
    if (conn) {
        slb_conn_set_timeout(conn, (uint32_t)w->cfg->handshake_timeout_ms);
        slb_conn_set_out_limits(conn, 0, true); /* links may use the reserved chunks */
    }
}

/* A reload removed backend b: its links close (after what is queued) and stay closed;
 * clients waiting on them re-route. */
static void close_links(struct slb_worker *w, unsigned b)
{
    unsigned k = (unsigned)w->cfg->backend_conns;
    for (unsigned i = 0; i < k; i++) {
        struct link *l = &w->links[b * k + i];
        slb_timer_cancel(&l->redial);
        l->state = LINK_REMOVED;
        if (l->peer && l->peer->conn) {
            l->peer->state = PEER_CLOSING;
            slb_tls_close(&l->peer->tls);
            slb_conn_close(l->peer->conn, true);
        }
        /* Clients parked on it are woken by the refresh timer (wake_stuck_parked): this
         * runs inside the routing of a message, which must not be re-entered. */
    }
}

static void on_redial(struct slb_timer *t)
{
    struct link *l = (struct link *)((char *)t - offsetof(struct link, redial));
    dial(l->w, l);
}

/* A client's first handshake bytes: counted against its source's handshake rate. */
static bool handshake_allowed(struct slb_worker *w, struct peer *p)
{
    p->hs_counted = true;
    if (p->exempt)
        return true;
    bool banned_now;
    enum slb_limit_verdict v =
        slb_limit_handshake(w->sh->limits, p->src, slb_loop_now_ms(&w->loop), &banned_now);
    if (v == SLB_LIMIT_OK)
        return true;
    count_refusal(w, v);
    limit_log(w, p, slb_limit_verdict_name(v), banned_now);
    p->state = PEER_CLOSING;
    slb_conn_close(p->conn, false);
    return false;
}

/* After a client's bytes were handled: the message deadline starts with the first byte
 * that does not complete a frame and ends when one completes (restarting when the rest
 * of the input already began the next). Bytes that only move TLS along (a split record,
 * a KeyUpdate) count as unfinished too: a trickle of them is what slowloris sends. */
static void client_after_input(struct slb_worker *w, struct peer *p, uint64_t frames_before)
{
    if (p->state != PEER_OPEN)
        return;
    uint64_t now = slb_loop_now_ms(&w->loop);
    if (p->parked)
        p->partial_since_ms = 0;
    else if (p->frames != frames_before)
        p->partial_since_ms = p->in.pending ? now : 0;
    else if (!p->partial_since_ms)
        p->partial_since_ms = now;
    if (!p->out_blocked)
        client_timer(w, p);
}

/* Bytes that were in flight when a client was paused: decrypted behind what is pending
 * (as much as the buffer holds; the rest stays inside TLS, bounded by its stash). */
static int paused_input(struct slb_worker *w, struct peer *p, const void *data, size_t len)
{
    if (p->plain) {
        plain_input(w, p, data, len);
        return 0;
    }
    /* Into the scratch, then behind what waits: rare (only bytes already in flight when
     * the client was paused), so the copy is not worth a special case. */
    size_t got = 0, room = slb_inbuf_room(&w->inbufs, &p->in);
    int ev = slb_tls_feed(&p->tls, data, len, w->inbufs.scratch, room, &got);
    if (ev < 0) {
        tls_failed(w, p, ev);
        return 0;
    }
    p->tls_more = (ev & SLB_TLS_EV_MORE) != 0;
    if (slb_inbuf_append(&w->inbufs, &p->in, w->inbufs.scratch, got) < 0) {
        w->c.pending_pool_empty++;
        p->state = PEER_CLOSING;
        slb_conn_close(p->conn, false);
        return 0;
    }
    if (stash_account(w, p) > WORKER_STASH_BUDGET) {
        /* Whoever keeps sending while paused is the one that goes. */
        w->c.closed_input_flood++;
        p->state = PEER_CLOSING;
        slb_conn_close(p->conn, false);
        return 0;
    }
    return 0;
}

static int on_data(struct slb_loop *loop, struct slb_conn *conn, const void *data, size_t len)
{
    struct slb_worker *w = slb_loop_user(loop);
    struct peer *p = conn->owner;
    if (!p || p->state == PEER_FREE || p->state == PEER_CLOSING)
        return 0;
    if (p->kind != TAG_CLIENT) {
        peer_input(w, p, data, len);
        return 0;
    }
    if (p->state == PEER_HANDSHAKE) {
        if (!p->hs_counted && !handshake_allowed(w, p))
            return 0;
        peer_input(w, p, data, len);
        return 0;
    }
    if (p->parked || p->out_blocked)
        return paused_input(w, p, data, len);
    uint64_t frames = p->frames;
    peer_input(w, p, data, len);
    client_after_input(w, p, frames);
    return 0;
}

/* A client that shut its write side may still be owed responses: it is kept for a short
 * while (the stall bound still applies), then closed. */
static void on_eof(struct slb_loop *loop, struct slb_conn *conn)
{
    struct slb_worker *w = slb_loop_user(loop);
    struct peer *p = conn->owner;
    if (!p || p->state == PEER_FREE || p->state == PEER_CLOSING)
        return;
    if (p->kind != TAG_CLIENT || p->state != PEER_OPEN) {
        slb_conn_close(conn, true);
        return;
    }
    /* Nothing awaited (nor waiting to be sent): an ordinary close. */
    if (p->awaiting == 0 && !p->parked && !p->in.pending && !p->tls_more) {
        p->state = PEER_CLOSING;
        slb_conn_close(conn, true);
        return;
    }
    p->eof = true;
    w->c.closed_half_closed++;
    if (!p->out_blocked)
        client_timer(w, p);
}

/* The peer's output went down to its low-water mark, or chunks are back after it was
 * refused: retry what TLS holds, wake clients parked on a backend link, let a backed-up
 * client be read again, and read what TLS still holds for the peer. */
static void on_drained(struct slb_loop *loop, struct slb_conn *conn)
{
    struct slb_worker *w = slb_loop_user(loop);
    struct peer *p = conn->owner;
    if (!p || p->state != PEER_OPEN)
        return;
    int ev = 0;
    if (!p->plain) {
        ev = slb_tls_flush(&p->tls);
        if (ev < 0) {
            tls_failed(w, p, ev);
            return;
        }
        if (ev & SLB_TLS_EV_WANT_WRITE)
            return; /* still full: another on_drained follows */
    }
    if (p->kind == TAG_BACKEND) {
        if (p->link && p->link->parked_head)
            wake_parked(w, p->link);
        if (ev & SLB_TLS_EV_MORE)
            peer_input(w, p, NULL, 0);
        return;
    }
    if (!p->out_blocked || slb_conn_out_queued(conn) > (size_t)w->cfg->client_out_max / 2)
        return;
    p->out_blocked = false;
    resume_client(w, p);
}

/* Why a client's timer closed it, for the counters. */
static void count_timeout(struct slb_worker *w, const struct peer *p)
{
    if (p->state == PEER_HANDSHAKE)
        w->c.handshake_timeouts++;
    else if (p->out_blocked)
        w->c.closed_stalled++;
    else if (p->partial_since_ms && !p->parked && !p->eof)
        w->c.closed_message_timeout++;
    else if (!p->eof)
        w->c.closed_idle++;
}

static void on_close(struct slb_loop *loop, struct slb_conn *conn, int reason)
{
    struct slb_worker *w = slb_loop_user(loop);
    struct peer *p = conn->owner;
    if (!p)
        return;
    conn->owner = NULL;
    unpark(p);
    slb_inbuf_release(&w->inbufs, &p->in);
    if (p->kind == TAG_CLIENT) {
        w->stash_bytes -= p->stash_seen;
        p->stash_seen = 0;
    }
    if (!p->plain)
        slb_tls_conn_deinit(&p->tls);
    uint8_t kind = p->kind;
    struct link *l = p->link;
    if (kind == TAG_CLIENT) {
        if (reason == -ETIMEDOUT)
            count_timeout(w, p);
        hs_unlink(w, p);
        if (p->src_counted)
            slb_limit_release(w->sh->limits, p->src);
        p->src_counted = false;
        w->n_clients--;
    }
    p->state = PEER_FREE;
    p->link = NULL;
    if (kind == TAG_CLIENT) {
        if (!p->plain)
            release_sctx(w, p->ctx);
        p->ctx = NULL;
        w->c.client_closed++;
        return;
    }
    if (!atomic_load(&w->stop_requested))
        w->c.backend_lost++; /* not the links we close ourselves on the way out */
    if (l && l->peer == p) {
        if (!atomic_load(&w->stop_requested))
            slb_log_limited(&w->rl_backend, slb_loop_now_ms(loop), SLB_LOG_WARN,
                            "worker %u: connection to backend %s closed: %s", w->index,
                            w->cfg->backends[l->backend].name,
                            reason ? strerror(-reason) : "closed by peer");
        schedule_redial(w, l, true);
    }
}

/* ---- life cycle ---------------------------------------------------------------------------- */

struct slb_worker *slb_worker_new(const struct slb_shared *sh, unsigned index,
                                  struct slb_tls_ctx *server_ctx, struct slb_tls_ctx *client_ctx)
{
    struct slb_worker *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    const struct slb_config *cfg = sh->cfg;
    w->sh = sh;
    w->cfg = cfg;
    w->index = index;
    w->sctx = server_ctx;
    w->cctx = client_ctx;
    slb_sip_limits_default(&w->lim);
    w->lim.max_msg_bytes = (uint32_t)cfg->max_message_size;
    w->n_links = SLB_MAX_BACKENDS * (uint32_t)cfg->backend_conns;
    w->n_known = cfg->n_backends;
    w->n_peers = (uint32_t)cfg->max_conns + w->n_links + 16;
    w->peers = calloc(w->n_peers, sizeof(*w->peers));
    w->links = calloc(w->n_links, sizeof(*w->links));
    w->router = sh->router;
    w->signals = slb_health_signals(sh->health);
    w->drain_clock = slb_health_drain_clock(sh->health, index);
    slb_timer_init(&w->refresh, on_refresh);
    /* One decryption (a whole message and the records around it) per buffer; a pending
     * buffer for every client and every link at once. */
    int irc = slb_inbuf_pool_init(&w->inbufs, (uint32_t)cfg->max_conns + w->n_links,
                                  (size_t)cfg->max_message_size + 2 * SLB_TLS_RECORD_PLAIN_MAX);
    w->reply_cap = (size_t)cfg->max_message_size + 4096;
    w->reply = malloc(w->reply_cap);
    w->returns_cap = cfg->n_workers * OUTBOX_SLOTS;
    w->returns = calloc(w->returns_cap, sizeof(*w->returns));
    w->outbox_slot_bytes = (size_t)cfg->max_message_size + 4096;
    w->outbox = mmap(NULL, OUTBOX_SLOTS * w->outbox_slot_bytes, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    for (unsigned i = 0; i < OUTBOX_SLOTS; i++)
        w->outbox_free[i] = (uint16_t)(OUTBOX_SLOTS - 1 - i);
    w->outbox_top = OUTBOX_SLOTS;
    int rrc = slb_rate_table_init(&w->rates, (uint32_t)cfg->limit_request_rate, RATE_SLOTS);
    if (!w->peers || !w->links || irc < 0 || !w->reply || !w->returns || rrc < 0 ||
        w->outbox == MAP_FAILED) {
        if (w->outbox == MAP_FAILED)
            w->outbox = NULL;
        slb_worker_free(w);
        return NULL;
    }
    w->rl_tls = (struct slb_ratelimit)SLB_RATELIMIT_INIT(1000, 5);
    w->rl_input = (struct slb_ratelimit)SLB_RATELIMIT_INIT(1000, 5);
    w->rl_backend = (struct slb_ratelimit)SLB_RATELIMIT_INIT(1000, 5);
    w->rl_limit = (struct slb_ratelimit)SLB_RATELIMIT_INIT(1000, 20);
    w->rl_fds = (struct slb_ratelimit)SLB_RATELIMIT_INIT(10000, 1);
    w->rl_auth = (struct slb_ratelimit)SLB_RATELIMIT_INIT(10000, 1); /* apart: it must not
                                                                        * hide TLS failures */
    for (uint32_t i = 0; i < w->n_links; i++) {
        w->links[i].w = w;
        w->links[i].backend = (uint16_t)(i / (uint32_t)cfg->backend_conns);
        slb_timer_init(&w->links[i].redial, on_redial);
    }
    return w;
}

void slb_worker_free(struct slb_worker *w)
{
    if (!w)
        return;
    for (uint32_t i = 0; w->links && i < w->n_links; i++)
        if (w->links[i].session)
            slb_tls_session_free(w->links[i].session);
    free(w->peers);
    free(w->links);
    slb_inbuf_pool_deinit(&w->inbufs);
    free(w->reply);
    free(w->returns);
    slb_rate_table_deinit(&w->rates);
    if (w->outbox)
        munmap(w->outbox, OUTBOX_SLOTS * w->outbox_slot_bytes);
    free(w);
}

void *slb_worker_main(void *arg)
{
    struct slb_worker *w = arg;
    const struct slb_config *cfg = w->cfg;
    struct slb_loop_opts opts = {
        .max_conns = w->n_peers,
        .loop_id = (uint8_t)w->index,
        /* Deep enough to ride out a client's short stall at tens of thousands of calls/s
         * (a full queue drops responses rather than stalling a shared backend link);
         * chunks are taken from the loop's pool only while in use. */
        .out_cap_bytes = (uint32_t)(2 * cfg->max_message_size + 4 * SLB_TLS_RECORD_PLAIN_MAX) >
                                 (1u << 20)
                             ? (uint32_t)(2 * cfg->max_message_size + 4 * SLB_TLS_RECORD_PLAIN_MAX)
                             : (1u << 20),
        /* Enough for every link slot to queue two of the largest messages, whatever the
         * clients that stopped reading hold: backends are never starved of output. */
        .out_reserve_chunks = w->n_links * (uint32_t)((2 * (cfg->max_message_size + 4096)) / 4096),
        .accept_rcvbuf_bytes = CLIENT_RCVBUF,
        .keepalive_idle_s = (uint32_t)(cfg->tcp_keepalive_ms / 1000),
    };
    struct slb_loop_cbs cbs = {
        .on_accept = on_accept,
        .on_connect = on_connect,
        .on_data = on_data,
        .on_drained = on_drained,
        .on_close = on_close,
        .on_msg = on_msg,
        .on_msg_failed = on_msg_failed,
        .on_eof = on_eof,
    };
    int rc = slb_loop_init(&w->loop, &opts, &cbs, w);
    if (rc < 0) {
        slb_log(SLB_LOG_ERROR, "worker %u: io_uring set-up failed: %s", w->index, strerror(-rc));
        kill(getpid(), SIGTERM);
        return (void *)1;
    }
    void *result = NULL;
    for (unsigned i = 0; i < cfg->n_listen; i++) {
        const struct slb_addr *a = &cfg->listen_addrs[i];
        rc = slb_loop_listen(&w->loop, (const struct sockaddr *)&a->sa, a->len, 4096,
                             a->plain ? TAG_PLAIN_LISTENER : TAG_CLIENT);
        if (rc < 0) {
            slb_log(SLB_LOG_ERROR, "worker %u: cannot listen on %s: %s", w->index, a->text,
                    strerror(-rc));
            result = (void *)1;
            kill(getpid(), SIGTERM); /* the main thread stops the others and exits 1 */
            goto out;
        }
    }
    for (uint32_t i = 0; i < cfg->n_backends * (uint32_t)cfg->backend_conns; i++)
        dial(w, &w->links[i]);
    slb_timer_arm(slb_loop_wheel(&w->loop), &w->refresh, REFRESH_MS);
    atomic_store(&w->running, 1);
    if (!atomic_load(&w->stop_requested)) {
        rc = slb_loop_run(&w->loop);
        if (rc < 0)
            slb_log(SLB_LOG_ERROR, "worker %u: loop failed: %s", w->index, strerror(-rc));
    }
out:
    atomic_store(&w->stop_requested, 1); /* no redials during teardown */
    for (uint32_t i = 0; i < w->n_links; i++)
        slb_timer_cancel(&w->links[i].redial);
    slb_timer_cancel(&w->refresh);
    slb_loop_deinit(&w->loop);
    slb_tls_thread_cleanup();
    return result;
}

void slb_worker_stop(struct slb_worker *w)
{
    atomic_store(&w->stop_requested, 1);
    if (atomic_load(&w->running))
        slb_loop_stop(&w->loop);
}

void slb_worker_add_counters(const struct slb_worker *w, struct slb_worker_counters *sum)
{
#define SLB_X_ADD(name) sum->name += w->c.name;
    SLB_WORKER_COUNTERS(SLB_X_ADD)
#undef SLB_X_ADD
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

struct slb_loop *slb_worker_loop(struct slb_worker *w)
{
    return &w->loop;
}
