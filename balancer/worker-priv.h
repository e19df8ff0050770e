/* The relay worker's private parts, shared by the files that make it up (README's layout
 * table names each file's job):
 *   worker.c          life cycle, io/ callbacks, the refresh timer
 *   frame_dispatch.c  each framed message from a connection: to which handler it goes
 *   route_request.c   a client's request: routed to a backend, edited, forwarded
 *   relay_response.c  a response: back to the connection our Via names
 *   toward_client.c   a backend's request toward a phone (flow tokens, RFC 5626)
 *   worker_handoff.c  messages for connections on another worker (the hand-over)
 *   backend_links.c   links to backends: dial, redial, the routing table's changes
 *   client_flow.c     clients' backpressure, timers, half-close
 *   client_admit.c    admission: --max-conns, per-source limits, handshakes in progress
 *   replies.c         the responses sipslb writes itself
 *   failover.c        requests a failed backend never answered, re-sent to the next one
 *   server_ctx.c      certificate rotation (server TLS contexts in use)
 *
 * Everything here runs on the worker's own thread, except what slb_worker_* in worker.h
 * says. A connection's record (struct relay_conn) lives in the slot of the same index as
 * its io/ connection and is valid from accept/connect until on_close. */
#ifndef SLB_BALANCER_WORKER_PRIV_H
#define SLB_BALANCER_WORKER_PRIV_H

#include <arpa/inet.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>

#include "balancer/handoff.h"
#include "balancer/health.h"
#include "balancer/pending_invite.h"
#include "balancer/proxy.h"
#include "balancer/resend.h"
#include "balancer/router.h"
#include "balancer/sip_stream.h"
#include "balancer/token.h"
#include "balancer/worker.h"
#include "core/limit.h"
#include "core/log.h"
#include "core/sip.h"
#include "core/sip_edit.h"
#include "io/loop.h"
#include "io/timer.h"

/* io/ tags: a listener's says TLS or plain; a link's is TAG_LINK + its index. */
enum { TAG_CLIENT = 1, TAG_LINK = 2 };
#define TAG_PLAIN_LISTENER 0x40000000u
#define TAG_WS_LISTENER    0x20000000u
/* A listener's tag also carries its index (for the per-listener metrics). */
#define TAG_LISTENER_SHIFT 16u
#define TAG_LISTENER_MASK  0xffu

enum relay_conn_kind { CONN_CLIENT = 1, CONN_LINK = 2 };
enum link_state { LINK_DOWN, LINK_CONNECTING, LINK_READY, LINK_REMOVED };

#define REDIAL_MS_MIN  100u   /* a link's first redial after a failure */
#define REDIAL_MS_MAX  10000u /* its longest backoff */
#define PROXY_HDR_BUFS 64u    /* per worker: PROXY headers split across reads */
#define DRAIN_TICK_MS  20u    /* while draining: a client connection quiet this long may close */
#define REFRESH_MS     100u   /* the refresh timer: table generation, contexts, returns */
#define EOF_LINGER_MS  5000u  /* a half-closed client may still be owed responses this long */
#define CLIENT_RCVBUF  (128u * 1024u) /* SO_RCVBUF of clients: what the kernel queues for one */
/* What a client may still deliver after its receive was paused: CQEs the kernel already
 * posted can carry up to the whole receive ring (io/'s default 256 x 16 KiB), plus its
 * socket queue. Its TLS stash may hold that much; a client that goes past it is failed. */
#define CLIENT_STASH_MAX ((256u * 16384u) + 4u * CLIENT_RCVBUF)
/* All clients' stashes of one worker together: past this, a client that keeps sending
 * while held is closed rather than buffered. */
#define WORKER_STASH_BUDGET (64u << 20)
#define LIMIT_LOG_MS        10000u /* a log line about one source at most this often */
#define RATE_SLOTS          4096u  /* per-worker request-rate buckets */
#define REPLY_ROOM          4096u  /* our replies: the request's Vias and more, beyond its size */
#define RETRY_AFTER_LINE    48u    /* "Retry-After: N\r\n" */
#define CONN_SPARES         16u    /* io/ slots beyond clients and links (listeners, closing) */
#define LISTEN_BACKLOG      4096u  /* listen(2) backlog of each listener */
#define OUT_CHUNK_BYTES     4096u  /* io/'s output chunk (its default), for the links' reserve */

struct link;

/* One connection the relay handles: a client's (accepted) or a link's (ours, to a
 * backend). Owned by the worker, at its io/ slot. */
struct relay_conn {
    struct slb_stream s;     /* first: a stream callback's pointer is the record's */
    uint8_t kind;            /* enum relay_conn_kind */
    struct link *link;       /* CONN_LINK: the link it serves */
    int16_t backend_peer;    /* CONN_CLIENT: the backend whose address it comes from, or -1 */
    struct slb_tls_ctx *ctx; /* CONN_CLIENT, TLS: the server context its session came from */
    struct link *parked;     /* CONN_CLIENT: the link it waits on */
    struct relay_conn *next_parked;
    struct relay_conn *hs_prev, *hs_next; /* CONN_CLIENT: handshakes in progress, oldest first */
    bool in_hs_list;
    bool out_blocked;          /* CONN_CLIENT: its output is backed up (receive paused) */
    uint32_t stash_seen;       /* CONN_CLIENT: its TLS stash as counted in w->stash_bytes */
    uint32_t awaiting;         /* CONN_CLIENT: requests forwarded, final responses not yet back (a
                                * hint for a half-closed client; retransmissions blur it) */
    bool eof;                  /* CONN_CLIENT: it shut its write side */
    bool exempt;               /* CONN_CLIENT: --limit-allow or a backend's address */
    bool unauth_backend;       /* CONN_CLIENT: from a backend's address, certificate not verified */
    bool src_counted;          /* CONN_CLIENT: counted in the per-source table */
    bool hs_counted;           /* CONN_CLIENT: its handshake was counted against its source */
    uint64_t src;              /* CONN_CLIENT: its per-source key */
    uint64_t partial_since_ms; /* when its unfinished message started (0: none) */
    uint64_t opened_ms;        /* CONN_CLIENT: accepted at (for --log-connections) */
    uint64_t drain_frames_seen; /* CONN_CLIENT, draining: its frames at the previous tick */
    bool drain_seen;            /* ... and there was a previous tick */
    uint32_t finals_out;        /* CONN_CLIENT: final responses delivered to it */
    uint32_t drain_finals_seen; /* CONN_CLIENT, draining: finals_out at the previous tick */
    bool proxy_wait;            /* CONN_CLIENT: its PROXY header has not come yet */
    bool input_seen;            /* CONN_CLIENT: some bytes came (a header is looked for) */
    uint16_t proxy_slot;        /* CONN_CLIENT: 1 + its borrowed header buffer, or 0 */
    uint16_t proxy_len;         /* ... bytes in it */
    uint8_t listener;           /* CONN_CLIENT: the index of the listener that accepted it */
    uint8_t tls_counted;        /* CONN_CLIENT: counted in listener tls_open[] (0: no; 1+v) */
    uint16_t port;
    uint8_t ip_len;
    char ip[INET6_ADDRSTRLEN]; /* last: a record is cleared up to here */
};

static inline struct relay_conn *conn_of(struct slb_stream *s)
{
    return (struct relay_conn *)(void *)s;
}

static inline bool conn_open(const struct relay_conn *c)
{
    return c->s.state == SLB_STREAM_OPEN;
}

/* One of the K persistent connections of this worker to one backend. Owned by the
 * worker (its links array). */
struct link {
    struct slb_worker *w;
    uint16_t backend;
    uint8_t state;                  /* enum link_state */
    struct relay_conn *conn;        /* when connected */
    struct slb_redial redial;       /* backoff and the session to resume */
    struct relay_conn *parked_head; /* clients waiting for room on this link */
    bool counted_up;                /* counted in w->links_up */
    bool rs_ready;                  /* rs was set up (failover.c) */
    struct slb_resend rs;           /* requests forwarded on it, not answered yet */
};

/* A server context replaced by a reload while sessions made from it still live; freed
 * with the last of them. Allocated at a reload (rare), never on the message path. */
struct retired_sctx {
    struct slb_tls_ctx *ctx;
    uint32_t sessions;
    struct retired_sctx *next;
};

/* The message being handled, passed down to every handler (not kept in the worker). */
struct in_msg {
    const char *base;            /* its bytes, msg_len of them */
    const struct slb_sip_msg *m; /* its scan */
    struct slb_route_info route; /* a request's Route facts */
    bool strict;                 /* our route found in its Request-URI (a strict router) */
};

/* The worker's counters as it keeps them (worker.h lists them). */
struct relay_counters {
#define SLB_X_LIVE(name) _Atomic uint64_t name;
    SLB_WORKER_COUNTERS(SLB_X_LIVE)
#undef SLB_X_LIVE
    struct {
        _Atomic uint64_t requests;  /* forwarded to the backend */
        _Atomic uint64_t responses; /* relayed from it */
        _Atomic uint64_t latency_buckets[SLB_LATENCY_BUCKETS + 1];
        _Atomic uint64_t latency_sum_us, latency_count;
    } per_backend[SLB_MAX_BACKENDS];
    struct slb_listener_stats_live {
        _Atomic uint64_t accepted, handshakes_ok, handshakes_failed;
        _Atomic uint32_t open;
        _Atomic uint32_t tls_open[SLB_TLS_VERSIONS_SEEN]; /* open, by TLS version */
    } listeners[SLB_MAX_LISTEN];
};

/* A returned hand-over slot whose post failed: retried by the refresh timer. */
struct slot_return {
    uint8_t worker;
    uint16_t slot;
};

struct slb_worker {
    struct slb_loop loop;
    const struct slb_shared *sh;
    const struct slb_config *cfg;
    unsigned index;
    struct slb_tls_ctx *sctx, *cctx;
    uint32_t sctx_sessions;                     /* client sessions made from sctx */
    _Atomic(struct slb_tls_ctx *) new_sctx;     /* from a reload, not yet taken */
    struct retired_sctx *retired;               /* replaced server contexts still in use */
    struct slb_proxy_self self;                 /* sh->self, copied: keys change per worker */
    _Atomic(struct slb_worker_keys *) new_keys; /* from a SIGHUP, not yet taken */
    /* Graceful stop (drain.c): requested by main, run by the refresh timer. */
    atomic_int drain_req;
    bool draining;
    struct slb_timer drain_timer;                   /* every DRAIN_TICK_MS while draining */
    atomic_int drain_started;                       /* a first tick ran: listeners closed */
    _Atomic uint32_t drain_clients, drain_awaiting; /* left at the last tick */
    /* Listening sockets: handed over by an older process (adopt, set before the thread
     * starts), and ours as opened (published before running is set) for a newer one. */
    unsigned n_adopt;
    int adopt_fd[SLB_LOOP_LISTENERS_MAX];
    uint8_t adopt_listen[SLB_LOOP_LISTENERS_MAX];
    unsigned n_pub;
    int pub_fd[SLB_LOOP_LISTENERS_MAX];
    /* PROXY headers split across reads (client_proxy_hdr.c). */
    uint8_t *proxy_bufs;
    uint16_t proxy_free[PROXY_HDR_BUFS];
    unsigned n_proxy_free;
    atomic_int stop_requested;
    atomic_int running;
    atomic_int failed;             /* slb_worker_failed */
    _Atomic uint64_t heartbeat_ms; /* the refresh timer's last run: the loop makes progress */
    uint64_t debug_stall_at_ms;    /* SLB_DEBUG_STALL_WORKER_MS (worker 0, tests only) */
    struct relay_conn *conns;      /* by io/ slot */
    uint32_t n_conns;
    uint32_t n_clients;                   /* client connections open (bounded by --max-conns) */
    uint32_t n_handshaking;               /* client TLS handshakes in progress */
    struct relay_conn *hs_head, *hs_tail; /* those, oldest first */
    uint64_t seen_no_fds;                 /* io's accept_no_fds when last reported */
    struct slb_rate_table rates;          /* requests per second per source */
    size_t stash_bytes;                   /* clients' TLS stashes, summed (WORKER_STASH_BUDGET) */
    struct link *links;                   /* SLB_MAX_BACKENDS * backend_conns, slot-major */
    uint32_t n_known;                     /* backend slots whose links were started */
    uint32_t n_links;
    struct slb_router *router;
    struct slb_health_signals *signals;
    struct slb_drain_clock *drain_clock;
    struct slb_timer refresh; /* keeps this worker's router generation moving when idle */
    uint64_t seen_gen;        /* the table generation last reconciled with our links */
    uint8_t seen_state[SLB_MAX_BACKENDS];
    struct slb_stream_env env; /* input buffers and the scanner's workspace */
    struct slb_sip_edit edit;
    struct slb_pending_invites pending; /* CANCEL and non-2xx ACK follow their INVITE */
    char *reply; /* our own responses: as large as the request they copy Vias from */
    size_t reply_cap;
    struct slb_outbox outbox;    /* hand-over slots lent to other workers */
    struct slot_return *returns; /* other workers' slots whose return post failed */
    unsigned n_returns, returns_cap;
    struct slb_ratelimit rl_tls, rl_input, rl_backend, rl_limit, rl_fds, rl_auth;
    struct slb_timer resend_timer; /* re-sends what failed links leave (failover.c) */
    char *resend_buf;              /* a copy being re-sent: max_message_size bytes */
    struct slb_sip_msg resend_msg; /* and its scan */
    struct slb_sip_header resend_hdrs[SLB_SIP_MAX_HEADERS_DEFAULT];
    struct relay_counters c;
    _Atomic uint32_t clients_open;               /* n_clients, for the admin thread */
    _Atomic uint32_t links_up[SLB_MAX_BACKENDS]; /* links ready, per backend */
};

/* Counting: each counter is written by its worker only, read by the main thread while the
 * worker runs (approximate sums). Relaxed atomic loads and stores, no read-modify-write:
 * plain moves on x86, and no data race for the reader. */
#define COUNT_N(w, name, n)                                                                        \
    atomic_store_explicit(&(w)->c.name,                                                            \
                          atomic_load_explicit(&(w)->c.name, memory_order_relaxed) + (n),          \
                          memory_order_relaxed)
#define COUNT(w, name)   COUNT_N(w, name, 1u)
#define UNCOUNT(w, name) COUNT_N(w, name, (uint64_t)-1) /* a count taken back */

/* frame_dispatch.c */
extern const struct slb_stream_ops relay_stream_ops;

/* replies.c: answer the request im (a valid request); pong answers a keepalive. */
void reply(struct slb_worker *w, struct relay_conn *c, const struct in_msg *im, int status,
           const char *reason, const char *extra);
void reply_busy(struct slb_worker *w, struct relay_conn *c, const struct in_msg *im,
                const char *reason, unsigned retry_after_s);
void pong(struct slb_worker *w, struct relay_conn *c);
bool reject_request(struct slb_worker *w, struct relay_conn *c, const struct in_msg *im);

/* route_request.c */
enum step { STEP_NEXT, STEP_STOP }; /* after one message: go on, or stop (held/closing) */
enum step route_client_request(struct slb_worker *w, struct relay_conn *c, const struct in_msg *im);
int drop_our_route(struct slb_sip_edit *e, const struct in_msg *im);
int backend_by_token(const struct slb_route_table *t, uint32_t token);
int edit_client_request(struct slb_worker *w, struct relay_conn *c, const struct in_msg *im,
                        const struct slb_backend_spec *b, uint32_t *tx);

/* failover.c */
void resend_init(struct slb_worker *w);
void resend_deinit(struct slb_worker *w);
void resend_link_init(struct slb_worker *w, struct link *l);
void resend_keep(struct slb_worker *w, struct link *l, const struct relay_conn *c,
                 const struct in_msg *im, uint32_t tx, bool resent);
bool resend_response(struct slb_worker *w, unsigned backend, const struct slb_sip_msg *m,
                     uint64_t conn_id, uint32_t tx);
void resend_orphan_link(struct slb_worker *w, struct link *l);
void resend_expire(struct slb_worker *w, uint64_t now_ms);

/* relay_response.c */
void relay_response(struct slb_worker *w, struct relay_conn *from, const struct in_msg *im);

/* toward_client.c */
enum step toward_client(struct slb_worker *w, struct relay_conn *c, const struct in_msg *im);

/* worker_handoff.c */
int hand_over(struct slb_worker *w, unsigned dst_worker, uint64_t dst, const struct iovec *iov,
              int n, size_t len);
void on_handoff(struct slb_loop *loop, uint64_t a, uint64_t b);
void on_handoff_failed(struct slb_loop *loop, uint64_t a, int res);
void retry_returns(struct slb_worker *w);

/* backend_links.c */
void links_reconcile(struct slb_worker *w, const struct slb_route_table *t);
struct link *pick_link(struct slb_worker *w, unsigned backend, uint64_t hash);
int backend_of_conn(const struct relay_conn *c);
void link_dial(struct slb_worker *w, struct link *l);
int link_connected(struct slb_worker *w, struct link *l, struct slb_conn *conn, int res);
void link_ready(struct slb_worker *w, struct relay_conn *c);
void link_lost(struct slb_worker *w, struct link *l, int reason);
void links_init(struct slb_worker *w);
void links_start(struct slb_worker *w);
void links_stop(struct slb_worker *w);
void wake_stuck_parked(struct slb_worker *w, const struct slb_route_table *t);

/* client_flow.c */
int send_to(struct slb_worker *w, struct relay_conn *c, const struct iovec *iov, int n,
            size_t total);
void client_recv_update(struct relay_conn *c);
void client_block(struct slb_worker *w, struct relay_conn *c);
void client_timer(struct slb_worker *w, struct relay_conn *c);
void park(struct slb_worker *w, struct relay_conn *client, struct link *l);
void unpark(struct relay_conn *client);
void wake_parked(struct slb_worker *w, struct link *l);
void resume_client(struct slb_worker *w, struct relay_conn *c);
void final_delivered(struct relay_conn *c);
void client_input(struct slb_worker *w, struct relay_conn *c, const void *data, size_t len);
void client_eof(struct slb_worker *w, struct relay_conn *c);
void client_drained(struct slb_worker *w, struct relay_conn *c);
size_t stash_account(struct slb_worker *w, struct relay_conn *c);
void count_timeout(struct slb_worker *w, const struct relay_conn *c);

/* client_admit.c */
int client_accept(struct slb_worker *w, struct slb_conn *conn);
int admit_source(struct slb_worker *w, struct relay_conn *c, const struct sockaddr_storage *ss);
void client_ws_open(struct slb_worker *w, struct relay_conn *c);
int proxy_hdr_init(struct slb_worker *w);
bool proxy_hdr_expected(const struct slb_worker *w, const struct slb_conn *conn);
bool proxy_hdr_unexpected(struct slb_worker *w, struct relay_conn *c, const void *data, size_t len);
void proxy_hdr_input(struct slb_worker *w, struct relay_conn *c, const void *data, size_t len);
void proxy_hdr_release(struct slb_worker *w, struct relay_conn *c);
bool handshake_allowed(struct slb_worker *w, struct relay_conn *c);
void client_handshake_done(struct slb_worker *w, struct relay_conn *c);
void client_gone(struct slb_worker *w, struct relay_conn *c);
void limit_log(struct slb_worker *w, const struct relay_conn *c, const char *what, bool banned_now);
void peer_address(struct relay_conn *c, const struct slb_conn *conn);

/* server_ctx.c */
void take_new_sctx(struct slb_worker *w);
void take_new_keys(struct slb_worker *w);
void drain_tick(struct slb_worker *w);
void drain_count_cut(struct slb_worker *w); /* as the loop ends: what --drain-timeout cut */
void release_sctx(struct slb_worker *w, struct slb_tls_ctx *ctx);

/* The worker a stream belongs to (its environment is the worker's). */
static inline struct slb_worker *worker_of(struct slb_stream *s)
{
    return (struct slb_worker *)(void *)((char *)s->env - offsetof(struct slb_worker, env));
}

static inline struct relay_conn *conn_at(struct slb_worker *w, const struct slb_conn *conn)
{
    return &w->conns[slb_conn_id_slot(conn->id)];
}

/* The routing table for this worker now (valid until its next call); a new one is first
 * reconciled with the links (backends added, removed, back up). Per request: inline. */
static inline const struct slb_route_table *route_table(struct slb_worker *w)
{
    const struct slb_route_table *t = slb_router_acquire(w->router, w->index);
    if (t->gen != w->seen_gen)
        links_reconcile(w, t);
    return t;
}

/* Closes c's connection now (counted by the caller). */
static inline void conn_close(struct relay_conn *c, bool graceful)
{
    slb_stream_close(&c->s, graceful);
}

#endif
