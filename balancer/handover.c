/* handover.c — listening sockets from an older sipslb to a newer one (handover.h). */
#include "balancer/handover.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define HELLO      "SLBH1 "
#define READY      "ready\n"
#define IO_WAIT_MS 2000

static int unix_addr(const char *path, struct sockaddr_un *a)
{
    memset(a, 0, sizeof(*a));
    a->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(a->sun_path))
        return -ENAMETOOLONG;
    memcpy(a->sun_path, path, strlen(path));
    return 0;
}

int slb_handover_listen(const char *path, char *err, size_t errlen)
{
    char tmp[sizeof(((struct sockaddr_un *)0)->sun_path)];
    struct sockaddr_un a;
    if (snprintf(tmp, sizeof(tmp), "%s.%d", path, (int)getpid()) >= (int)sizeof(tmp) ||
        unix_addr(tmp, &a) < 0) {
        snprintf(err, errlen, "%s: path too long", path);
        return -ENAMETOOLONG;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        goto fail;
    unlink(tmp);
    mode_t old = umask(077);
    int rc = bind(fd, (struct sockaddr *)&a, sizeof(a));
    umask(old);
    if (rc < 0 || listen(fd, 4) < 0)
        goto fail;
    if (rename(tmp, path) < 0) {
        unlink(tmp);
        goto fail;
    }
    return fd;
fail:;
    int e = errno;
    snprintf(err, errlen, "%s: %s", path, strerror(e));
    if (fd >= 0)
        close(fd);
    return -e;
}

static int peer_ok(int conn)
{
    struct ucred cred;
    socklen_t len = sizeof(cred);
    if (getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
        return -errno;
    return cred.uid == geteuid() || cred.uid == 0 ? (int)cred.pid : -EPERM;
}

int slb_handover_serve(int listen_fd, const int *fds, unsigned n, char *err, size_t errlen)
{
    int conn = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
    if (conn < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK ? -EAGAIN : -errno;
    int pid = peer_ok(conn);
    if (pid < 0) {
        snprintf(err, errlen, "handover refused to a peer of another user");
        close(conn);
        return pid;
    }
    if (n > SLB_HANDOVER_FDS_MAX)
        n = SLB_HANDOVER_FDS_MAX;
    char hello[32];
    int hl = snprintf(hello, sizeof(hello), HELLO "%u\n", n);
    struct iovec iov = {hello, (size_t)hl};
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(sizeof(int) * SLB_HANDOVER_FDS_MAX)];
    } ctl;
    memset(&ctl, 0, sizeof(ctl));
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    if (n) {
        mh.msg_control = ctl.b;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * n);
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * n);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * n);
    }
    struct timeval tv = {IO_WAIT_MS / 1000, 0};
    (void)setsockopt(conn, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (sendmsg(conn, &mh, MSG_NOSIGNAL) != hl) {
        int e = errno ? errno : EIO;
        snprintf(err, errlen, "handover to pid %d: %s", pid, strerror(e));
        close(conn);
        return -e;
    }
    int fl = fcntl(conn, F_GETFL);
    if (fl < 0 || fcntl(conn, F_SETFL, fl | O_NONBLOCK) < 0) {
        close(conn);
        return -errno;
    }
    snprintf(err, errlen, "pid %d", pid);
    return conn;
}

int slb_handover_poll_ready(int conn)
{
    char b[16];
    ssize_t r = recv(conn, b, sizeof(b), MSG_DONTWAIT);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return 0;
    if (r >= (ssize_t)strlen(READY) && !memcmp(b, READY, strlen(READY)))
        return 1;
    return -EPIPE;
}

int slb_handover_take(const char *path, int *fds, unsigned max, int *conn_out, unsigned timeout_ms,
                      char *err, size_t errlen)
{
    struct sockaddr_un a;
    if (unix_addr(path, &a) < 0) {
        snprintf(err, errlen, "%s: path too long", path);
        return -ENAMETOOLONG;
    }
    int conn = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (conn < 0)
        return -errno;
    if (connect(conn, (struct sockaddr *)&a, sizeof(a)) < 0) {
        int e = errno;
        close(conn);
        if (e == ENOENT || e == ECONNREFUSED)
            return -e;
        snprintf(err, errlen, "%s: %s", path, strerror(e));
        return -e;
    }
    if (peer_ok(conn) < 0) {
        snprintf(err, errlen, "%s: served by another user: not taken", path);
        close(conn);
        return -EPERM;
    }
    struct pollfd p = {conn, POLLIN, 0};
    if (poll(&p, 1, (int)timeout_ms) != 1) {
        snprintf(err, errlen, "%s: no answer within %u ms", path, timeout_ms);
        close(conn);
        return -ETIMEDOUT;
    }
    char hello[32];
    struct iovec iov = {hello, sizeof(hello) - 1};
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(sizeof(int) * SLB_HANDOVER_FDS_MAX)];
    } ctl;
    struct msghdr mh = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b, .msg_controllen = sizeof(ctl.b)};
    ssize_t r = recvmsg(conn, &mh, MSG_CMSG_CLOEXEC);
    unsigned got = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); r > 0 && c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        unsigned k = (unsigned)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        int *in = (int *)(void *)CMSG_DATA(c);
        for (unsigned i = 0; i < k; i++) {
            if (got < max)
                fds[got++] = in[i];
            else
                close(in[i]);
        }
    }
    unsigned said = 0;
    if (r <= 0 || (size_t)r < strlen(HELLO) || memcmp(hello, HELLO, strlen(HELLO)) ||
        (mh.msg_flags & MSG_CTRUNC)) {
        snprintf(err, errlen, "%s: not a sipslb handover", path);
        goto bad;
    }
    hello[r] = 0;
    said = (unsigned)strtoul(hello + strlen(HELLO), NULL, 10);
    if (said != got) {
        snprintf(err, errlen, "%s: %u descriptors announced, %u received", path, said, got);
        goto bad;
    }
    *conn_out = conn;
    return (int)got;
bad:
    for (unsigned i = 0; i < got; i++)
        close(fds[i]);
    close(conn);
    return -EPROTO;
}

int slb_handover_ready(int conn)
{
    ssize_t w = send(conn, READY, strlen(READY), MSG_NOSIGNAL);
    int e = w == (ssize_t)strlen(READY) ? 0 : -EPIPE;
    close(conn);
    return e;
}
