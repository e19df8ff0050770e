/* One sipslb worker: an io_uring loop with its own listeners, client TLS sessions,
 * persistent TLS connections to every backend and its own Maglev table. Shared-nothing:
 * a worker reads only its own state plus the immutable configuration. */
#ifndef SLB_BALANCER_WORKER_H
#define SLB_BALANCER_WORKER_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "balancer/config.h"
#include "balancer/proxy.h"

struct slb_tls_ctx;
struct slb_worker;

/* Per-worker counters, written by the worker only; the main thread sums them when it
 * reports (approximate while workers run). Names double as the stats-file keys. */
#define SLB_WORKER_COUNTERS(X)                                                                     \
    X(client_accepted)                                                                             \
    X(client_closed)                                                                               \
    X(handshakes_ok)                                                                               \
    X(handshakes_failed)                                                                           \
    X(handshake_fail_protocol)                                                                     \
    X(handshake_fail_bad_cert)                                                                     \
    X(handshake_fail_no_shared_cipher)                                                             \
    X(handshake_fail_peer_closed)                                                                  \
    X(handshake_fail_other)                                                                        \
    X(backend_connects)                                                                            \
    X(backend_connect_failed)                                                                      \
    X(backend_handshakes_ok)                                                                       \
    X(backend_lost)                                                                                \
    X(requests_in)                                                                                 \
    X(requests_forwarded)                                                                          \
    X(responses_in)                                                                                \
    X(responses_forwarded)                                                                         \
    X(responses_1xx)                                                                               \
    X(responses_2xx)                                                                               \
    X(responses_3xx)                                                                               \
    X(responses_4xx)                                                                               \
    X(responses_5xx)                                                                               \
    X(responses_6xx)                                                                               \
    X(keepalives)                                                                                  \
    X(replied_400)                                                                                 \
    X(replied_483)                                                                                 \
    X(replied_503)                                                                                 \
    X(replied_505)                                                                                 \
    X(replied_513)                                                                                 \
    X(replied_other)                                                                               \
    X(closed_bad_input)                                                                            \
    X(drop_response_not_ours)                                                                      \
    X(drop_response_stale_client)                                                                  \
    X(drop_response_client_full)                                                                   \
    X(drop_ack_unroutable)                                                                         \
    X(drop_backend_request)                                                                        \
    X(backpressure_parks)                                                                          \
    X(sticky_routed)                                                                               \
    X(pending_routed)                                                                              \
    X(requests_to_clients)                                                                         \
    X(loops)                                                                                       \
    X(requests_to_clients_forwarded)                                                               \
    X(responses_to_backends)                                                                       \
    X(flow_failed)                                                                                 \
    X(flow_bad_mac)                                                                                \
    X(to_client_busy)                                                                              \
    X(handoffs_sent)                                                                               \
    X(handoffs_delivered)                                                                          \
    X(handoffs_lost)                                                                               \
    X(sticky_fallback)                                                                             \
    X(pending_pool_empty)                                                                          \
    X(refused_max_conns)                                                                           \
    X(handshakes_evicted)                                                                          \
    X(handshake_timeouts)                                                                          \
    X(limit_conns_refused)                                                                         \
    X(limit_conn_rate_refused)                                                                     \
    X(limit_handshake_rate_refused)                                                                \
    X(limit_request_rate_503)                                                                      \
    X(banned_refused)                                                                              \
    X(bans)                                                                                        \
    X(closed_message_timeout)                                                                      \
    X(closed_idle)                                                                                 \
    X(closed_stalled)                                                                              \
    X(closed_half_closed)                                                                          \
    X(client_out_blocked)                                                                          \
    X(drop_response_forged)                                                                        \
    X(backend_unauthenticated)                                                                     \
    X(fd_exhausted)                                                                                \
    X(handoff_slots_reclaimed)                                                                     \
    X(closed_input_flood)                                                                          \
    X(closed_cut_write)                                                                            \
    X(pongs_dropped)                                                                               \
    X(resend_store_full)                                                                           \
    X(requests_resent)                                                                             \
    X(resend_answered_503)                                                                         \
    X(resend_client_gone)                                                                          \
    X(resend_late_dropped)                                                                         \
    X(resend_expired)                                                                              \
    X(routed_around_link_down)                                                                     \
    X(drain_closed_idle)                                                                           \
    X(drain_cut_conns)                                                                             \
    X(drain_cut_requests)                                                                          \
    X(proxy_hdr_ok)                                                                                \
    X(proxy_hdr_refused)                                                                           \
    X(proxy_hdr_timeouts)                                                                          \
    X(ws_upgrades)                                                                                 \
    X(ws_refused)                                                                                  \
    X(ws_protocol_errors)                                                                          \
    X(ws_peer_closes)                                                                              \
    X(ws_pings)                                                                                    \
    X(loop_sleeps)                                                                                 \
    X(loop_spins)                                                                                  \
    X(loop_spin_hits)                                                                              \
    X(loop_send_sqes)

struct slb_worker_counters {
#define SLB_X_FIELD(name) uint64_t name;
    SLB_WORKER_COUNTERS(SLB_X_FIELD)
#undef SLB_X_FIELD
};

struct slb_router;
struct slb_health;
struct slb_limit_table;

/* What every worker shares: built by main before the workers start. The configuration and
 * self are read only (each worker starts from a copy of self); the router is read through its
 * lock-free acquire; the health signals are atomic counters. */
struct slb_shared {
    const struct slb_config *cfg;
    struct slb_proxy_self self;
    struct slb_router *router;
    struct slb_health *health;
    struct slb_worker **workers;        /* every worker, for hand-overs between them */
    struct slb_limit_table *limits;     /* per-source limits and bans, shared (atomics) */
    struct slb_siphash_key pending_key; /* per-process random: the pending-INVITE map */
};

struct slb_loop;

/* The worker's io/ loop (for messages posted to it). */
struct slb_loop *slb_worker_loop(struct slb_worker *w);

/* Creates worker `index` with its own TLS contexts (made by the caller at boot, so that a
 * bad certificate fails before any socket opens). Returns NULL on allocation failure. */
struct slb_worker *slb_worker_new(const struct slb_shared *sh, unsigned index,
                                  struct slb_tls_ctx *server_ctx, struct slb_tls_ctx *client_ctx);
void slb_worker_free(struct slb_worker *w);

/* The thread body for slb_threads_start: sets up the loop, listeners and backend
 * connections, runs until slb_worker_stop, tears down. Returns NULL, or (void *)1 when the
 * set-up or the loop failed (the reason is logged, slb_worker_failed turns true). */
void *slb_worker_main(void *worker);

/* Asks the worker to stop accepting, flush and return. Any thread. */
void slb_worker_stop(struct slb_worker *w);

/* Whether the worker stopped on an error of its own (set-up or loop failure, logged): the
 * main thread polls it, stops the others and exits 1. Any thread. */
bool slb_worker_failed(const struct slb_worker *w);

/* Whether its listeners are open and its loop runs. Any thread. */
bool slb_worker_running(const struct slb_worker *w);

/* When its loop last ran its refresh timer (every 100 ms while it makes progress), on
 * slb_clock_ms's clock: a hung worker's stops moving (the systemd watchdog). Any thread. */
uint64_t slb_worker_heartbeat_ms(const struct slb_worker *w);

/* Hands the worker a new server TLS context (a reloaded certificate); it takes it within
 * 100 ms for new clients. Takes ownership. Any thread. */
void slb_worker_set_server_ctx(struct slb_worker *w, struct slb_tls_ctx *ctx);

/* New MAC keys for the worker's tokens and branches (n >= 1, newest first: the newest
 * signs, all verify), from any thread; the worker takes them at its next refresh (within
 * REFRESH_MS). Returns 0 or -ENOMEM. */
struct slb_worker_keys {
    unsigned n;
    struct slb_siphash_key k[SLB_PROXY_KEYS_MAX];
};
int slb_worker_set_keys(struct slb_worker *w, const struct slb_siphash_key *keys, unsigned n);

/* Graceful stop: the worker stops accepting within REFRESH_MS and closes each client
 * connection once it is idle (drain.c); slb_worker_stop still ends it. Any thread. */
void slb_worker_drain(struct slb_worker *w);

/* Whether the drain began (listeners closed), with the client connections still open and
 * the requests they await, as of the last tick. Any thread. */
bool slb_worker_drain_status(const struct slb_worker *w, uint32_t *clients, uint32_t *awaiting);

/* Before the worker starts: listening socket fd, handed over by an older process, serves
 * --listen address listen_index here (the worker owns fd). Returns 0, or -ENOSPC. */
int slb_worker_adopt_listener(struct slb_worker *w, int fd, unsigned listen_index);

/* The worker's listening sockets, once it runs (slb_worker_running), to hand over to a
 * newer process; stable until a drain or stop begins. Returns how many went into fds. */
unsigned slb_worker_listener_fds(const struct slb_worker *w, int *fds, unsigned max);

/* After the worker has stopped: frees its retired contexts and returns one handed over but
 * never taken (or NULL), for the caller to free; and the context in use. */
struct slb_tls_ctx *slb_worker_server_ctx_leftover(struct slb_worker *w);
struct slb_tls_ctx *slb_worker_server_ctx(const struct slb_worker *w);

/* The bounds (microseconds) of the buckets of the time from a request leaving sipslb to
 * its final response coming back, per backend; a last bucket takes what is above. */
#define SLB_LATENCY_BUCKETS 12u
extern const uint32_t slb_latency_bounds_us[SLB_LATENCY_BUCKETS];

/* This worker's view of backend slot b, added into *sum: requests forwarded to it,
 * responses relayed from it, its links that are ready, and the latency histogram
 * (per bucket, not cumulative; the last one above every bound). Any thread (approximate). */
struct slb_worker_backend_stats {
    uint64_t requests, responses;
    uint32_t links_up;
    uint64_t latency_buckets[SLB_LATENCY_BUCKETS + 1];
    uint64_t latency_sum_us, latency_count;
};
void slb_worker_add_backend_stats(const struct slb_worker *w, unsigned b,
                                  struct slb_worker_backend_stats *sum);

/* Per listener (index of --listen): connections accepted and open, client handshakes
 * completed and failed, and open connections by TLS version (slb_tls_versions_seen). */
#define SLB_TLS_VERSIONS_SEEN 3u
extern const char *const slb_tls_versions_seen[SLB_TLS_VERSIONS_SEEN]; /* 1.2, 1.3, other */
struct slb_listener_stats {
    uint64_t accepted, handshakes_ok, handshakes_failed;
    uint32_t open;
    uint32_t tls_open[SLB_TLS_VERSIONS_SEEN];
};
void slb_worker_add_listener_stats(const struct slb_worker *w, unsigned l,
                                   struct slb_listener_stats *sum);

/* Client connections open on this worker now. Any thread. */
uint32_t slb_worker_clients_open(const struct slb_worker *w);

/* The counters' names, in struct order: the stats file's keys and the metrics' stems. */
extern const char *const slb_worker_counter_names[];
#define SLB_WORKER_N_COUNTERS (sizeof(struct slb_worker_counters) / sizeof(uint64_t))

/* Adds this worker's counters into sum. */
void slb_worker_add_counters(const struct slb_worker *w, struct slb_worker_counters *sum);

#endif
