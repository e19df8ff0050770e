/* Test harness for io/: a loop on its own thread, and plain blocking loopback clients. */
#ifndef SLB_TESTS_IO_HARNESS_H
#define SLB_TESTS_IO_HARNESS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "io/conn.h"
#include "io/loop.h"

#define H_MAX_EVENTS 256

struct h_srv;

/* Runs on the loop's thread after init, before run; returns 0 or a negative errno. */
typedef int (*h_setup_fn)(struct h_srv *s);

/* A loop thread. Callbacks run there; the test thread reads the atomics while it runs
 * and everything else after h_srv_stop (join). */
struct h_srv {
    struct slb_loop loop;
    struct slb_loop_opts opts;
    struct slb_loop_cbs cbs;
    h_setup_fn setup; /* NULL: listen on 127.0.0.1:0 */
    void *ctx;
    pthread_t thread;
    atomic_int state; /* 0 starting, 1 running, -1 failed */
    int rc;           /* init or setup result */
    int run_rc;
    uint16_t port;
    uint32_t pause_below; /* echo: pause receiving when out space falls below this */

    atomic_int n_accept;
    atomic_int n_close;
    atomic_int n_drained;
    atomic_llong n_data_bytes;
    /* Logged on the loop thread; read after stop. */
    uint64_t close_ids[H_MAX_EVENTS];
    int close_reasons[H_MAX_EVENTS];
    uint64_t accept_ids[H_MAX_EVENTS];
    int data_errors;
};

/* Echo callbacks with backpressure (pause when space < pause_below, resume on drained),
 * logging accepts and closes. */
void h_echo_cbs(struct slb_loop_cbs *cbs);
int h_log_accept(struct slb_loop *loop, struct slb_conn *conn);
void h_log_close(struct slb_loop *loop, struct slb_conn *conn, int reason);
int h_echo_data(struct slb_loop *loop, struct slb_conn *conn, const void *data, size_t len);
void h_echo_drained(struct slb_loop *loop, struct slb_conn *conn);

/* Starts the thread and waits (<= 5 s) until the loop runs. Returns init/setup's result. */
int h_srv_start(struct h_srv *s);
/* slb_loop_stop, then join (the thread deinits the loop). */
void h_srv_stop(struct h_srv *s);
/* The loop's result was a refusal by the kernel: the test should skip. */
bool h_refused(int rc);

/* Waits (<= timeout_ms) until *v >= want. */
bool h_wait_atomic(atomic_int *v, int want, int timeout_ms);

/* Blocking loopback client with 5 s send/receive timeouts; -1 on failure. */
int h_connect(uint16_t port);
/* Reads exactly n bytes unless EOF, error or timeout first; returns bytes read. */
size_t h_read_n(int fd, void *buf, size_t n);
/* True if the next read reports EOF (0) or a reset, within the socket timeout. */
bool h_read_eof(int fd);
/* Writes all n bytes; false on error. */
bool h_write_all(int fd, const void *buf, size_t n);
/* A loopback port nobody listens on (bound then closed). */
uint16_t h_closed_port(void);
/* Test byte pattern. */
static inline unsigned char h_pat(size_t i)
{
    return (unsigned char)((i * 7 + i / 251) & 0xff);
}

#endif
