/* Test harness for io/: loop threads and blocking loopback clients. */
#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

bool h_wait_atomic(atomic_int *v, int want, int timeout_ms)
{
    for (int waited = 0; waited < timeout_ms; waited++) {
        if (atomic_load(v) >= want)
            return true;
        sleep_ms(1);
    }
    return atomic_load(v) >= want;
}

bool h_refused(int rc)
{
    return rc == -ENOSYS || rc == -EPERM || rc == -EOPNOTSUPP;
}

int h_log_accept(struct slb_loop *loop, struct slb_conn *conn)
{
    struct h_srv *s = slb_loop_user(loop);
    int n = atomic_load(&s->n_accept);
    if (n < H_MAX_EVENTS)
        s->accept_ids[n] = conn->id.v;
    atomic_fetch_add(&s->n_accept, 1);
    return 0;
}

void h_log_close(struct slb_loop *loop, struct slb_conn *conn, int reason)
{
    struct h_srv *s = slb_loop_user(loop);
    int n = atomic_load(&s->n_close);
    if (n < H_MAX_EVENTS) {
        s->close_ids[n] = conn->id.v;
        s->close_reasons[n] = reason;
    }
    atomic_fetch_add(&s->n_close, 1);
}

int h_echo_data(struct slb_loop *loop, struct slb_conn *conn, const void *data, size_t len)
{
    struct h_srv *s = slb_loop_user(loop);
    atomic_fetch_add(&s->n_data_bytes, (long long)len);
    if (slb_conn_write(conn, data, len) != (int)len) {
        s->data_errors++;
        return -EPROTO;
    }
    if (s->pause_below && slb_conn_out_space(conn) < s->pause_below)
        slb_conn_pause_recv(conn);
    return 0;
}

void h_echo_drained(struct slb_loop *loop, struct slb_conn *conn)
{
    struct h_srv *s = slb_loop_user(loop);
    atomic_fetch_add(&s->n_drained, 1);
    slb_conn_resume_recv(conn);
}

void h_echo_cbs(struct slb_loop_cbs *cbs)
{
    memset(cbs, 0, sizeof(*cbs));
    cbs->on_accept = h_log_accept;
    cbs->on_data = h_echo_data;
    cbs->on_drained = h_echo_drained;
    cbs->on_close = h_log_close;
}

static int listen_loopback(struct h_srv *s)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = 0};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int idx = slb_loop_listen(&s->loop, (struct sockaddr *)&sin, sizeof(sin), 128, 7);
    if (idx < 0)
        return idx;
    struct sockaddr_storage ss;
    socklen_t len;
    int rc = slb_loop_listener_addr(&s->loop, idx, &ss, &len);
    if (rc < 0)
        return rc;
    s->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    return 0;
}

static void *srv_main(void *arg)
{
    struct h_srv *s = arg;
    s->rc = slb_loop_init(&s->loop, &s->opts, &s->cbs, s);
    if (s->rc < 0) {
        atomic_store(&s->state, -1);
        return NULL;
    }
    s->rc = s->setup ? s->setup(s) : listen_loopback(s);
    if (s->rc < 0) {
        slb_loop_deinit(&s->loop);
        atomic_store(&s->state, -1);
        return NULL;
    }
    atomic_store(&s->state, 1);
    s->run_rc = slb_loop_run(&s->loop);
    slb_loop_deinit(&s->loop);
    return NULL;
}

int h_srv_start(struct h_srv *s)
{
    atomic_init(&s->state, 0);
    if (pthread_create(&s->thread, NULL, srv_main, s) != 0)
        return -EAGAIN;
    for (int i = 0; i < 5000 && atomic_load(&s->state) == 0; i++)
        sleep_ms(1);
    if (atomic_load(&s->state) != 1) {
        pthread_join(s->thread, NULL);
        return s->rc < 0 ? s->rc : -ETIMEDOUT;
    }
    return 0;
}

void h_srv_stop(struct h_srv *s)
{
    slb_loop_stop(&s->loop);
    pthread_join(s->thread, NULL);
}

int h_connect(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = {.tv_sec = 5, .tv_usec = 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

size_t h_read_n(int fd, void *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (char *)buf + got, n - got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    return got;
}

bool h_read_eof(int fd)
{
    char c;
    ssize_t r = read(fd, &c, 1);
    return r == 0 || (r < 0 && errno == ECONNRESET);
}

bool h_write_all(int fd, const void *buf, size_t n)
{
    size_t done = 0;
    while (done < n) {
        ssize_t w = send(fd, (const char *)buf + done, n - done, MSG_NOSIGNAL);
        if (w <= 0)
            return false;
        done += (size_t)w;
    }
    return true;
}

uint16_t h_closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = 0};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(sin);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 ||
        getsockname(fd, (struct sockaddr *)&sin, &len) < 0) {
        if (fd >= 0)
            close(fd);
        return 0;
    }
    close(fd);
    return ntohs(sin.sin_port);
}
