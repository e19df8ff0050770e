/* sipslb-load: types shared by its parts.
 *   load.c         flags, configuration checks, main thread (progress, signals, report)
 *   load_worker.c  one worker: its io_uring loop, TLS connections, calls and timers
 *   load_sip.c     the SIP requests it sends and the bits of responses it needs
 * Not a library: nothing outside these files includes this header. */
#ifndef SLB_BENCH_LOAD_H
#define SLB_BENCH_LOAD_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "bench/hist.h"
#include "core/flags-t.h"
#include "core/sip-t.h"

struct slb_tls_ctx;

/* What one unit of load is. A "call" in the counters is one unit of any kind. */
enum load_kind {
    LOAD_KIND_OPTIONS = 0, /* OPTIONS -> 200 */
    LOAD_KIND_REGISTER,    /* REGISTER -> 200 */
    LOAD_KIND_CALL,        /* INVITE -> 100/180/200, ACK, BYE -> 200 */
    LOAD_KIND__COUNT
};

enum load_scenario {
    LOAD_SC_OPTIONS = 0, /* every unit an OPTIONS ping */
    LOAD_SC_REGISTER,    /* every unit a REGISTER */
    LOAD_SC_CALL,        /* every unit a call */
    LOAD_SC_MIXED,       /* units drawn by --mix weights */
};

enum load_tls_version {
    LOAD_TLS_ANY = 0, /* 1.2 or 1.3, the server picks */
    LOAD_TLS_12,      /* TLS 1.2 only */
    LOAD_TLS_13,      /* TLS 1.3 only */
};

enum load_verify {
    LOAD_VERIFY_REQUIRE = 0, /* server certificate must chain to --ca and match the name */
    LOAD_VERIFY_NONE,        /* no check */
};

/* Why a unit failed. Exactly one per failed unit. */
enum load_fail {
    LOAD_FAIL_TIMEOUT = 0, /* no final response within --timeout */
    LOAD_FAIL_STATUS,      /* a final response other than 2xx */
    LOAD_FAIL_CONNECTION,  /* TCP connect failed, or the connection closed or broke */
    LOAD_FAIL_TLS,         /* TLS handshake or record failure */
    LOAD_FAIL_LOCAL,       /* our own limits: no free call slot, output queue full */
    LOAD_FAIL_ABORTED,     /* still in flight when the run was cut short */
    LOAD_FAIL__COUNT
};

/* Latency histograms, in microseconds. Transactions are recorded when they end in 2xx. */
enum load_lat {
    LOAD_LAT_INVITE = 0, /* INVITE sent -> 200 received */
    LOAD_LAT_BYE,        /* BYE sent -> 200 received */
    LOAD_LAT_OPTIONS,    /* OPTIONS sent -> 200 */
    LOAD_LAT_REGISTER,   /* REGISTER sent -> 200 */
    LOAD_LAT_UNIT,       /* a whole successful unit: first byte written (or, with --handshake,
                            TCP connect started) -> its last final response */
    LOAD_LAT_HANDSHAKE,  /* TCP connect started -> TLS handshake done */
    LOAD_LAT__COUNT
};

#define LOAD_STATUS_MIN 100u
#define LOAD_STATUS_MAX 699u

/* The configuration: flags as parsed, then derived values. Built by main before workers
 * start, read only afterwards. */
struct load_cfg {
    const char *target;
    const char *server_name;
    const char *ca, *cert, *key;
    int verify;   /* enum load_verify */
    int tls;      /* enum load_tls_version */
    int scenario; /* enum load_scenario */
    const char *mix;
    int64_t conns;
    int64_t rate;
    uint64_t ramp_ms;
    int64_t outstanding;
    uint64_t duration_ms;
    int64_t count;
    uint64_t max_duration_ms;
    uint64_t timeout_ms;
    int64_t workers;
    int64_t max_inflight;
    bool json;
    bool progress;
    bool handshake;
    bool wss; /* --wss: SIP over secure WebSocket */
    bool resume;
    /* Derived. */
    struct sockaddr_storage addr;
    socklen_t addr_len;
    char host[256];     /* target host as given (URIs, SNI default) */
    char hostport[300]; /* "host:port" for Request-URIs ([v6]:port) */
    const char *sni;    /* --server-name, else host */
    uint32_t weight[LOAD_KIND__COUNT];
    bool open_loop; /* --rate given */
};

/* One worker's results. Written by the worker thread only; main reads them after join. */
struct load_stats {
    uint64_t started, ok, failed; /* units */
    uint64_t fail[LOAD_FAIL__COUNT];
    uint64_t ok_by_kind[LOAD_KIND__COUNT];
    uint64_t txn_sent, txn_ok, txn_failed; /* client transactions (ACK is none) */
    uint64_t msgs_sent, msgs_recv;         /* SIP messages, ACK included */
    uint64_t provisional;                  /* 1xx received for our transactions */
    uint64_t unmatched;   /* responses matching no live transaction (late, stray) */
    uint64_t retrans_2xx; /* 2xx to an INVITE already answered: re-ACKed */
    uint64_t bad_msgs;    /* unparsable messages received */
    uint64_t requests_in; /* requests from the server (ignored) */
    uint64_t conn_attempts, connect_failed, tls_failed, handshakes, resumed, conn_lost;
    uint64_t status[LOAD_STATUS_MAX - LOAD_STATUS_MIN + 1]; /* final responses by code */
    uint64_t load_start_ns, load_end_ns; /* CLOCK_MONOTONIC; 0 when load never started */
    uint64_t cpu_ns;                     /* this thread's CPU time (user + system), whole run */
    uint64_t cpu_load_ns; /* the same from the start of the load to the last call's end */
    bool gave_up;         /* no connection could be kept open */
    const char *tls_version, *tls_cipher, *tls_group; /* of the first handshake */
    struct slb_hist lat[LOAD_LAT__COUNT];
};

/* Counters the main thread reads while the run goes on (relaxed atomics, one writer). */
struct load_progress {
    _Atomic uint64_t started, ok, failed, timeouts, conns_open;
    _Atomic uint64_t lat_sum_us, lat_n; /* successful units */
};

struct load_worker;

/* A worker for share `index` of the load: conns connections (or seats with --handshake),
 * rate units/s (0: closed loop) and count units (0: no limit). ctx is this worker's own
 * client context. Allocates everything the run needs. NULL on allocation failure. */
struct load_worker *load_worker_new(const struct load_cfg *cfg, unsigned index,
                                    struct slb_tls_ctx *ctx, uint32_t conns, double rate,
                                    uint64_t count);
void load_worker_free(struct load_worker *w);

/* The thread body (slb_threads_start): runs the load, returns NULL or (void *)1 if the
 * loop could not be set up. Calls done(done_arg) last, from the worker's thread. */
void *load_worker_main(void *arg);
void load_worker_set_done(struct load_worker *w, void (*done)(void *), void *done_arg);

/* From any thread: stop starting units and finish those in flight (drain), or stop the
 * loop now (abort: units still in flight count as aborted). */
void load_worker_drain(struct load_worker *w);
void load_worker_abort(struct load_worker *w);

const struct load_stats *load_worker_stats(const struct load_worker *w);
const struct load_progress *load_worker_progress(const struct load_worker *w);

/* ---- load_sip.c: messages. Builders write into out[0, cap) and return the length, or
 * -ENOSPC. ------------------------------------------------------------------------------ */

/* The per-unit identifiers a request carries. */
struct load_ids {
    const char *call_id;
    size_t call_id_len;
    const char *from_tag;
    size_t from_tag_len;
    const char *branch; /* "z9hG4bK..." */
    size_t branch_len;
    uint32_t cseq;
    const char *local; /* "ip:port" of our end, for Via and Contact */
    size_t local_len;
    const char *user; /* user part for REGISTER */
    size_t user_len;
};

int load_sip_invite(char *out, size_t cap, const struct load_cfg *cfg, const struct load_ids *ids);
int load_sip_options(char *out, size_t cap, const struct load_cfg *cfg, const struct load_ids *ids);
int load_sip_register(char *out, size_t cap, const struct load_cfg *cfg,
                      const struct load_ids *ids);

/* An in-dialog request (ACK or BYE) built from the 2xx to our INVITE in msg (its slices
 * borrow the received bytes) (RFC 3261 12.1.2, 12.2.1.1, 13.2.2.4): Request-URI from its Contact,
 * Route from its Record-Route reversed, From and To (with the remote tag) copied; new branch and
 * CSeq from ids. */
int load_sip_in_dialog(char *out, size_t cap, const struct load_cfg *cfg,
                       const struct load_ids *ids, const char *method,
                       const struct slb_sip_msg *msg);

/* The ACK for a non-2xx final response to our INVITE (RFC 3261 17.1.1.3): the INVITE's
 * Request-URI and branch, To from the response. */
int load_sip_ack_error(char *out, size_t cap, const struct load_cfg *cfg,
                       const struct load_ids *ids, const struct slb_sip_msg *msg);

#endif
