/* worker.c - see worker.h. */
#include "core/worker.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "core/conn.h"
#include "core/log.h"
#include "core/splice.h"

/* Debian's liburing 2.3 predates this flag; the kernel has it. */
#ifndef IORING_TIMEOUT_MULTISHOT
#define IORING_TIMEOUT_MULTISHOT (1U << 6)
#endif

#define RING_ENTRIES 4096
#define RING_CQ_ENTRIES 32768

static void arm_tick(struct worker *w)
{
	struct io_uring_sqe *sqe = worker_sqe(w);

	w->tick_ts.tv_sec = 0;
	w->tick_ts.tv_nsec = TIMER_TICK_MS * 1000000LL;
	io_uring_prep_timeout(sqe, &w->tick_ts, 0, IORING_TIMEOUT_MULTISHOT);
	io_uring_sqe_set_data64(sqe, op_data(w, OP_TICK));
}

static void arm_wake(struct worker *w)
{
	struct io_uring_sqe *sqe = worker_sqe(w);

	io_uring_prep_read(sqe, w->wake_fd, &w->wake_val, sizeof(w->wake_val), 0);
	io_uring_sqe_set_data64(sqe, op_data(w, OP_WAKE));
}

static void arm_accept(struct lsock *ls)
{
	struct io_uring_sqe *sqe = worker_sqe(ls->w);

	if (ls->probe)
		io_uring_prep_accept(sqe, ls->fd, NULL, NULL, SOCK_CLOEXEC);
	else
		io_uring_prep_multishot_accept(sqe, ls->fd, NULL, NULL, SOCK_CLOEXEC);
	io_uring_sqe_set_data64(sqe, op_data(ls, OP_ACCEPT));
	ls->accepting = true;
}

/* ---- file descriptors: the reserve and the accept back-off ---- */

static void fd_limit_read(struct worker *w)
{
	struct rlimit rl;
	rlim_t lim, reserve;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY ||
	    rl.rlim_cur > INT_MAX) {
		w->fd_limit = w->fd_high = INT_MAX;
		return;
	}
	lim = rl.rlim_cur;
	reserve = lim / FD_RESERVE_DIV;
	if (reserve < FD_RESERVE_MIN)
		reserve = FD_RESERVE_MIN;
	if (reserve > FD_RESERVE_MAX)
		reserve = FD_RESERVE_MAX;
	if (reserve > lim / 4)
		reserve = lim / 4;
	w->fd_limit = (int)lim;
	w->fd_high = (int)(lim - reserve);
}

/* Whether fd is in the reserve, after reading the limit again (it may
 * have been raised since, with prlimit(1)). */
static bool fd_reserved(struct worker *w, int fd)
{
	if (!worker_fd_in_reserve(w, fd))
		return false;
	fd_limit_read(w);
	return worker_fd_in_reserve(w, fd);
}

static void lsock_name(const struct lsock *ls, char *out, size_t cap)
{
	const struct sockaddr_in *a4 = (const struct sockaddr_in *)&ls->addr;
	const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)&ls->addr;
	char host[INET6_ADDRSTRLEN] = "?";

	if (ls->addr.ss_family == AF_INET6) {
		inet_ntop(AF_INET6, &a6->sin6_addr, host, sizeof(host));
		snprintf(out, cap, "[%s]:%u", host, ntohs(a6->sin6_port));
	} else if (ls->addr.ss_family == AF_INET) {
		inet_ntop(AF_INET, &a4->sin_addr, host, sizeof(host));
		snprintf(out, cap, "%s:%u", host, ntohs(a4->sin_port));
	} else {
		snprintf(out, cap, "fd %d", ls->fd);
	}
}

static void on_backoff_end(struct timer *t)
{
	struct lsock *ls = (struct lsock *)((char *)t - offsetof(struct lsock, backoff));

	ls->resumed_ms = worker_now_ms();
	/* a cancelled multishot accept not reaped yet: on_accept re-arms */
	if (ls->fd < 0 || ls->retired || ls->w->stopping || ls->accepting)
		return;
	arm_accept(ls);
}

/* An accept failed for lack of resources (err < 0) or handed out the
 * reserved fd `fd` (err 0): pause accepting on ls, unless it pauses
 * already, in which case the failure is counted for the next line. */
static void accept_backoff(struct lsock *ls, int err, int fd)
{
	struct worker *w = ls->w;
	uint64_t now = worker_now_ms();
	char name[INET6_ADDRSTRLEN + 10];

	ls->failures++;
	if (timer_armed(&ls->backoff))
		return;
	if (!ls->backoff_ms || now - ls->resumed_ms >= ACCEPT_BACKOFF_RESET_MS)
		ls->backoff_ms = ACCEPT_BACKOFF_MIN_MS;
	else if ((ls->backoff_ms *= 2) > ACCEPT_BACKOFF_MAX_MS)
		ls->backoff_ms = ACCEPT_BACKOFF_MAX_MS;
	ls->probe = true;
	if (ls->accepting) {
		struct io_uring_sqe *sqe = worker_sqe(w);

		io_uring_prep_cancel64(sqe, op_data(ls, OP_ACCEPT), 0);
		io_uring_sqe_set_data64(sqe, OP_IGNORE);
	}
	timer_set(&w->wheel, &ls->backoff, ls->backoff_ms, on_backoff_end);
	lsock_name(ls, name, sizeof(name));
	if (err < 0)
		log_warn("accept",
			 "worker %d: accept on %s failed: %s; %u failure%s since the last "
			 "report; not accepting for %u ms",
			 w->id, name, strerror(-err), ls->failures, ls->failures == 1 ? "" : "s",
			 ls->backoff_ms);
	else
		log_warn("accept",
			 "worker %d: accept on %s: file descriptors low (fd %d of limit "
			 "%d, %d kept in reserve), client turned away; %u failure%s since "
			 "the last report; not accepting for %u ms",
			 w->id, name, fd, w->fd_limit, w->fd_limit - w->fd_high, ls->failures,
			 ls->failures == 1 ? "" : "s", ls->backoff_ms);
	ls->failures = 0;
}

/* Errors of one connection (it went before we took it, or a firewall
 * rule refused it): the next one may well be fine. Any other error
 * (EMFILE, ENFILE, ENOBUFS, ENOMEM, or something wrong with the socket)
 * would come back at once if accepting went on at once. */
static bool accept_err_one_conn(int err)
{
	return err == -ECONNABORTED || err == -EPERM || err == -EPROTO || err == -EINTR ||
	       err == -EAGAIN;
}

int worker_init(struct worker *w)
{
	struct io_uring_params p;
	int ret;

	memset(&p, 0, sizeof(p));
	p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
		  IORING_SETUP_SUBMIT_ALL | IORING_SETUP_CQSIZE;
	p.cq_entries = RING_CQ_ENTRIES;
	ret = io_uring_queue_init_params(RING_ENTRIES, &w->ring, &p);
	if (ret < 0)
		return ret;
	/* io-wq threads serve operations that cannot complete inline; a
	 * proxy needs few of them (bounded and unbounded): none of its
	 * operations is meant to go there (the splices are syscalls of the
	 * worker, core/splice.h), so two of each at most */
	unsigned int maxw[2] = { 2, 2 };
	io_uring_register_iowq_max_workers(&w->ring, maxw);
	ret = bufs_init(&w->bufs, &w->ring);
	if (ret < 0)
		return ret;
	w->wake_fd = eventfd(0, EFD_CLOEXEC);
	if (w->wake_fd < 0)
		return -errno;
	ret = conn_worker_init(w);
	if (ret < 0)
		return ret;
	wheel_init(&w->wheel, worker_now_ms());
	fd_limit_read(w);
	return 0;
}

void worker_setup(struct worker *w)
{
	pthread_mutex_init(&w->msg_lock, NULL);
	pthread_cond_init(&w->msg_done, NULL);
	w->wake_fd = -1;
}

static void wake(struct worker *w)
{
	uint64_t one = 1;
	ssize_t r = write(w->wake_fd, &one, sizeof(one));

	(void)r;
}

void worker_request_stop(struct worker *w)
{
	pthread_mutex_lock(&w->msg_lock);
	w->stop_req = true;
	pthread_mutex_unlock(&w->msg_lock);
	wake(w);
}

void worker_reload(struct worker *w, void *arg)
{
	pthread_mutex_lock(&w->msg_lock);
	w->reload_req = true;
	w->reload_arg = arg;
	wake(w);
	while (w->reload_req)
		pthread_cond_wait(&w->msg_done, &w->msg_lock);
	pthread_mutex_unlock(&w->msg_lock);
}

/* Cancel the accept and close the socket. The socket stops listening once
 * the accept lets go of it; the cancel names the accept by user_data, so
 * the fd number is free at once. */
static void lsock_close(struct worker *w, struct lsock *ls)
{
	timer_del(&ls->backoff);
	if (ls->accepting) {
		struct io_uring_sqe *sqe = worker_sqe(w);

		io_uring_prep_cancel64(sqe, op_data(ls, OP_ACCEPT), 0);
		io_uring_sqe_set_data64(sqe, OP_IGNORE);
	}
	if (ls->fd >= 0)
		close(ls->fd);
	ls->fd = -1;
}

void worker_retire_lsock(struct worker *w, struct lsock *ls)
{
	lsock_close(w, ls);
	ls->retired = true;
	if (!ls->accepting) {
		free(ls);
		return;
	}
	ls->next = w->retired;
	w->retired = ls;
}

void worker_add_lsock(struct worker *w, struct lsock *ls)
{
	ls->w = w;
	ls->next = w->lsocks;
	w->lsocks = ls;
	if (!w->stopping)
		arm_accept(ls);
}

static void reap_retired(struct worker *w, struct lsock *done)
{
	for (struct lsock **pp = &w->retired; *pp; pp = &(*pp)->next) {
		if (*pp == done) {
			*pp = done->next;
			free(done);
			return;
		}
	}
}

static void stop_accepting(struct worker *w)
{
	for (struct lsock *ls = w->lsocks; ls; ls = ls->next)
		lsock_close(w, ls);
	io_uring_submit(&w->ring);
}

static void on_accept(struct lsock *ls, struct io_uring_cqe *cqe)
{
	struct worker *w = ls->w;
	int res = cqe->res;

	if (!(cqe->flags & IORING_CQE_F_MORE))
		ls->accepting = false;
	if (ls->retired) {
		/* a listener the reload removed: what raced in is turned away */
		if (res >= 0)
			close(res);
		if (!ls->accepting)
			reap_retired(w, ls);
		return;
	}
	if (res >= 0) {
		bool reserved = fd_reserved(w, res);

		if (w->stopping) {
			close(res);
		} else {
			/* a reserved fd too: the proxy turns the client away */
			ls->accepted(ls, res);
			if (reserved)
				accept_backoff(ls, 0, res);
			else if (!timer_armed(&ls->backoff))
				ls->probe = false;
		}
	} else if (res == -ECANCELED) {
		/* lsock_close() or accept_backoff() */
	} else if (accept_err_one_conn(res)) {
		log_warn("accept", "accept failed: %s", strerror(-res));
	} else {
		/* EMFILE leaves the connection queued: accepting again at once
		 * fails again at once */
		accept_backoff(ls, res, -1);
	}
	if (!ls->accepting) {
		if (w->stopping) {
			if (ls->fd >= 0) {
				close(ls->fd); /* no new connections queue up while we stop */
				ls->fd = -1;
			}
		} else if (!timer_armed(&ls->backoff) && ls->fd >= 0) {
			arm_accept(ls);
		}
	}
}

static void on_wake(struct worker *w, int res)
{
	bool stop;

	(void)res;
	pthread_mutex_lock(&w->msg_lock);
	if (w->reload_req) {
		w->ops->reload(w, w->reload_arg);
		io_uring_submit(&w->ring);
		w->reload_req = false;
		pthread_cond_broadcast(&w->msg_done);
	}
	stop = w->stop_req;
	pthread_mutex_unlock(&w->msg_lock);
	if (stop && !w->stopping) {
		w->stopping = true;
		w->stop_deadline_ms = worker_now_ms() + w->shutdown_timeout_ms;
		stop_accepting(w);
		w->ops->stopping(w);
	}
	arm_wake(w);
}

static bool accepting_any(const struct worker *w)
{
	for (const struct lsock *ls = w->lsocks; ls; ls = ls->next)
		if (ls->accepting)
			return true;
	return false;
}

static void dispatch(struct worker *w, struct io_uring_cqe *cqe)
{
	uint64_t ud = io_uring_cqe_get_data64(cqe);
	enum op_kind kind = (enum op_kind)(ud & OP_MASK);
	void *obj = (void *)(uintptr_t)(ud & ~(uint64_t)OP_MASK);

	switch (kind) {
	case OP_IGNORE:
		break;
	case OP_RECV:
	case OP_SEND:
	case OP_CONNECT:
	case OP_LINK_TIMEOUT:
		conn_complete(obj, kind, cqe);
		break;
	case OP_ACCEPT:
		on_accept(obj, cqe);
		break;
	case OP_TICK:
		if (!(cqe->flags & IORING_CQE_F_MORE))
			arm_tick(w);
		wheel_advance(&w->wheel, worker_now_ms());
		conn_expire_lingering(w, worker_now_ms());
		break;
	case OP_WAKE:
		on_wake(w, cqe->res);
		break;
	case OP_CALLBACK: {
		struct worker_cb *cb = obj;

		cb->fn(cb, cqe);
		break;
	}
	default:
		log_error("bug", "completion of unknown kind %u", (unsigned)kind);
		abort();
	}
}

void worker_run(struct worker *w)
{
	arm_tick(w);
	arm_wake(w);
	for (struct lsock *ls = w->lsocks; ls; ls = ls->next)
		arm_accept(ls);
	if (w->ops->started)
		w->ops->started(w);
	for (;;) {
		struct io_uring_cqe *cqe;
		unsigned head, n = 0;
		/* deferred work runs after this batch: do not sleep on it */
		int ret = conn_deferred_pending(w) ? io_uring_submit_and_get_events(&w->ring)
						   : io_uring_submit_and_wait(&w->ring, 1);

		if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY) {
			log_error("worker", "io_uring_submit_and_wait: %s", strerror(-ret));
			abort();
		}
		io_uring_for_each_cqe(&w->ring, head, cqe)
		{
			dispatch(w, cqe);
			n++;
		}
		io_uring_cq_advance(&w->ring, n);
		conn_run_deferred(w);
		w->ops->reap(w);
		if (w->stopping) {
			/* the accepts must be gone too: until their completions are
			 * reaped, the kernel keeps the sockets listening */
			if (!w->ops->active(w) && !conn_count(w) && !accepting_any(w) &&
			    !w->retired) {
				io_uring_submit(&w->ring); /* the last closes */
				break;
			}
			if (worker_now_ms() >= w->stop_deadline_ms) {
				w->ops->abort_all(w);
				w->stop_deadline_ms = UINT64_MAX;
			}
		}
	}
	if (w->ops->stopped)
		w->ops->stopped(w);
}

void worker_fini(struct worker *w)
{
	io_uring_queue_exit(&w->ring);
	bufs_fini(&w->bufs);
	if (w->wake_fd >= 0)
		close(w->wake_fd);
	w->wake_fd = -1;
	conn_worker_fini(w);
	splice_worker_fini(w);
	while (w->lsocks) {
		struct lsock *ls = w->lsocks;

		w->lsocks = ls->next;
		if (ls->fd >= 0)
			close(ls->fd);
		free(ls);
	}
	while (w->retired) {
		struct lsock *ls = w->retired;

		w->retired = ls->next;
		free(ls);
	}
	pthread_mutex_destroy(&w->msg_lock);
	pthread_cond_destroy(&w->msg_done);
}
