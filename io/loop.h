/* The per-worker io_uring loop: listeners, outbound connects, turns, stop, messages. */
#ifndef SLB_IO_LOOP_H
#define SLB_IO_LOOP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "io/loop-t.h"
#include "io/timer.h"

/* Sets up `loop` on the calling thread, which must be the thread that runs and
 * deinitialises it (the ring is single-issuer). Allocates everything the loop will ever
 * use (connection table, receive buffers, output pool). opts may be NULL (all defaults);
 * cbs is copied and needs on_data; user is returned by slb_loop_user. Returns 0, or
 * -EINVAL (bad option), -ENOMEM, or the kernel's refusal (-ENOSYS, -EPERM: no io_uring;
 * -EINVAL from buffer ring registration on kernels before 5.19). On failure nothing is
 * left to deinit. */
int slb_loop_init(struct slb_loop *loop, const struct slb_loop_opts *opts,
                  const struct slb_loop_cbs *cbs, void *user);

/* Tears the loop down on its thread: closes every connection (on_close or on_connect with
 * -ECANCELED), cancels what is in flight and waits (at most ~2 s) for the kernel to give
 * back the memory it references, then frees everything. Messages not yet delivered are
 * dropped. Other loops must not post to it any more. */
void slb_loop_deinit(struct slb_loop *loop);

/* Runs turns until stopped: reap up to cqe_batch completions, run due timers, submit
 * queued work (receives to arm, sends gathered per connection), then submit and wait until
 * the next completion or timer deadline. Returns 0 after slb_loop_stop once listeners are
 * closed and output flushed (or stop_grace_ms passed), or a negative errno if the ring
 * failed. */
int slb_loop_run(struct slb_loop *loop);

/* Asks the loop to stop: stop accepting, let queued output flush, return from
 * slb_loop_run. Connections stay open until slb_loop_deinit. Callable from any thread and
 * from a signal handler (an atomic store and an eventfd write). */
void slb_loop_stop(struct slb_loop *loop);

/* Opens a listening socket (SO_REUSEADDR + SO_REUSEPORT, IPV6_V6ONLY for IPv6) so every
 * worker can listen on the same address and the kernel spreads connections; accepts with a
 * multishot accept, re-armed when it ends. Connections get `tag`. Returns the listener
 * index (>= 0) or a negative errno (-ENOSPC: SLB_LOOP_LISTENERS_MAX reached). */
int slb_loop_listen(struct slb_loop *loop, const struct sockaddr *addr, socklen_t addr_len,
                    int backlog, uint32_t tag);

/* Adopts fd, a listening socket another process handed over (SCM_RIGHTS), as a listener
 * of this loop, exactly like one slb_loop_listen opened. The loop owns fd from then on.
 * Returns the listener index, -ENOTSOCK when fd is not listening, or as slb_loop_listen. */
int slb_loop_listen_fd(struct slb_loop *loop, int fd, uint32_t tag);

/* The descriptor of listener `index`, to hand over to another process (which gets its own
 * reference: the socket and its accept queue live on while either holds it), or -EINVAL.
 * Any thread, while the loop runs and the listener is not closing; read-only. */
int slb_loop_listener_fd(const struct slb_loop *loop, int index);

/* Stops accepting for good (every listener closed; connections already accepted are not
 * touched) while the loop keeps running: the start of a graceful drain. Loop thread. */
void slb_loop_stop_accepting(struct slb_loop *loop);

/* The bound address of listener `index` (getsockname), e.g. to learn an ephemeral port.
 * Returns 0 or a negative errno. */
int slb_loop_listener_addr(const struct slb_loop *loop, int index, struct sockaddr_storage *out,
                           socklen_t *out_len);

/* Starts a nonblocking outbound TCP connect (TCP_NODELAY set). On 0, *out names the new
 * connection (state CONNECTING: it may be looked up, given an owner, written to and given
 * a timeout), and on_connect runs exactly once later. Returns -ENOBUFS when the table is
 * full, -ECANCELED during teardown, or socket()'s errno; then on_connect never runs. */
int slb_loop_connect(struct slb_loop *loop, const struct sockaddr *addr, socklen_t addr_len,
                     uint32_t tag, struct slb_conn_id *out);

/* Posts (a, b) to loop `dst`'s on_msg. Call it from a loop's own thread (the sender is
 * that thread's loop); messages from one sender arrive in order. a must be at most
 * SLB_MSG_A_MAX (56 bits: a connection id without its loop byte fits), b at most
 * SLB_MSG_B_MAX (48 bits: an index, or a user-space pointer on x86-64). Transport:
 * IORING_OP_MSG_RING submitted with the sender's next batch; or, when dst uses the
 * fallback, a bounded single-producer queue per sender plus an eventfd. Returns 0,
 * -EINVAL (a or b too big, sender id >= dst's msg_peers), -EPERM (no loop on this
 * thread), -EAGAIN (fallback queue full or no SQE: retry later). With MSG_RING a delivery
 * failure is only counted (msgs_failed) on the sender. */
int slb_loop_post(struct slb_loop *dst, uint64_t a, uint64_t b);

/* The loop's cached monotonic clock in ms, refreshed once per turn. */
static inline uint64_t slb_loop_now_ms(const struct slb_loop *loop)
{
    return loop->now_ms;
}

/* The same clock in microseconds (CLOCK_MONOTONIC, read once per turn). */
static inline uint64_t slb_loop_now_us(const struct slb_loop *loop)
{
    return loop->now_us;
}

static inline void *slb_loop_user(const struct slb_loop *loop)
{
    return loop->user;
}

static inline uint8_t slb_loop_id(const struct slb_loop *loop)
{
    return loop->id;
}

static inline const struct slb_loop_counters *slb_loop_counters(const struct slb_loop *loop)
{
    return &loop->counters;
}

/* The IORING_SETUP_* flags the kernel accepted (SINGLE_ISSUER|DEFER_TASKRUN when the
 * preferred set worked). */
static inline uint32_t slb_loop_setup_flags(const struct slb_loop *loop)
{
    return loop->setup_flags;
}

/* True when the ring runs SINGLE_ISSUER|DEFER_TASKRUN (completions only run when the loop
 * waits), false when the kernel refused it and plainer flags were used. */
static inline bool slb_loop_deferred(const struct slb_loop *loop)
{
    return loop->deferred;
}

/* True when messages to this loop go by queue + eventfd rather than MSG_RING. */
static inline bool slb_loop_msg_fallback(const struct slb_loop *loop)
{
    return loop->msg_fallback;
}

/* The loop's timer wheel, on the loop's clock; arm consumer timers here. */
static inline struct slb_timer_wheel *slb_loop_wheel(struct slb_loop *loop)
{
    return &loop->wheel;
}

#endif
