/* Zero-downtime upgrade: a new sipslb started with the same --handover-socket takes the
 * running one's listening sockets over a Unix socket (SCM_RIGHTS), as HAProxy's -x does,
 * then tells it "ready" once its own workers run; the old one then drains (drain.c) and
 * exits. The sockets pass with their accept queues, so no connection the kernel accepted
 * for the old process is lost: both processes hold the same sockets until the old one
 * closes its copies. (tcp_migrate_req would also move queued requests, but it is a
 * system-wide sysctl, and does nothing for a listener bound with privileges or one of a
 * different worker count; fd passing needs neither.)
 *
 * Protocol, one connection per upgrade: the old process sends "SLBH1 N\n" with N
 * descriptors; the new one answers "ready\n" and closes. Only a peer of our own user (or
 * root) is served. Thread: main's. */
#ifndef SLB_BALANCER_HANDOVER_H
#define SLB_BALANCER_HANDOVER_H

#include <stddef.h>

#define SLB_HANDOVER_FDS_MAX 128u

/* Old side: listens on path (mode 0600), bound under a temporary name and renamed over
 * path, so path always names the newest live process. Returns the nonblocking listening fd
 * or a negative errno with err set. */
int slb_handover_listen(const char *path, char *err, size_t errlen);

/* Old side: accepts a waiting newer process, if any, and sends it fds. Returns the
 * connection (to poll for "ready"), -EAGAIN when none waits, or a negative errno. */
int slb_handover_serve(int listen_fd, const int *fds, unsigned n, char *err, size_t errlen);

/* Old side: 1 when the newer process said ready, 0 not yet, -EPIPE when it went away
 * first (it failed to start: we keep serving). */
int slb_handover_poll_ready(int conn);

/* New side: takes the listening sockets of the process serving path. Returns the number of
 * descriptors put in fds (>= 0) with *conn set (for slb_handover_ready), -ENOENT or
 * -ECONNREFUSED when no process serves path (start as usual), or another negative errno
 * with err set. Waits at most timeout_ms. */
int slb_handover_take(const char *path, int *fds, unsigned max, int *conn, unsigned timeout_ms,
                      char *err, size_t errlen);

/* New side: tells the old process we run (it starts draining) and closes conn. */
int slb_handover_ready(int conn);

#endif
