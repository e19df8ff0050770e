/* sipslb-load: one worker. Its own io_uring loop, its own TLS context and connections,
 * its own call slots, histograms and counters; nothing is shared with other workers, and
 * the main thread reads only the relaxed progress counters until the worker has ended.
 *
 * A unit (an OPTIONS or REGISTER transaction, or a call: INVITE, ACK, BYE) lives in a call
 * slot from start to end. Slots are allocated at start:
 *   - persistent, closed loop: conns x outstanding slots, slot s bound to connection
 *     s / outstanding, restarted as soon as its unit ends;
 *   - persistent, open loop: a pool of slots on a free stack; a 1 ms tick starts the units
 *     that are due (rate, ramp) on the open connections in turn;
 *   - --handshake: slot i is connection i: each unit dials, handshakes, runs, closes.
 * Responses find their slot from the Call-ID (which carries the slot number), then must
 * match the slot's Call-ID bytes, CSeq number and method, and the top Via branch.
 *
 * Invariants: one thread; no allocation after set-up except wolfSSL's per connection
 * (and a session copy per ticket with --resume); a slot is in exactly one of idle, free
 * stack or in flight; a connection's calls are failed before its slot is reused.
 * Ownership: the worker owns everything here; main frees it after join. */
#include "bench/load.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "balancer/sip_stream.h"
#include "core/log.h"
#include "core/sip.h"
#include "io/conn.h"
#include "io/loop.h"
#include "io/timer.h"
#include "tls/tls.h"

#define OUT_MSG_MAX        8192u
#define TICK_OPEN_MS       1u
#define TICK_CLOSED_MS     10u
#define REDIAL_MS_MIN      100u
#define REDIAL_MS_MAX      2000u
#define START_BURST        8192u /* units one open-loop tick may start */
#define NONE               UINT32_MAX
#define HANDSHAKE_POOL_MAX 16384u /* open loop with --handshake: connections per worker */

enum lc_state { LC_DOWN = 0, LC_CONNECTING, LC_HANDSHAKE, LC_OPEN };
enum lc_lost { LOST_NONE = 0, LOST_TLS, LOST_PEER }; /* why a stream closed itself */
enum call_state { CALL_IDLE = 0, CALL_DIALING, CALL_INVITE, CALL_BYE, CALL_OPTIONS, CALL_REGISTER };
enum phase { PH_CONNECT = 0, PH_LOAD, PH_DRAIN, PH_DONE };

/* One TLS connection. Owned by the worker, in its conns array; attached to an io/
 * connection (conn->owner) from dial until lconn_close or on_close. Its stream is open from
 * on_connect until lconn_close releases it, or, when that runs inside the stream's own
 * callbacks, until the io/ callback that ran them returns (settle). */
struct lconn {
    struct slb_stream s; /* first: the stream's callbacks find their lconn from it */
    struct load_worker *w;
    struct slb_conn_id id; /* the io/ connection, from dial until lconn_close */
    uint32_t index;
    uint8_t state;            /* enum lc_state */
    uint8_t lost;             /* enum lc_lost */
    bool initial;             /* persistent: first dial not resolved yet */
    bool release_owed;        /* let go of inside its stream's callbacks: settle releases it */
    bool clean_close;         /* persistent: the server closed it idle (a draining sipslb) */
    bool reconnecting;        /* ... and it is being dialled again at once */
    uint32_t inflight;        /* persistent: units on this connection */
    struct slb_redial redial; /* persistent: the backoff (sessions: the worker keeps one) */
    uint64_t t_connect_ns;
    uint8_t local_len;
    char local[64]; /* "ip:port" of our end */
};

/* One unit in flight (or an idle slot). Owned by the worker, in its calls array. */
struct call {
    struct slb_timer timer; /* transaction timeout */
    struct load_worker *w;
    uint64_t t_txn_ns, t_unit_ns;
    uint32_t conn; /* lconn index, NONE when idle */
    uint32_t cseq;
    uint8_t state; /* enum call_state */
    uint8_t kind;  /* enum load_kind */
    bool queued;   /* on the idle stack */
    uint8_t call_id_len, branch_len, tag_len;
    char call_id[64];
    char branch[40];
    char tag[16];
};

struct load_worker {
    struct slb_loop loop;
    const struct load_cfg *cfg;
    unsigned index;
    struct slb_tls_ctx *ctx;
    struct lconn *conns;
    uint32_t n_conns;
    struct call *calls;
    uint32_t n_calls;
    uint32_t per_conn; /* persistent closed loop: slots per connection */
    uint32_t *stack;   /* open loop: free slots; closed loop: idle slots to restart */
    uint32_t stack_n;
    double rate;
    uint64_t count_limit;
    uint8_t phase;
    bool open_loop, handshake;
    uint32_t pending_initial;
    uint32_t conns_open;
    uint32_t rr;
    uint64_t inflight;
    uint64_t now_ns;
    uint64_t connect_deadline_ms, deadline_ms, hard_deadline_ms, last_open_ms;
    uint64_t call_ctr, txn_ctr, rng;
    uint64_t cpu_load0_ns; /* thread CPU time when the load began */
    char run_tag[8];
    int32_t wrr[LOAD_KIND__COUNT];
    struct slb_timer tick;
    struct slb_tls_session *session;
    struct slb_ratelimit rl; /* connection and TLS failure lines */
    void (*done)(void *);
    void *done_arg;
    struct slb_stream_env env;
    struct lconn *in_stream; /* whose stream is running its callbacks */
    char out[OUT_MSG_MAX];
    struct load_stats st;
    /* Read by the main thread: a cache line apart from what the worker writes per message. */
    _Alignas(64) atomic_int drain_req;
    atomic_int abort_req;
    atomic_int running;
    _Alignas(64) struct load_progress prog;
};

/* ---- small helpers ----------------------------------------------------------------------- */

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* One writer: a relaxed load and store, a plain add on x86-64. */
static void prog_add(_Atomic uint64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

/* xorshift64*: Call-ID and tag randomness (uniqueness comes from the counters). */
static uint64_t rng_next(struct load_worker *w)
{
    uint64_t x = w->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    w->rng = x;
    return x * 0x2545F4914F6CDD1Dull;
}

static const char hexd[] = "0123456789abcdef";

/* Writes v in hex without leading zeros; returns the length. */
static size_t put_hex(char *dst, uint64_t v)
{
    char tmp[16];
    size_t n = 0;
    do {
        tmp[n++] = hexd[v & 15];
        v >>= 4;
    } while (v);
    for (size_t i = 0; i < n; i++)
        dst[i] = tmp[n - 1 - i];
    return n;
}

static void put_hex_fixed(char *dst, uint64_t v, size_t digits)
{
    for (size_t i = digits; i-- > 0; v >>= 4)
        dst[i] = hexd[v & 15];
}

static struct load_ids ids_of(const struct call *c, const struct lconn *lc)
{
    return (struct load_ids){
        .call_id = c->call_id,
        .call_id_len = c->call_id_len,
        .from_tag = c->tag,
        .from_tag_len = c->tag_len,
        .branch = c->branch,
        .branch_len = c->branch_len,
        .cseq = c->cseq,
        .local = lc->local,
        .local_len = lc->local_len,
    };
}

/* "z9hG4bK" (RFC 3261 8.1.1.7) + a per-run random tag + worker + transaction counter. */
static uint8_t make_branch(struct load_worker *w, char *dst)
{
    memcpy(dst, "z9hG4bK", 7);
    memcpy(dst + 7, w->run_tag, 8);
    size_t n = 15;
    dst[n++] = '.';
    n += put_hex(dst + n, w->index);
    dst[n++] = '.';
    n += put_hex(dst + n, ++w->txn_ctr);
    return (uint8_t)n;
}

/* Call-ID "<16 random hex>-<worker>.<counter>.<slot>@sipslb-load": unique over the run
 * (worker + counter), spread for any hash (random prefix), and naming its slot. */
static void new_identity(struct load_worker *w, struct call *c, uint32_t slot)
{
    char *p = c->call_id;
    put_hex_fixed(p, rng_next(w), 16);
    p += 16;
    *p++ = '-';
    p += put_hex(p, w->index);
    *p++ = '.';
    p += put_hex(p, ++w->call_ctr);
    *p++ = '.';
    p += put_hex(p, slot);
    memcpy(p, "@sipslb-load", 12);
    p += 12;
    c->call_id_len = (uint8_t)(p - c->call_id);
    put_hex_fixed(c->tag, rng_next(w), 12);
    c->tag_len = 12;
    c->cseq = 1;
}

/* The slot a response's Call-ID names, if the bytes are exactly that slot's Call-ID. */
static struct call *call_of(struct load_worker *w, struct slb_slice id)
{
    if (id.len < 20 || id.len > sizeof(w->calls[0].call_id))
        return NULL;
    const char *at = memchr(id.ptr, '@', id.len);
    if (!at)
        return NULL;
    uint64_t slot = 0;
    unsigned shift = 0;
    for (const char *p = at; p > id.ptr && p[-1] != '.'; p--, shift += 4) {
        char ch = p[-1];
        unsigned d = ch >= '0' && ch <= '9'   ? (unsigned)(ch - '0')
                     : ch >= 'a' && ch <= 'f' ? (unsigned)(ch - 'a' + 10)
                                              : 16u;
        if (d > 15 || shift >= 32)
            return NULL;
        slot |= (uint64_t)d << shift;
    }
    if (shift == 0 || slot >= w->n_calls)
        return NULL;
    struct call *c = &w->calls[slot];
    if (c->call_id_len != id.len || memcmp(c->call_id, id.ptr, id.len) != 0)
        return NULL;
    return c;
}

/* Smooth weighted round robin over the --mix weights: exact proportions, no randomness. */
static uint8_t pick_kind(struct load_worker *w)
{
    const struct load_cfg *cfg = w->cfg;
    int32_t total = 0;
    int best = -1;
    for (int k = 0; k < LOAD_KIND__COUNT; k++) {
        if (!cfg->weight[k])
            continue;
        w->wrr[k] += (int32_t)cfg->weight[k];
        total += (int32_t)cfg->weight[k];
        if (best < 0 || w->wrr[k] > w->wrr[best])
            best = k;
    }
    w->wrr[best] -= total;
    return (uint8_t)best;
}

static void stack_push(struct load_worker *w, uint32_t slot)
{
    struct call *c = &w->calls[slot];
    if (c->queued)
        return;
    c->queued = true;
    w->stack[w->stack_n++] = slot;
}

static uint32_t stack_pop(struct load_worker *w)
{
    uint32_t slot = w->stack[--w->stack_n];
    w->calls[slot].queued = false;
    return slot;
}

/* ---- phases ------------------------------------------------------------------------------ */

static void begin_drain(struct load_worker *w)
{
    if (w->phase == PH_LOAD || w->phase == PH_CONNECT)
        w->phase = PH_DRAIN;
}

/* Whether another unit may start now; moves to draining when a limit is reached. */
static bool can_start(struct load_worker *w)
{
    if (w->phase != PH_LOAD)
        return false;
    uint64_t now_ms = slb_loop_now_ms(&w->loop);
    if ((w->count_limit && w->st.started >= w->count_limit) ||
        (w->deadline_ms && now_ms >= w->deadline_ms) || now_ms >= w->hard_deadline_ms) {
        begin_drain(w);
        return false;
    }
    return true;
}

/* ---- connections --------------------------------------------------------------------------- */

/* Detaches lc from its io/ connection and closes that (after flushing, with TLS
 * close_notify, when graceful). Callbacks for it are ignored from here on. Its stream is
 * released now, or, inside that stream's own callbacks, once they have returned (settle). */
static void lconn_close(struct load_worker *w, struct lconn *lc, bool graceful)
{
    if (lc->state == LC_DOWN)
        return;
    if (lc->state == LC_OPEN && !w->handshake) {
        w->last_open_ms = slb_loop_now_ms(&w->loop); /* open until now */
        w->conns_open--;
        prog_add(&w->prog.conns_open, (uint64_t)-1);
    }
    struct slb_conn *conn = slb_conn_get(&w->loop, lc->id);
    if (conn)
        conn->owner = NULL;
    if (lc->state == LC_CONNECTING) {
        if (conn)
            slb_conn_close(conn, false); /* no stream yet */
    } else {
        if (graceful && lc->state == LC_OPEN)
            slb_stream_shutdown(&lc->s);
        else
            slb_stream_close(&lc->s, false);
        if (w->in_stream == lc)
            lc->release_owed = true;
        else
            slb_stream_release(&lc->s);
    }
    lc->state = LC_DOWN;
    lc->id.v = 0;
}

static int dial(struct load_worker *w, struct lconn *lc)
{
    const struct load_cfg *cfg = w->cfg;
    struct slb_conn_id id;
    w->st.conn_attempts++;
    lc->t_connect_ns = w->now_ns;
    /* The timeout bounds the TCP connect and the TLS handshake; cleared once it is done. */
    int rc = slb_redial_connect(&w->loop, (const struct sockaddr *)&cfg->addr, cfg->addr_len, 1,
                                (uint32_t)cfg->timeout_ms, &id);
    if (rc < 0)
        return rc;
    slb_conn_get(&w->loop, id)->owner = lc;
    lc->id = id;
    lc->state = LC_CONNECTING;
    return 0;
}

static void unit_end(struct load_worker *w, struct call *c, int fail);
static void begin_load(struct load_worker *w);

static void schedule_redial(struct load_worker *w, struct lconn *lc)
{
    if (w->handshake || w->phase >= PH_DRAIN)
        return;
    /* A server that closes an idle connection cleanly (sipslb draining for a stop or an
     * upgrade) is no failure: a client dials again at once, and the units due meanwhile
     * wait for it (start_due) rather than fail. Anything else backs off. */
    if (lc->clean_close) {
        lc->clean_close = false;
        slb_redial_ok(&lc->redial);
        if (dial(w, lc) == 0) {
            lc->reconnecting = true;
            return;
        }
    }
    slb_redial_backoff(&lc->redial, &w->loop);
}

static bool any_reconnecting(const struct load_worker *w)
{
    for (uint32_t k = 0; k < w->n_conns; k++)
        if (w->conns[k].reconnecting)
            return true;
    return false;
}

/* lc is gone (or going): close it, fail the units on it with `fail`, and redial
 * (persistent mode) after a backoff. */
static void conn_down(struct load_worker *w, struct lconn *lc, int fail)
{
    lc->reconnecting = false;
    lconn_close(w, lc, false);
    if (w->handshake) {
        struct call *c = &w->calls[lc->index];
        if (c->state != CALL_IDLE)
            unit_end(w, c, fail);
        return;
    }
    if (lc->inflight) {
        uint32_t first = w->open_loop ? 0 : lc->index * w->per_conn;
        uint32_t end = w->open_loop ? w->n_calls : first + w->per_conn;
        for (uint32_t s = first; s < end && lc->inflight; s++)
            if (w->calls[s].state != CALL_IDLE && w->calls[s].conn == lc->index)
                unit_end(w, &w->calls[s], fail);
    }
    schedule_redial(w, lc);
    if (lc->initial) {
        lc->initial = false;
        if (--w->pending_initial == 0 && w->phase == PH_CONNECT)
            begin_load(w);
    }
}

static void on_redial(struct slb_timer *t)
{
    struct lconn *lc = slb_timer_entry(t, struct lconn, redial.timer);
    struct load_worker *w = lc->w;
    w->now_ns = mono_ns();
    if (w->phase >= PH_DRAIN || lc->state != LC_DOWN)
        return;
    if (dial(w, lc) < 0)
        schedule_redial(w, lc);
}

/* ---- sending ------------------------------------------------------------------------------- */

/* Encrypts one message onto lc's output queue, whole or not at all. */
static int send_msg(struct load_worker *w, struct lconn *lc, int len)
{
    if (len < 0)
        return -ENOSPC;
    if (lc->state != LC_OPEN)
        return -ENOTCONN;
    struct iovec iov = {w->out, (size_t)len};
    int rc = slb_stream_send(&lc->s, &iov, 1, (size_t)len);
    if (rc < 0)
        return rc;
    w->st.msgs_sent++;
    return 0;
}

/* A send failed: our limits fail just this unit; anything else breaks the connection
 * (and with it every unit on it, c included). */
static void send_failed(struct load_worker *w, struct lconn *lc, struct call *c, int rc)
{
    if (rc == -ENOBUFS || rc == -ENOSPC || rc == -EAGAIN) {
        unit_end(w, c, LOAD_FAIL_LOCAL);
        return;
    }
    if (rc == -EPROTO)
        w->st.tls_failed++;
    else
        w->st.conn_lost++;
    conn_down(w, lc, rc == -EPROTO ? LOAD_FAIL_TLS : LOAD_FAIL_CONNECTION);
}

/* Sends the request that opens the unit's next client transaction and arms its timer. */
static void txn_begin(struct load_worker *w, struct call *c, struct lconn *lc, uint8_t state)
{
    const struct load_cfg *cfg = w->cfg;
    c->branch_len = make_branch(w, c->branch);
    struct load_ids ids = ids_of(c, lc);
    char user[32];
    int len;
    switch (state) {
    case CALL_INVITE:
        len = load_sip_invite(w->out, sizeof(w->out), cfg, &ids);
        break;
    case CALL_REGISTER: {
        /* One address-of-record per slot: u<worker>x<slot>. */
        size_t n = 0;
        user[n++] = 'u';
        n += put_hex(user + n, w->index);
        user[n++] = 'x';
        n += put_hex(user + n, (uint64_t)(c - w->calls));
        ids.user = user;
        ids.user_len = n;
        len = load_sip_register(w->out, sizeof(w->out), cfg, &ids);
        break;
    }
    default:
        len = load_sip_options(w->out, sizeof(w->out), cfg, &ids);
        break;
    }
    c->state = state;
    c->t_txn_ns = w->now_ns;
    w->st.txn_sent++;
    int rc = send_msg(w, lc, len);
    if (rc < 0) {
        send_failed(w, lc, c, rc);
        return;
    }
    slb_timer_arm(slb_loop_wheel(&w->loop), &c->timer, cfg->timeout_ms);
}

static uint8_t first_state(uint8_t kind)
{
    return kind == LOAD_KIND_CALL       ? CALL_INVITE
           : kind == LOAD_KIND_REGISTER ? CALL_REGISTER
                                        : CALL_OPTIONS;
}

/* ---- units ------------------------------------------------------------------------------- */

/* A unit that could not even start (no slot, no connection): counted, not run. */
static void unit_refused(struct load_worker *w, int fail)
{
    w->st.started++;
    w->st.failed++;
    w->st.fail[fail]++;
    prog_add(&w->prog.started, 1);
    prog_add(&w->prog.failed, 1);
}

/* Starts a unit in slot (on lc, or with --handshake on a new connection of its own). */
static void unit_start(struct load_worker *w, uint32_t slot, struct lconn *lc)
{
    struct call *c = &w->calls[slot];
    c->kind = pick_kind(w);
    new_identity(w, c, slot);
    c->t_unit_ns = w->now_ns;
    w->st.started++;
    prog_add(&w->prog.started, 1);
    w->inflight++;
    if (w->handshake) {
        c->conn = slot;
        c->state = CALL_DIALING;
        int rc = dial(w, &w->conns[slot]);
        if (rc < 0)
            unit_end(w, c, rc == -ENOBUFS ? LOAD_FAIL_LOCAL : LOAD_FAIL_CONNECTION);
        return;
    }
    c->conn = lc->index;
    lc->inflight++;
    txn_begin(w, c, lc, first_state(c->kind));
}

/* Closed loop: starts the idle slots of connection lc (it just opened). */
static void start_conn_slots(struct load_worker *w, struct lconn *lc)
{
    uint32_t first = lc->index * w->per_conn;
    for (uint32_t s = first; s < first + w->per_conn && lc->state == LC_OPEN; s++) {
        if (w->calls[s].state != CALL_IDLE)
            continue;
        if (!can_start(w))
            return;
        unit_start(w, s, lc);
    }
}

/* Ends the unit in c: ok when fail < 0, else failed for that reason. Frees or restarts
 * the slot. */
static void unit_end(struct load_worker *w, struct call *c, int fail)
{
    uint32_t slot = (uint32_t)(c - w->calls);
    slb_timer_cancel(&c->timer);
    if (fail >= 0 && c->state >= CALL_INVITE)
        w->st.txn_failed++; /* the transaction in flight failed with the unit */
    c->state = CALL_IDLE;
    w->inflight--;
    w->st.load_end_ns = w->now_ns;
    if (fail < 0) {
        uint64_t us = (w->now_ns - c->t_unit_ns) / 1000u;
        w->st.ok++;
        w->st.ok_by_kind[c->kind]++;
        slb_hist_record(&w->st.lat[LOAD_LAT_UNIT], us);
        prog_add(&w->prog.ok, 1);
        prog_add(&w->prog.lat_sum_us, us);
        prog_add(&w->prog.lat_n, 1);
    } else {
        w->st.failed++;
        w->st.fail[fail]++;
        prog_add(&w->prog.failed, 1);
        if (fail == LOAD_FAIL_TIMEOUT)
            prog_add(&w->prog.timeouts, 1);
    }
    struct lconn *lc = c->conn == NONE ? NULL : &w->conns[c->conn];
    c->conn = NONE;
    if (w->handshake) {
        if (lc)
            lconn_close(w, lc, true);
    } else if (lc) {
        lc->inflight--;
    }
    if (w->open_loop) {
        w->stack[w->stack_n++] = slot;
        return;
    }
    /* Closed loop: the next unit follows at once, unless this one failed for a reason
     * that would fail it again right away (then the tick retries). */
    bool again = fail < 0 || fail == LOAD_FAIL_STATUS || fail == LOAD_FAIL_TIMEOUT;
    if (again && can_start(w)) {
        if (w->handshake)
            unit_start(w, slot, NULL);
        else if (lc && lc->state == LC_OPEN)
            unit_start(w, slot, lc);
        return;
    }
    if (w->handshake || !again)
        stack_push(w, slot);
}

static void on_txn_timeout(struct slb_timer *t)
{
    struct call *c = slb_timer_entry(t, struct call, timer);
    struct load_worker *w = c->w;
    w->now_ns = mono_ns();
    unit_end(w, c, LOAD_FAIL_TIMEOUT);
}

/* ---- responses ----------------------------------------------------------------------------- */

static uint8_t method_of(uint8_t state)
{
    switch (state) {
    case CALL_INVITE:
        return SLB_METHOD_INVITE;
    case CALL_BYE:
        return SLB_METHOD_BYE;
    case CALL_REGISTER:
        return SLB_METHOD_REGISTER;
    default:
        return SLB_METHOD_OPTIONS;
    }
}

static bool branch_is(const struct call *c, const struct slb_sip_msg *m)
{
    return m->top_via.branch.len == c->branch_len &&
           memcmp(m->top_via.branch.ptr, c->branch, c->branch_len) == 0;
}

/* ACK for a 2xx (RFC 3261 13.2.2.4): its own branch, the INVITE's CSeq number. Returns
 * 0 or the send error. */
static int send_ack(struct load_worker *w, struct lconn *lc, const struct call *c,
                    const struct slb_sip_msg *m, uint32_t invite_cseq)
{
    char branch[40];
    struct load_ids ids = ids_of(c, lc);
    ids.branch = branch;
    ids.branch_len = make_branch(w, branch);
    ids.cseq = invite_cseq;
    return send_msg(w, lc, load_sip_in_dialog(w->out, sizeof(w->out), w->cfg, &ids, "ACK", m));
}

/* The 2xx to our INVITE: ACK it, then hang up at once (BYE, CSeq + 1, new branch). */
static void invite_answered(struct load_worker *w, struct lconn *lc, struct call *c,
                            const struct slb_sip_msg *m)
{
    int rc = send_ack(w, lc, c, m, c->cseq);
    if (rc < 0) {
        send_failed(w, lc, c, rc);
        return;
    }
    c->cseq++;
    c->branch_len = make_branch(w, c->branch);
    struct load_ids ids = ids_of(c, lc);
    c->state = CALL_BYE;
    c->t_txn_ns = w->now_ns;
    w->st.txn_sent++;
    rc = send_msg(w, lc, load_sip_in_dialog(w->out, sizeof(w->out), w->cfg, &ids, "BYE", m));
    if (rc < 0) {
        send_failed(w, lc, c, rc);
        return;
    }
    slb_timer_arm(slb_loop_wheel(&w->loop), &c->timer, w->cfg->timeout_ms);
}

static void on_response(struct load_worker *w, struct lconn *lc, const struct slb_sip_msg *m)
{
    struct call *c = call_of(w, m->call_id);
    if (!c || c->state < CALL_INVITE || c->conn != lc->index) {
        w->st.unmatched++;
        return;
    }
    if (m->cseq != c->cseq || m->cseq_method_id != method_of(c->state) || !branch_is(c, m)) {
        /* RFC 3261 13.2.2.4: a retransmitted 2xx to the INVITE gets the ACK again. */
        if (c->state == CALL_BYE && m->status / 100 == 2 && m->cseq + 1 == c->cseq &&
            m->cseq_method_id == SLB_METHOD_INVITE) {
            w->st.retrans_2xx++;
            int rc = send_ack(w, lc, c, m, m->cseq);
            if (rc < 0)
                send_failed(w, lc, c, rc);
            return;
        }
        w->st.unmatched++;
        return;
    }
    if (m->status < 200) {
        w->st.provisional++;
        return;
    }
    if (m->status >= LOAD_STATUS_MIN && m->status <= LOAD_STATUS_MAX)
        w->st.status[m->status - LOAD_STATUS_MIN]++;
    uint64_t us = (w->now_ns - c->t_txn_ns) / 1000u;
    bool ok = m->status < 300;
    if (!ok) {
        if (c->state == CALL_INVITE) {
            /* RFC 3261 17.1.1.3: the INVITE transaction ACKs a failure itself, same branch. */
            struct load_ids ids = ids_of(c, lc);
            int rc = send_msg(w, lc, load_sip_ack_error(w->out, sizeof(w->out), w->cfg, &ids, m));
            if (rc < 0 && rc != -ENOBUFS && rc != -ENOSPC) {
                send_failed(w, lc, c, rc);
                return;
            }
        }
        unit_end(w, c, LOAD_FAIL_STATUS);
        return;
    }
    w->st.txn_ok++;
    slb_redial_ok(&lc->redial); /* it answers: the next loss starts the backoff afresh */
    switch (c->state) {
    case CALL_INVITE:
        slb_hist_record(&w->st.lat[LOAD_LAT_INVITE], us);
        slb_timer_cancel(&c->timer);
        invite_answered(w, lc, c, m);
        return;
    case CALL_BYE:
        slb_hist_record(&w->st.lat[LOAD_LAT_BYE], us);
        break;
    case CALL_REGISTER:
        slb_hist_record(&w->st.lat[LOAD_LAT_REGISTER], us);
        break;
    default:
        slb_hist_record(&w->st.lat[LOAD_LAT_OPTIONS], us);
        break;
    }
    unit_end(w, c, -1);
}

/* ---- io/ callbacks -------------------------------------------------------------------------- */

static void local_address(struct lconn *lc, const struct slb_conn *conn)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    char ip[INET6_ADDRSTRLEN] = "0.0.0.0";
    uint16_t port = 0;
    if (getsockname(conn->fd, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET6) {
            const struct sockaddr_in6 *a = (const void *)&ss;
            inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof(ip));
            port = ntohs(a->sin6_port);
        } else if (ss.ss_family == AF_INET) {
            const struct sockaddr_in *a = (const void *)&ss;
            inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
            port = ntohs(a->sin_port);
        }
    }
    int n = strchr(ip, ':') ? snprintf(lc->local, sizeof(lc->local), "[%s]:%u", ip, port)
                            : snprintf(lc->local, sizeof(lc->local), "%s:%u", ip, port);
    lc->local_len = (uint8_t)(n > 0 && (size_t)n < sizeof(lc->local) ? n : 0);
}

static void tls_broken(struct load_worker *w, struct lconn *lc)
{
    char err[160];
    w->st.tls_failed++;
    slb_log_limited(&w->rl, slb_loop_now_ms(&w->loop), SLB_LOG_WARN,
                    "sipslb-load: worker %u: TLS with %s failed (%s): %s", w->index, w->cfg->target,
                    slb_tls_fail_name(slb_tls_fail_reason(&lc->s.tls)),
                    slb_tls_error_string(&lc->s.tls, err, sizeof(err)));
    conn_down(w, lc, LOAD_FAIL_TLS);
}

static int on_connect(struct slb_loop *loop, struct slb_conn *conn, int res)
{
    struct load_worker *w = slb_loop_user(loop);
    struct lconn *lc = conn->owner;
    if (!lc)
        return res < 0 ? 0 : -ECANCELED;
    w->now_ns = mono_ns();
    if (res < 0) {
        w->st.connect_failed++;
        slb_log_limited(&w->rl, slb_loop_now_ms(loop), SLB_LOG_WARN,
                        "sipslb-load: worker %u: cannot connect to %s: %s", w->index,
                        w->cfg->target, strerror(-res));
        lc->state = LC_DOWN; /* the io/ connection is gone already */
        lc->id.v = 0;
        conn_down(w, lc, LOAD_FAIL_CONNECTION);
        return 0;
    }
    local_address(lc, conn);
    if (slb_stream_open(&w->env, &lc->s, conn, w->ctx, w->cfg->sni, lc) < 0) {
        conn->owner = NULL;
        lc->state = LC_DOWN;
        lc->id.v = 0;
        w->st.tls_failed++;
        conn_down(w, lc, LOAD_FAIL_LOCAL);
        return -ENOMEM;
    }
    lc->state = LC_HANDSHAKE;
    lc->lost = LOST_NONE;
    if (w->cfg->resume && w->session)
        slb_tls_conn_set_session(&lc->s.tls, w->session);
    if (slb_tls_start(&lc->s.tls) < 0)
        tls_broken(w, lc);
    return 0;
}

static void on_handshake(struct load_worker *w, struct lconn *lc)
{
    lc->state = LC_OPEN;
    lc->reconnecting = false;
    slb_conn_set_timeout(lc->s.conn, 0);
    w->st.handshakes++;
    if (slb_tls_resumed(&lc->s.tls))
        w->st.resumed++;
    slb_hist_record(&w->st.lat[LOAD_LAT_HANDSHAKE], (w->now_ns - lc->t_connect_ns) / 1000u);
    if (!w->st.tls_version) {
        w->st.tls_version = slb_tls_version_name(&lc->s.tls);
        w->st.tls_cipher = slb_tls_cipher_name(&lc->s.tls);
        w->st.tls_group = slb_tls_group_name(&lc->s.tls);
    }
    if (w->handshake) {
        struct call *c = &w->calls[lc->index];
        if (c->state == CALL_DIALING)
            txn_begin(w, c, lc, first_state(c->kind));
        return;
    }
    w->conns_open++;
    prog_add(&w->prog.conns_open, 1);
    w->last_open_ms = slb_loop_now_ms(&w->loop);
    if (lc->initial) {
        lc->initial = false;
        if (--w->pending_initial == 0 && w->phase == PH_CONNECT)
            begin_load(w);
    } else if (w->phase == PH_LOAD && !w->open_loop) {
        start_conn_slots(w, lc);
    }
}

/* --resume: one session for the whole worker, the one its connections resume. */
static void keep_session(struct load_worker *w, struct lconn *lc)
{
    struct slb_tls_session *s = slb_tls_session_get(&lc->s.tls);
    if (!s)
        return;
    if (w->session)
        slb_tls_session_free(w->session);
    w->session = s;
}

/* ---- the stream's callbacks (inside on_data and on_drained) --------------------------------- */

static bool lc_frame(struct slb_stream *s, const char *base, const struct slb_sip_frame *fr,
                     const struct slb_sip_msg *m)
{
    struct lconn *lc = (struct lconn *)(void *)s;
    struct load_worker *w = lc->w;
    (void)base;
    switch (fr->kind) {
    case SLB_FRAME_FATAL:
        w->st.bad_msgs++;
        w->st.conn_lost++;
        conn_down(w, lc, LOAD_FAIL_CONNECTION);
        return false;
    case SLB_FRAME_BAD:
        w->st.bad_msgs++;
        break;
    case SLB_FRAME_MESSAGE:
        w->st.msgs_recv++;
        if (m->is_request)
            w->st.requests_in++;
        else
            on_response(w, lc, m);
        break;
    default: /* keepalive CRLFs */
        break;
    }
    return true;
}

static void lc_tls_events(struct slb_stream *s, int ev)
{
    struct lconn *lc = (struct lconn *)(void *)s;
    struct load_worker *w = lc->w;
    if (ev & SLB_TLS_EV_PEER_CLOSED)
        lc->lost = LOST_PEER; /* the stream closes after the plaintext before it */
    if (ev & SLB_TLS_EV_HANDSHAKE_DONE) {
        if (w->cfg->wss) {
            /* SIP over WebSocket: open once the Upgrade is answered (lc_ws_open). */
            if (slb_stream_ws_request(s, w->cfg->sni) < 0)
                lc->lost = LOST_TLS;
            return;
        }
        on_handshake(w, lc);
        if (s->state != SLB_STREAM_OPEN)
            return; /* its first request could not be sent: lc is down */
    }
    if ((ev & SLB_TLS_EV_NEW_SESSION) && w->cfg->resume)
        keep_session(w, lc);
}

static void lc_tls_failed(struct slb_stream *s, int rc)
{
    (void)rc;
    ((struct lconn *)(void *)s)->lost = LOST_TLS; /* settle says so and takes lc down */
}

static void lc_ws_open(struct slb_stream *s)
{
    struct lconn *lc = (struct lconn *)(void *)s;
    on_handshake(lc->w, lc);
}

static const struct slb_stream_ops lc_ops = {
    .frame = lc_frame,
    .tls_events = lc_tls_events,
    .tls_failed = lc_tls_failed,
    .ws_open = lc_ws_open,
};

/* After a stream call on lc's connection conn: a stream let go of inside its callbacks is
 * released now; one that closed itself (the peer's close_notify, a TLS failure, input it
 * refused) takes lc down. */
static void settle(struct load_worker *w, struct lconn *lc, struct slb_conn *conn)
{
    w->in_stream = NULL;
    if (lc->release_owed) {
        lc->release_owed = false;
        slb_stream_release(&lc->s);
        return;
    }
    if (conn->owner != lc || lc->s.state != SLB_STREAM_CLOSING)
        return;
    if (lc->lost == LOST_TLS) {
        tls_broken(w, lc);
        return;
    }
    if (lc->lost == LOST_PEER)
        slb_log_limited(&w->rl, slb_loop_now_ms(&w->loop), SLB_LOG_WARN,
                        "sipslb-load: worker %u: %s sent close_notify", w->index, w->cfg->target);
    w->st.conn_lost++;
    conn_down(w, lc, LOAD_FAIL_CONNECTION);
}

static int on_data(struct slb_loop *loop, struct slb_conn *conn, const void *data, size_t len)
{
    struct load_worker *w = slb_loop_user(loop);
    struct lconn *lc = conn->owner;
    if (!lc)
        return 0;
    w->now_ns = mono_ns();
    w->in_stream = lc;
    slb_stream_input(&lc->s, data, len);
    settle(w, lc, conn);
    return 0;
}

static void on_drained(struct slb_loop *loop, struct slb_conn *conn)
{
    struct load_worker *w = slb_loop_user(loop);
    struct lconn *lc = conn->owner;
    if (!lc)
        return;
    w->now_ns = mono_ns();
    w->in_stream = lc;
    int ev = slb_stream_flush(&lc->s);
    if (ev > 0 && (ev & SLB_TLS_EV_MORE) && !(ev & SLB_TLS_EV_WANT_WRITE))
        slb_stream_input(&lc->s, NULL, 0); /* what TLS kept while the output was blocked */
    settle(w, lc, conn);
}

static void on_close(struct slb_loop *loop, struct slb_conn *conn, int reason)
{
    struct load_worker *w = slb_loop_user(loop);
    struct lconn *lc = conn->owner;
    if (!lc)
        return;
    conn->owner = NULL;
    lc->s.state = SLB_STREAM_CLOSING; /* the connection is gone: nothing more to close */
    lc->s.conn = NULL;
    w->now_ns = mono_ns();
    bool handshaking = lc->state != LC_OPEN;
    if (!w->handshake || handshaking)
        slb_log_limited(&w->rl, slb_loop_now_ms(loop), SLB_LOG_WARN,
                        "sipslb-load: worker %u: connection to %s closed%s: %s", w->index,
                        w->cfg->target, handshaking ? " during the TLS handshake" : "",
                        reason ? strerror(-reason) : "by the peer");
    if (handshaking)
        w->st.tls_failed++;
    else
        w->st.conn_lost++;
    lc->clean_close = !handshaking && !reason && !lc->inflight && !w->handshake;
    conn_down(w, lc, handshaking ? LOAD_FAIL_TLS : LOAD_FAIL_CONNECTION);
}

/* ---- the load ------------------------------------------------------------------------------- */

/* Units due by t seconds into the load at rate r/s, ramping up linearly over ramp seconds. */
static double units_due(double r, double ramp, double t)
{
    if (ramp <= 0)
        return r * t;
    if (t < ramp)
        return r * t * t / (2 * ramp);
    return r * ramp / 2 + r * (t - ramp);
}

static struct lconn *pick_conn(struct load_worker *w)
{
    for (uint32_t k = 0; k < w->n_conns; k++) {
        struct lconn *lc = &w->conns[(w->rr + k) % w->n_conns];
        if (lc->state == LC_OPEN && slb_conn_out_space(lc->s.conn) >= OUT_MSG_MAX) {
            w->rr = (lc->index + 1) % w->n_conns;
            return lc;
        }
    }
    return NULL;
}

/* Open loop: starts every unit due by now, whatever is in flight (no coordinated omission:
 * a slow target gets more concurrent units, not fewer). */
static void start_due(struct load_worker *w)
{
    double t = (double)(w->now_ns - w->st.load_start_ns) / 1e9;
    double due = units_due(w->rate, (double)w->cfg->ramp_ms / 1000.0, t);
    for (uint32_t n = 0; n < START_BURST && (double)w->st.started < due; n++) {
        if (!can_start(w))
            return;
        if (!w->stack_n) {
            unit_refused(w, LOAD_FAIL_LOCAL);
            continue;
        }
        if (w->handshake) {
            unit_start(w, stack_pop(w), NULL);
            continue;
        }
        struct lconn *lc = pick_conn(w);
        if (!lc && any_reconnecting(w))
            return; /* due units start once it is back */
        if (!lc) {
            /* Connections open but all backed up is our limit; none open is theirs. */
            unit_refused(w, w->conns_open ? LOAD_FAIL_LOCAL : LOAD_FAIL_CONNECTION);
            continue;
        }
        unit_start(w, w->stack[--w->stack_n], lc);
    }
}

/* Closed loop: retries the slots left idle by failures. */
static void restart_idle(struct load_worker *w)
{
    for (uint32_t n = w->stack_n; n > 0 && w->stack_n > 0; n--) {
        if (!can_start(w))
            return;
        uint32_t slot = stack_pop(w);
        if (w->calls[slot].state != CALL_IDLE)
            continue;
        if (w->handshake) {
            unit_start(w, slot, NULL);
            continue;
        }
        struct lconn *lc = &w->conns[slot / w->per_conn];
        if (lc->state == LC_OPEN)
            unit_start(w, slot, lc);
        /* else it starts when its connection opens */
    }
}

static void begin_load(struct load_worker *w)
{
    const struct load_cfg *cfg = w->cfg;
    uint64_t now_ms = slb_loop_now_ms(&w->loop);
    w->phase = PH_LOAD;
    w->now_ns = mono_ns();
    w->st.load_start_ns = w->now_ns;
    w->st.load_end_ns = w->now_ns;
    w->cpu_load0_ns = thread_cpu_ns();
    w->deadline_ms = cfg->duration_ms ? now_ms + cfg->duration_ms : 0;
    w->hard_deadline_ms = now_ms + cfg->max_duration_ms;
    w->last_open_ms = now_ms;
    if (!w->open_loop) {
        if (w->handshake) {
            for (uint32_t s = 0; s < w->n_calls && can_start(w); s++)
                unit_start(w, s, NULL);
        } else {
            for (uint32_t i = 0; i < w->n_conns; i++)
                if (w->conns[i].state == LC_OPEN)
                    start_conn_slots(w, &w->conns[i]);
        }
    }
}

/* The end: every unit is done. Close the connections (close_notify, flush) and stop. */
static void finish(struct load_worker *w)
{
    w->phase = PH_DONE;
    w->st.cpu_load_ns = thread_cpu_ns() - w->cpu_load0_ns;
    for (uint32_t i = 0; i < w->n_conns; i++) {
        slb_timer_cancel(&w->conns[i].redial.timer);
        lconn_close(w, &w->conns[i], true);
    }
    slb_loop_stop(&w->loop);
}

static void on_tick(struct slb_timer *t)
{
    struct load_worker *w = slb_timer_entry(t, struct load_worker, tick);
    const struct load_cfg *cfg = w->cfg;
    uint64_t now_ms = slb_loop_now_ms(&w->loop);
    w->now_ns = mono_ns();
    if (atomic_load_explicit(&w->drain_req, memory_order_relaxed))
        begin_drain(w);
    if (w->phase == PH_CONNECT && now_ms >= w->connect_deadline_ms)
        begin_load(w);
    if (w->phase == PH_LOAD && !w->handshake && w->conns_open == 0 && w->inflight == 0 &&
        now_ms - w->last_open_ms > cfg->timeout_ms) {
        /* No connection for a whole timeout: the target is gone; do not spin until the
         * deadline. */
        w->st.gave_up = true;
        begin_drain(w);
    }
    if (w->phase == PH_LOAD) {
        if (w->open_loop)
            start_due(w);
        else
            restart_idle(w);
        can_start(w); /* notices deadlines even when nothing was due */
    }
    if (w->phase == PH_DRAIN && w->inflight == 0) {
        finish(w);
        return;
    }
    slb_timer_arm(slb_loop_wheel(&w->loop), &w->tick,
                  w->open_loop && w->phase == PH_LOAD ? TICK_OPEN_MS : TICK_CLOSED_MS);
}

/* ---- life cycle ----------------------------------------------------------------------------- */

struct load_worker *load_worker_new(const struct load_cfg *cfg, unsigned index,
                                    struct slb_tls_ctx *ctx, uint32_t conns, double rate,
                                    uint64_t count)
{
    struct load_worker *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    w->cfg = cfg;
    w->index = index;
    w->ctx = ctx;
    w->rate = rate;
    w->count_limit = count;
    w->open_loop = cfg->open_loop;
    w->handshake = cfg->handshake;
    for (int i = 0; i < LOAD_LAT__COUNT; i++)
        slb_hist_init(&w->st.lat[i]);
    uint64_t pool = 0;
    if (w->open_loop) {
        /* Enough slots for every unit that can be in flight when the target answers
         * nothing for a whole timeout. */
        pool = cfg->max_inflight > 0
                   ? (uint64_t)((cfg->max_inflight + cfg->workers - 1) / cfg->workers)
                   : (uint64_t)(rate * ((double)cfg->timeout_ms / 1000.0 + 1.0)) + 64u;
        if (pool > (1u << 20))
            pool = 1u << 20;
        if (cfg->handshake && pool > HANDSHAKE_POOL_MAX)
            pool = HANDSHAKE_POOL_MAX; /* each is a socket and a TLS session */
    }
    if (w->handshake) {
        w->n_conns = w->open_loop ? (uint32_t)pool : conns;
        w->n_calls = w->n_conns;
    } else {
        w->n_conns = conns;
        w->per_conn = w->open_loop ? 0 : (uint32_t)cfg->outstanding;
        w->n_calls = w->open_loop ? (uint32_t)pool : conns * w->per_conn;
    }
    w->conns = calloc(w->n_conns, sizeof(*w->conns));
    w->calls = calloc(w->n_calls, sizeof(*w->calls));
    w->stack = calloc(w->n_calls, sizeof(*w->stack));
    /* The streams' input: a scratch, and split-message buffers reserved and touched only
     * when a message straddles records. */
    int erc = slb_stream_env_init(&w->env, &lc_ops, w->n_conns, SLB_SIP_MAX_MSG_BYTES_DEFAULT);
    if (!w->conns || !w->calls || !w->stack || erc < 0) {
        load_worker_free(w);
        return NULL;
    }
    for (uint32_t i = 0; i < w->n_conns; i++) {
        struct lconn *lc = &w->conns[i];
        lc->w = w;
        lc->index = i;
        slb_redial_init(&lc->redial, REDIAL_MS_MIN, REDIAL_MS_MAX, on_redial);
    }
    for (uint32_t i = 0; i < w->n_calls; i++) {
        w->calls[i].w = w;
        w->calls[i].conn = NONE;
        slb_timer_init(&w->calls[i].timer, on_txn_timeout);
    }
    if (w->open_loop)
        for (uint32_t i = w->n_calls; i-- > 0;)
            w->stack[w->stack_n++] = i;
    uint64_t seed[2] = {0, 0};
    if (getrandom(seed, sizeof(seed), 0) != (ssize_t)sizeof(seed))
        seed[0] = mono_ns(), seed[1] = (uint64_t)(uintptr_t)w;
    w->rng = (seed[0] ^ ((uint64_t)index * 0x9E3779B97F4A7C15ull)) | 1u;
    put_hex_fixed(w->run_tag, seed[1], 8);
    slb_timer_init(&w->tick, on_tick);
    w->rl = (struct slb_ratelimit)SLB_RATELIMIT_INIT(1000, 3);
    return w;
}

void load_worker_free(struct load_worker *w)
{
    if (!w)
        return;
    if (w->session)
        slb_tls_session_free(w->session);
    slb_stream_env_deinit(&w->env);
    free(w->conns);
    free(w->calls);
    free(w->stack);
    free(w);
}

void load_worker_set_done(struct load_worker *w, void (*done)(void *), void *done_arg)
{
    w->done = done;
    w->done_arg = done_arg;
}

static int loop_setup(struct load_worker *w)
{
    const struct load_cfg *cfg = w->cfg;
    uint64_t max_conns = (uint64_t)w->n_conns * (w->handshake ? 3u : 2u) + 64u;
    uint64_t cap = w->open_loop   ? (1u << 20)
                   : w->handshake ? 65536u
                                  : (uint64_t)cfg->outstanding * 4096u;
    if (cap < 65536u)
        cap = 65536u;
    if (cap > (16u << 20))
        cap = 16u << 20;
    uint64_t chunks = max_conns * 2u;
    if (chunks < 4u * cap / 4096u)
        chunks = 4u * cap / 4096u;
    if (chunks > 65536u) /* 256 MiB of output at most, mapped lazily */
        chunks = 65536u;
    struct slb_loop_opts opts = {
        .max_conns = (uint32_t)max_conns,
        .out_cap_bytes = (uint32_t)cap,
        .out_chunks = (uint32_t)chunks,
        .linger_ms = 1000,
        .stop_grace_ms = 2000,
        .loop_id = (uint8_t)w->index,
    };
    struct slb_loop_cbs cbs = {
        .on_connect = on_connect,
        .on_data = on_data,
        .on_drained = on_drained,
        .on_close = on_close,
    };
    return slb_loop_init(&w->loop, &opts, &cbs, w);
}

/* After the loop: units still in flight were cut short. */
static void count_aborted(struct load_worker *w)
{
    for (uint32_t i = 0; i < w->n_calls; i++) {
        struct call *c = &w->calls[i];
        slb_timer_cancel(&c->timer);
        if (c->state == CALL_IDLE)
            continue;
        c->state = CALL_IDLE;
        w->st.failed++;
        w->st.fail[LOAD_FAIL_ABORTED]++;
    }
    w->inflight = 0;
}

void *load_worker_main(void *arg)
{
    struct load_worker *w = arg;
    uint64_t cpu0 = thread_cpu_ns();
    void *result = NULL;
    int rc = loop_setup(w);
    if (rc < 0) {
        slb_log(SLB_LOG_ERROR, "sipslb-load: worker %u: io_uring set-up failed: %s", w->index,
                strerror(-rc));
        result = (void *)1;
        goto out;
    }
    w->now_ns = mono_ns();
    atomic_store(&w->running, 1);
    if (w->handshake) {
        begin_load(w);
    } else {
        w->phase = PH_CONNECT;
        w->connect_deadline_ms = slb_loop_now_ms(&w->loop) + w->cfg->timeout_ms + 100u;
        w->pending_initial = w->n_conns;
        for (uint32_t i = 0; i < w->n_conns; i++)
            w->conns[i].initial = true;
        for (uint32_t i = 0; i < w->n_conns; i++) {
            struct lconn *lc = &w->conns[i];
            if (lc->initial && lc->state == LC_DOWN && dial(w, lc) < 0) {
                w->st.connect_failed++;
                conn_down(w, lc, LOAD_FAIL_CONNECTION);
            }
        }
    }
    slb_timer_arm(slb_loop_wheel(&w->loop), &w->tick, TICK_OPEN_MS);
    if (!atomic_load(&w->abort_req)) {
        rc = slb_loop_run(&w->loop);
        if (rc < 0)
            slb_log(SLB_LOG_ERROR, "sipslb-load: worker %u: loop failed: %s", w->index,
                    strerror(-rc));
    }
    if (w->phase != PH_DONE && w->st.load_start_ns) /* aborted */
        w->st.cpu_load_ns = thread_cpu_ns() - w->cpu_load0_ns;
    w->phase = PH_DONE;
    w->now_ns = mono_ns();
    count_aborted(w);
    slb_timer_cancel(&w->tick);
    for (uint32_t i = 0; i < w->n_conns; i++) {
        slb_redial_deinit(&w->conns[i].redial);
        lconn_close(w, &w->conns[i], false);
    }
    slb_loop_deinit(&w->loop);
out:
    slb_tls_thread_cleanup();
    w->st.cpu_ns = thread_cpu_ns() - cpu0;
    if (w->done)
        w->done(w->done_arg);
    return result;
}

void load_worker_drain(struct load_worker *w)
{
    atomic_store(&w->drain_req, 1);
}

void load_worker_abort(struct load_worker *w)
{
    atomic_store(&w->abort_req, 1);
    if (atomic_load(&w->running))
        slb_loop_stop(&w->loop);
}

const struct load_stats *load_worker_stats(const struct load_worker *w)
{
    return &w->st;
}

const struct load_progress *load_worker_progress(const struct load_worker *w)
{
    return &w->prog;
}
