/*
 * The per-worker io_uring loop.
 *
 * One ring per worker thread (SINGLE_ISSUER|DEFER_TASKRUN when the kernel takes it), one
 * provided-buffer ring shared by the loop's connections, multishot accept per listener,
 * multishot recv per connection, at most one send in flight per socket.
 *
 * A turn: refresh the clock, reap at most cqe_batch completions (callbacks run here),
 * run due timers, flush (arm receives, gather each connection's queued output into one
 * send, issue cancels, free dead slots), then submit everything and wait for the next
 * completion or the wheel's next deadline in one io_uring_enter.
 *
 * Invariants: memory an SQE references (output chunks, receive buffers, the eventfd
 * buffer, the connection slot) stays ours until its CQE is reaped; a connection's
 * `inflight` counts its SQEs; a receive buffer goes back to the ring right after on_data.
 *
 * Thread: everything here runs on the loop's own thread, except slb_loop_stop (any thread
 * or a signal handler).
 */
#include "io/loop.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "core/pool.h"
#include "io/conn.h"
#include "io/loop-priv.h"

#define BUF_GROUP        0
#define ACCEPT_RETRY_MS  10          /* after EMFILE and friends: don't spin */
#define TEARDOWN_WAIT_MS 2000        /* bound on waiting for the kernel at deinit */
#define EFD_CLOSED       0x80000000u /* efd_users: deinit closed the eventfd */

/* The loop's clock, read once per turn: milliseconds for timers, microseconds for the
 * relay's latency figures. */
static void clock_now(struct slb_loop *loop)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    loop->now_us = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
    loop->now_ms = loop->now_us / 1000u;
}

static bool is_pow2(uint32_t v)
{
    return v && (v & (v - 1)) == 0;
}

static int opts_resolve(const struct slb_loop_opts *in, struct slb_loop_opts *o)
{
    if (in)
        *o = *in;
    else
        memset(o, 0, sizeof(*o));
    if (!o->max_conns)
        o->max_conns = 1024;
    if (!o->ring_entries)
        o->ring_entries = 256;
    if (!o->recv_bufs)
        o->recv_bufs = 256;
    if (!o->recv_buf_bytes)
        o->recv_buf_bytes = 16384;
    if (!o->out_cap_bytes)
        o->out_cap_bytes = 65536;
    if (!o->out_low_bytes)
        o->out_low_bytes = o->out_cap_bytes / 4;
    if (!o->out_chunk_bytes)
        o->out_chunk_bytes = 4096;
    if (!o->out_chunks) {
        uint64_t per_conn = (o->out_cap_bytes + o->out_chunk_bytes - 1) / o->out_chunk_bytes;
        uint64_t n = 2 * (uint64_t)o->max_conns;
        o->out_chunks =
            (uint32_t)(n > per_conn ? (n < UINT32_MAX / 4 ? n : UINT32_MAX / 4) : per_conn);
        if (o->out_reserve_chunks < UINT32_MAX / 4)
            o->out_chunks += o->out_reserve_chunks; /* the reserve comes on top */
    }
    if (!o->cqe_batch)
        o->cqe_batch = 256;
    if (!o->stop_grace_ms)
        o->stop_grace_ms = 5000;
    if (!o->linger_ms)
        o->linger_ms = 5000;
    if (!o->msg_peers)
        o->msg_peers = 256;
    if (!o->msg_queue_len)
        o->msg_queue_len = 256;
    if (o->max_conns > SLB_CONN_SLOTS_MAX || o->ring_entries > 32768 || !is_pow2(o->recv_bufs) ||
        o->recv_bufs > 32768 || o->recv_buf_bytes > (1u << 30) || o->out_cap_bytes > (1u << 30) ||
        o->out_low_bytes >= o->out_cap_bytes || o->out_chunk_bytes > o->out_cap_bytes ||
        o->msg_peers > 256 || !is_pow2(o->msg_queue_len) || o->msg_queue_len > (1u << 20) ||
        o->out_chunks >= SLB_IO_NONE || o->out_reserve_chunks >= o->out_chunks)
        return -EINVAL;
    return 0;
}

/* Preferred flags first; a kernel that refuses a set says -EINVAL and we try the next. */
static int ring_setup(struct slb_loop *loop, const struct slb_loop_opts *o)
{
    /* TASKRUN_FLAG: the kernel sets IORING_SQ_TASKRUN when completions wait to be run,
     * which is what a spinning loop watches (a memory read, no syscall). */
    static const uint32_t sets[] = {
        IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_COOP_TASKRUN |
            IORING_SETUP_TASKRUN_FLAG,
        IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_COOP_TASKRUN,
        IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
        IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG,
        IORING_SETUP_COOP_TASKRUN,
        0,
    };
    int ret = -EINVAL;
    for (size_t i = o->plain_setup ? 3 : 0; i < sizeof(sets) / sizeof(sets[0]); i++) {
        /* SUBMIT_ALL: one bad SQE must not strand the rest of the batch. */
        uint32_t extras[] = {IORING_SETUP_SUBMIT_ALL, 0};
        for (size_t j = 0; j < 2; j++) {
            struct io_uring_params p;
            memset(&p, 0, sizeof(p));
            p.flags = sets[i] | extras[j] | IORING_SETUP_CQSIZE | IORING_SETUP_CLAMP;
            p.cq_entries = o->ring_entries * 4;
            ret = io_uring_queue_init_params(o->ring_entries, loop->ring, &p);
            if (ret == 0) {
                loop->setup_flags = p.flags;
                loop->deferred = (p.flags & IORING_SETUP_DEFER_TASKRUN) != 0;
                if (!(p.features & IORING_FEAT_SUBMIT_STABLE)) {
                    io_uring_queue_exit(loop->ring);
                    loop->ring->ring_fd = -1;
                    return -ENOSYS; /* sendmsg headers live only until submit */
                }
                return 0;
            }
            if (ret != -EINVAL)
                return ret;
        }
    }
    return ret;
}

static int bufs_setup(struct slb_loop *loop, const struct slb_loop_opts *o)
{
    loop->nbufs = o->recv_bufs;
    loop->buf_bytes = o->recv_buf_bytes;
    long page = sysconf(_SC_PAGESIZE);
    size_t br_bytes = (size_t)o->recv_bufs * sizeof(struct io_uring_buf);
    br_bytes = (br_bytes + (size_t)page - 1) & ~((size_t)page - 1);
    /* liburing 2.3 has no io_uring_setup_buf_ring: map the ring ourselves. */
    void *br = mmap(NULL, br_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (br == MAP_FAILED)
        return -ENOMEM;
    loop->br = br;
    loop->br_bytes = br_bytes;
    size_t mem_bytes = (size_t)o->recv_bufs * o->recv_buf_bytes;
    void *mem = mmap(NULL, mem_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED)
        return -ENOMEM;
    loop->buf_mem = mem;
    loop->buf_mem_bytes = mem_bytes;

    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (uint64_t)(uintptr_t)br;
    reg.ring_entries = o->recv_bufs;
    reg.bgid = BUF_GROUP;
    int ret = io_uring_register_buf_ring(loop->ring, &reg, 0);
    if (ret < 0)
        return ret;
    loop->br_registered = true;
    io_uring_buf_ring_init(loop->br);
    int mask = io_uring_buf_ring_mask(o->recv_bufs);
    for (uint32_t i = 0; i < o->recv_bufs; i++)
        io_uring_buf_ring_add(loop->br, loop->buf_mem + (size_t)i * o->recv_buf_bytes,
                              o->recv_buf_bytes, (unsigned short)i, mask, (int)i);
    io_uring_buf_ring_advance(loop->br, (int)o->recv_bufs);
    return 0;
}

static void recycle_buf(struct slb_loop *loop, uint32_t bid)
{
    io_uring_buf_ring_add(loop->br, loop->buf_mem + (size_t)bid * loop->buf_bytes, loop->buf_bytes,
                          (unsigned short)bid, io_uring_buf_ring_mask(loop->nbufs), 0);
    io_uring_buf_ring_advance(loop->br, 1);
}

/* Frees what init allocated; safe on a partly initialised loop. Never with SQEs in flight
 * unless the ring is gone first (it is exited before the memory goes). */
static void loop_release(struct slb_loop *loop)
{
    /* Shut out slb_io_kick callers, then wait for those already writing (one write
     * syscall each: bounded). */
    atomic_fetch_or(&loop->efd_users, EFD_CLOSED);
    for (unsigned spins = 0; atomic_load(&loop->efd_users) != EFD_CLOSED && spins < 1000000;
         spins++)
        sched_yield();
    if (loop->efd >= 0)
        close(loop->efd);
    loop->efd = -1;
    slb_io_msg_deinit(loop);
    if (loop->ring && loop->ring->ring_fd >= 0) {
        if (loop->br_registered)
            io_uring_unregister_buf_ring(loop->ring, BUF_GROUP);
        io_uring_queue_exit(loop->ring);
    }
    free(loop->ring);
    loop->ring = NULL;
    if (loop->br)
        munmap(loop->br, loop->br_bytes);
    if (loop->buf_mem)
        munmap(loop->buf_mem, loop->buf_mem_bytes);
    loop->br = NULL;
    loop->buf_mem = NULL;
    free(loop->scratch_msg);
    free(loop->scratch_iov);
    loop->scratch_msg = NULL;
    loop->scratch_iov = NULL;
    slb_io_conns_deinit(loop);
    if (slb_io_thread_loop == loop)
        slb_io_thread_loop = NULL;
}

static void listener_retry_fire(struct slb_timer *timer)
{
    struct slb_listener *lst = slb_timer_entry(timer, struct slb_listener, retry);
    if (lst->fd >= 0 && !lst->closing)
        lst->need_arm = true;
}

int slb_loop_init(struct slb_loop *loop, const struct slb_loop_opts *opts,
                  const struct slb_loop_cbs *cbs, void *user)
{
    struct slb_loop_opts o;
    memset(loop, 0, sizeof(*loop));
    loop->efd = -1;
    int ret = opts_resolve(opts, &o);
    if (ret < 0 || !cbs || !cbs->on_data)
        return -EINVAL;
    loop->cbs = *cbs;
    loop->user = user;
    loop->id = o.loop_id;
    loop->cqe_batch = o.cqe_batch;
    loop->stop_grace_ms = o.stop_grace_ms;
    loop->linger_ms = o.linger_ms;
    loop->accept_rcvbuf = o.accept_rcvbuf_bytes;
    loop->keepalive_idle_s = o.keepalive_idle_s;
    loop->pending_head = loop->pending_tail = SLB_IO_NONE;
    for (unsigned i = 0; i < SLB_LOOP_LISTENERS_MAX; i++) {
        loop->listeners[i].fd = -1;
        loop->listeners[i].loop = loop;
        loop->listeners[i].index = (uint16_t)i;
        slb_timer_init(&loop->listeners[i].retry, listener_retry_fire);
    }
    atomic_init(&loop->stop_req, 0);
    atomic_init(&loop->mq_notified, 0);
    atomic_init(&loop->efd_users, 0);
    clock_now(loop);
    slb_timer_wheel_init(&loop->wheel, loop->now_ms);

    ret = -ENOMEM;
    loop->ring = calloc(1, sizeof(*loop->ring));
    if (!loop->ring)
        goto fail;
    loop->ring->ring_fd = -1;
    ret = ring_setup(loop, &o);
    if (ret < 0)
        goto fail;
    /* Saves a file lookup per io_uring_enter; optional. */
    (void)io_uring_register_ring_fd(loop->ring);
    /* Spinning needs the ring to say when work is pending; without the flag it would only
     * see completions posted directly, never the task work that most of them wait in. */
    if (loop->setup_flags & IORING_SETUP_TASKRUN_FLAG)
        loop->spin_us = o.spin_us > SLB_LOOP_SPIN_US_MAX ? SLB_LOOP_SPIN_US_MAX : o.spin_us;
    loop->spin_gap = 1;
    loop->spin_probe = 1;

    ret = slb_io_conns_init(loop, &o);
    if (ret < 0)
        goto fail;
    loop->scratch_cap = o.ring_entries;
    loop->scratch_msg = calloc(loop->scratch_cap, sizeof(*loop->scratch_msg));
    loop->scratch_iov =
        calloc((size_t)loop->scratch_cap * SLB_LOOP_SEND_IOV_MAX, sizeof(*loop->scratch_iov));
    ret = -ENOMEM;
    if (!loop->scratch_msg || !loop->scratch_iov)
        goto fail;
    ret = bufs_setup(loop, &o);
    if (ret < 0)
        goto fail;
    /* Blocking on purpose: io_uring polls it; an O_NONBLOCK read would complete -EAGAIN. */
    loop->efd = eventfd(0, EFD_CLOEXEC);
    if (loop->efd < 0) {
        ret = -errno;
        goto fail;
    }
    loop->efd_need_arm = true;
    slb_io_thread_loop = loop;
    ret = slb_io_msg_init(loop, &o);
    if (ret < 0)
        goto fail;
    return 0;
fail:
    loop_release(loop);
    return ret;
}

/* After a submit that took every SQE, the sendmsg headers and iovecs they pointed at are
 * free again (IORING_FEAT_SUBMIT_STABLE). */
static void scratch_release(struct slb_loop *loop)
{
    if (io_uring_sq_ready(loop->ring) == 0) {
        loop->scratch_msgs_used = 0;
        loop->scratch_iov_used = 0;
    }
}

struct io_uring_sqe *slb_io_get_sqe(struct slb_loop *loop)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(loop->ring);
    if (sqe)
        return sqe;
    /* SQ full mid-turn: push what we have (no waiting) and retry once. */
    io_uring_submit(loop->ring);
    scratch_release(loop);
    return io_uring_get_sqe(loop->ring);
}

void slb_io_pending_add(struct slb_loop *loop, struct slb_conn *c)
{
    if (c->flags & SLB_CONN_F_PENDING)
        return;
    c->flags |= SLB_CONN_F_PENDING;
    c->next = SLB_IO_NONE;
    uint32_t slot = slb_conn_id_slot(c->id);
    if (loop->pending_tail == SLB_IO_NONE)
        loop->pending_head = slot;
    else
        loop->conns[loop->pending_tail].next = slot;
    loop->pending_tail = slot;
}

/* ---- listeners ---------------------------------------------------------------------- */

static void listener_close(struct slb_loop *loop, struct slb_listener *lst);

static struct slb_listener *free_listener(struct slb_loop *loop)
{
    for (unsigned i = 0; i < SLB_LOOP_LISTENERS_MAX; i++)
        if (loop->listeners[i].fd < 0 && loop->listeners[i].inflight == 0)
            return &loop->listeners[i];
    return NULL;
}

static int listener_take(struct slb_loop *loop, struct slb_listener *lst, int fd, uint32_t tag)
{
    lst->fd = fd;
    lst->tag = tag;
    lst->armed = false;
    lst->closing = false;
    lst->need_arm = true;
    loop->nlisteners++;
    return lst->index;
}

int slb_loop_listen(struct slb_loop *loop, const struct sockaddr *addr, socklen_t addr_len,
                    int backlog, uint32_t tag)
{
    if (loop->stopping || loop->tearing_down || loop->accepting_stopped)
        return -ECANCELED;
    struct slb_listener *lst = free_listener(loop);
    if (!lst)
        return -ENOSPC;
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_CLOEXEC, IPPROTO_TCP);
    if (fd < 0)
        return -errno;
    int one = 1;
    /* REUSEPORT: every worker binds the same address and the kernel spreads connections. */
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
        (addr->sa_family == AF_INET6 &&
         setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0) ||
        bind(fd, addr, addr_len) < 0 || listen(fd, backlog) < 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    return listener_take(loop, lst, fd, tag);
}

int slb_loop_listen_fd(struct slb_loop *loop, int fd, uint32_t tag)
{
    if (loop->stopping || loop->tearing_down || loop->accepting_stopped)
        return -ECANCELED;
    struct slb_listener *lst = free_listener(loop);
    if (!lst)
        return -ENOSPC;
    int acc = 0;
    socklen_t len = sizeof(acc);
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &len) < 0 || !acc)
        return -ENOTSOCK;
    return listener_take(loop, lst, fd, tag);
}

int slb_loop_listener_fd(const struct slb_loop *loop, int index)
{
    if (index < 0 || index >= SLB_LOOP_LISTENERS_MAX || loop->listeners[index].closing)
        return -EINVAL;
    return loop->listeners[index].fd >= 0 ? loop->listeners[index].fd : -EINVAL;
}

void slb_loop_stop_accepting(struct slb_loop *loop)
{
    loop->accepting_stopped = true;
    for (unsigned i = 0; i < SLB_LOOP_LISTENERS_MAX; i++)
        listener_close(loop, &loop->listeners[i]);
}

int slb_loop_listener_addr(const struct slb_loop *loop, int index, struct sockaddr_storage *out,
                           socklen_t *out_len)
{
    if (index < 0 || index >= SLB_LOOP_LISTENERS_MAX || loop->listeners[index].fd < 0)
        return -EINVAL;
    *out_len = sizeof(*out);
    if (getsockname(loop->listeners[index].fd, (struct sockaddr *)out, out_len) < 0)
        return -errno;
    return 0;
}

static void listener_maybe_close(struct slb_loop *loop, struct slb_listener *lst)
{
    if (!lst->closing || lst->armed || lst->inflight > 0 || lst->fd < 0)
        return;
    close(lst->fd);
    lst->fd = -1;
    loop->nlisteners--;
}

static void listener_close(struct slb_loop *loop, struct slb_listener *lst)
{
    if (lst->fd < 0 || lst->closing)
        return;
    lst->closing = true;
    lst->need_arm = false;
    slb_timer_cancel(&lst->retry);
    if (lst->armed) {
        struct io_uring_sqe *sqe = slb_io_get_sqe(loop);
        if (sqe) {
            io_uring_prep_cancel64(sqe, slb_io_ud(SLB_IO_UD_ACCEPT, lst->index), 0);
            io_uring_sqe_set_data64(sqe, slb_io_ud(SLB_IO_UD_LCANCEL, lst->index));
            lst->inflight++;
        }
        /* Without an SQE the accept ends with the ring at deinit. */
    }
    listener_maybe_close(loop, lst);
}

static void listener_arm(struct slb_loop *loop, struct slb_listener *lst)
{
    struct io_uring_sqe *sqe = slb_io_get_sqe(loop);
    if (!sqe)
        return; /* need_arm stays set: next turn */
    /* No address buffer: a multishot accept overwrites it; getpeername per socket. */
    io_uring_prep_multishot_accept(sqe, lst->fd, NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, slb_io_ud(SLB_IO_UD_ACCEPT, lst->index));
    lst->armed = true;
    lst->need_arm = false;
    lst->inflight++;
}

/* A peer that vanished without a FIN or RST (a phone that lost its network, a NAT that
 * forgot the mapping) is found by TCP keepalive rather than held until the idle timeout. */
static void set_keepalive(const struct slb_loop *loop, int fd)
{
    if (!loop->keepalive_idle_s)
        return;
    int on = 1, idle = (int)loop->keepalive_idle_s, cnt = 3;
    int intvl = idle / 3 > 0 ? idle / 3 : 1;
    (void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
    (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
    (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
    (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
}

static void accepted(struct slb_loop *loop, struct slb_listener *lst, int fd)
{
    if (loop->stopping || loop->tearing_down) {
        close(fd);
        return;
    }
    struct slb_conn *c = slb_io_conn_alloc(loop, fd, lst->tag, SLB_CONN_OPEN);
    if (!c) {
        /* Full: accept-then-close tells the client at once instead of leaving it in the
         * backlog until it times out. */
        close(fd);
        loop->counters.accept_rejected_full++;
        return;
    }
    c->peer_len = sizeof(c->peer);
    int one = 1;
    if (getpeername(fd, (struct sockaddr *)&c->peer, &c->peer_len) < 0) {
        loop->counters.accept_errors++; /* reset before we got to it */
        slb_io_conn_abort(loop, c);
        return;
    }
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (loop->accept_rcvbuf)
        (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &loop->accept_rcvbuf,
                         sizeof(loop->accept_rcvbuf));
    set_keepalive(loop, fd);
    loop->counters.accepted++;
    c->flags |= SLB_CONN_F_REPORTED;
    slb_io_conn_hold(c);
    int ret = loop->cbs.on_accept ? loop->cbs.on_accept(loop, c) : 0;
    if (ret < 0 && c->state == SLB_CONN_OPEN) {
        c->flags &= (uint16_t)~SLB_CONN_F_REPORTED;
        slb_io_conn_abort(loop, c);
    } else if (c->state == SLB_CONN_OPEN) {
        slb_io_pending_add(loop, c);
    }
    slb_io_conn_put(loop, c);
}

static void on_accept_cqe(struct slb_loop *loop, uint32_t index, int32_t res, uint32_t flags)
{
    if (index >= SLB_LOOP_LISTENERS_MAX)
        return;
    struct slb_listener *lst = &loop->listeners[index];
    if (res >= 0)
        accepted(loop, lst, res);
    else if (res == -EMFILE || res == -ENFILE)
        loop->counters.accept_no_fds++; /* the consumer reports it; we retry shortly */
    else if (res != -ECANCELED)
        loop->counters.accept_errors++;
    if (flags & IORING_CQE_F_MORE)
        return;
    lst->armed = false;
    lst->inflight--;
    if (lst->closing) {
        listener_maybe_close(loop, lst);
    } else if (lst->fd >= 0) {
        if (res < 0 && res != -ECANCELED)
            slb_timer_arm(&loop->wheel, &lst->retry, ACCEPT_RETRY_MS);
        else
            lst->need_arm = true;
    }
}

/* ---- outbound connects ------------------------------------------------------------- */

int slb_loop_connect(struct slb_loop *loop, const struct sockaddr *addr, socklen_t addr_len,
                     uint32_t tag, struct slb_conn_id *out)
{
    if (loop->tearing_down)
        return -ECANCELED;
    if (addr_len > sizeof(struct sockaddr_storage))
        return -EINVAL;
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_CLOEXEC, IPPROTO_TCP);
    if (fd < 0)
        return -errno;
    struct slb_conn *c = slb_io_conn_alloc(loop, fd, tag, SLB_CONN_CONNECTING);
    if (!c) {
        close(fd);
        return -ENOBUFS;
    }
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    set_keepalive(loop, fd);
    memcpy(&c->peer, addr, addr_len);
    c->peer_len = addr_len;
    struct io_uring_sqe *sqe = slb_io_get_sqe(loop);
    if (!sqe) {
        c->state = SLB_CONN_ZOMBIE;
        slb_io_conn_finalize(loop, c);
        return -EAGAIN;
    }
    io_uring_prep_connect(sqe, fd, (struct sockaddr *)&c->peer, addr_len);
    io_uring_sqe_set_data64(sqe, slb_io_ud(SLB_IO_UD_CONNECT, slb_conn_id_slot(c->id)));
    slb_io_conn_hold(c);
    *out = c->id;
    return 0;
}

static void on_connect_cqe(struct slb_loop *loop, struct slb_conn *c, int32_t res)
{
    if (c->state == SLB_CONN_CONNECTING) {
        if (res < 0) {
            slb_io_conn_close_now(loop, c, res); /* reports on_connect(res) */
        } else {
            c->state = SLB_CONN_OPEN;
            c->flags |= SLB_CONN_F_REPORTED;
            loop->counters.connect_ok++;
            int ret = loop->cbs.on_connect ? loop->cbs.on_connect(loop, c, 0) : 0;
            if (ret < 0 && c->state == SLB_CONN_OPEN) {
                c->flags &= (uint16_t)~SLB_CONN_F_REPORTED;
                slb_io_conn_abort(loop, c);
            } else if (c->state == SLB_CONN_OPEN) {
                slb_io_pending_add(loop, c); /* arm recv, send what was queued */
            }
        }
    }
    slb_io_conn_put(loop, c);
}

/* ---- receive and send --------------------------------------------------------------- */

static void on_recv_cqe(struct slb_loop *loop, struct slb_conn *c, int32_t res, uint32_t flags)
{
    if (res > 0) {
        loop->counters.recv_bytes += (uint64_t)res;
        if (flags & IORING_CQE_F_BUFFER) {
            uint32_t bid = flags >> IORING_CQE_BUFFER_SHIFT;
            const unsigned char *data = loop->buf_mem + (size_t)bid * loop->buf_bytes;
            /* After close (any kind) input is discarded, never delivered. */
            if (c->state == SLB_CONN_OPEN) {
                int ret = loop->cbs.on_data(loop, c, data, (size_t)res);
                if (ret < 0)
                    slb_io_conn_close_now(loop, c, ret);
            }
            recycle_buf(loop, bid);
        }
    } else if (res == 0) {
        c->flags |= SLB_CONN_F_PEER_EOF;
        if (c->state == SLB_CONN_OPEN && loop->cbs.on_eof)
            loop->cbs.on_eof(loop, c); /* half-close: recv is not re-armed after EOF */
        else if (c->state == SLB_CONN_OPEN)
            slb_io_conn_close_graceful(loop, c, 0); /* still send what is queued */
        else if (c->state == SLB_CONN_LINGER)
            slb_io_conn_close_now(loop, c, c->close_reason);
    } else if (res == -ENOBUFS) {
        /* The ring ran dry; the data waits in the socket. Buffers are back by the flush. */
        loop->counters.enobufs_rearms++;
    } else if (res != -ECANCELED) {
        /* A reset after everything was flushed is still a clean close for the consumer. */
        slb_io_conn_close_now(loop, c, c->state == SLB_CONN_LINGER ? c->close_reason : res);
    }
    if (flags & IORING_CQE_F_MORE)
        return;
    c->flags &= (uint16_t) ~(SLB_CONN_F_RECV_ARMED | SLB_CONN_F_RECV_CANCELING);
    if (c->state != SLB_CONN_ZOMBIE)
        slb_io_pending_add(loop, c); /* the flush decides whether to re-arm */
    slb_io_conn_put(loop, c);
}

static void on_send_cqe(struct slb_loop *loop, struct slb_conn *c, int32_t res)
{
    c->flags &= (uint16_t)~SLB_CONN_F_SEND_ARMED;
    if (res > 0) {
        loop->counters.sent_bytes += (uint64_t)res;
        slb_io_outq_consume(loop, c, (uint32_t)res);
        if ((c->flags & SLB_CONN_F_OUT_HIGH) && c->out.bytes <= slb_io_out_low(loop, c)) {
            c->flags &= (uint16_t)~SLB_CONN_F_OUT_HIGH;
            if (c->state == SLB_CONN_OPEN && loop->cbs.on_drained)
                loop->cbs.on_drained(loop, c);
        }
        if (c->state != SLB_CONN_ZOMBIE && (c->out.bytes > 0 || c->state == SLB_CONN_CLOSING))
            slb_io_pending_add(loop, c);
    } else if (res != -ECANCELED) {
        slb_io_conn_close_now(loop, c, res < 0 ? res : -EPIPE);
    }
    slb_io_conn_put(loop, c);
}

static bool recv_arm(struct slb_loop *loop, struct slb_conn *c)
{
    struct io_uring_sqe *sqe = slb_io_get_sqe(loop);
    if (!sqe)
        return false;
    io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = BUF_GROUP;
    io_uring_sqe_set_data64(sqe, slb_io_ud(SLB_IO_UD_RECV, slb_conn_id_slot(c->id)));
    c->flags |= SLB_CONN_F_RECV_ARMED;
    slb_io_conn_hold(c);
    return true;
}

/* One send for everything queued (up to SLB_LOOP_SEND_IOV_MAX chunks): a plain send for
 * one region, else a sendmsg gathering the chunks. */
static bool send_arm(struct slb_loop *loop, struct slb_conn *c)
{
    struct io_uring_sqe *sqe = slb_io_get_sqe(loop);
    if (!sqe)
        return false;
    unsigned max = SLB_LOOP_SEND_IOV_MAX;
    bool scratch = loop->scratch_msgs_used < loop->scratch_cap;
    struct iovec one;
    struct iovec *iov = scratch ? &loop->scratch_iov[loop->scratch_iov_used] : &one;
    if (!scratch)
        max = 1;
    unsigned n = slb_io_outq_iov(loop, c, iov, max);
    if (n == 1) {
        io_uring_prep_send(sqe, c->fd, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL);
    } else {
        /* The header and iovec only need to live until submit (IORING_FEAT_SUBMIT_STABLE);
         * the chunks they point at stay ours until the CQE. */
        struct msghdr *msg = &loop->scratch_msg[loop->scratch_msgs_used++];
        memset(msg, 0, sizeof(*msg));
        msg->msg_iov = iov;
        msg->msg_iovlen = n;
        loop->scratch_iov_used += n;
        io_uring_prep_sendmsg(sqe, c->fd, msg, MSG_NOSIGNAL);
    }
    io_uring_sqe_set_data64(sqe, slb_io_ud(SLB_IO_UD_SEND, slb_conn_id_slot(c->id)));
    c->flags |= SLB_CONN_F_SEND_ARMED;
    slb_io_conn_hold(c);
    loop->counters.sends++;
    return true;
}

static bool cancel_arm(struct slb_loop *loop, struct slb_conn *c, bool all)
{
    struct io_uring_sqe *sqe = slb_io_get_sqe(loop);
    if (!sqe)
        return false;
    uint32_t slot = slb_conn_id_slot(c->id);
    if (all) /* by fd: the fd stays open until every op on it has completed */
        io_uring_prep_cancel_fd(sqe, c->fd, IORING_ASYNC_CANCEL_ALL);
    else
        io_uring_prep_cancel64(sqe, slb_io_ud(SLB_IO_UD_RECV, slot), 0);
    io_uring_sqe_set_data64(sqe, slb_io_ud(SLB_IO_UD_CANCEL, slot));
    slb_io_conn_hold(c);
    return true;
}

/* The work a pending connection needs. Returns false when it ran out of SQEs. */
static bool flush_conn(struct slb_loop *loop, struct slb_conn *c)
{
    uint16_t f = c->flags;
    switch (c->state) {
    case SLB_CONN_ZOMBIE:
        if (c->inflight == 0) {
            slb_io_conn_finalize(loop, c);
            return true;
        }
        if (f & SLB_CONN_F_CANCEL_ALL) {
            if (!cancel_arm(loop, c, true))
                return false;
            c->flags &= (uint16_t)~SLB_CONN_F_CANCEL_ALL;
        }
        return true;
    case SLB_CONN_OPEN:
        if ((f & SLB_CONN_F_CANCEL_RECV) && (f & SLB_CONN_F_RECV_ARMED)) {
            if (!cancel_arm(loop, c, false))
                return false;
            c->flags |= SLB_CONN_F_RECV_CANCELING;
        }
        c->flags &= (uint16_t)~SLB_CONN_F_CANCEL_RECV;
        if (!(c->flags & (SLB_CONN_F_PAUSED | SLB_CONN_F_RECV_ARMED | SLB_CONN_F_PEER_EOF)) &&
            !recv_arm(loop, c))
            return false;
        if (c->out.bytes > 0 && !(c->flags & SLB_CONN_F_SEND_ARMED) && !send_arm(loop, c))
            return false;
        return true;
    case SLB_CONN_CLOSING:
        if (c->flags & SLB_CONN_F_SEND_ARMED)
            return true;
        if (c->out.bytes > 0)
            return send_arm(loop, c);
        /* Everything sent: FIN after our last byte, then wait for the peer's (reading and
         * discarding meanwhile: closing with unread input would send a RST). */
        if (shutdown(c->fd, SHUT_WR) < 0 || (c->flags & SLB_CONN_F_PEER_EOF)) {
            slb_io_conn_close_now(loop, c, c->close_reason);
            return true;
        }
        c->state = SLB_CONN_LINGER;
        /* fall through */
    case SLB_CONN_LINGER:
        if (c->flags & SLB_CONN_F_PEER_EOF) {
            slb_io_conn_close_now(loop, c, c->close_reason);
            return true;
        }
        if (!(c->flags & SLB_CONN_F_RECV_ARMED))
            return recv_arm(loop, c);
        return true;
    default:
        return true;
    }
}

/* Connections refused for lack of output chunks hear on_drained once a fair share of the
 * pool is free again (not at every returned chunk: they would only be refused again). */
static void wake_pool_waiters(struct slb_loop *loop)
{
    if (loop->pool_wait_head == SLB_IO_NONE)
        return;
    uint32_t shared = loop->nchunks - loop->out_reserve;
    uint32_t want = shared / 16 > 16 ? shared / 16 : 16;
    uint32_t free_chunks = slb_pool_free_count(&loop->chunk_free);
    if (free_chunks < loop->out_reserve + want && free_chunks < loop->nchunks)
        return;
    /* Bounded by the waiters on entry; those refused again meanwhile queue behind. */
    for (uint32_t n = loop->pool_waiters; n > 0 && loop->pool_wait_head != SLB_IO_NONE; n--) {
        struct slb_conn *c = &loop->conns[loop->pool_wait_head];
        slb_io_pool_wait_remove(loop, c);
        if (c->state != SLB_CONN_OPEN || !loop->cbs.on_drained)
            continue;
        loop->counters.pool_wakeups++;
        slb_io_conn_hold(c);
        loop->cbs.on_drained(loop, c);
        slb_io_conn_put(loop, c);
    }
}

static void flush(struct slb_loop *loop)
{
    if (loop->efd_need_arm && loop->efd >= 0) {
        struct io_uring_sqe *sqe = slb_io_get_sqe(loop);
        if (sqe) {
            io_uring_prep_read(sqe, loop->efd, &loop->efd_val, sizeof(loop->efd_val), 0);
            io_uring_sqe_set_data64(sqe, slb_io_ud(SLB_IO_UD_EVENTFD, 0));
            loop->efd_need_arm = false;
            loop->efd_armed = true;
        }
    }
    for (unsigned i = 0; i < SLB_LOOP_LISTENERS_MAX; i++) {
        struct slb_listener *lst = &loop->listeners[i];
        if (lst->need_arm && lst->fd >= 0 && !lst->closing && !lst->armed)
            listener_arm(loop, lst);
    }
    wake_pool_waiters(loop);
    /* Detach the list: what callbacks add from here on waits for the next turn, so this is
     * bounded by the connections pending on entry. */
    uint32_t slot = loop->pending_head;
    loop->pending_head = loop->pending_tail = SLB_IO_NONE;
    while (slot != SLB_IO_NONE) {
        struct slb_conn *c = &loop->conns[slot];
        slot = c->next;
        c->next = SLB_IO_NONE;
        c->flags &= (uint16_t)~SLB_CONN_F_PENDING;
        if (!flush_conn(loop, c))
            slb_io_pending_add(loop, c); /* no SQE even after a submit: next turn */
    }
}

/* ---- completions -------------------------------------------------------------------- */

static void on_eventfd_cqe(struct slb_loop *loop, int32_t res)
{
    loop->efd_armed = false;
    if (!loop->tearing_down)
        loop->efd_need_arm = true;
    (void)res; /* the value is a wake-up count; stop_req and the queues say what to do */
    if (loop->msg_fallback)
        slb_io_msg_drain(loop);
}

static void dispatch(struct slb_loop *loop, uint64_t ud, int32_t res, uint32_t flags)
{
    enum slb_io_ud kind = slb_io_ud_kind(ud);
    uint32_t index = slb_io_ud_index(ud);
    struct slb_conn *c = NULL;
    if (kind >= SLB_IO_UD_RECV && kind <= SLB_IO_UD_CANCEL) {
        if (index >= loop->max_conns)
            return;
        c = &loop->conns[index];
    }
    switch (kind) {
    case SLB_IO_UD_ACCEPT:
        on_accept_cqe(loop, index, res, flags);
        break;
    case SLB_IO_UD_LCANCEL:
        if (index < SLB_LOOP_LISTENERS_MAX) {
            loop->listeners[index].inflight--;
            listener_maybe_close(loop, &loop->listeners[index]);
        }
        break;
    case SLB_IO_UD_RECV:
        on_recv_cqe(loop, c, res, flags);
        break;
    case SLB_IO_UD_SEND:
        on_send_cqe(loop, c, res);
        break;
    case SLB_IO_UD_CONNECT:
        on_connect_cqe(loop, c, res);
        break;
    case SLB_IO_UD_CANCEL:
        slb_io_conn_put(loop, c);
        break;
    case SLB_IO_UD_EVENTFD:
        on_eventfd_cqe(loop, res);
        break;
    case SLB_IO_UD_MSG:
    case SLB_IO_UD_MSG_SENT:
        slb_io_msg_cqe(loop, ud, res, flags);
        break;
    default:
        break; /* EFD_CANCEL, probes, liburing's internal timeouts */
    }
}

static unsigned reap(struct slb_loop *loop)
{
    struct io_uring_cqe *cqe;
    unsigned head, n = 0;
    io_uring_for_each_cqe(loop->ring, head, cqe)
    {
        dispatch(loop, cqe->user_data, cqe->res, cqe->flags);
        if (++n == loop->cqe_batch)
            break;
    }
    io_uring_cq_advance(loop->ring, n);
    return n;
}

static void begin_stop(struct slb_loop *loop)
{
    loop->stopping = true;
    loop->stop_deadline_ms = loop->now_ms + loop->stop_grace_ms;
    for (unsigned i = 0; i < SLB_LOOP_LISTENERS_MAX; i++)
        listener_close(loop, &loop->listeners[i]);
}

static int submit_and_wait(struct slb_loop *loop, uint64_t deadline_ms)
{
    struct io_uring_cqe *cqe;
    int ret;
    if (deadline_ms == SLB_TIMER_NEVER) {
        ret = io_uring_submit_and_wait(loop->ring, 1);
    } else {
        uint64_t delta = deadline_ms > loop->now_ms ? deadline_ms - loop->now_ms : 0;
        struct __kernel_timespec ts = {.tv_sec = (long long)(delta / 1000),
                                       .tv_nsec = (long long)(delta % 1000) * 1000000};
        ret = io_uring_submit_and_wait_timeout(loop->ring, &cqe, 1, &ts, NULL);
    }
    scratch_release(loop);
    if (ret >= 0 || ret == -ETIME || ret == -EINTR || ret == -EAGAIN || ret == -EBUSY)
        return 0;
    return ret;
}

/* ---- spinning before sleeping ------------------------------------------------------ */

/* A sleep costs the worker a context switch out and back in, and whoever wakes it the
 * wake-up: several microseconds in all. When the gaps between bursts of work are shorter
 * than spin_us, watching the ring for that long costs less and answers sooner. Whether
 * they are is learnt from the spins themselves: spin_score counts recent hits (saturating
 * at SPIN_SCORE_MAX, a miss takes SPIN_MISS_COST off); below SPIN_SCORE_ON the loop sleeps
 * at once and only probes, with a spin every spin_gap idle moments, the gap doubling after
 * each miss up to SPIN_GAP_MAX. So a quiet worker pays one spin in SPIN_GAP_MAX idle
 * moments, and a busy one finds out within a few. */
#define SPIN_SCORE_MAX 16u
#define SPIN_SCORE_ON  8u
#define SPIN_MISS_COST 1u
#define SPIN_GAP_MAX   256u

static bool work_pending(struct slb_loop *loop)
{
    return (IO_URING_READ_ONCE(*loop->ring->sq.kflags) & IORING_SQ_TASKRUN) ||
           io_uring_cq_ready(loop->ring) > 0;
}

static bool spin_due(struct slb_loop *loop)
{
    if (loop->spin_score >= SPIN_SCORE_ON)
        return true;
    if (--loop->spin_probe > 0)
        return false;
    loop->spin_probe = loop->spin_gap;
    return true;
}

static void spin_learn(struct slb_loop *loop, bool hit)
{
    if (hit) {
        loop->counters.spin_hits++;
        if (loop->spin_score < SPIN_SCORE_MAX)
            loop->spin_score++;
        loop->spin_gap = 1;
        loop->spin_probe = 1; /* not the rest of a long gap: probe again at once */
        return;
    }
    loop->spin_score = loop->spin_score > SPIN_MISS_COST ? loop->spin_score - SPIN_MISS_COST : 0;
    if (loop->spin_score < SPIN_SCORE_ON && loop->spin_gap < SPIN_GAP_MAX)
        loop->spin_gap *= 2;
    loop->spin_probe = loop->spin_gap;
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}

/* Before a sleep: submit what is queued, then watch the ring for up to spin_us, never past
 * the next timer (deadline_ms). True when work turned up (its completions are then posted
 * and the caller takes another turn). The loop's clock moves with the spin, so a wait that
 * follows a miss is measured from its end. */
static bool spin_for_work(struct slb_loop *loop, uint64_t deadline_ms)
{
    if (deadline_ms <= loop->now_ms || !spin_due(loop))
        return false;
    if (io_uring_sq_ready(loop->ring) > 0) {
        io_uring_submit(loop->ring);
        scratch_release(loop);
        /* Sends complete as they are submitted: their completions are work for the next
         * turn, not a sign of traffic, so they neither count nor teach anything. The probe
         * moves to the next idle moment: left at spin_gap it could keep landing on such
         * turns (a ping-pong alternates them with idle ones) and never spin. */
        if (io_uring_cq_ready(loop->ring) > 0) {
            loop->spin_probe = 1;
            return true;
        }
    }
    loop->counters.spins++;
    clock_now(loop);
    uint64_t end = loop->now_us + loop->spin_us;
    if (deadline_ms != SLB_TIMER_NEVER && end > deadline_ms * 1000u)
        end = deadline_ms * 1000u;
    for (unsigned i = 1;; i++) {
        if (work_pending(loop)) {
            spin_learn(loop, true);
            io_uring_get_events(loop->ring); /* runs the task work: completions posted */
            return true;
        }
        cpu_relax();
        if ((i & 31) == 0) {
            clock_now(loop);
            if (loop->now_us >= end)
                break;
        }
    }
    spin_learn(loop, false);
    return false;
}

int slb_loop_run(struct slb_loop *loop)
{
    /* One pass per turn; ends on stop or a ring failure. */
    for (;;) {
        clock_now(loop);
        /* Timers armed by the callbacks below count from now, not from the wheel's last
         * run, which may be long ago after an idle wait (the wheel only moves its clock
         * forward; due timers still fire after the completions are handled). */
        if (loop->now_ms > loop->wheel.now_ms)
            loop->wheel.now_ms = loop->now_ms;
        reap(loop);
        if (!loop->stopping && atomic_load_explicit(&loop->stop_req, memory_order_acquire))
            begin_stop(loop);
        slb_timer_wheel_run(&loop->wheel, loop->now_ms);
        flush(loop);
        if (loop->stopping && loop->nlisteners == 0 &&
            (loop->out_busy == 0 || loop->now_ms >= loop->stop_deadline_ms)) {
            io_uring_submit(loop->ring);
            return 0;
        }
        uint64_t deadline = slb_timer_wheel_next_ms(&loop->wheel);
        if (loop->stopping && loop->stop_deadline_ms < deadline)
            deadline = loop->stop_deadline_ms;
        if (loop->pending_head != SLB_IO_NONE || io_uring_cq_ready(loop->ring) > 0)
            deadline = loop->now_ms; /* work left over: don't sleep */
        else if (loop->spin_us && !loop->stopping && spin_for_work(loop, deadline))
            continue;
        else
            loop->counters.sleeps++;
        int ret = submit_and_wait(loop, deadline);
        if (ret < 0)
            return ret;
    }
}

/* Wakes the loop through its eventfd from any thread (or a signal handler). The users
 * count keeps deinit from closing the fd, and its number from being reused, while a
 * write is under way; once deinit closed it, the write is skipped. */
void slb_io_kick(struct slb_loop *loop)
{
    if (atomic_fetch_add(&loop->efd_users, 1) & EFD_CLOSED) {
        atomic_fetch_sub(&loop->efd_users, 1);
        return;
    }
    uint64_t one = 1;
    /* Async-signal-safe; a failure can only be a saturated counter, which wakes it anyway. */
    ssize_t n = write(loop->efd, &one, sizeof(one));
    (void)n;
    atomic_fetch_sub(&loop->efd_users, 1);
}

void slb_loop_stop(struct slb_loop *loop)
{
    atomic_store_explicit(&loop->stop_req, 1, memory_order_release);
    slb_io_kick(loop);
}

/* ---- teardown ----------------------------------------------------------------------- */

static bool teardown_busy(const struct slb_loop *loop)
{
    return loop->nconns > 0 || loop->nlisteners > 0 || loop->efd_armed;
}

void slb_loop_deinit(struct slb_loop *loop)
{
    if (!loop->ring)
        return;
    loop->tearing_down = true;
    loop->efd_need_arm = false;
    clock_now(loop);
    for (unsigned i = 0; i < SLB_LOOP_LISTENERS_MAX; i++)
        listener_close(loop, &loop->listeners[i]);
    for (uint32_t i = 0; i < loop->max_conns; i++) {
        struct slb_conn *c = &loop->conns[i];
        if (c->state != SLB_CONN_FREE && c->state != SLB_CONN_ZOMBIE)
            slb_io_conn_close_now(loop, c, -ECANCELED);
    }
    if (loop->efd_armed) {
        struct io_uring_sqe *sqe = slb_io_get_sqe(loop);
        if (sqe) {
            io_uring_prep_cancel64(sqe, slb_io_ud(SLB_IO_UD_EVENTFD, 0), 0);
            io_uring_sqe_set_data64(sqe, slb_io_ud(SLB_IO_UD_EFD_CANCEL, 0));
        }
    }
    /* Wait for the kernel to hand back what in-flight SQEs reference. Bounded. */
    uint64_t deadline = loop->now_ms + TEARDOWN_WAIT_MS;
    while (teardown_busy(loop) && loop->now_ms < deadline) {
        flush(loop);
        if (submit_and_wait(loop, loop->now_ms + 10) < 0)
            break;
        clock_now(loop);
        reap(loop);
    }
    /* Past the bound (never seen): exiting the ring cancels the rest. The buffer ring's
     * pages stay pinned until it is unregistered, so at worst a late completion faults. */
    for (uint32_t i = 0; i < loop->max_conns; i++)
        if (loop->conns[i].fd >= 0)
            close(loop->conns[i].fd);
    for (unsigned i = 0; i < SLB_LOOP_LISTENERS_MAX; i++)
        if (loop->listeners[i].fd >= 0)
            close(loop->listeners[i].fd);
    loop_release(loop);
}
